"""The committed v3 evidence (experiments/results/v3) still yields the numbers RESULTS.md quotes:
`experiments/summarize.py` is the only path from those files to the tables."""
from pathlib import Path

import pytest

from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
V3 = ROOT / "experiments" / "results" / "v3"
summarize = load_script("experiments/summarize.py")


def test_calibration_means_meet_the_target(capsys):
    summarize.main(["cal", *map(str, sorted(V3.glob("cal_s*.json")))])
    out = capsys.readouterr().out
    assert out.count(" met") == 4 and "NOT met" not in out
    assert "| count | hard | 0.278 ± 0.461 |" in out


def test_rlvr_claim_over_three_seeds(capsys):
    summarize.main(["rl", *map(str, sorted(V3.glob("rl_A_s?.json")))])
    out = capsys.readouterr().out
    assert "hard   greedy +0.090 ± 0.039   runs: +0.076 +0.134 +0.059" in out
    assert "hard   t1     +0.128 ± 0.057" in out
    assert "easy   greedy +0.017 ± 0.035" in out
    assert "| add | hard | 0.723 ± 0.170 | +0.103 ± 0.052 |" in out


def test_opd_modes_per_seed_give_the_quoted_numbers(capsys):
    """RESULTS.md quotes the seed-0 (student without the skill) and seed-1 (with it) OPD tables."""
    for seed, rows in ((0, ["| student | 0.500 | 0.093 | 0.013 | 0.202 |  |",
                            "| opd_full | 0.547 | 0.203 | 0.047 | 0.266 | 0.080 |",
                            "| opd_forward | 0.943 | 0.563 | 0.240 | 0.582 | 0.479 |"]),
                       (1, ["| opd_full | 1.000 | 0.997 | 0.983 | 0.993 | 0.946 |",
                            "| grpo | 1.000 | 1.000 | 0.907 | 0.969 | 0.554 |"])):
        summarize.main(["opd", str(V3 / f"opd_modes_count_s{seed}.json")])
        out = capsys.readouterr().out
        for row in rows:
            assert row in out, (seed, row, out)


def test_opd_modes_over_three_seeds_give_the_quoted_paired_rows(capsys):
    """RESULTS.md's three-seed OPD claims: each form against its own seed's GRPO run (accuracy
    difference and compute to GRPO's final training accuracy), with the seed-2 table."""
    summarize.main(["opd", *map(str, sorted(V3.glob("opd_modes_count_s?.json")))])
    out = capsys.readouterr().out
    for row in ("| opd_sampled | +0.027, never | +0.013, 3.1x (step 24) | +0.000, 1.0x (step 75) | +0.013 ± 0.013 |",
                "| opd_full | +0.059, never | +0.024, 5.6x (step 13) | +0.048, 1.2x (step 64) | +0.044 ± 0.018 |",
                "| opd_forward | +0.376, 2.5x (step 30) | +0.028, 3.1x (step 24) | +0.173, 2.5x (step 30) | +0.192 ± 0.175 |"):
        assert row in out, row
    summarize.main(["opd", str(V3 / "opd_modes_count_s2.json")])
    out = capsys.readouterr().out
    for row in ("| student | 0.943 | 0.447 | 0.073 | 0.488 |  |", "| opd_topk | 0.983 | 0.643 | 0.130 | 0.586 | 0.191 |",
                "| opd_forward | 1.000 | 0.793 | 0.333 | 0.709 | 0.433 |"):
        assert row in out, row


def test_support_overlap_grid_gives_the_quoted_rows(capsys):
    """RESULTS.md's support-overlap grid (seed 0): forked / foreign teacher x warm-up or not x the
    four OPD forms, from the probe's JSON files."""
    summarize.main(["grid", "--by-seed", *map(str, sorted(V3.glob("opd_grid_*_s0.json")))])
    out = capsys.readouterr().out
    assert out.count("\n| forked |") == 8 and out.count("\n| foreign |") == 8
    for row in ("| forked | no | opd_full | 0 | 0.845 | -0.964 | 0.995 | 0.996 | 0.202 | 0.266 | 0.080 | 8.17e+12 |",
                "| foreign | no | opd_sampled | 0 | 1.088 | -1.204 | 0.993 | 0.997 | 0.202 | 0.192 | -0.013 |",
                "| forked | yes | opd_full | 0 | 0.579 | -0.647 | 0.999 | 0.996 | 0.384 | 0.464 | 0.331 | 9.48e+12 |",
                "| foreign | yes | opd_forward | 0 | 0.790 | -0.872 | 0.996 | 0.997 | 0.422 | 0.550 | 0.438 |"):
        assert row in out, row


def test_support_overlap_grid_seeds_1_and_2_give_the_quoted_cells(capsys):
    """RESULTS.md's grid for seeds 1 and 2 (seed 2's forked rows without warm-up are its OPD-modes
    run, whose GRPO arm the grid leaves out): 16 cells per seed, the quoted values."""
    files = [V3 / "opd_modes_count_s2.json", *sorted(V3.glob("opd_grid_*_s[12].json"))]
    summarize.main(["grid", "--by-seed", *map(str, files)])
    out = capsys.readouterr().out
    assert out.count(" | 1 | ") == 16 and out.count(" | 2 | ") == 16 and "grpo" not in out
    for row in ("| forked | no | opd_sampled | 2 | 0.418 | -0.489 | 0.997 | 0.999 | 0.488 | 0.536 |",
                "| forked | yes | opd_forward | 2 | 0.278 | -0.332 | 0.999 | 0.999 | 0.573 | 0.960 |",
                "| foreign | no | opd_full | 2 | 0.545 | -0.618 | 0.996 | 0.994 | 0.488 | 0.638 |",
                "| foreign | yes | opd_forward | 2 | 0.313 | -0.362 | 1.000 | 0.994 | 0.598 | 0.964 |",
                "| foreign | no | opd_full | 1 | 0.025 | -0.035 | 1.000 | 0.998 | 0.934 | 0.988 |",
                "| forked | yes | opd_sampled | 1 | 0.007 | -0.010 | 1.000 | 0.997 | 0.989 | 0.994 |"):
        assert row in out, row


