"""On-policy distillation around the loop: support overlap (value against a loop reference),
gap recovery, specialists (forked and foreign), stages that never train their parent in place,
and the `opd` / `mopd` recipes end to end on the smoke profile."""
import math

import pytest
import torch

from minimopd import distill
from minimopd.profiles import get_profile


def _loop_overlap(s, t, ids, mask, k):
    sums = {"reverse_kl": 0.0, "teacher_logprob": 0.0, "student_logprob": 0.0, "in_topk": 0.0}
    n = 0
    for b in range(s.shape[0]):
        for i in range(s.shape[1]):
            if not mask[b, i]:
                continue
            p = s[b, i].exp()
            sums["reverse_kl"] += float(sum(p[v] * (s[b, i, v] - t[b, i, v]) for v in range(s.shape[2])))
            y = int(ids[b, i])
            sums["teacher_logprob"] += float(t[b, i, y])
            sums["student_logprob"] += float(s[b, i, y])
            order = sorted(range(s.shape[2]), key=lambda v: -float(t[b, i, v]))[:k]
            sums["in_topk"] += float(y in order)
            n += 1
    return {key: value / n for key, value in sums.items()}


def test_support_overlap_matches_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    B, T, V, k = 3, 5, 11, 3
    s = torch.log_softmax(torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2, -1)
    t = torch.log_softmax(torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2, -1)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).float()
    mask[0, 0] = 1
    got = distill.support_overlap(s, t, ids, mask, k=k)
    want = _loop_overlap(s, t, ids, mask, k)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert got["reverse_kl"] > 0


def test_a_teacher_identical_to_the_student_overlaps_completely():
    g = torch.Generator().manual_seed(1)
    s = torch.log_softmax(torch.randn(2, 4, 7, generator=g), -1)
    ids = torch.randint(0, 7, (2, 4), generator=g)
    out = distill.support_overlap(s, s.clone(), ids, torch.ones(2, 4), k=7)
    assert out["reverse_kl"] == pytest.approx(0.0, abs=1e-6)
    assert out["teacher_logprob"] == pytest.approx(out["student_logprob"])
    assert out["in_topk"] == 1.0
    with pytest.raises(ValueError, match="share one tokenizer"):
        distill.support_overlap(s, s[..., :5], ids, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"must be \(B, T\)"):
        distill.support_overlap(s, s, ids[:, :3], torch.ones(2, 3))


def test_compute_to_reach_is_the_first_full_window_at_the_target():
    flops = [10.0 * (i + 1) for i in range(8)]
    acc = [0.0, 1.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0]
    # trailing means of 3 (full windows from step 2): 1/3, 0.5, 1/3, 2/3, 5/6, 1
    assert distill.compute_to_reach(flops, acc, 0.5, window=3) == 40.0
    assert distill.compute_to_reach(flops, acc, 2 / 3, window=3) == 60.0
    assert distill.compute_to_reach(flops, acc, 1.0, window=1) == 20.0       # window 1: the raw accuracy
    assert distill.compute_to_reach(flops, acc, 0.5, window=2) == 20.0       # steps 0-1 are the first full window
    assert math.isnan(distill.compute_to_reach(flops, acc, 1.01, window=3))
    assert math.isnan(distill.compute_to_reach(flops[:2], acc[:2], 0.0, window=3))   # never a full window
    with pytest.raises(ValueError, match="one value per step"):
        distill.compute_to_reach(flops, acc[:3], 0.5)


def test_gap_recovery():
    assert distill.gap_recovery(0.2, 0.5, 0.8) == pytest.approx(0.5)
    assert distill.gap_recovery(0.2, 0.8, 0.8) == pytest.approx(1.0)
    assert distill.gap_recovery(0.2, 0.1, 0.6) == pytest.approx(-0.25)
    assert math.isnan(distill.gap_recovery(0.5, 0.6, 0.5))      # no gap: nothing to recover
    assert math.isnan(distill.gap_recovery(0.5, 0.6, 0.4))


