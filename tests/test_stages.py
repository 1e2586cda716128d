"""Pretraining, SFT, the offline loop, evaluation, the stage cache, profiles and the CLI."""
import os
import warnings

import pytest
import torch

from minimopd.cache import cache_root, cached_stage, load_artifact, stage_key
from minimopd.evaluation import EvalResult, evaluate, well_formed
from minimopd.models import CheckpointError, build_model
from minimopd.profiles import get_profile
from minimopd.rollout import generate
from minimopd.stages.common import OptimConfig, StageResult, lr_at, train_offline
from minimopd.stages.pretrain import PretrainConfig, build_corpus, pack_corpus, pretrain
from minimopd.stages.sft import SFTConfig, sft_dataset, train_sft
from minimopd.tasks import get_task


def test_profiles_select_and_reject(monkeypatch):
    monkeypatch.setenv("MINIMOPD_PROFILE", "cpu")
    assert get_profile().name == "cpu" and get_profile("smoke").model_size == "tiny"
    assert get_profile("smoke").replace(sft_steps=3).sft_steps == 3
    with pytest.raises(ValueError, match="unknown profile 'laptop'.*smoke, cpu, gpu"):
        get_profile("laptop")


def test_lr_schedule_warms_up_then_decays():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at(s, 20, cfg) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] >= 0.1 and lrs[-1] < 0.2


def test_corpus_is_train_split_and_packed(tok):
    lines = build_corpus(["add", "sort"], 200, seed=0)
    task = get_task("add")
    test_lines = {task.corpus_text(ex) for ex in task.sample(300, split="test", seed=0)}
    assert not test_lines & set(lines)
    assert any(":" in l or ";" in l for l in lines)      # some worked solutions are mixed in
    chunks = pack_corpus(tok, lines, 64)
    assert chunks.shape[1] == 64 and chunks.numel() <= sum(len(l) + 1 for l in lines)
    with pytest.raises(ValueError, match="fewer than one sequence"):
        pack_corpus(tok, ["1+1=2"], 64)


def test_pretrain_lowers_loss(tok):
    res = pretrain(PretrainConfig(steps=25, corpus_lines=400, seq_len=64, batch_size=8), tokenizer=tok,
                   progress=False)
    first, last = res.history[0]["loss"], res.history[-1]["loss"]
    assert last < first - 0.5, (first, last)
    assert res.info["heldout_loss"] < first


def test_sft_learns_and_trains_only_on_responses(tok):
    torch.manual_seed(0)
    model = build_model("tiny", tok, seed=0)
    pairs = [("What is 1+1?", "2"), ("Reverse: abc", "cba"), ("Sort: 3 1 2", "1 2 3")]
    seen_masks = []

    def spy_loss(logprobs, mask):
        seen_masks.append(mask.clone())
        return -(logprobs * mask).sum(1) / mask.sum(1).clamp(min=1)

    res = train_sft(model, tok, pairs * 4, SFTConfig(steps=120, batch_size=6, lr=3e-3),
                    sft_loss=spy_loss, progress=False)
    assert res.history[-1]["loss"] < 0.05 * res.history[0]["loss"]
    # The loss saw exactly the response tokens (+ <|end|>) of each example: 1+1, 3+1, 5+1 tokens.
    assert sorted(set(seen_masks[0].sum(1).tolist())) == [2.0, 4.0, 6.0]
    ro = generate(res.model, tok, [p for p, _ in pairs], temperature=0.0, max_new_tokens=8)
    assert ro.texts == [r for _, r in pairs]


def test_offline_loop_stops_on_nan(tok):
    model = build_model("tiny", tok)
    def nan_step(model, batch):
        return model.lm_head.weight.sum() * float("nan"), {}
    batches = iter(lambda: {"x": torch.zeros(1)}, None)
    with pytest.raises(FloatingPointError, match="unit-test: the loss at step 0 is not finite"):
        train_offline(model, batches, nan_step, steps=3, optim=OptimConfig(), stage="unit-test",
                      progress=False)


def test_sft_rejects_empty_and_too_long(tok):
    model = build_model("tiny", tok, context_length=32)
    with pytest.raises(ValueError, match="no \\(prompt, response\\) pairs"):
        train_sft(model, tok, [], SFTConfig(steps=1))
    with pytest.raises(ValueError, match="longer than the model's context"):
        train_sft(model, tok, [("x" * 40, "y")], SFTConfig(steps=1), progress=False)