def test_mopd_diagnosis_gives_the_quoted_rows():
    """RESULTS.md's "MOPD on v3" diagnosis table, from `experiments/mopd_diag.py`'s JSON: accuracy
    per domain, the teacher KL and the entropy of every variant as quoted."""
    import json
    runs = json.loads((V3 / "mopd_diag_s0.json").read_text())
    results = (V3.parents[2] / "RESULTS.md").read_text()
    labels = {"sampled_clipped": "(`opd_sampled`)", "mimo_alpha0_mb1": "alpha 0 (`mopd_mimo`)",
              "mimo_alpha05_mb1": "| the same, alpha 0.5 |", "full_reverse": "(`opd_full`)"}
    for name, label in labels.items():
        r = runs[name]
        line = next(ln for ln in results.splitlines() if label in ln and "→" in ln)
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:5] == [f"{r['acc'][d]:.2f}" for d in ("add", "sort", "reverse", "count")], (name, cells)
        assert cells[5] == f"{r['teacher_kl'][0]:.2f} → {r['teacher_kl'][1]:.2f}", (name, cells)
        assert cells[6] == f"{r['entropy'][0]:.3f} → {r['entropy'][1]:.3f}", (name, cells)


def _row(results: str, label: str) -> list[str]:
    line = next(ln for ln in results.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(text: str, skip: int) -> dict[str, list[str]]:
    """Every markdown table row of `text` (header rows included, rules left out): {first cell:
    the cells from column `skip` on}."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and "---" not in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[skip:]
    return rows


def _seed_rows(text: str) -> dict[tuple[int, str], list[str]]:
    """The rows of `text`'s per-seed tables (first cell a seed): {(seed, model label as written):
    the cells after the label, bold markers stripped}."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            rows[(int(cells[0]), cells[1])] = [c.strip("*") for c in cells[2:]]
    return rows


def _domain_accuracy(record: dict, stage: str) -> dict[str, float]:
    """A lineage results.json recipe record's per-domain accuracy of `stage`, weighted by items
    (the library's `EvalResult.accuracy`), for the domains that stage was scored on."""
    from minimopd.evaluation import EvalResult
    ev = EvalResult(record["evals"][stage])
    return {d: ev.accuracy(d) for d in dict.fromkeys(r["domain"] for r in ev.rows)}


def test_progressive_probe_gives_the_quoted_rows():
    """RESULTS.md's progressive-distillation tables, from `experiments/progressive_probe.py`'s JSON."""
    import json
    run = json.loads((V3 / "progressive_count_s0.json").read_text())
    results = (V3.parents[2] / "RESULTS.md").read_text()
    (acc,) = run["tables"]["count: accuracy and gap recovery (greedy, held-out)"]
    for seed, suffix in ((0, ""), (1, " (seed 1)"), (2, " (seed 2)")):
        (rows,) = json.loads((V3 / f"progressive_count_s{seed}.json").read_text())["tables"][
            "count: accuracy and gap recovery (greedy, held-out)"]
        for mode, label in (("opd_full", "full reverse KL"), ("opd_forward", "forward KL")):
            for arm in ("final", "progressive"):
                cells = _row(results, f"{label}, `{arm}`{suffix}")
                assert cells[1:3] == [f"{rows[f'{mode}:{arm}']:.3f}", f"{rows[f'{mode}:{arm} recovery']:.2f}"], cells
    overlap = {r["teacher"]: r for r in run["tables"]["support overlap with the student's samples (T=1)"]}
    for label, teacher in (("step 50 of 500", "teacher@0.1"), ("step 100 of 500", "teacher@0.2"),
                           ("final (step 500)", "teacher@1")):
        final = acc.get("teacher accuracy", acc.get("teacher (teacher@1)"))   # the JSON's layout before d33987b
        assert _row(results, label)[1:4] == [f"{acc[teacher] if teacher != 'teacher@1' else final:.3f}",
                                             f"{overlap[teacher]['reverse_kl']:.3f}",
                                             f"{overlap[teacher]['teacher_logprob']:.3f}"]


def test_mopd_recipe_gives_the_quoted_rows():
    """RESULTS.md's "MOPD as a recipe" tables of its first evaluation (seed 0, 100 items per
    level), from the report `minimopd lineage --recipes mopd` wrote."""
    report = (V3 / "lineage_mopd_s0.md").read_text()
    results = (V3.parents[2] / "RESULTS.md").read_text()
    results = results[results.index("### First evaluation: 100 items per level"):]
    head = next(ln for ln in report.splitlines() if ln.startswith("| domain | student |"))
    keys = [c.strip() for c in head.strip("|").split("|")]
    rows = {r[0]: dict(zip(keys, r)) for r in (_row(report, d) for d in ("add", "sort", "reverse", "count"))}
    for stage, label in (("mopd", "`mopd`: exact"), ("mopd_forward", "`mopd_forward`: full"), ("mixed_rl", "`mixed_rl`: GRPO")):
        line = next(ln for ln in results.splitlines() if ln.startswith(f"| {label}"))
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert cells[1:5] == [rows[d][stage] for d in ("add", "sort", "reverse", "count")], (stage, cells)
        recovery = _row(results, f"`{stage}`" + (" (reverse KL)" if stage == "mopd" else ""))
        assert recovery[1:5] == [f"{float(rows[d][f'{stage} recovery']):.2f}" for d in ("add", "sort", "reverse", "count")]


