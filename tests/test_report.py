"""The lineage-wide table and figure of `minimopd lineage`'s report (`report.lineage_rows`)."""
import pytest

from minimopd.artifacts import RecipeResult
from minimopd.evaluation import EvalResult
from minimopd.report import lineage_markdown, lineage_rows, results_markdown
from minimopd.tasks import VERIFIABLE_DOMAINS


def _ev(acc: dict) -> EvalResult:
    return EvalResult([{"domain": d, "difficulty": lvl, "n": 10, "accuracy": a, "format_rate": 1.0,
                        "mean_length": 5.0} for d, a in acc.items() for lvl in ("easy", "hard")])


def _stage(res: RecipeResult, stage: str, acc: dict, **info):
    res.evals[stage] = _ev(acc)
    res.info[stage] = {"path": f"/cache/{stage}-0123", **info}


def _all(x):
    return {d: x for d in VERIFIABLE_DOMAINS}


@pytest.fixture
def results():
    mopd = RecipeResult("mopd_like", "cpu", 0)
    _stage(mopd, "student", _all(0.5), flops=9e12)                      # the start: counted 0
    _stage(mopd, "teacher_add", {"add": 1.0}, flops=1e12, build_flops=3e12)
    _stage(mopd, "teacher_sort", {"sort": 1.0}, flops=2e12)
    _stage(mopd, "mopd", _all(0.7), flops=5e12, parent="student-0123", signal_tokens=100)
    _stage(mopd, "mixed_rl", _all(0.6), flops=4e12, parent="student-0123")
    _stage(mopd, "teacher_add_round2", {"add": 1.0}, flops=7e12)
    _stage(mopd, "round2", _all(0.8), flops=6e12, parent="mopd-0123", signal_tokens=50)
    chain = RecipeResult("chain", "cpu", 0)
    _stage(chain, "sft", {"notes": 0.2})
    _stage(chain, "dpo", {"notes": 0.4}, flops=1e12, parent="sft-0123")
    _stage(chain, "distilled", {"notes": 0.3}, flops=2e12, parent="elsewhere-9", traces={})
    return {"mopd_like": mopd, "chain": chain}


def test_lineage_rows_follow_parents_and_count_each_teacher_once_per_path(results):
    rows = {(r["recipe"], r["model"]): r for r in lineage_rows(results)}
    assert not any(m.startswith("teacher") for _, m in rows)
    start = rows["mopd_like", "student"]
    assert start["FLOPs from start"] == 0 and start["stage FLOPs"] == 0 and start["mean"] == 0.5
    # MOPD: its own FLOPs (teacher scoring inside) + the two teachers' whole builds (build_flops first)
    assert rows["mopd_like", "mopd"]["FLOPs from start"] == pytest.approx(5e12 + 3e12 + 2e12)
    # the arm beside it learned from no teacher and does not continue MOPD
    assert rows["mopd_like", "mixed_rl"]["FLOPs from start"] == pytest.approx(4e12)
    # round 2 continues MOPD: its path, plus only the teacher that is new to the path
    assert rows["mopd_like", "round2"]["FLOPs from start"] == pytest.approx(6e12 + 10e12 + 7e12)
    assert rows["mopd_like", "round2"]["stage FLOPs"] == 6e12
    # a parent outside the recipe ends the path; trace SFT counts the teachers recorded before it (none here)
    assert rows["chain", "dpo"]["FLOPs from start"] == pytest.approx(1e12)
    assert rows["chain", "distilled"]["FLOPs from start"] == pytest.approx(2e12)
    assert rows["chain", "dpo"]["notes"] == 0.4 and "mean" not in rows["chain", "dpo"]


def test_lineage_markdown_and_report_section(results):
    md = lineage_markdown(lineage_rows(results))
    header = md.splitlines()[0]
    assert header.startswith("| recipe | model | add | sort | reverse | count | notes | mean |")
    assert "| mopd_like | mopd | 0.700 | 0.700 | 0.700 | 0.700 |  | 0.700 | 5.00e+12 | 1.00e+13 |" in md
    assert "| chain | sft |" in md and "| - | 0 |" in md
    full = results_markdown(results, profile="cpu", seed=0, command="test")
    assert "### Every recipe: accuracy per domain and compute" in full and md in full


def test_lineage_compute_figure_has_one_trace_per_recipe_with_a_mean(results):
    plots = pytest.importorskip("minimopd.plots")
    fig = plots.lineage_compute_figure(lineage_rows(results))
    assert [t.name for t in fig.data] == ["mopd_like"]           # notes-only recipes have no mean
    assert list(fig.data[0].y) == [0.7, 0.6, 0.8] and fig.layout.xaxis.type == "log"
    assert "change +0.200" in fig.data[0].text[0]