def test_a_stage_trains_a_copy_of_its_parent():
    """Two stages from one parent in one run (GRPO and Dr.GRPO from a cold start, OPD modes
    from one student) must both start from the parent's weights: no stage trains it in place."""
    from minimopd.artifacts import online_artifact, sft_on_pairs
    from minimopd.recipes_rl import cold_start_artifact, reasoning_config, verifier
    from minimopd.stages.online import preset
    from minimopd.stages.sft import SFTConfig, sft_dataset
    prof = get_profile("smoke")
    cold = cold_start_artifact(prof, 0, False)
    before = {k: v.clone() for k, v in cold.model.state_dict().items()}
    rl = online_artifact(cold, prof, preset("grpo", reasoning_config(prof, seed=123)), name="fork_probe",
                         signal=verifier("r1"), progress=False)
    sft = sft_on_pairs(cold, sft_dataset(("add",), 16, seed=3, reasoning=True), SFTConfig(steps=2, batch_size=4),
                       prof, name="fork_probe_sft", progress=False)
    assert rl.model is not cold.model and sft.model is not cold.model
    assert all(torch.equal(before[k], v) for k, v in cold.model.state_dict().items()), \
        "a stage trained its parent's model in place"
    assert any(not torch.equal(before[k], v) for k, v in rl.model.state_dict().items())


def test_foreign_seed_is_a_ring_of_the_claim_seeds():
    # seeds 0 and 1 keep the teachers RESULTS.md measured (the next seed's); seed 2 borrows seed 0's
    assert [distill.foreign_seed(s) for s in range(7)] == [1, 2, 0, 1, 2, 0, 1]
    assert all(distill.foreign_seed(s) != s for s in range(50))
    with pytest.raises(ValueError, match="non-negative"):
        distill.foreign_seed(-1)


def test_specialists_forked_and_foreign():
    from minimopd.artifacts import sft_artifact
    prof = get_profile("smoke")
    student = sft_artifact(prof, reasoning=True, progress=False)
    forked = distill.specialist_artifact(student, prof, "count", progress=False)
    foreign = distill.specialist_artifact(student, prof, "count", foreign=True, progress=False)
    assert forked.path.name.startswith("specialist_count-")
    assert forked.path != foreign.path
    # the foreign teacher is the next world's own forked specialist (one cached stage, not two)
    other = sft_artifact(prof, seed=distill.foreign_seed(0), reasoning=True, progress=False)
    assert foreign.path == distill.specialist_artifact(other, prof, "count", seed=distill.foreign_seed(0),
                                                       progress=False).path
    # the foreign teacher grew from another base: its weights are far from the student's
    s = dict(student.model.named_parameters())
    with torch.no_grad():
        dist = {name: sum(float((p - s[n]).norm()) for n, p in art.model.named_parameters())
                for name, art in (("forked", forked), ("foreign", foreign))}
    assert dist["foreign"] > 2 * dist["forked"], dist
    with pytest.raises(ValueError, match="verifiable domain"):
        distill.specialist_artifact(student, prof, "notes", progress=False)


def test_opd_recipe_reports_recovery_compute_and_overlap(smoke_run):
    res = smoke_run("opd").result
    from pathlib import Path

    from minimopd.recipes import RECIPE_STAGES
    assert list(res.evals) == ["student", "teacher", "grpo", "opd_sampled", "opd_topk", "opd_full", "opd_forward"]
    built = [Path(res.info[s]["path"]).name.rsplit("-", 1)[0] for s in res.evals]
    assert built == [s.split(":")[0] for s in RECIPE_STAGES["opd"][1:]]    # the base is not evaluated
    compute = {r["stage"]: r for r in res.tables["compute per stage"]}
    assert compute["grpo"]["teacher-scored tokens"] == 0
    for mode in ("opd_sampled", "opd_topk", "opd_full", "opd_forward"):
        assert compute[mode]["teacher-scored tokens"] > 0, mode
        hist = res.histories[mode]
        assert len(hist) == get_profile("smoke").rl_steps and "signal_tokens" in hist[-1]
    (recovery,) = res.tables["count: accuracy and gap recovery (greedy, held-out)"]
    assert {"student", "teacher accuracy", "opd_full", "opd_full recovery"} <= set(recovery)
    assert recovery["teacher"] == "teacher" and recovery["teacher accuracy"] == round(res.evals["teacher"].accuracy("count"), 3)
    (overlap,) = res.tables["support overlap with the student's samples (T=1)"]
    assert overlap["reverse_kl"] > 0 and 0 <= overlap["in_topk"] <= 1 and overlap["teacher_logprob"] < 0