def test_mopd_over_three_seeds_gives_the_quoted_claim(capsys):
    """RESULTS.md's MOPD claim: the lead over mixed RL on each seed (300 items per level), the
    means over seeds and the gap recovery, from the committed lineage results."""
    mopd_seeds = load_script("experiments/mopd_seeds.py")
    mopd_seeds.main([*map(str, sorted(V3.glob("lineage_mopd_eval300_s?.json"))),
                     "--selection-flops", "5.56e12", "5.56e12", "5.54e12"])
    out = capsys.readouterr().out
    for row in ("| 0 | 0.646 | 0.703 | 0.791 | 0.666 | +0.037 | 3.4 | 2.71e+13 | 2.94e+13 |",
                "| 1 | 0.831 | 0.905 | 0.907 | 0.877 | +0.028 | 3.8 | 2.71e+13 | 3.35e+13 |",
                "| 2 | 0.790 | 0.870 | 0.871 | 0.831 | +0.039 | 4.7 | 2.71e+13 | 3.08e+13 |",
                "| mopd | 0.930 ± 0.031 | 0.822 ± 0.132 | 0.903 ± 0.119 | 0.649 ± 0.356 | 0.826 ± 0.108 |",
                "| `mopd` | 0.279 ± 0.343 | 0.100 ± 0.157 | 0.651 ± 0.202 | 0.473 ± 0.444 | 0.376 ± 0.098 |",
                "| `mixed_rl` | 0.397 ± 0.184 | 0.209 ± 0.187 | 0.243 ± 0.099 | 0.252 ± 0.313 | 0.275 ± 0.135 |"):
        assert row in out, (row, out)


def test_preference_claims_over_seeds_give_the_quoted_rows(capsys):
    """RESULTS.md "Over seeds": the reward model against its ceiling and PPO at beta 0.02 / 0.1."""
    summarize.main(["pref", *map(str, sorted(V3.glob("overoptimisation_s?.json")))])
    out = capsys.readouterr().out
    assert "| expected 0.805 ± 0.005 | ceiling 0.857 ± 0.002 | below the ceiling 0.052 ± 0.004 |" in out
    assert ("| beta 0.02 | 3 | +0.052 ± 0.029 | 0.065 ± 0.013 | -0.124 ± 0.030 | 0.175 ± 0.019 | "
            "-0.007 ± 0.091 |") in out
    assert "| beta 0.1 | 3 | +0.091 ± 0.013 | 0.033 ± 0.008 | -0.012 ± 0.013 | 0.033 ± 0.007 | +0.115 ± 0.054 |" in out


def test_dpo_against_ppo_over_seeds_gives_the_quoted_rows(capsys):
    """RESULTS.md "DPO against PPO ... over three seeds": gains, KL and greedy gold per model."""
    summarize.main(["dpo", *map(str, sorted(V3.glob("dpo_vs_ppo_s?.json")))])
    out = capsys.readouterr().out
    assert "| ppo |  | 0.1 | 1e-05 | 3 | +0.142 ± 0.024 | 0.035 ± 0.010 | +0.115 ± 0.054 |" in out
    assert "| dpo | ranked | 0.1 | 2e-05 | 3 | +0.104 ± 0.026 | 0.006 ± 0.001 | +0.115 ± 0.061 |" in out
    assert "| dpo | delta | 0.1 | 2e-05 | 3 | +0.027 ± 0.026 | 0.001 ± 0.001 | -0.057 ± 0.032 |" in out


def test_r1_zero_over_three_seeds_gives_the_quoted_rows(capsys):
    """RESULTS.md "R1-Zero over three seeds": per-seed rows and the gain, from the lineage JSONs."""
    files = [V3 / "lineage_r1_zero_300_s0.json", V3 / "lineage_r1_zero_s1.json", V3 / "lineage_r1_zero_s2.json"]
    summarize.main(["r1zero", *map(str, files)])
    out = capsys.readouterr().out
    assert ("| 0 (300 per level) | 0.000 / 0.029 | 0.048 / 0.999 | +0.048 | 0.363 / 0.183 / 0.033 | "
            "0.046 -> 0.076 | 0.487 -> 0.991 | 63.7 -> 36.7 |") in out
    assert "| 2 (300 per level) | 0.031 / 0.186 | 0.070 / 1.000 | +0.039 |" in out
    assert "accuracy gain over 3 seed(s): +0.033 ± 0.019" in out


