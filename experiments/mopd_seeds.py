"""The `mopd` recipe over seeds: mean and spread of every stage's accuracy, gap recovery and compute.

    python experiments/mopd_seeds.py runs/cpu-seed0-eval300/results.json \
        runs/cpu-seed1-eval300/results.json runs/cpu-seed2-eval300/results.json \
        --selection-flops 5.56e12 5.56e12 5.56e12

Reads the `results.json` that `minimopd lineage --recipes mopd` wrote for each seed and prints
three markdown tables: accuracy per domain (mean over seeds, with the standard deviation across
seeds), gap recovery per domain ((stage - student) / (teacher - student), mean and spread), and
per seed the mean accuracy of each student stage, MOPD's lead over mixed RL in evaluation
standard errors, and FLOPs. `--selection-flops` adds, per seed, the cost of mixed RL's prompt
selection where the stage's record predates counting it (`experiments/selection_cost.py`).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics

STUDENTS = ("mopd", "mopd_forward", "mixed_rl")
DOMAINS = ("add", "sort", "reverse", "count")


def accuracy(rows, domain=None) -> tuple[float, int]:
    rows = [r for r in rows if domain is None or r["domain"] == domain]
    n = sum(r["n"] for r in rows)
    return sum(r["accuracy"] * r["n"] for r in rows) / n, n


def spread(values) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("results", nargs="+")
    p.add_argument("--selection-flops", type=float, nargs="*", default=None)
    args = p.parse_args(argv)
    runs = [json.load(open(path)) for path in args.results]
    seeds = [r["seed"] for r in runs]
    recipes = [r["recipes"]["mopd"] for r in runs]
    stages = ("student",) + STUDENTS
    print(f"seeds {seeds}; held-out items per level: {recipes[0]['evals']['student'][0]['n']}\n")
    print("| stage | " + " | ".join(DOMAINS) + " | mean |\n|---|" + "---:|" * (len(DOMAINS) + 1))
    for stage in stages:
        cells = [spread([accuracy(r["evals"][stage], d)[0] for r in recipes]) for d in DOMAINS]
        cells.append(spread([accuracy(r["evals"][stage])[0] for r in recipes]))
        print(f"| {stage} | " + " | ".join(cells) + " |")
    teacher = [spread([accuracy(r["evals"][f"teacher_{d}"], d)[0] for r in recipes]) for d in DOMAINS]
    print("| its domain's specialist | " + " | ".join(teacher) + " | |")
    print("\nGap recovery, (stage - student) / (teacher - student), mean ± sd over seeds:\n")
    print("| stage | " + " | ".join(DOMAINS) + " | mean of domains |\n|---|" + "---:|" * (len(DOMAINS) + 1))
    for stage in STUDENTS:
        per_seed = []
        for r in recipes:
            rec = []
            for d in DOMAINS:
                s0, t = accuracy(r["evals"]["student"], d)[0], accuracy(r["evals"][f"teacher_{d}"], d)[0]
                rec.append((accuracy(r["evals"][stage], d)[0] - s0) / (t - s0) if t != s0 else float("nan"))
            per_seed.append(rec)
        cells = [spread([rec[i] for rec in per_seed]) for i in range(len(DOMAINS))]
        cells.append(spread([statistics.mean(rec) for rec in per_seed]))
        print(f"| `{stage}` | " + " | ".join(cells) + " |")
    sel = args.selection_flops or [0.0] * len(recipes)
    print("\nPer seed (mean accuracy; lead = MOPD (reverse KL) minus mixed RL, in standard errors of the "
          "difference of two independent proportions; FLOPs with mixed RL's prompt selection):\n")
    print("| seed | student | mopd | mopd_forward | mixed_rl | lead | lead / SE | mopd FLOPs | mixed_rl FLOPs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for seed, r, extra in zip(seeds, recipes, sel):
        acc = {s: accuracy(r["evals"][s]) for s in stages}
        (a, n), (b, m) = acc["mopd"], acc["mixed_rl"]
        se = math.sqrt(a * (1 - a) / n + b * (1 - b) / m)
        mixed = r["info"]["mixed_rl"]
        mixed_flops = mixed["flops"] + (0.0 if "selection_flops" in mixed else extra)
        print(f"| {seed} | " + " | ".join(f"{acc[s][0]:.3f}" for s in stages)
              + f" | {a - b:+.3f} | {(a - b) / se:.1f} | {r['info']['mopd']['flops']:.2e} | {mixed_flops:.2e} |")


if __name__ == "__main__":
    main()
