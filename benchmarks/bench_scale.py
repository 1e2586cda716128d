"""Steps per second of the scale path (`minimopd.scale`): one run directory, launched on 1 and on N
processes of this machine (torch.distributed, gloo on CPU / nccl on GPU), side by side.

One `prepare` (the stage's student, teachers and prompts, from the cache or the shipped
checkpoints), then one launch per setting, one after the other, of the same run: each setting
trains the same `--steps` steps on the same prompts with the same global batch (the step's
completions split over the processes). Greedy rollouts (`--greedy`, the default here) make every
setting generate the same completions, so the loss curves must agree too (the last column).

What is timed: trl's per-step `step_time` (sampling, teacher scoring, loss, backward, optimiser,
gradient all-reduce), median over the steps after the first; start-up (imports, loading the
models, process group) is not. Threads: `OMP_NUM_THREADS` per process (torchrun sets 1 when
unset), so `1 x 2` and `2 x 1` use the same cores.

    python benchmarks/bench_scale.py                                  # mopd, cpu profile, 3 steps, 1x1 1x2 2x1
    python benchmarks/bench_scale.py --stage grpo --steps 4
    python benchmarks/bench_scale.py --settings 1x16 2x8 4x4 8x2       # a 16-core machine
    python benchmarks/bench_scale.py --quick                          # smoke profile, 2 steps (seconds)
    python benchmarks/bench_scale.py --out BENCHMARKS.md              # append the table
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import append, load_average, machine  # noqa: E402

COLUMNS = ["stage", "profile", "processes x threads", "completions/step", "steps", "median s/step",
           "steps/s", "speed-up vs first row", "loss per step", "same curve as first row"]


def run_setting(run_dir: Path, processes: int, threads: int) -> dict:
    from minimopd.scale.launch import launch_command

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MINIMOPD_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if processes == 1:
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")    # trl refuses one process driving several GPUs
    for name in ("final", "history.json", "trl"):
        path = run_dir / name
        if path.is_dir():
            subprocess.run(["rm", "-rf", str(path)], check=True)
        elif path.exists():
            path.unlink()
    proc = subprocess.run(launch_command(run_dir, processes), env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{processes} x {threads} failed:\n{proc.stderr[-3000:]}")
    return json.loads((run_dir / "history.json").read_text())


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", default="mopd", choices=("grpo", "opd", "mopd"))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--settings", nargs="*", default=["1x1", "1x2", "2x1"], help="PROCESSESxTHREADS")
    p.add_argument("--sampled", action="store_true", help="mode sampled (default: full reverse KL)")
    p.add_argument("--quick", action="store_true", help="smoke profile, 2 steps, settings 1x1 2x1")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.profile, args.steps, args.settings = "smoke", 2, ["1x1", "2x1"]
    from minimopd.scale.launch import online_config, prepare

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        greedy = args.stage != "grpo"
        run_dir = prepare(args.stage, Path(tmp) / "run", profile=args.profile, steps=args.steps, greedy=greedy,
                          mode="sampled" if args.sampled else "full", progress=False)
        plan = json.loads((run_dir / "plan.json").read_text())
        cfg = online_config(plan)
        rows, first = [], None
        for setting in args.settings:
            n, t = (int(x) for x in setting.split("x"))
            hist = run_setting(run_dir, n, t)
            steps = [h for h in hist["log"] if "loss" in h]
            times = [h["step_time"] for h in steps][1:] or [h["step_time"] for h in steps]
            med = statistics.median(times)
            curve = [h["loss"] for h in steps]
            first = first or (med, curve)
            same = all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(curve, first[1]))
            rows.append([args.stage + (f" ({plan['mode']})" if plan["mode"] else f" ({plan['preset']})"),
                         args.profile, f"{n} x {t}", str(cfg.prompts_per_step * cfg.group_size), str(len(steps)),
                         f"{med:.2f}", f"{1 / med:.3f}", f"{first[0] / med:.2f}x",
                         " ".join(f"{c:.4f}" for c in curve),
                         ("yes" if same else "NO") if greedy else "n/a (T=1 rollouts)"])
    load_after = load_average()
    head = (f"#### Scale path: steps/s on 1 and N processes ({datetime.date.today()})\n\n"
            f"Command: `python benchmarks/bench_scale.py {shlex.join(argv if argv is not None else sys.argv[1:])}`  \n"
            f"Machine: {machine()}  \nLoad average before / after: {load_before:.2f} / {load_after:.2f}\n\n")
    table = head + "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n" + "\n".join(
        "| " + " | ".join(r) + " |" for r in rows) + "\n"
    print(table)
    append(args.out, table)
    return table


if __name__ == "__main__":
    main()