def test_tulu3_with_dpo_gives_the_quoted_rows(capsys):
    """RESULTS.md "`tulu3` with its DPO stage": the stages' held-out accuracy, from the lineage JSON."""
    summarize.main(["stages", "--recipe", "tulu3", str(V3 / "lineage_tulu3_dpo_s0.json")])
    out = capsys.readouterr().out
    assert "300 items per level" in out
    assert "| dpo | 0.649 | 0.649 | +0.003 |" in out and "| rlvr | 0.667 | 0.667 | +0.021 |" in out
    summarize.main(["stages", "--recipe", "tulu3", *(str(V3 / f"lineage_tulu3_dpo_s{s}.json") for s in (0, 1))])
    out = capsys.readouterr().out
    assert "| dpo | 0.649 | 0.837 | 0.743 ± 0.133 | +0.005 ± 0.002 |" in out
    assert "| rlvr | 0.667 | 0.886 | 0.776 ± 0.155 | +0.038 ± 0.024 |" in out
    with pytest.raises(SystemExit, match="hold no 'r1' run"):
        summarize.main(["stages", "--recipe", "r1", str(V3 / "lineage_tulu3_dpo_s0.json")])


def test_llama3_and_olmo3_delta_over_three_seeds_give_the_quoted_rows(capsys):
    """RESULTS.md "`llama3` and `olmo3_delta` over three seeds": stage scores per seed and changes."""
    files = [str(V3 / f"lineage_pref300_s{s}.json") for s in (0, 1, 2)]
    summarize.main(["stages", "--recipe", "llama3", *files])
    out = capsys.readouterr().out
    assert "| rs_round1 | 0.947 | 0.901 | 0.944 | 0.931 ± 0.026 | +0.106 ± 0.040 |" in out
    assert "| rs_round2 | 0.953 | 0.949 | 0.950 | 0.951 ± 0.002 |" in out
    summarize.main(["stages", "--recipe", "olmo3_delta", *files])
    out = capsys.readouterr().out
    assert "| dpo_delta | 0.774 | 0.706 | 0.835 | 0.772 ± 0.065 | -0.053 ± 0.029 |" in out
    assert "| dpo_ranked | 0.950 | 0.937 | 0.943 | 0.943 ± 0.007 | +0.119 ± 0.060 |" in out


def test_r1_seed_0_at_300_items_gives_the_quoted_row(capsys):
    """RESULTS.md's three-seed R1 table, seed 0's row."""
    summarize.main(["stages", "--recipe", "r1", str(V3 / "lineage_r1_300_s0.json")])
    out = capsys.readouterr().out
    for stage, acc in (("cold_start", "0.386"), ("reasoning_rl", "0.418"), ("rejection_sft", "0.423"),
                       ("final_rl", "0.420"), ("distilled_small", "0.385"), ("rl_small", "0.476")):
        assert f"| {stage} | {acc} |" in out


def test_lineage_table_over_seeds_counts_teachers_on_the_mopd_path(capsys):
    """`summarize.py lineage` on the three MOPD seeds: every student model once with its seeds,
    and the compute from the student along each path, the four specialists' training counted for
    the MOPD arms only (mixed RL learned from no teacher)."""
    summarize.main(["lineage", *map(str, sorted(V3.glob("lineage_mopd_eval300_s?.json")))])
    out = capsys.readouterr().out
    assert "| mopd | student | 3 | 0.895 ± 0.056 | 0.805 ± 0.130 | 0.782 ± 0.169 | 0.541 ± 0.369 | 0.756 ± 0.097 | 0 |" in out
    assert "| mopd | mopd | 3 |" in out and "| 0.826 ± 0.108 | 8.27e+13 |" in out
    assert "| mopd | mixed_rl | 3 |" in out and "| 0.791 ± 0.111 | 2.57e+13 |" in out
    assert "teacher" not in out.split("\n\n", 1)[1]


def test_frontier_miniatures_give_the_quoted_rows(capsys):
    """RESULTS.md's frontier miniatures (three seeds): the V4 and MiMo students, mixed RL, the
    compute from the student with the RL'd specialists' training counted, and the per-seed table
    with V4 - MiMo in evaluation standard errors."""
    import json
    import math
    summarize.main(["lineage", *map(str, sorted(V3.glob("lineage_frontier_s?.json")))])
    out = capsys.readouterr().out
    assert "over seeds 0, 1, 2" in out
    for row in ("| deepseek_v4 | student | 3 | 0.895 ± 0.056 | 0.805 ± 0.130 | 0.782 ± 0.169 | 0.541 ± 0.369 | 0.756 ± 0.097 | 0 |",
                "| deepseek_v4 | mopd | 3 | 0.915 ± 0.049 | 0.812 ± 0.123 | 0.907 ± 0.119 | 0.646 ± 0.354 | 0.820 ± 0.105 | 2.19e+14 |",
                "| mimo_v2_flash | mopd | 3 | 0.889 ± 0.064 | 0.765 ± 0.133 | 0.815 ± 0.126 | 0.593 ± 0.359 | 0.765 ± 0.106 | 2.19e+14 |",
                "| kimi_k25 | mixed_rl | 3 | 0.927 ± 0.053 | 0.830 ± 0.151 | 0.827 ± 0.153 | 0.577 ± 0.380 | 0.791 ± 0.111 | 2.75e+13 |"):
        assert row in out, row
    results = (V3.parents[2] / "RESULTS.md").read_text()
    results = results[results.index("## The frontier miniatures"):results.index("### `glm5`: RL staged")]
    mopd = {s: json.loads((V3 / f"lineage_mopd_eval300_s{s}.json").read_text()) for s in (0, 1, 2)}
    for seed in (0, 1, 2):
        run = json.loads((V3 / f"lineage_frontier_s{seed}.json").read_text())
        acc = {name: {r["stage"]: r["acc"] for r in rec["table"]} for name, rec in run["recipes"].items()}
        v4, mimo = acc["deepseek_v4"]["mopd"], acc["mimo_v2_flash"]["mopd"]
        se = math.sqrt((v4 * (1 - v4) + mimo * (1 - mimo)) / 3600)
        routed = {r["stage"]: r["acc"] for r in mopd[seed]["recipes"]["mopd"]["table"]}["mopd"]
        assert _row(results, str(seed)) == [str(seed), f"{acc['deepseek_v4']['student']:.3f}", f"{v4:.3f}",
                                            f"{mimo:.3f}", f"{acc['kimi_k25']['mixed_rl']:.3f}", f"{routed:.3f}",
                                            f"{v4 - mimo:+.3f}", f"{(v4 - mimo) / se:.1f}"]


