"""Offline loops: tokens per second of pretraining and SFT, by model size and thread count.

Runs a few steps of each stage exactly as the library runs it (`stages.pretrain.pretrain`,
`stages.sft.train_sft`: the profile's batch shapes, packed pretraining rows, response-only SFT
loss, fused AdamW) and reports the loop's own `tokens_per_s` (real, non-padding tokens per second
of training) after the first steps, the share of padding in the batches, seconds per step and the
peak resident set size of the process. Thread counts: 1, and the library's automatic choice
(`minimopd.threads`). Each run is its own child process, so its peak RSS is its own (torch and
the libraries account for ~300 MB of it).

    python benchmarks/bench_offline.py                      # small and base, cpu profile shapes
    python benchmarks/bench_offline.py --sizes small --steps 20
    python benchmarks/bench_offline.py --quick              # seconds (the test)
"""
from __future__ import annotations

import argparse
import datetime
import json
import resource
import shlex
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))      # benchmarks/common.py

from common import append, load_average, machine  # noqa: E402
from minimopd import threads  # noqa: E402
from minimopd.profiles import get_profile  # noqa: E402
from minimopd.stages.pretrain import PretrainConfig, pretrain  # noqa: E402
from minimopd.stages.sft import SFTConfig, sft_dataset, train_sft  # noqa: E402
from minimopd.models import build_model  # noqa: E402
from minimopd.tokenizer import build_tokenizer  # noqa: E402

COLUMNS = ["stage", "model", "batch x seq", "threads", "tokens/s", "padding", "s/step", "process peak RSS (MB)"]


def run(stage: str, size: str, n_threads: int | None, steps: int, profile_name: str) -> dict:
    """One stage for `steps` steps with `n_threads` threads (None: the library's choice), in a
    child process."""
    spec = json.dumps({"stage": stage, "size": size, "threads": n_threads, "steps": steps,
                       "profile": profile_name})
    out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(spec: str) -> None:
    s = json.loads(spec)
    profile, tok = get_profile(s["profile"], device="cpu"), build_tokenizer()
    stage, size, steps = s["stage"], s["size"], s["steps"]
    threads.set_threads(s["threads"])
    if stage == "pretrain":
        cfg = PretrainConfig.from_profile(profile, model_size=size, steps=steps,
                                          corpus_lines=max(2000, profile.pretrain_batch_size * 40))
        res = pretrain(cfg, tokenizer=tok, progress=False)
        shape = f"{cfg.batch_size} x {cfg.seq_len}"
    else:
        cfg = SFTConfig.from_profile(profile, steps=steps, n_examples=2000)
        pairs = sft_dataset(cfg.domains, cfg.n_examples, seed=0)
        res = train_sft(build_model(size, tok, seed=0), tok, pairs, cfg, progress=False)
        shape = f"{cfg.batch_size} x (longest pair)"
    hist = [r for r in res.history if "tokens_per_s" in r]
    skip = max(1, len(hist) // 4)                         # the first steps warm up allocators
    t0, t1 = hist[skip - 1], hist[-1]
    rate = (t1["tokens"] - t0["tokens"]) / max(t1["time"] - t0["time"], 1e-9)
    print(json.dumps({"stage": stage, "model": size, "shape": shape, "threads": res.info["threads"],
                      "tokens_s": rate, "padding": res.info["padding"],
                      "s_step": (t1["time"] - t0["time"]) / max(t1["step"] - t0["step"], 1),
                      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["small", "base"])
    p.add_argument("--stages", nargs="+", default=["pretrain", "sft"], choices=["pretrain", "sft"])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--profile", default="cpu", help="whose batch shapes to use (default cpu)")
    p.add_argument("--out", help="append the table to this file")
    p.add_argument("--quick", action="store_true", help="tiny model, smoke shapes, 4 steps")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child)
        return ""
    if args.quick:
        args.sizes, args.steps, args.profile = ["tiny"], 4, "smoke"
    load_before = load_average()
    rows = []
    for stage in args.stages:
        for size in args.sizes:
            for n in (1, None):
                rows.append(run(stage, size, n, args.steps, args.profile))
                r = rows[-1]
                print(f"  {stage} {size} threads={r['threads']}: {r['tokens_s']:,.0f} tokens/s",
                      file=sys.stderr, flush=True)
    load_after = load_average()
    command = "python benchmarks/bench_offline.py " + " ".join(
        map(shlex.quote, argv if argv is not None else sys.argv[1:]))
    lines = [f"### Offline loops: pretraining and SFT tokens/s ({datetime.date.today()})", "",
             f"- command: `{command.strip()}` ({args.steps} steps per run, the first quarter not timed; "
             f"{args.profile} profile batch shapes)",
             f"- machine: {machine('cpu')}",
             f"- 1-min load average: {load_before:.2f} before, {load_after:.2f} after",
             "- threads: 1, and the library's automatic choice for the model on this machine",
             "", "| " + " | ".join(COLUMNS) + " |", "|---|---|---|" + "---:|" * (len(COLUMNS) - 3)]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['model']} | {r['shape']} | {r['threads']} | {r['tokens_s']:,.0f} | "
                     f"{r['padding']:.0%} | {r['s_step']:.3f} | {r['rss']:.0f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    append(args.out, table)
    return table


if __name__ == "__main__":
    main()