def test_mopd_routes_every_domain_to_its_specialist(smoke_run):
    from minimopd.report import results_markdown
    from minimopd.tasks import VERIFIABLE_DOMAINS
    from pathlib import Path

    from minimopd.recipes import RECIPE_STAGES
    res = smoke_run("mopd").result
    built = [Path(res.info[s]["path"]).name.rsplit("-", 1)[0] for s in res.evals]
    assert built == [s.split(":")[0] for s in RECIPE_STAGES["mopd"][1:]]
    assert [f"teacher_{d}" for d in VERIFIABLE_DOMAINS] == [s for s in res.evals if s.startswith("teacher_")]
    rows = res.tables["per domain: accuracy and gap recovery (greedy, held-out)"]
    assert [r["domain"] for r in rows] == list(VERIFIABLE_DOMAINS)
    assert [r["teacher"] for r in rows] == [f"teacher_{d}" for d in VERIFIABLE_DOMAINS]   # one column, each row's own
    for stage in ("mopd", "mopd_forward"):
        routed = {k for row in res.histories[stage] for k in row if k.startswith("rows/")}
        assert routed and routed <= {f"rows/{d}" for d in VERIFIABLE_DOMAINS}, stage
    assert res.info["mopd_forward"]["signal_tokens"] > 0
    md = results_markdown({"mopd": res}, profile="smoke", seed=0, command="test")
    assert "**per domain: accuracy and gap recovery (greedy, held-out)**" in md and "mixed_rl recovery" in md


@pytest.mark.parametrize("name", ["deepseek_v32", "mimo_v2_flash", "deepseek_v4", "nemotron3_ultra",
                                  "mai_thinking1", "glm5", "kimi_k25"])
def test_frontier_recipe_builds_its_stages_and_reports(name, smoke_run):
    """Each frontier recipe runs on the smoke profile, builds exactly the stages
    RECIPE_STAGES names (in order: the progress display and the time estimate rely on it),
    evaluates every teacher on its own domain, and tabulates recovery and compute."""
    from minimopd.recipes import RECIPE_STAGES
    from minimopd.tasks import VERIFIABLE_DOMAINS
    run = smoke_run(name)
    res = run.result
    assert [k.rsplit("-", 1)[0] for k in run.keys] == [s.split(":")[0] for s in RECIPE_STAGES[name]]
    teachers = [s for s in res.evals if s.startswith("teacher_")]
    for stage in teachers:                              # a teacher is evaluated on its domain only
        assert {r["domain"] for r in res.evals[stage].rows} == {stage.split("_")[1]}
    (title,) = [t for t in res.tables if t.startswith("per domain")]
    assert [r["domain"] for r in res.tables[title]] == list(VERIFIABLE_DOMAINS)
    compute = res.tables["compute per stage"]
    assert compute[-1]["stage"] == "total" and float(compute[-1]["FLOPs"]) > 0
    if name in ("mimo_v2_flash", "deepseek_v4", "nemotron3_ultra"):     # distilled on its own samples
        mopd = [r for r in compute if "mopd" in r["stage"]]
        assert mopd and all(r["teacher-scored tokens"] > 0 for r in mopd)