def test_glm5_against_kimi_gives_the_quoted_rows():
    """RESULTS.md's `glm5` table (three seeds): the mean accuracy after each staged RL run, the
    `kimi_k25` mixed run of the same seed, and the RL runs' FLOPs without the prompt selection."""
    import json
    results = (V3.parents[2] / "RESULTS.md").read_text()
    results = results[results.index("### `glm5`: RL staged by capability"):]
    kimi_files = {0: "lineage_frontier_s0.json", 1: "lineage_frontier_s1.json", 2: "lineage_kimi_s2.json"}
    for seed in (0, 1, 2):
        glm5 = json.loads((V3 / f"lineage_glm5_s{seed}.json").read_text())["recipes"]["glm5"]
        kimi = json.loads((V3 / kimi_files[seed]).read_text())["recipes"]["kimi_k25"]
        acc = {r["stage"]: r["acc"] for r in glm5["table"]}
        k = {r["stage"]: r["acc"] for r in kimi["table"]}["mixed_rl"]
        stages = [f"rl_{d}" for d in ("add", "sort", "reverse", "count")]
        flops = sum(glm5["info"][s].get("rl_flops", glm5["info"][s]["flops"]) for s in stages)
        kflops = kimi["info"]["mixed_rl"].get("rl_flops", kimi["info"]["mixed_rl"]["flops"])
        cells = _row(results, str(seed))
        path = " / ".join(f"{acc[s]:.3f}" for s in stages[:3]) + f" / **{acc['rl_count']:.3f}**"
        assert cells == [str(seed), f"{acc['student']:.3f}", path, f"{k:.3f}", f"{acc['rl_count'] - k:+.3f}",
                         f"{flops / 1e13:.2f}e13 / {kflops / 1e13:.2f}e13"], cells


def test_trace_sft_and_the_two_recipes_give_the_quoted_rows():
    """RESULTS.md's `deepseek_v32` / `mai_thinking1` table: each seed's lineage runs of the two
    recipes (the stages' accuracy per domain, mean and FLOPs; the teachers' on their own domain)
    and experiments/trace_sft_probe.py's JSON on seeds 0, 1 and 2."""
    import json
    results = (V3.parents[2] / "RESULTS.md").read_text()
    results = results[results.index("### `deepseek_v32` and `mai_thinking1`"):results.index("### `nemotron3_ultra`")]
    rows = _seed_rows(results)
    doms = ("add", "sort", "reverse", "count")
    for name, file, seeds, quoted, teachers in (
            ("deepseek_v32", "v32", (0, 1, 2), {"distill_sft": "**`deepseek_v32`: SFT on the teachers' traces**",
                                                "mixed_rl": "`deepseek_v32`: then mixed GRPO"},
             "its SFT + RL specialists, each on its own domain"),
            ("mai_thinking1", "mai", (0, 1, 2), {"distill_sft": "`mai_thinking1`: SFT on the climbs' traces",
                                                 "final_rl": "`mai_thinking1`: then mixed GRPO"},
             "`mai_thinking1`: RL climbs, each on its own domain")):
        for seed in seeds:
            rec = json.loads((V3 / f"lineage_{file}_s{seed}.json").read_text())["recipes"][name]
            acc = {r["stage"]: r["acc"] for r in rec["table"]}
            for stage, label in quoted.items():
                got, per = rows[(seed, label)], _domain_accuracy(rec, stage)
                assert got[:4] == [f"{per[d]:.3f}" for d in doms], (seed, got)
                assert got[4] == f"{acc[stage]:.3f}" and got[5] == f"{rec['info'][stage]['flops'] / 1e13:.2f}e13", got
            got = rows[(seed, teachers)]
            assert got[:4] == [f"{_domain_accuracy(rec, 'teacher_' + d)[d]:.3f}" for d in doms], (seed, got)
            assert rows[(seed, "student (reasoning SFT)")][4] == f"{acc['student']:.3f}"
    for seed in (0, 1, 2):
        probe = json.loads((V3 / f"trace_sft_s{seed}.json").read_text())
        got = rows[(seed, "trace SFT from the SFT-only specialists")]
        assert got[:5] == [f"{probe['trace_sft'][d]:.3f}" for d in (*doms, "mean")], got
        assert got[5] == f"{probe['info']['flops'] / 1e13:.2f}e13"
        assert rows[(seed, "student (reasoning SFT)")][4] == f"{probe['student']['mean']:.3f}"