def test_sft_dataset_covers_domains_and_reasoning():
    pairs = sft_dataset(["add", "count"], 40, seed=0)
    assert len(pairs) == 40 and len({p for p, _ in pairs}) > 30
    think = sft_dataset(["add"], 10, seed=0, reasoning=True)
    assert all(r.startswith("<think>") and r.endswith("</answer>") for _, r in think)


def test_well_formed_and_eval_aggregation():
    assert well_formed("423", True, reasoning=False)
    assert not well_formed("423", False, reasoning=False)          # never ended its turn
    assert not well_formed("<think>x</think>4", True, reasoning=False)
    assert well_formed("<think>x</think><answer>4</answer>", True, reasoning=True)
    ev = EvalResult(rows=[
        {"domain": "add", "difficulty": "easy", "n": 10, "accuracy": 1.0, "format_rate": 1.0, "mean_length": 3},
        {"domain": "add", "difficulty": "hard", "n": 30, "accuracy": 0.2, "format_rate": 0.5, "mean_length": 5}])
    assert ev.accuracy() == pytest.approx(0.4) and ev.accuracy(difficulty="hard") == pytest.approx(0.2)
    s = ev.summary()
    assert s["acc/easy"] == 1.0 and s["acc/add/hard"] == 0.2 and s["format_rate"] == pytest.approx(0.625)
    assert "add" in ev.table() and "hard" in ev.table()


def test_evaluate_scores_every_domain_and_level(tok, tiny_model):
    ev = evaluate(tiny_model, tok, profile="smoke", n_per_level=3, max_new_tokens=6)
    assert {(r["domain"], r["difficulty"]) for r in ev.rows} == {
        (d, l) for d in ("add", "sort", "reverse", "count") for l in ("easy", "medium", "hard")}
    assert all(r["n"] == 3 and 0 <= r["accuracy"] <= 1 for r in ev.rows)
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        evaluate(tiny_model, tok, ["nope"], profile="smoke")


def test_cache_reuses_and_rebuilds_corrupt(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMOPD_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    calls = []

    def build():
        calls.append(1)
        return build_model("tiny", tok, seed=len(calls)), tok, StageResult(None, [{"step": 0, "loss": 1.0}], {"t": 1})

    key = stage_key("unit", config={"a": 1})
    assert key != stage_key("unit", config={"a": 2}) and key == stage_key("unit", config={"a": 1})
    first = cached_stage(key, build)
    again = cached_stage(key, build)
    assert not first.cached and again.cached and len(calls) == 1
    assert again.history == [{"step": 0, "loss": 1.0}]
    assert torch.equal(again.model.lm_head.weight, first.model.lm_head.weight)
    # Flip bytes in the weights: the checksum catches it, a warning names it, the stage is rebuilt.
    weights = tmp_path / "c" / key / "model.safetensors"
    data = bytearray(weights.read_bytes()); data[-10:] = b"\x01" * 10; weights.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="unusable.*checksum"):
        rebuilt = cached_stage(key, build)
    assert not rebuilt.cached and len(calls) == 2


