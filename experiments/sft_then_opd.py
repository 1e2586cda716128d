"""From a student part-way through SFT on its teachers' traces: more SFT, or on-policy distillation?

Thinking Machines' comparison (ALGORITHMS.md: Qwen3-8B at 60% AIME after SFT reaches 70% in about
150 steps of on-policy distillation, 9-30x less compute than extrapolating the SFT), in miniature.
The student is the reasoning SFT, its teachers the four domain specialists of the `mopd` recipe
(SFT only; shipped for seed 0). `deepseek_v32`'s trace SFT (`recipes_opd.trace_sft`) is run at
`--scales` of its epochs on the same verified traces, the smallest being the starting point; from
that start, routed on-policy distillation (`RecipeRun.mopd`, one teacher per domain) runs
`--opd-steps` steps with the exact full-vocabulary reverse KL (`full`, DeepSeek V4's objective,
the Thinking Machines one computed exactly) and forward KL (`forward`).

Compute is counted from the start: an SFT point's extra FLOPs are its SFT FLOPs minus the
start's (the traces are the same, so their sampling is spent once); an OPD run's are its own
(sampling, teacher scoring, training). The SFT curve is interpolated linearly between its points
to find the extra SFT compute that reaches each OPD run's accuracy; the ratio of the two is the
compute ratio at matched accuracy (none where OPD ends above the longest SFT):

    MINIMOPD_THREADS=1 python experiments/sft_then_opd.py --seed 0 --n 300 \\
        --json experiments/results/v3/sft_then_opd_s0.json

`--scales 1 2` asks the same question after the complete trace SFT, where Thinking Machines
compared (their SFT had reached its log-linear plateau): OPD from the full SFT against twice its
epochs.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from minimopd import distill
from minimopd.artifacts import sft_artifact
from minimopd.evaluation import evaluate
from minimopd.profiles import get_profile
from minimopd.recipes_opd import RecipeRun, trace_sft
from minimopd.report import window_mean
from minimopd.tasks import VERIFIABLE_DOMAINS

OPD_ALGOS = {"full": "opd_full", "forward": "opd_forward"}


def sft_flops_to_reach(points: list[tuple[float, float]], target: float) -> float:
    """The extra SFT FLOPs at which the curve `points` ((extra FLOPs, accuracy), in order of
    FLOPs) first reaches `target`, interpolating linearly between points; 0 if the first point
    already does, NaN if none does."""
    if not points:
        raise ValueError("the SFT curve needs at least one point")
    if points[0][1] >= target:
        return points[0][0]
    for (f0, a0), (f1, a1) in zip(points, points[1:]):
        if a1 >= target:
            return f0 + (f1 - f0) * (target - a0) / (a1 - a0)
    return math.nan


def diagnosis(history: list[dict], window: int = 10) -> dict:
    """{quantity: [mean of the first `window` steps, mean of the last]} of an online run's history:
    the student's per-token entropy on its own samples, its per-token KL to the routed teachers
    and the accuracy of its T=1 samples (what the run learned from, not the greedy evaluation)."""
    return {k: [window_mean(history, k, True, window=window), window_mean(history, k, False, window=window)]
            for k in ("entropy", "teacher_kl", "accuracy") if any(h.get(k) is not None for h in history)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                   help="epochs of the trace SFT, as fractions of deepseek_v32's; the smallest is the start")
    p.add_argument("--opd-steps", type=int, default=100)
    p.add_argument("--opd-lr", type=float, default=None,
                   help="OPD's learning rate (default: the recipes', OPD_LR_SCALE x the profile's RL rate)")
    p.add_argument("--modes", nargs="+", choices=sorted(OPD_ALGOS), default=["full", "forward"])
    p.add_argument("--n", type=int, default=None, help="held-out items per domain and level")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.opd_steps < 1 or min(args.scales) <= 0:
        p.error(f"--opd-steps and --scales must be positive, got {args.opd_steps} and {args.scales}")
    profile = get_profile(args.profile)
    scales = sorted(set(args.scales))
    student = sft_artifact(profile, seed=args.seed, reasoning=True, progress=False)
    teachers = {d: distill.specialist_artifact(student, profile, d, seed=args.seed, progress=False)
                for d in VERIFIABLE_DOMAINS}
    out = {"profile": profile.name, "seed": args.seed, "scales": scales, "opd_steps": args.opd_steps,
           "opd_lr": args.opd_lr,
           "teacher_paths": {d: a.path.name for d, a in teachers.items()}, "rows": []}

    def record(label, art, extra_flops, **info):
        res = evaluate(art.model, art.tokenizer, profile=profile, n_per_level=args.n, seed=args.seed, reasoning=True)
        row = {"label": label, "path": art.path.name, "extra_flops": extra_flops, "mean": res.accuracy(),
               **{d: res.accuracy(d) for d in VERIFIABLE_DOMAINS}, "n": res.rows[0]["n"], **info}
        out["rows"].append(row)
        flops = "" if extra_flops is None else f"{extra_flops:9.3g}"
        print(f"{label:22s} extra FLOPs {flops:>9s}  mean {row['mean']:.3f}  "
              + " ".join(f"{d} {row[d]:.3f}" for d in VERIFIABLE_DOMAINS), flush=True)
        return row

    record("student", student, None)
    sfts = {s: trace_sft(student, teachers, profile, seed=args.seed, name="trace_sft", progress=False,
                         epochs_scale=s) for s in scales}
    start = sfts[scales[0]]
    base_flops = start.info["sft_flops"]
    curve = [(0.0, record(f"sft x{scales[0]:g} (start)", start, 0.0, sft_flops=base_flops,
                          sampling_flops=start.info["flops"] - base_flops)["mean"])]
    for s in scales[1:]:
        art = sfts[s]
        curve.append((art.info["sft_flops"] - base_flops,
                      record(f"sft x{s:g}", art, art.info["sft_flops"] - base_flops, sft_flops=art.info["sft_flops"])["mean"]))
    run = RecipeRun("sft_then_opd", profile, args.seed, progress=False)
    for mode in args.modes:
        lr = {} if args.opd_lr is None else {"lr": args.opd_lr}
        art = run.mopd(start, teachers, f"opd_after_sft_{mode}", mode="full", algo=OPD_ALGOS[mode],
                       steps=args.opd_steps, **lr)
        label = f"+ opd {mode} x{args.opd_steps}" + ("" if args.opd_lr is None else f" lr {args.opd_lr:g}")
        row = record(label, art, art.info["flops"], diagnosis=diagnosis(art.history))
        print("   " + ", ".join(f"{k} {a:.3f} -> {b:.3f}" for k, (a, b) in row["diagnosis"].items()), flush=True)
        need = sft_flops_to_reach(curve, row["mean"])
        row["sft_flops_to_match"] = need if math.isfinite(need) else None
        row["compute_ratio"] = need / art.info["flops"] if math.isfinite(need) else None
        print(f"   SFT needs {need:.3g} extra FLOPs to reach {row['mean']:.3f}: "
              + (f"{row['compute_ratio']:.2f}x this run's" if row["compute_ratio"] is not None
                 else "not reached by the longest SFT"), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