def test_reverse_blindspot_gives_the_quoted_numbers():
    """RESULTS.md's seed-1 `reverse` diagnosis: every figure it quotes is the committed runs' (the
    diagnosis, `mai_thinking1`'s and `deepseek_v32`'s of seed 1), the per-length accuracies add up
    to the recipe's medium accuracy, and the script's step reader finds the first wrong step."""
    import json
    blind = load_script("experiments/reverse_blindspot.py")
    step = blind.first_wrong_step
    assert step("abcd", "<think>4:d 3:c 2:b 1:a -> dcba</think>") is None
    assert step("abcd", "<think>4:d 3:b 2:b 1:a -> dbba</think>") == 3        # a wrong letter
    assert step("abcd", "<think>4:d 3:c 1:a -> dca</think>") == 2              # a skipped position
    assert step("abcd", "<think>4:d 3:c -> dc</think>") == 2                   # stops early
    assert step("abcd", "<think>5:d 4:d -> dd</think>") == 4                   # outside the word
    results = (ROOT / "RESULTS.md").read_text()
    text = " ".join(results[results.index("- **Seed 1's `reverse`: a blind spot"):].split("\n- ")[0].split())
    run = json.loads((V3 / "reverse_blindspot_s1.json").read_text())
    greedy, sampled, n = run["greedy_by_length"], run["sampled_8_9_letters"], run["items_by_length"]
    from minimopd.evaluation import EvalResult
    mai = json.loads((V3 / "lineage_mai_s1.json").read_text())["recipes"]["mai_thinking1"]
    level = {stage: {d: EvalResult(mai["evals"][stage]).accuracy("reverse", d) for d in ("medium", "hard")}
             for stage in ("student", "teacher_reverse", "distill_sft", "final_rl")}
    for name, stage in (("student", "student"), ("climb", "teacher_reverse")):   # lengths add up to the level
        mean = sum(greedy[name][k] * n[k] for k in n) / sum(n.values())
        assert abs(mean - level[stage]["medium"]) < 0.002, (name, mean, level[stage])
    assert sum(n.values()) == 300 and f"greedy on the {sum(n.values())} medium items" in text
    assert "(student {:.2f}, climb {:.2f}, trace SFT {:.2f}, final RL {:.2f})".format(
        *(level[s]["medium"] for s in level)) in text
    assert "hard items rise {:.2f} -> {:.2f} (climb) -> {:.2f} (trace SFT)".format(
        level["student"]["hard"], level["teacher_reverse"]["hard"], level["distill_sft"]["hard"]) in text
    assert f"stops at {_domain_accuracy(mai, 'final_rl')['reverse']:.2f} on seed 1's `reverse`" in text
    v32 = json.loads((V3 / "lineage_v32_s1.json").read_text())["recipes"]["deepseek_v32"]
    assert _domain_accuracy(v32, "distill_sft")["reverse"] == 1.0 and "reaches 1.000 on seed 1's `reverse`" in text
    assert f"10-letter words ({greedy['student']['10']:.3f}, {greedy['climb']['10']:.3f})" in text
    assert (f"({greedy['student']['8']:.3f} / {greedy['student']['9']:.3f} and {greedy['climb']['8']:.3f} / "
            f"{greedy['climb']['9']:.3f})") in text
    assert all(v == 1.0 for v in greedy["sft_specialist"].values()) and "1.000 on every length" in text
    student, climb = sampled["student"], sampled["climb"]
    assert f"on the {student['items']} with 8 or 9 letters" in text and run["k"] == 8
    assert f"right {100 * student['t1_acc']:.1f}% of the time and pass@8 is {student['pass@8']:.3f}" in text
    assert round(10 * (1 - student["pass@8"])) == 9 and "nine in ten of these prompts" in text
    assert f"(T=1 {climb['t1_acc']:.3f}, pass@8 {climb['pass@8']:.3f})" in text
    for rec in (student, climb):           # "96% of the failed samples first go wrong at the fifth step written"
        assert rec["failed"] == sum(rec["first_wrong_step"].values())
        middle = rec["first_wrong_step"]["8 letters, position 4"] + rec["first_wrong_step"]["9 letters, position 5"]
        assert round(100 * middle / rec["failed"]) == 96, (middle, rec["failed"])
    assert "96% of the failed samples" in text and "(position 4 of 8, position 5 of 9)" in text
    # the next bullet: every other recipe of seed 1 on those items, and the student at the slip
    text = " ".join(results[results.index("- **On-policy distillation does not repair it either"):].split("\n- ")[0].split())

    def medium(file, recipe, stage):
        return EvalResult(json.loads((V3 / file).read_text())["recipes"][recipe]["evals"][stage]).accuracy(
            "reverse", "medium")

    quoted = {"`kimi_k25`'s mixed GRPO": ("lineage_frontier_s1.json", "kimi_k25", "mixed_rl"),
              "`glm5`'s staged RL": ("lineage_glm5_s1.json", "glm5", "rl_count"),
              "MiMo's sampled-token MOPD": ("lineage_frontier_s1.json", "mimo_v2_flash", "mopd"),
              "`mopd`": ("lineage_mopd_eval300_s1.json", "mopd", "mopd"),
              "`deepseek_v4`'s full reverse KL": ("lineage_frontier_s1.json", "deepseek_v4", "mopd"),
              "the forward-KL `mopd_forward`": ("lineage_mopd_eval300_s1.json", "mopd", "mopd_forward")}
    for label, where in quoted.items():
        assert f"{label} {medium(*where):.3f}" in text, label
    nemo = [medium("lineage_nemotron_s1.json", "nemotron3_ultra", s) for s in ("warmup_sft", "mopd_round1", "mopd_round2")]
    assert f"two rounds {min(nemo):.3f}-{max(nemo):.3f})" in text
    slip, sure = run["at_the_slip"]["student"], run["at_the_slip"]["sft_specialist"]["p_right"]
    assert (f"right letter {slip['p_right']:.3f}, of its own top letter {slip['p_top']:.3f}" in text
            and f"is certain ({sure:.4f})" in text)
    assert (f"reverse KL to that specialist is {slip['reverse_kl']:.1f} nats there, with a gradient of norm "
            f"{slip['reverse_grad_norm']:.2f}" in text
            and f"(forward KL: {slip['forward_kl']:.1f} nats, {slip['forward_grad_norm']:.2f})" in text)
    opd = json.loads((V3 / "blindspot_opd_s1.json").read_text())
    low, high = opd["runs"]["recipes_lr"], opd["runs"]["sft_lr"]
    assert opd["steps"] == 100 and (low["lr"], high["lr"]) == (2e-4, 2e-3) and "100 steps" in text
    assert (f"hard items go {level['student']['hard']:.3f} -> {low['levels']['hard']:.3f} and the mean per-token KL "
            f"{low['teacher_kl'][0]:.3f} -> {low['teacher_kl'][1]:.3f}" in text)
    assert (f"stay at {low['medium_by_length']['8']:.3f} and {low['medium_by_length']['9']:.3f} "
            f"(medium {low['levels']['medium']:.3f})" in text)
    assert (f"(easy {high['levels']['easy']:.3f}, hard {high['levels']['hard']:.3f}) and those words fall to "
            f"{high['medium_by_length']['8']:.3f} and {high['medium_by_length']['9']:.3f}" in text)


