"""Mean and spread over seeds of diagnosis tables and of RL before/after changes.

    python experiments/summarize.py cal  cal_s0.json cal_s1.json cal_s2.json [--form reasoning]
    python experiments/summarize.py rl   rl_A_s0.json rl_A_s1.json rl_A_s2.json
    python experiments/summarize.py opd  opd_modes_count_s0.json opd_modes_count_s1.json
    python experiments/summarize.py grid opd_grid_*.json
    python experiments/summarize.py pref overoptimisation_s0.json overoptimisation_s1.json
    python experiments/summarize.py dpo  dpo_vs_ppo_s0.json dpo_vs_ppo_s1.json
    python experiments/summarize.py r1zero lineage_r1_zero_s0.json lineage_r1_zero_s1.json
    python experiments/summarize.py stages --recipe llama3 lineage_pref_s0.json lineage_pref_s1.json
    python experiments/summarize.py lineage lineage_frontier_s0.json lineage_frontier_s1.json
    python experiments/summarize.py sftopd sft_then_opd_s0.json sft_then_opd_s1.json

`cal` reads `experiments/calibrate.py --json` files and prints, per domain and level, greedy /
T=1 / pass@8 / learnable fraction as mean ± sample standard deviation over the files, plus the
calibration check (easy >= 0.6, hard <= easy - 0.15, pass@8 hard above greedy hard by more
than 0.05) on the means.
`opd` reads `experiments/opd_probe.py --json` files and prints each stage's greedy accuracy per
level and its gap recovery, mean ± spread over files.
`grid` reads `experiments/opd_probe.py --json` files of the support-overlap grid (`--teacher`,
`--warmup`) and prints one row per (teacher, warm-up, mode): the overlap the distillation started
from, the final accuracy and the compute (the warm-up's, teacher sampling included, plus the
run's), mean ± spread over the seeds of that cell (`--by-seed`: one row per seed).
`rl` reads `experiments/rl_probe.py --json` files and prints the change (after - before) of
greedy and T=1 accuracy per domain and level, mean ± spread over files, and the issue's RLVR
target on the average over domains.
`pref` reads `experiments/overoptimisation.py --json` files and prints the reward model's
held-out accuracy against its noise ceiling, and per KL coefficient PPO's gold gain at its peak,
what it kept by the end, the KL there and the greedy gold gain over the SFT model, mean ± spread
over the files (seeds).
`dpo` reads `experiments/dpo_vs_ppo.py --json` files and prints, per model (PPO at each KL
coefficient, DPO per pair set and beta), the gold gain on its own samples over the SFT model's,
the KL to the reference and the greedy gold change, mean ± spread over the seeds that ran it.
`r1zero` reads `minimopd lineage --recipes r1_zero` results.json files and prints, per seed, the
base's and the R1-Zero model's held-out greedy accuracy and format rate, the accuracy gain, the
`count` levels (the one domain the base reaches), and the training curve's first and last 10%
(accuracy, format, length); then the gain as mean ± spread over the seeds.
`stages` reads `minimopd lineage` results.json files holding `--recipe` and prints each
evaluated stage's held-out greedy score (accuracy, or gold on notes) per seed, its mean ± spread
and its change from the recipe's first stage, mean ± spread (a stage some files lack is left out).
`lineage` reads `minimopd lineage` results.json files (one per seed) and prints the report's
lineage table (`report.lineage_rows`: every recipe's models, accuracy per domain, FLOPs from the
recipe's start) as mean ± spread over the seeds that ran each model.
`sftopd` reads `experiments/sft_then_opd.py --json` files and prints each row (the student, the
trace SFT at each length, OPD from the shortest) with its accuracy, its compute from the start and,
for OPD, the ratio of the SFT compute that matches its accuracy to its own, mean ± spread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd.diagnose import Diagnosis  # noqa: E402
from minimopd.tasks import DIFFICULTIES as LEVELS, VERIFIABLE_DOMAINS as DOMAINS  # noqa: E402


def _cell(rows, domain, level):
    return Diagnosis(rows, samples_per_prompt=8).row(domain, level)


def _ms(xs):
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs, signed=False):
    m, s = _ms(xs)
    return (f"{m:+.3f}" if signed else f"{m:.3f}") + (f" ± {s:.3f}" if len(xs) > 1 else "")


def cal(files, form):
    tables = [json.loads(Path(f).read_text())[form]["rows"] for f in files]
    print(f"{form} SFT over {len(files)} seed(s): mean ± std\n")
    print("| domain | level | greedy | T=1 | pass@8 | learnable |\n|---|---|---:|---:|---:|---:|")
    for d in DOMAINS:
        for lv in LEVELS:
            cells = [_cell(t, d, lv) for t in tables]
            print(f"| {d} | {lv} | {fmt([c['greedy'] for c in cells])} | {fmt([c['t1'] for c in cells])} | "
                  f"{fmt([c['pass@k']['8'] for c in cells])} | {fmt([c['learnable'] for c in cells])} |")
    print("\ncalibration (on the means): easy >= 0.6, hard <= easy - 0.15, pass@8 hard > greedy hard + 0.05")
    for d in DOMAINS:
        e = statistics.fmean(_cell(t, d, "easy")["greedy"] for t in tables)
        h = statistics.fmean(_cell(t, d, "hard")["greedy"] for t in tables)
        p = statistics.fmean(_cell(t, d, "hard")["pass@k"]["8"] for t in tables)
        ok = e >= 0.6 and h <= e - 0.15 and p > h + 0.05
        print(f"  {d:8s} easy {e:.3f} hard {h:.3f} pass@8 hard {p:.3f}  {'met' if ok else 'NOT met'}")


def rl(files):
    runs = [json.loads(Path(f).read_text()) for f in files]
    print(f"change after RL over {len(files)} run(s): mean ± std\n")
    print("| domain | level | greedy before | greedy change | T=1 before | T=1 change |\n|---|---|---:|---:|---:|---:|")
    for d in DOMAINS:
        for lv in LEVELS:
            b = [_cell(r["before"], d, lv) for r in runs]
            a = [_cell(r["after"], d, lv) for r in runs]
            print(f"| {d} | {lv} | {fmt([x['greedy'] for x in b])} | "
                  f"{fmt([y['greedy'] - x['greedy'] for x, y in zip(b, a)], True)} | {fmt([x['t1'] for x in b])} | "
                  f"{fmt([y['t1'] - x['t1'] for x, y in zip(b, a)], True)} |")
    print("\naverage over the four domains (one value per run, then mean ± std over runs):")
    for lv in LEVELS:
        for key in ("greedy", "t1", "pass@8"):
            get = (lambda c: c["pass@k"]["8"]) if key == "pass@8" else (lambda c, k=key: c[k])
            per_run = [statistics.fmean(get(_cell(r["after"], d, lv)) - get(_cell(r["before"], d, lv))
                                        for d in DOMAINS) for r in runs]
            print(f"  {lv:6s} {key:6s} {fmt(per_run, True)}   runs: " + " ".join(f"{x:+.3f}" for x in per_run))


def opd(files):
    from minimopd.distill import gap_recovery
    runs = [json.loads(Path(f).read_text()) for f in files]
    stages = [s for s in runs[0]["accuracy"] if all(s in r["accuracy"] for r in runs)]
    print(f"seeds {[r['args']['seed'] for r in runs]}, {runs[0]['args']['n']} held-out items per level, "
          f"{runs[0]['args']['steps']} steps: mean ± std\n")
    print("| stage | easy | medium | hard | all | gap recovery |\n|---|---:|---:|---:|---:|---:|")
    for stage in stages:
        cells = [fmt([r["accuracy"][stage][k] for r in runs]) for k in (*LEVELS, "all")]
        rec = "" if stage in ("student", "teacher") else fmt([gap_recovery(
            r["accuracy"]["student"]["all"], r["accuracy"][stage]["all"], r["accuracy"]["teacher"]["all"])
            for r in runs])
        print(f"| {stage} | " + " | ".join(cells) + f" | {rec} |")
    # The students of different seeds start far apart, so the spread above is mostly theirs: the
    # comparison is paired, each seed's run against its own GRPO run (when every run has one).
    if any("grpo" not in r["accuracy"] for r in runs):
        return
    seeds = [r["args"]["seed"] for r in runs]
    print("\nper seed, against the same seed's GRPO run: held-out accuracy (all) minus GRPO's, and how many times less "
          "compute than GRPO's 100 steps it took to reach GRPO's final training accuracy (T = 1)\n")
    print("| stage | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |\n|---|" + "---:|" * (len(seeds) + 1))
    for stage in stages:
        if stage in ("student", "teacher", "grpo"):
            continue
        diff = [r["accuracy"][stage]["all"] - r["accuracy"]["grpo"]["all"] for r in runs]
        cells = [f"{d:+.3f}, {r.get('matched', {}).get('ratio', {}).get(stage, '-')}" for d, r in zip(diff, runs)]
        print(f"| {stage} | " + " | ".join(cells) + f" | {fmt(diff, True)} |")


def _flops(row: dict) -> float:
    value = row.get("FLOPs", "-")
    return 0.0 if value == "-" else float(value)


def grid(files, by_seed=False):
    """One row per (teacher, warm-up, mode) cell of the support-overlap grid, over the seeds that
    ran it: the start's overlap with the teacher, the start's and the final accuracy, the gain."""
    from minimopd.distill import gap_recovery
    cells: dict[tuple, list] = {}
    for f in files:
        r = json.loads(Path(f).read_text())
        a = r["args"]
        start = "warmup" if a.get("warmup") else "student"
        for mode, acc in r["accuracy"].items():
            if mode in ("student", "teacher", "warmup", "grpo"):    # the grid's cells are the teacher's forms
                continue
            key = (a.get("teacher", "forked"), bool(a.get("warmup")), mode) + ((a["seed"],) if by_seed else ())
            cells.setdefault(key, []).append(dict(
                seed=a["seed"], kl=r["overlap"]["reverse_kl"], t_lp=r["overlap"]["teacher_logprob"],
                topk=r["overlap"]["in_topk"], sft=r["accuracy"]["student"]["all"], start=r["accuracy"][start]["all"],
                teacher=r["accuracy"]["teacher"]["all"], final=acc["all"],
                flops=sum(_flops(r["compute"].get(k, {})) for k in (mode, "warmup"))))
    print("| teacher | warm-up | mode | seeds | initial KL(S‖T) | mean log p_T | in teacher top-8 | teacher | "
          "start | final | gap recovery | FLOPs (warm-up + run) |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {"opd_sampled": 0, "opd_topk": 1, "opd_full": 2, "opd_jsd": 3, "opd_forward": 4}
    for (teacher, warm, mode, *_), xs in sorted(cells.items(), key=lambda kv: (
            kv[0][3:], kv[0][0] != "forked", kv[0][1], order.get(kv[0][2], 9), kv[0][2])):
        col = lambda k: fmt([x[k] for x in xs])  # noqa: E731
        rec = fmt([gap_recovery(x["sft"], x["final"], x["teacher"]) for x in xs])
        print(f"| {teacher} | {'yes' if warm else 'no'} | {mode} | {','.join(str(x['seed']) for x in xs)} | "
              f"{col('kl')} | {col('t_lp')} | {col('topk')} | {col('teacher')} | {col('start')} | {col('final')} | {rec} | "
              f"{statistics.fmean(x['flops'] for x in xs):.2e} |")


def pref(files):
    runs = [json.loads(Path(f).read_text()) for f in files]
    print(f"reward model and PPO over {len(runs)} seed(s) ({', '.join(str(r['seed']) for r in runs)}): mean ± std\n")
    rm = [r["reward_model"] for r in runs]
    print(f"| reward model | accuracy {fmt([m['accuracy'] for m in rm])} | expected "
          f"{fmt([m['expected_accuracy'] for m in rm])} | ceiling {fmt([m['noise_ceiling'] for m in rm])} | "
          f"below the ceiling {fmt([m['noise_ceiling'] - m['expected_accuracy'] for m in rm])} | agrees with gold "
          f"{fmt([m['gold_agreement'] for m in rm])} |")
    print("\n| beta | seeds | gold gain at the peak | KL at the peak | gold at end - peak | KL at end | "
          "greedy gold - SFT's |\n|---|---|---|---|---|---|---|")
    betas = list(dict.fromkeys(row["run"] for r in runs for row in r["rows"]))
    for beta in betas:
        rows = [(r, row) for r in runs for row in r["rows"] if row["run"] == beta]
        print(f"| {beta} | {len(rows)} | {fmt([x['gold peak'] - x['gold at start'] for _, x in rows], True)} | "
              f"{fmt([x['KL at the peak'] for _, x in rows])} | "
              f"{fmt([x['gold at end'] - x['gold peak'] for _, x in rows], True)} | "
              f"{fmt([x['KL at end'] for _, x in rows])} | "
              f"{fmt([x['greedy gold (held-out)'] - r['sft_greedy_gold'] for r, x in rows], True)} |")


def dpo(files):
    runs = [json.loads(Path(f).read_text()) for f in files]
    print(f"DPO and PPO on the gold-against-KL plane over {len(runs)} seed(s) "
          f"({', '.join(str(r['seed']) for r in runs)}): mean ± std\n")
    print("| model | pairs | beta | lr | seeds | gold gain (T=1) | KL to reference | greedy gold - SFT's |\n"
          "|---|---|---|---|---|---|---|---|")
    cells: dict = {}
    for r in runs:
        sft = next(row for row in r["rows"] if row["model"] == "sft")
        for row in r["rows"]:
            if row["model"] != "sft":
                kind = row["model"].split("(")[-1].rstrip(")") if "(" in row["model"] else ""
                cells.setdefault((row["model"].split(" ")[0].rstrip(","), kind, row["beta"], row["lr"]),
                                 []).append((row, sft))
    for (model, pairs, beta, lr), rows in cells.items():
        print(f"| {model} | {pairs} | {beta} | {lr} | {len(rows)} | {fmt([x['gain'] for x, _ in rows], True)} | "
              f"{fmt([x['KL to reference'] for x, _ in rows])} | "
              f"{fmt([x['greedy gold'] - s['greedy gold'] for x, s in rows], True)} |")


def r1zero(files):
    from minimopd.report import window_mean

    print("| seed | base acc / format | R1-Zero acc / format | gain | count easy / medium / hard after | "
          "train acc first -> last 10% | format | length |\n|---|---:|---:|---:|---|---|---|---|")
    gains = []
    for f in files:
        run = json.loads(Path(f).read_text())
        rec = run["recipes"]["r1_zero"]
        base, after = (next(r for r in rec["table"] if r["stage"] == s) for s in ("base", "r1_zero"))
        cells = {(r["domain"], r["difficulty"]): r for r in rec["evals"]["r1_zero"]}
        count = " / ".join(f"{cells['count', lv]['accuracy']:.3f}" for lv in LEVELS)
        n = min(r["n"] for r in cells.values())
        hist = rec["histories"]["r1_zero"]
        curve = {k: (window_mean(hist, k, True), window_mean(hist, k, False))
                 for k in ("accuracy", "format_rate", "length")}
        gains.append(after["acc"] - base["acc"])
        print(f"| {run['seed']} ({n} per level) | {base['acc']:.3f} / {base['format_rate']:.3f} | {after['acc']:.3f} / "
              f"{after['format_rate']:.3f} | {gains[-1]:+.3f} | {count} | "
              + " | ".join(f"{a:.3f} -> {b:.3f}" if k != "length" else f"{a:.1f} -> {b:.1f}"
                           for k, (a, b) in curve.items()) + " |")
    print(f"\naccuracy gain over {len(files)} seed(s): {fmt(gains, True)}")


def stages(files, recipe):
    runs = [json.loads(Path(f).read_text()) for f in files]
    missing = [f for f, run in zip(files, runs) if recipe not in run["recipes"]]
    if missing:
        raise SystemExit(f"summarize stages: {', '.join(map(str, missing))} hold no {recipe!r} run")
    recs = [run["recipes"][recipe] for run in runs]
    scored = [{row["stage"]: row["acc"] for row in rec["table"] if "acc" in row} for rec in recs]
    names = [s for s in scored[0] if all(s in acc for acc in scored)]
    if not names:
        raise SystemExit(f"summarize stages: no stage of {recipe!r} is evaluated in every file")
    n = min(r["n"] for rec in recs for rows in rec["evals"].values() for r in rows)
    first = names[0]
    print(f"{recipe}: held-out greedy score, {n} items per level or more\n")
    print("| stage | " + " | ".join(f"seed {run['seed']}" for run in runs) + f" | mean ± sd | change from {first} |")
    print("|---|" + "---:|" * (len(runs) + 2))
    for s in names:
        accs = [acc[s] for acc in scored]
        change = fmt([acc[s] - acc[first] for acc in scored], True) if s != first else ""
        print(f"| {s} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {fmt(accs)} | {change} |")


def lineage(files):
    from minimopd.report import lineage_rows, results_from_dict
    runs = [json.loads(Path(f).read_text()) for f in files]
    cells: dict[tuple, list[dict]] = {}
    for run in runs:
        for row in lineage_rows(results_from_dict(run)):
            cells.setdefault((row["recipe"], row["model"]), []).append(row)
    cols = [d for d in (*DOMAINS, "notes") if any(d in r for rows in cells.values() for r in rows)]
    seeds = ", ".join(str(run.get("seed")) for run in runs)
    print(f"every recipe's models, greedy held-out accuracy, mean ± sd over seeds {seeds} "
          f"(n: the seeds that ran the model)\n")
    print("| recipe | model | n | " + " | ".join(cols) + " | mean | FLOPs from start |")
    print("|---|---|---:|" + "---:|" * (len(cols) + 2))
    for (recipe, model), rows in cells.items():
        accs = [fmt([r[c] for r in rows]) if all(c in r for r in rows) else "" for c in (*cols, "mean")]
        flops = statistics.fmean(r["FLOPs from start"] for r in rows)
        print(f"| {recipe} | {model} | {len(rows)} | " + " | ".join(accs) + (f" | {flops:.2e} |" if flops else " | 0 |"))


def sftopd(files):
    """`experiments/sft_then_opd.py --json` files (one per seed): each row's greedy accuracy per
    domain and mean, its extra FLOPs from the start, and for the OPD rows the ratio of the SFT
    compute that reaches the same accuracy to the run's own, mean ± sd over the seeds."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    cells: dict[str, list[dict]] = {}
    for run in runs:
        for row in run["rows"]:
            cells.setdefault(row["label"], []).append(row)
    seeds = ", ".join(str(run["seed"]) for run in runs)
    print(f"from the shortest trace SFT: more SFT or on-policy distillation; greedy held-out accuracy, "
          f"mean ± sd over seeds {seeds} ({runs[0]['rows'][0]['n']} items per level)\n")
    print("| row | n | " + " | ".join(DOMAINS) + " | mean | extra FLOPs | SFT compute to match / OPD's |")
    print("|---|---:|" + "---:|" * (len(DOMAINS) + 3))
    for label, rows in cells.items():
        flops = [r["extra_flops"] for r in rows if r["extra_flops"] is not None]
        ratios = [r["compute_ratio"] for r in rows if r.get("compute_ratio") is not None]
        ratio = "" if "compute_ratio" not in rows[0] else (
            fmt(ratios) + ("" if len(ratios) == len(rows) else f" ({len(rows) - len(ratios)} above the longest SFT)"))
        print(f"| {label} | {len(rows)} | " + " | ".join(fmt([r[d] for r in rows]) for d in (*DOMAINS, "mean"))
              + (f" | {statistics.fmean(flops):.2e}" if flops else " | ") + f" | {ratio} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["cal", "rl", "opd", "grid", "pref", "dpo", "r1zero", "stages", "lineage", "sftopd"])
    p.add_argument("files", nargs="+")
    p.add_argument("--form", default="reasoning", choices=["answer", "reasoning"])
    p.add_argument("--by-seed", action="store_true", help="grid: one row per seed instead of mean ± spread")
    p.add_argument("--recipe", help="stages: the recipe to summarise")
    args = p.parse_args(argv)
    {"cal": lambda: cal(args.files, args.form), "rl": lambda: rl(args.files), "opd": lambda: opd(args.files),
     "grid": lambda: grid(args.files, args.by_seed), "pref": lambda: pref(args.files),
     "dpo": lambda: dpo(args.files), "r1zero": lambda: r1zero(args.files),
     "stages": lambda: stages(args.files, args.recipe), "lineage": lambda: lineage(args.files),
     "sftopd": lambda: sftopd(args.files)}[args.kind]()


if __name__ == "__main__":
    main()