def test_cache_detects_edited_files_and_records(tok, tmp_path, monkeypatch):
    """An edit that is not corruption (a config value, the recorded history, a renamed
    directory) is caught too: every file and the record are sealed with checksums."""
    import json
    monkeypatch.setenv("MINIMOPD_CACHE", str(tmp_path / "c"))
    calls = []

    def build():
        calls.append(1)
        return build_model("tiny", tok, seed=0), tok, StageResult(None, [{"step": 0, "loss": 1.0}], {"t": 1})

    key = stage_key("unit", config={"edit": 1})
    cached_stage(key, build)
    path = tmp_path / "c" / key
    config = json.loads((path / "config.json").read_text())
    config["rope_theta"] = 1234.0
    (path / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="config.json in .* changed after the stage was saved"):
        assert not cached_stage(key, build).cached
    meta = json.loads((path / "minimopd.json").read_text())
    meta["history"][0]["loss"] = 0.1
    (path / "minimopd.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="history and info.*changed after it was saved"):
        assert not cached_stage(key, build).cached
    other = stage_key("unit", config={"edit": 2})
    path.rename(tmp_path / "c" / other)
    with pytest.raises(CheckpointError, match="holds the stage"):
        load_artifact(tmp_path / "c" / other)
    assert len(calls) == 3


def test_unwritable_cache_fails_before_training(tmp_path, monkeypatch, capsys):
    from minimopd.cache import CacheError, ensure_writable
    from minimopd.cli import main
    from minimopd.recipes import run_recipe
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MINIMOPD_CACHE", str(blocker / "cache"))
    with pytest.raises(CacheError, match="not writable.*MINIMOPD_CACHE"):
        ensure_writable()
    trained = []
    monkeypatch.setattr("minimopd.artifacts.pretrain", lambda *a, **k: trained.append(1))
    with pytest.raises(CacheError):
        run_recipe("sft", profile="smoke", progress=False)
    assert main(["lineage", "--profile", "smoke", "--recipes", "sft", "--no-progress", "--out",
                 str(tmp_path / "out")]) == 2
    assert "not writable" in capsys.readouterr().err and not trained


def test_cache_keeps_a_value_head_and_checks_its_file(tok, tmp_path, monkeypatch):
    from minimopd.models import PolicyWithValue
    monkeypatch.setenv("MINIMOPD_CACHE", str(tmp_path / "c"))
    model = PolicyWithValue(build_model("tiny", tok, seed=0))
    with torch.no_grad():
        model.head.proj.bias.fill_(0.7)
    build = lambda: (model, tok, StageResult(model, [], {}))
    key = stage_key("ppo-unit", config={})
    cached_stage(key, build)
    again = cached_stage(key, build)
    assert again.cached and isinstance(again.model, PolicyWithValue)
    assert again.model.head.proj.bias.item() == pytest.approx(0.7)
    head = tmp_path / "c" / key / "scalar_head.safetensors"
    data = bytearray(head.read_bytes()); data[-4:] = b"\x02" * 4; head.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="unusable.*checksum"):
        assert not cached_stage(key, build).cached


def test_cli_tasks_and_bad_input(capsys):
    from minimopd.cli import main
    assert main(["tasks", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "add (verifiable)" in out and "notes (preference)" in out
    assert main(["lineage", "--profile", "laptop"]) == 2
    assert "unknown profile 'laptop'" in capsys.readouterr().err
    assert main(["lineage", "--profile", "smoke", "--eval-per-level", "0"]) == 2
    assert "--eval-per-level must be a positive number of items per level, got 0" in capsys.readouterr().err


def test_cli_lineage_smoke_writes_report(tmp_path, capsys):
    from minimopd.cli import main
    assert main(["lineage", "--profile", "smoke", "--recipes", "sft", "--out", str(tmp_path),
                 "--no-progress", "--eval-per-level", "3"]) == 0      # (the smoke profile's is 4)
    out = capsys.readouterr().out
    assert "[sft/sft] accuracy by domain and difficulty" in out
    html = (tmp_path / "report.html").read_text()
    assert "plotly" in html and "sft: base training curves" in html
    assert (tmp_path / "results.md").read_text().startswith("Command: `minimopd lineage")
    import json
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["profile"] == "smoke" and results["recipes"]["sft"]["table"][0]["stage"] == "sft"
    rows = [r for ev in results["recipes"]["sft"]["evals"].values() for r in ev]
    assert rows and {r["n"] for r in rows} == {3}


def test_cli_lineage_without_plotly_keeps_the_results(tmp_path, capsys, monkeypatch):
    """A bare GPU image has torch and transformers but not plotly: the lineage still writes
    results.md / results.json and says why report.html is missing, instead of a traceback."""
    import builtins

    from minimopd.cli import main
    real_import = builtins.__import__

    def no_plotly(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "plots" or "plots" in (fromlist or ()) or name.startswith("plotly"):
            raise ModuleNotFoundError("No module named 'plotly'", name="plotly")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_plotly)
    assert main(["lineage", "--profile", "smoke", "--recipes", "sft", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "report.html skipped" in out and "pip install plotly" in out
    assert not (tmp_path / "report.html").exists()
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.json").exists()