def test_nemotron3_ultra_gives_the_quoted_rows():
    """RESULTS.md's `nemotron3_ultra` table: per seed, each student stage's accuracy per domain, its
    mean and FLOPs, its specialists' accuracy on their own domains, and the round 2 that
    `experiments/nemotron_refresh_probe.py` ran from round 1's specialists, from the committed runs."""
    import json
    results = (V3.parents[2] / "RESULTS.md").read_text()
    results = results[results.index("### `nemotron3_ultra`"):results.index("### More SFT or on-policy distillation")]
    rows = _seed_rows(results)
    doms = ("add", "sort", "reverse", "count")
    seeds = sorted({seed for seed, _ in rows})
    assert seeds == [0, 1, 2] and all((V3 / f"lineage_nemotron_s{seed}.json").exists() for seed in seeds)
    same_minus_refreshed, totals, final = [], [], {}
    for seed in seeds:
        rec = json.loads((V3 / f"lineage_nemotron_s{seed}.json").read_text())["recipes"]["nemotron3_ultra"]
        acc = {r["stage"]: r["acc"] for r in rec["table"]}
        for stage, label in (("student", "student (reasoning SFT)"), ("rlvr", "`rlvr`: mixed GRPO"),
                             ("warmup_sft", "warm-up SFT on the specialists' traces"),
                             ("mopd_round1", "MOPD round 1 (sampled-token)"),
                             ("mopd_round2", "**MOPD round 2, refreshed specialists**")):
            got, per = rows[(seed, label)], _domain_accuracy(rec, stage)
            assert got[:5] == [f"{per[d]:.3f}" for d in doms] + [f"{acc[stage]:.3f}"], (seed, label, got)
            if stage != "student":
                assert got[5] == f"{rec['info'][stage]['flops'] / 1e13:.2f}e13", got
        probe = json.loads((V3 / f"nemotron_refresh_s{seed}.json").read_text())
        assert probe["eval_per_level"] == 300 and probe["round2_round1_teachers"]["path"].startswith("nemotron_mopd2_")
        same = probe["round2_round1_teachers"]
        got = rows[(seed, "MOPD round 2 from round 1's specialists (probe)")]
        assert got[:6] == [f"{same[d]:.3f}" for d in doms] + [f"{same['mean']:.3f}", f"{same['flops'] / 1e13:.2f}e13"]
        final[seed] = acc["mopd_round2"]
        same_minus_refreshed.append(same["mean"] - final[seed])
        flops = {k: v["flops"] for k, v in rec["info"].items() if v.get("flops")}
        refresh = sum(flops[f"teacher_{d}_round2"] for d in doms)
        totals.append((sum(flops.values()), sum(flops.values()) - refresh, flops["rlvr"], refresh))
        teachers = rows[(seed, "its specialists, each on its own domain (round 1 / round 2)")]
        round1 = {d: _domain_accuracy(rec, f"teacher_{d}")[d] for d in doms}
        round2 = {d: _domain_accuracy(rec, f"teacher_{d}_round2")[d] for d in doms}
        assert teachers[:4] == [f"{round1[d]:.3f} / {round2[d]:.3f}" for d in doms], (seed, teachers)
    import statistics
    text = " ".join(results.split())

    def others(file, recipe, stage):
        recs = json.loads((V3 / file).read_text())["recipes"]
        return {r["stage"]: r["acc"] for r in recs[recipe]["table"]}[stage]

    for name, quoted, (file, recipe, stage) in (
            ("mimo", "{:+.3f} ± {:.3f} above it", ("lineage_frontier_s{}.json", "mimo_v2_flash", "mopd")),
            ("v4", "{:+.3f} ± {:.3f} above `deepseek_v4`", ("lineage_frontier_s{}.json", "deepseek_v4", "mopd")),
            ("forward", "`mopd_forward` ({:+.3f} ± {:.3f}:", ("lineage_mopd_eval300_s{}.json", "mopd", "mopd_forward")),
            ("v32", "above), {:.3f} ± {:.3f} above", ("lineage_v32_s{}.json", "deepseek_v32", "distill_sft"))):
        diff = [final[seed] - others(file.format(seed), recipe, stage) for seed in seeds]
        if name == "v32":
            diff = [-d for d in diff]
        assert quoted.format(statistics.mean(diff), statistics.stdev(diff)) in text, (name, diff)
    assert f"({statistics.mean(final.values()):.3f} ± {statistics.stdev(final.values()):.3f})" in text
    mean, sd = statistics.mean(same_minus_refreshed), statistics.stdev(same_minus_refreshed)
    assert f"difference {mean:+.3f} ± {sd:.3f}" in text, (mean, sd)
    total, kept = [t / 1e14 for t, _, _, _ in totals], [k / 1e14 for _, k, _, _ in totals]
    assert {f"{t:.1f}" for t in total} == {"2.0"} and "2.0e14 FLOPs from the student on every seed" in text
    ratio = [t / r for t, _, r, _ in totals] + [k / r for _, k, r, _ in totals]
    assert (f"{min(ratio[:3]):.1f}-{max(ratio[:3]):.1f}x the mixed RL run" in text
            and f"{min(kept):.2f}-{max(kept):.2f}e14 ({min(ratio[3:]):.1f}-{max(ratio[3:]):.1f}x)" in text), ratio
    assert {f"{r / 1e13:.1f}" for _, _, _, r in totals} == {"5.6"} and "(5.6e13 FLOPs, twice a MOPD round)" in text