def test_mixed_rl_selects_as_many_candidates_as_its_run_draws(monkeypatch):
    """A staged RL run (glm5: four runs of a quarter of the steps) samples candidate prompts for
    its own steps, not for a whole run's: 4,800 candidates x 8 samples for 75 steps was half of
    each glm5 stage's compute."""
    from minimopd import recipes_opd
    seen = []
    monkeypatch.setattr(recipes_opd, "online_artifact",
                        lambda parent, profile, cfg, **kw: seen.append((cfg.steps, kw["selection"].candidates)))
    prof = get_profile("cpu")
    run = recipes_opd.RecipeRun("t", prof, 0, False)
    run.mixed_rl(None)
    run.mixed_rl(None, "glm5_rl_add", domains=("add",), steps=prof.rl_steps // 4)
    run.mixed_rl(None, "tiny", steps=1)
    assert seen == [(300, 300 * prof.rl_prompts), (75, 75 * prof.rl_prompts), (1, 64)]


def test_warmup_sft_moves_the_student_towards_the_teachers_traces(monkeypatch):
    """Nemotron 3 Ultra's warm-up: one light SFT epoch of the student on the teacher's verified
    traces of one domain, its compute counting the teacher's sampling; a teacher with no verified
    trace is a clear error, not an SFT on nothing."""
    from minimopd import recipes_opd
    from minimopd.artifacts import sft_artifact
    prof = get_profile("smoke")
    student = sft_artifact(prof, reasoning=True, progress=False)
    teacher = distill.specialist_artifact(student, prof, "count", progress=False)
    warm = recipes_opd.warmup_artifact(student, teacher, prof, "count", seed=0, progress=False)
    assert warm.path.name.startswith("warmup_count-") and set(warm.info["traces"]) == {"count"}
    stats = warm.info["traces"]["count"]
    assert 0 < stats["kept"] <= recipes_opd.WARMUP_OPD_STEPS * prof.rl_prompts * prof.rl_group_size
    assert warm.info["flops"] == pytest.approx(warm.info["sft_flops"] + stats["flops"]) and stats["flops"] > 0
    assert warm.info["steps"] == -(-stats["kept"] // prof.sft_batch_size)          # one epoch
    s = dict(student.model.named_parameters())
    with torch.no_grad():
        assert any(not torch.equal(p, s[n]) for n, p in warm.model.named_parameters())
    monkeypatch.setattr(recipes_opd, "sample_traces", lambda *a, **k: ([], {"kept": 0}))
    with pytest.raises(RuntimeError, match=r"warmup_count: the teachers produced no verified trace in 640 samples "
                                           r"per domain to train on: count \(specialist_count-\w+\)"):
        recipes_opd.warmup_artifact(student, teacher, prof, "count", seed=5, progress=False)


def test_traces_sft_of_several_teachers_keeps_what_each_verified(monkeypatch):
    """The multi-domain form (Lab 08's "SFT on traces", nemotron3_ultra's warm-up): each teacher
    samples its own domain; a domain with no verified trace is recorded (kept 0) and the others
    still train; every teacher's sampling counts in the FLOPs."""
    from minimopd import recipes_opd
    from minimopd.artifacts import sft_artifact
    prof = get_profile("smoke")
    student = sft_artifact(prof, reasoning=True, progress=False)
    teachers = {"add": student, "count": student}
    made = {"add": [], "count": [("count a in ab", "a1 b1 -> 1"), ("count b in bb", "b1 b2 -> 2")]}
    calls = []

    def fake(teacher, profile, *, n_prompts, seed, domains, samples):
        calls.append((domains, n_prompts, samples))
        return made[domains[0]], {"kept": len(made[domains[0]]), "flops": 1e6}
    monkeypatch.setattr(recipes_opd, "sample_traces", fake)
    art = recipes_opd.traces_artifact(student, teachers, prof, seed=3, traces_per_domain=16, name="traces_test",
                                      progress=False)
    assert [c[0] for c in calls] == [("add",), ("count",)] and all(c[1] == 16 for c in calls)
    assert all(set(c[2].values()) == {1} for c in calls)                      # one sample per prompt
    assert art.info["traces"]["add"]["kept"] == 0 and art.info["traces"]["count"]["kept"] == 2
    assert art.info["flops"] == pytest.approx(art.info["sft_flops"] + 2e6)
    made["count"] = []
    with pytest.raises(RuntimeError, match=r"traces_test: the teachers produced no verified trace in 16 samples "
                                           r"per domain to train on: add \(sft-\w+\), count \(sft-\w+\)"):
        recipes_opd.traces_artifact(student, teachers, prof, seed=3, traces_per_domain=16, name="traces_test",
                                    progress=False)


def test_a_teacher_checkpoint_is_the_specialists_own_run_stopped_early():
    """Progressive distillation's intermediate teacher: the same SFT run (same batches, same
    learning-rate schedule over all its steps), stopped after a share of its steps."""
    from minimopd.artifacts import sft_artifact
    prof = get_profile("smoke")
    student = sft_artifact(prof, reasoning=True, progress=False)
    final = distill.specialist_artifact(student, prof, "count", progress=False)
    assert distill.teacher_checkpoint(student, prof, "count", fraction=1.0, progress=False).path == final.path
    from minimopd.artifacts import sft_on_pairs
    cfg = distill.specialist_sft_config(prof, "count", 0)
    whole = sft_on_pairs(student, distill._specialist_pairs("count", cfg, 0), cfg, prof, name="specialist_count",
                         stop_at=cfg.steps, progress=False)
    assert whole.path == final.path                     # stopping at the last step is the whole run
    mid = distill.teacher_checkpoint(student, prof, "count", fraction=0.5, progress=False)
    steps = distill.specialist_sft_config(prof, "count", 0).steps
    assert mid.path != final.path and mid.path.name.startswith("specialist_count-")
    assert mid.info["steps"] == round(steps / 2) and mid.info["schedule_steps"] == steps
    assert len(mid.history) == round(steps / 2)
    for a, b in zip(mid.history, final.history):          # the full run's first half, value for value
        assert (a["loss"], a["lr"]) == (b["loss"], b["lr"])
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction must lie in"):
            distill.teacher_checkpoint(student, prof, "count", fraction=bad, progress=False)


def _stage(name, parent, rows, **info):
    from pathlib import Path

    from minimopd.cache import Artifact
    return Artifact(model=name, tokenizer=None, history=rows, path=Path(f"/cache/{name}"), cached=True,
                    info={"parent": parent, **info})


def test_joined_stages_read_as_one_run():
    from minimopd.artifacts import joined
    a = _stage("a-1", "student-0", [{"step": 0, "flops": 1.0, "time": 0.5, "accuracy": 0.1},
                                    {"step": 1, "flops": 2.0, "time": 1.0, "accuracy": 0.2}],
               flops=2.0, wall_time=1.0, steps=2)
    b = _stage("b-2", "a-1", [{"step": 0, "flops": 3.0, "time": 2.0, "accuracy": 0.3}], flops=3.0, wall_time=2.0,
               steps=1, tokens_generated=7)
    run = joined([a, b])
    assert run.model == "b-2" and run.path == b.path
    assert [(r["step"], r["flops"], r["time"], r["accuracy"]) for r in run.history] == [
        (0, 1.0, 0.5, 0.1), (1, 2.0, 1.0, 0.2), (2, 5.0, 3.0, 0.3)]
    assert (run.info["flops"], run.info["wall_time"], run.info["steps"], run.info["tokens_generated"]) == (5.0, 3.0, 3, 7)
    assert run.info["parent"] == "student-0" and run.info["stages"] == ["a-1", "b-2"]
    assert b.history[0]["step"] == 0 and b.info["flops"] == 3.0           # the cached stage is untouched
    with pytest.raises(ValueError, match="b-2 does not continue a-1"):
        joined([a, _stage("b-2", "student-0", [])])


def test_progressive_distillation_gives_each_checkpoint_its_segment(monkeypatch):
    from minimopd import recipes_progressive as rp
    calls = []

    def fake_online(parent, profile, cfg, *, name, signal, progress):
        calls.append((parent.path.name, signal.teacher, cfg.steps, cfg.seed, name))
        return _stage(f"{name}-x", parent.path.name, [{"step": i, "flops": 1.0 * (i + 1)} for i in range(cfg.steps)],
                      flops=float(cfg.steps), steps=cfg.steps)
    monkeypatch.setattr(rp, "online_artifact", fake_online)
    monkeypatch.setattr(rp, "TeacherSignal", lambda model, key, **mode: type("S", (), {"teacher": key})())
    student = _stage("student-0", None, [])
    t1, t2, t3 = (_stage(f"t{i}-0", None, []) for i in (1, 2, 3))
    run = rp.progressive_artifact(student, [t1, t2, t3], get_profile("smoke"), "opd_full", seed=4, name="p", steps=8)
    assert calls == [("student-0", "t1-0", 2, 4, "p_1"), ("p_1-x", "t2-0", 2, 1004, "p_2"),
                     ("p_2-x", "t3-0", 4, 2004, "p_3")]
    assert [r["step"] for r in run.history] == list(range(8)) and run.info["flops"] == 8.0
    with pytest.raises(ValueError, match="cannot be split over 3 teachers"):
        rp.progressive_artifact(student, [t1, t2, t3], get_profile("smoke"), "opd_full", seed=4, name="p", steps=2)


def test_progressive_recipe_reports_checkpoints_arms_and_overlap(smoke_run):
    from minimopd.recipes import RECIPE_STAGES
    from minimopd.recipes_progressive import PROGRESSIVE_AT, PROGRESSIVE_MODES
    run = smoke_run("progressive")
    res = run.result
    assert [k.rsplit("-", 1)[0] for k in run.keys] == [s.split(":")[0] for s in RECIPE_STAGES["progressive"]]
    labels = [f"teacher@{f:g}" for f in (*PROGRESSIVE_AT, 1)]
    arms = [f"{m}:{a}" for m in PROGRESSIVE_MODES for a in ("final", "progressive")]
    assert list(res.evals) == ["student", *labels, *arms]
    for arm in arms:
        assert len(res.info[arm]["stages"]) == len(labels)
        assert len(res.histories[arm]) == get_profile("smoke").rl_steps
    (row,) = res.tables["count: accuracy and gap recovery (greedy, held-out)"]
    assert {"student", "teacher accuracy", "teacher@0.1", "opd_full:progressive recovery"} <= set(row)
    assert row["teacher"] == "teacher@1"
    overlap = res.tables["support overlap with the student's samples (T=1)"]
    assert [r["teacher"] for r in overlap] == labels and all(r["reverse_kl"] >= 0 for r in overlap)


def _experiment(name: str):
    """The script experiments/<name>.py, imported as a module."""
    from scripts import load_script
    return load_script(f"experiments/{name}.py")


def test_build_specialists_script_fills_the_recipes_cache_keys(smoke_run, capsys):
    """experiments/build_specialists.py builds the very stages a frontier recipe loads (the same
    cache entries), so a lineage run after it trains none of them again."""
    from pathlib import Path
    script = _experiment("build_specialists")
    info = smoke_run("deepseek_v4").result.info
    script.main(["count", "sort", "--profile", "smoke", "--seed", "0", "--rl"])
    script.main(["count", "--profile", "smoke", "--seed", "0"])
    lines = capsys.readouterr().out.splitlines()
    built = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in lines]
    assert built[:2] == [info["teacher_count"]["path"], info["teacher_sort"]["path"]]
    assert Path(built[2]).name == info["teacher_count"]["parent"]   # the domain SFT under the RL stage
    with pytest.raises(SystemExit):
        script.main(["counting", "--profile", "smoke"])


def test_trace_sft_probe_distils_the_recipes_specialists(smoke_run, tmp_path):
    """experiments/trace_sft_probe.py: deepseek_v32's trace SFT from the `mopd` recipe's
    specialists (`--teachers sft`) or from the frontier recipes' (`sft+rl`: the very stage
    deepseek_v32 trains), evaluated next to the student."""
    import json
    from pathlib import Path
    probe = _experiment("trace_sft_probe")
    v32 = smoke_run("deepseek_v32").result.info
    out = tmp_path / "p.json"
    assert probe.main(["--profile", "smoke", "--teachers", "sft+rl", "--n", "2", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["path"] == Path(v32["distill_sft"]["path"]).name
    assert got["teacher_paths"]["add"] == Path(v32["teacher_add"]["path"]).name
    assert set(got["student"]) == {"mean", "add", "sort", "reverse", "count"}
    assert probe.main(["--profile", "smoke", "--teachers", "sft", "--n", "2", "--json", str(out)]) == 0
    plain = json.loads(out.read_text())
    assert plain["path"].startswith("trace_sft-") and plain["info"]["flops"] > plain["info"]["sft_flops"] > 0
    assert plain["teacher_paths"]["add"] == v32["teacher_add"]["parent"]   # the domain SFT, no RL stage


def test_sft_then_opd_interpolates_the_sft_curve():
    import math
    reach = _experiment("sft_then_opd").sft_flops_to_reach
    curve = [(0.0, 0.5), (10.0, 0.7), (30.0, 0.9)]
    assert reach(curve, 0.4) == 0.0 and reach(curve, 0.5) == 0.0        # the start already does
    assert reach(curve, 0.6) == pytest.approx(5.0) and reach(curve, 0.8) == pytest.approx(20.0)
    assert reach(curve, 0.9) == pytest.approx(30.0) and math.isnan(reach(curve, 0.95))
    assert reach([(0.0, 0.5), (10.0, 0.4), (20.0, 0.8)], 0.6) == pytest.approx(15.0)   # first crossing
    with pytest.raises(ValueError, match="at least one point"):
        reach([], 0.5)


def test_sft_then_opd_starts_both_arms_from_the_shortest_trace_sft(smoke_run, tmp_path):
    """experiments/sft_then_opd.py: the trace SFT at two lengths (the full one is the very stage
    trace_sft_probe.py trains) and routed OPD from the shorter, with compute counted from it."""
    import json
    from pathlib import Path
    script, probe = _experiment("sft_then_opd"), _experiment("trace_sft_probe")
    out, plain = tmp_path / "s.json", tmp_path / "p.json"
    assert script.main(["--profile", "smoke", "--scales", "1", "0.25", "--opd-steps", "2", "--modes", "forward",
                        "--n", "2", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    labels = [r["label"] for r in got["rows"]]
    assert labels == ["student", "sft x0.25 (start)", "sft x1", "+ opd forward x2"] and got["scales"] == [0.25, 1.0]
    student, start, full, opd = got["rows"]
    assert student["extra_flops"] is None and start["extra_flops"] == 0 and start["sampling_flops"] > 0
    assert full["extra_flops"] == full["sft_flops"] - start["sft_flops"] > 0       # the traces are sampled once
    assert opd["extra_flops"] > 0 and opd["path"].startswith("opd_after_sft_forward-") and opd["n"] == 2
    assert (opd["compute_ratio"] is None) == (opd["sft_flops_to_match"] is None)
    assert set(opd["diagnosis"]) == {"entropy", "teacher_kl", "accuracy"} and opd["diagnosis"]["entropy"][0] >= 0
    assert script.diagnosis([{"entropy": float(i), "accuracy": None} for i in range(30)]) == {"entropy": [4.5, 24.5]}
    assert probe.main(["--profile", "smoke", "--teachers", "sft", "--n", "2", "--json", str(plain)]) == 0
    assert json.loads(plain.read_text())["path"] == full["path"]
    assert Path(got["teacher_paths"]["count"]).name == json.loads(plain.read_text())["teacher_paths"]["count"]
    with pytest.raises(SystemExit):
        script.main(["--profile", "smoke", "--opd-steps", "0"])
