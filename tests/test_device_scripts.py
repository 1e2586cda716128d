"""The scripts that split a recipe across processes on a lent GPU (experiments/device/stage.py)
and score its stages on another machine (experiments/rescore.py): they must hit the recipes'
own cache keys, or a device run's stages would be retrained (or silently not the ones scored)."""
import json
from pathlib import Path

import pytest

from minimopd.report import results_dict

from scripts import load_script


def test_stage_script_builds_the_recipes_own_stages(smoke_run, capsys):
    stage = load_script("experiments/device/stage.py")
    paths = {k: Path(v["path"]).name for k, v in smoke_run("grpo_vs_drgrpo").result.info.items()}
    r1 = {k: Path(v["path"]).name for k, v in smoke_run("r1").result.info.items()}
    for part in ("cold", "grpo", "dr_grpo", "small"):
        assert stage.main([part, "--profile", "smoke", "--seed", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"grpo seed 0: {paths['grpo']}" in out and f"dr_grpo seed 0: {paths['dr_grpo']}" in out
    assert f"cold seed 0: {r1['cold_start']}" in out
    # smoke's small model is its main size, so the small cold start is the cold start itself
    assert f"small seed 0: {r1['cold_start']}" in out, out


def _as_json(result) -> dict:
    """A `RecipeResult` the way `minimopd lineage` writes it to results.json."""
    return json.loads(json.dumps(results_dict({result.name: result}, profile="smoke", seed=0), default=str))


def test_rescore_evaluates_exactly_the_recorded_artifacts(smoke_run, tmp_path):
    rescore = load_script("experiments/rescore.py")
    run = _as_json(smoke_run("grpo_vs_drgrpo").result)
    recorded = run["recipes"]["grpo_vs_drgrpo"]
    # at the recipe's own size (smoke: 4 per level) the same weights score the same items alike
    got = rescore.rescore(run, n=4, progress=False)["grpo_vs_drgrpo"]
    assert list(got.evals) == ["grpo", "dr_grpo"]
    for stage, ev in got.evals.items():
        assert Path(got.info[stage]["path"]).name == Path(recorded["info"][stage]["path"]).name
        assert [(r["domain"], r["difficulty"], r["accuracy"], r["mean_length"]) for r in ev.rows] == \
            [(r["domain"], r["difficulty"], r["accuracy"], r["mean_length"]) for r in recorded["evals"][stage]]
    more = rescore.rescore(run, n=6, progress=False)["grpo_vs_drgrpo"]
    assert all(r["n"] == 6 for ev in more.evals.values() for r in ev.rows)
    src = tmp_path / "results.json"
    src.write_text(json.dumps(run))
    assert rescore.main([str(src), "--eval-per-level", "2", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "results.md").read_text()
    assert "re-scored here" in md and "| grpo |" in md and "| dr_grpo |" in md


def test_rescore_names_a_missing_cache_entry(smoke_run, tmp_path):
    rescore = load_script("experiments/rescore.py")
    run = _as_json(smoke_run("grpo_vs_drgrpo").result)
    run["recipes"]["grpo_vs_drgrpo"]["info"]["grpo"]["path"] = str(tmp_path / "grpo-0000000000000000")
    with pytest.raises(FileNotFoundError, match="grpo-0000000000000000 is not in the cache.*MINIMOPD_CACHE"):
        rescore.rescore(run, n=2, progress=False)