def test_sft_then_opd_gives_the_quoted_rows(capsys):
    """RESULTS.md's "More SFT or on-policy distillation": summarize.py's mean ± sd over the three
    committed seeds, row for row, and seed 0's learning-rate probe."""
    import json
    summarize.main(["sftopd", *map(str, sorted(V3.glob("sft_then_opd_s?.json")))])
    out = capsys.readouterr().out
    assert "mean ± sd over seeds 0, 1, 2 (300 items per level)" in out
    got = _table(out, skip=2)          # summarize.py's rows: label, n, then the cells
    results = (V3.parents[2] / "RESULTS.md").read_text()
    results = results[results.index("### More SFT or on-policy distillation, a quarter"):
                      results.index("### More SFT or on-policy distillation, after")]
    quoted = _table(results, skip=1)
    for ours, label in (("student", "student (reasoning SFT)"), ("sft x0.25 (start)", "trace SFT x0.25 (the start)"),
                        ("sft x0.5", "trace SFT x0.5"), ("sft x1", "trace SFT x1"),
                        ("+ opd full x100", "start + OPD, full reverse KL, 100 steps"),
                        ("+ opd forward x100", "start + OPD, forward KL, 100 steps")):
        assert quoted[label][:5] == got[ours][:5], (label, quoted[label], got[ours])
        if got[ours][5]:
            assert float(got[ours][5]) == 0 or f"{float(got[ours][5]) / 1e13:.2f}e13" == quoted[label][5]
    assert got["+ opd full x100"][6] == "0.212 ± 0.207" and quoted["start + OPD, full reverse KL, 100 steps"][6] == "0.21 ± 0.21"
    assert got["+ opd forward x100"][6] == "0.216 ± 0.199"
    for lr, full in (("2e-3", 0.391), ("6e-4", 0.693)):
        rows = {r["label"].split(" x100")[0]: r for r in json.loads((V3 / f"sft_then_opd_s0_lr{lr}.json").read_text())["rows"]}
        assert round(rows["+ opd full"]["mean"], 3) == full and f"{full:.3f} at {lr}" in " ".join(results.split())


def test_sft_then_opd_after_the_complete_sft_gives_the_quoted_rows(capsys):
    """RESULTS.md's "... after the complete trace SFT": summarize.py's mean ± sd over the three
    committed seeds, row for row, and the per-seed table from the same files."""
    import json
    files = sorted(V3.glob("sft_then_opd_plateau_s?.json"))
    summarize.main(["sftopd", *map(str, files)])
    out = capsys.readouterr().out
    assert "mean ± sd over seeds 0, 1, 2 (300 items per level)" in out
    got = _table(out, skip=2)          # summarize.py's rows: label, n, then the cells
    results = (V3.parents[2] / "RESULTS.md").read_text()
    results = results[results.index("### More SFT or on-policy distillation, after"):results.index("## MOPD on v3: four specialists")]
    quoted = _table(results, skip=1)
    for ours, label in (("sft x1 (start)", "trace SFT x1 (the start)"), ("sft x2", "trace SFT x2"),
                        ("+ opd full x100", "start + OPD, full reverse KL, 100 steps"),
                        ("+ opd forward x100", "start + OPD, forward KL, 100 steps")):
        assert quoted[label][:5] == got[ours][:5], (label, quoted[label], got[ours])
        assert float(got[ours][5]) == 0 == float(quoted[label][5]) or \
            f"{float(got[ours][5]) / 1e13:.2f}e13" == quoted[label][5]
    for f in files:
        data = json.loads(f.read_text())
        rows = {r["label"]: r["mean"] for r in data["rows"]}
        start = rows["sft x1 (start)"]
        line = quoted[str(data["seed"])]
        assert line[:4] == [f"{start:.3f}", *(f"{rows[k] - start:+.3f}" for k in
                                              ("sft x2", "+ opd full x100", "+ opd forward x100"))], line
