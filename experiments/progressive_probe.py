"""Progressive distillation on `count`: the `progressive` recipe at a chosen length and eval size.

    python experiments/progressive_probe.py --profile cpu --seed 0 --steps 100 --n 300 \
        --json experiments/results/v3/progressive_count_s0.json

Runs `recipes_progressive.recipe_progressive` with the profile's RL steps set to `--steps` (split
into one segment per teacher checkpoint) and `--n` held-out items per level, prints its tables,
and adds one: per OPD mode, the compute each arm spent until its training accuracy (T = 1,
trailing mean over 10 steps) first reached the `final` arm's last value (`distill.compute_to_reach`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd import distill  # noqa: E402
from minimopd.profiles import get_profile  # noqa: E402
from minimopd.recipes import run_recipe  # noqa: E402
from minimopd.recipes_progressive import PROGRESSIVE_MODES  # noqa: E402

WINDOW = 10


def matched_compute(histories: dict, mode: str) -> dict:
    """Both arms' FLOPs to reach the `final` arm's last trailing-mean training accuracy."""
    final = histories[f"{mode}:final"]
    acc = [h["accuracy"] for h in final]
    target = sum(acc[-WINDOW:]) / min(WINDOW, len(acc))
    row = {"mode": mode, "target (final arm's last training accuracy)": round(target, 3)}
    for arm in ("final", "progressive"):
        h = histories[f"{mode}:{arm}"]
        reach = distill.compute_to_reach([x["flops"] for x in h], [x["accuracy"] for x in h], target,
                                         window=min(WINDOW, len(h)))
        row[f"{arm} FLOPs"] = "never" if math.isnan(reach) else f"{reach:.2e}"
    return row


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--n", type=int, default=100, help="held-out items per level")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    prof = get_profile(args.profile).replace(rl_steps=args.steps, eval_per_level=args.n)
    res = run_recipe("progressive", profile=prof, seed=args.seed)
    res.tables["compute to the final arm's training accuracy"] = [matched_compute(res.histories, m)
                                                                  for m in PROGRESSIVE_MODES]
    res.tables["entropy and training accuracy, first -> last step"] = [
        {"run": s, "entropy": f"{h[0]['entropy']:.3f} -> {h[-1]['entropy']:.3f}",
         "training accuracy": f"{h[0]['accuracy']:.2f} -> {sum(x['accuracy'] for x in h[-WINDOW:]) / len(h[-WINDOW:]):.2f}"}
        for s, h in res.histories.items() if ":" in s]
    print(res.table_text())
    for title, rows in res.tables.items():
        print(f"\n{title}")
        for row in rows:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "table": res.table(), "tables": res.tables,
                                               "info": res.info}, indent=1, default=str))


if __name__ == "__main__":
    main()
