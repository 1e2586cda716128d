"""Probe on-policy distillation against RL on one domain, with the `opd` recipe's pieces.

    python experiments/opd_probe.py --profile cpu --seed 0 --steps 100 --modes grpo opd_full opd_sampled

The student is the reasoning SFT model, the teacher its fork trained further on the domain
(`distill.specialist_artifact`); each mode trains the student on the domain's prompts for
`--steps` steps with the same completions per step (GRPO: 16 x 8 with the accuracy reward, as in
RESULTS.md's probe; the `opd` recipe's GRPO uses R1's rule reward; OPD: 64 x 2), then greedy
held-out accuracy on the domain (`--n` items per level), the support overlap of the teacher with
the student's samples, and the compute. Stages are cached, so a rerun with more modes reuses them.
`--json` writes the table; `experiments/summarize.py opd` prints mean and spread over seeds.

The support-overlap grid (issue 10) is this probe with `--teacher forked|foreign` (foreign: the
next seed's own specialist, seed 2 borrowing seed 0's: `distill.foreign_seed`) and `--warmup` (the
student first SFT'd lightly on the teacher's verified traces, `recipes_opd.warmup_artifact`);
the overlap is then measured from the model the distillation starts from.
`experiments/summarize.py grid` tabulates the runs.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimopd import distill  # noqa: E402
from minimopd.artifacts import online_artifact, sft_artifact  # noqa: E402
from minimopd.evaluation import evaluate  # noqa: E402
from minimopd.profiles import get_profile  # noqa: E402
from minimopd.recipes_opd import TOPK, compute_row, opd_config, teacher_mode, warmup_artifact  # noqa: E402
from minimopd.recipes_rl import reasoning_config  # noqa: E402
from minimopd.signals import TeacherSignal, VerifierSignal  # noqa: E402
from minimopd.stages.online import preset  # noqa: E402
from minimopd.tasks import get_task  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domain", default="count")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--n", type=int, default=100, help="held-out items per level")
    p.add_argument("--modes", nargs="*", default=["grpo", "opd_full", "opd_sampled"])
    p.add_argument("--lr", type=float, default=None, help="the OPD stages' learning rate (default: the recipe's)")
    p.add_argument("--teacher", choices=("forked", "foreign"), default="forked",
                   help="forked: the student's own checkpoint trained on the domain; foreign: the next seed's "
                        "(distill.foreign_seed: 0 -> 1 -> 2 -> 0)")
    p.add_argument("--warmup", action="store_true",
                   help="start from the student SFT'd lightly on the teacher's verified traces")
    p.add_argument("--warmup-traces", type=int, default=None,
                   help="teacher traces of the warm-up (default: recipes_opd.warmup_artifact's)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    d = args.domain
    t0 = time.perf_counter()

    def acc(art):
        ev = evaluate(art.model, art.tokenizer, tasks=(d,), profile=prof, n_per_level=args.n, seed=args.seed,
                      reasoning=True)
        return {"easy": ev.accuracy(d, "easy"), "medium": ev.accuracy(d, "medium"),
                "hard": ev.accuracy(d, "hard"), "all": ev.accuracy(d)}

    sft = sft_artifact(prof, seed=args.seed, reasoning=True, progress=False)
    teacher = distill.specialist_artifact(sft, prof, d, seed=args.seed, foreign=args.teacher == "foreign",
                                          progress=False)
    rows = {"student": acc(sft), "teacher": acc(teacher)}
    print(f"[{time.perf_counter() - t0:.0f}s] student {rows['student']}\n  {args.teacher} teacher {rows['teacher']}",
          flush=True)
    student = sft      # the model every stage starts from
    compute = {"teacher": compute_row("teacher", teacher.info)}
    if args.warmup:
        student = warmup_artifact(sft, teacher, prof, d, seed=args.seed, traces=args.warmup_traces, progress=False)
        rows["warmup"] = acc(student)
        compute["warmup"] = compute_row("warmup", student.info)
        print(f"[{time.perf_counter() - t0:.0f}s] warm-up SFT {rows['warmup']}  traces {student.info.get('traces')}",
              flush=True)
    overlap = distill.measure_overlap(student.model, teacher.model, student.tokenizer,
                                      get_task(d).sample(args.n, split="test", seed=args.seed + 77),
                                      max_new_tokens=reasoning_config(prof).max_new_tokens, k=TOPK, seed=args.seed)
    print(f"  overlap {overlap}", flush=True)
    histories = {}
    for mode in args.modes:
        if mode == "grpo":
            cfg = replace(preset("grpo", reasoning_config(prof, seed=args.seed, domains=(d,), difficulty=None)),
                          steps=args.steps)
            art = online_artifact(student, prof, cfg, name="opd_grpo", signal=VerifierSignal(), progress=False)
        else:
            cfg = replace(opd_config(prof, mode, seed=args.seed, domains=(d,)), steps=args.steps)
            if args.lr is not None:
                cfg = replace(cfg, lr=args.lr)
            art = online_artifact(student, prof, cfg, name=mode, progress=False,
                                  signal=TeacherSignal(teacher.model, key=teacher.path.name, **teacher_mode(mode)))
        rows[mode] = acc(art)
        compute[mode] = compute_row(mode, art.info)
        save(args, rows, overlap, compute)
        h = histories[mode] = art.history
        print(f"[{time.perf_counter() - t0:.0f}s] {mode}: {rows[mode]}  compute {compute[mode]}  "
              f"entropy {h[0].get('entropy', float('nan')):.3f} -> {h[-1].get('entropy', float('nan')):.3f}", flush=True)
        keys = [k for k in ("reward", "kl", "entropy", "advantage_mean") if k in h[0]]
        for i in range(0, len(h), max(1, len(h) // 10)):
            print(f"    step {i:4d} " + " ".join(f"{k} {h[i][k]:.3f}" for k in keys), flush=True)
    matched = matched_compute(histories) if "grpo" in histories else {}
    if matched:
        print(f"\ncompute to reach GRPO's final training accuracy (T=1, trailing {WINDOW}-step mean "
              f"{matched['target']:.3f}): " + ", ".join(f"{m} {v}" for m, v in matched["ratio"].items()))
    s0, t = rows["student"]["all"], rows["teacher"]["all"]
    print(f"\n{d}, {args.steps} steps, profile {prof.name}, seed {args.seed}, {args.n} held-out items per level, "
          f"{args.teacher} teacher{', after a warm-up SFT' if args.warmup else ''}")
    print("| stage | easy | medium | hard | all | gap recovery | FLOPs | teacher-scored tokens | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        c = compute.get(name, {})
        rec = "" if name in ("student", "teacher") else f"{distill.gap_recovery(s0, r['all'], t):.2f}"
        print(f"| {name} | {r['easy']:.3f} | {r['medium']:.3f} | {r['hard']:.3f} | {r['all']:.3f} | {rec} | "
              f"{c.get('FLOPs', '-')} | {c.get('teacher-scored tokens', '-')} | {c.get('wall s', '-')} |")
    save(args, rows, overlap, compute, matched)


def save(args, rows, overlap, compute, matched=None):
    """Write the `--json` table (after every mode too: an interrupted probe keeps what it measured)."""
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "accuracy": rows, "overlap": overlap,
                                               "compute": compute, "matched": matched or {}}, indent=1))


WINDOW = 10


def matched_compute(histories: dict) -> dict:
    """GRPO's total FLOPs over the FLOPs each other run spent until its training accuracy (T = 1,
    trailing `WINDOW`-step mean) first reached GRPO's final one (`distill.compute_to_reach`): how
    many times cheaper it got there ("never" if it did not within its steps)."""
    rl = histories["grpo"]
    acc = [r["accuracy"] for r in rl]
    target = sum(acc[-WINDOW:]) / len(acc[-WINDOW:])
    ratio = {}
    for mode, h in histories.items():
        if mode == "grpo":
            continue
        flops = distill.compute_to_reach([r["flops"] for r in h], [r["accuracy"] for r in h], target, window=WINDOW)
        hit = next((i for i, r in enumerate(h) if r["flops"] == flops), None)
        ratio[mode] = "never" if math.isnan(flops) else f"{rl[-1]['flops'] / flops:.1f}x (step {hit})"
    return {"target": target, "ratio": ratio}


if __name__ == "__main__":
    main()
