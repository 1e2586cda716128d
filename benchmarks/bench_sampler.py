"""Sampler throughput: minimopd's KV-cache `generate` vs transformers' `model.generate`.

For every (model size, batch size, new tokens) in a grid, both samplers run on the SAME freshly
initialised Qwen3 model with the SAME prompts: a left-padded batch of chat-formatted prompts
(built by `minimopd.rollout.encode_prompts`, so the token ids are identical), temperature 1.0,
top-p 1.0, no top-k. The number printed is generated tokens per second of wall time, median of
`--repeats` timed runs after one untimed warm-up of each sampler, the two interleaved so that
background load hits both alike.

Equal lengths. Both samplers must produce exactly N tokens per row, or the faster one is simply
the one that stopped earlier. A random model still emits `<|end|>` now and then (about one token
in a hundred), so while timing, a forward hook on the output layer sets the logits of `<|end|>`
and `<|pad|>` to -inf: the model itself never ends a turn, for both samplers alike.
transformers additionally gets `min_new_tokens=N, max_new_tokens=N`. Tokens are then counted
independently (ours: `Rollout.completion_lengths`; transformers: non-pad new tokens) and the
table shows both counts, which must match.

What is timed. Ours: the whole `generate` call (prompt encoding, prefill, decode loop, per-token
log-probs, decoding to text). transformers: `model.generate` on the pre-tokenised batch only.
So the comparison is, if anything, tilted towards transformers.

Run (from the repo root; numbers go into BENCHMARKS.md with the command, machine and date):

    python benchmarks/bench_sampler.py                        # default grid, cuda if available
    python benchmarks/bench_sampler.py --device cpu --sizes small --batches 1 16 --repeats 5
    python benchmarks/bench_sampler.py --out BENCHMARKS.md    # also append the table to a file
    python benchmarks/bench_sampler.py --quick                # tiny grid in seconds (the test)
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
import transformers  # noqa: E402

from minimopd.models import build_model, count_parameters  # noqa: E402
from minimopd.rollout import encode_prompts, generate  # noqa: E402
from minimopd.tokenizer import build_tokenizer  # noqa: E402

COLUMNS = ["device", "model (params)", "batch", "new tokens", "tokens ours / HF",
           "ours tok/s", "transformers tok/s", "speed-up (ours/HF)"]


def make_prompts(n: int) -> list[str]:
    """n deterministic prompts of varied lengths (so the batch really is left-padded)."""
    out = []
    for i in range(n):
        a, b = (i * 7919) % 1000, (i * 104729) % 100000
        out.append(f"What is {a}+{b}?" if i % 2 == 0 else "Sort: " + " ".join(
            str((i * k * 31) % 97) for k in range(1, 2 + i % 6)))
    return out


@contextmanager
def never_ends(model, banned_ids):
    """Make `model` unable to emit `banned_ids` (their logits become -inf) inside the block."""
    def hook(_module, _inputs, logits):
        logits[..., banned_ids] = float("-inf")
        return logits
    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def timed(fn, device):
    """(seconds, result) of fn(), synchronising the GPU around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, result


def bench_one(size: str, batch: int, new_tokens: int, device: torch.device, repeats: int, tok):
    model = build_model(size, tok, seed=0).to(device).eval()
    prompts = make_prompts(batch)
    pad, eos = tok.pad_token_id, tok.eos_token_id
    encoded = encode_prompts(tok, prompts)              # exactly what `generate` feeds the model
    P = max(len(ids) for ids in encoded)
    input_ids = torch.full((batch, P), pad, dtype=torch.long)
    attention_mask = torch.zeros((batch, P), dtype=torch.long)
    for i, ids in enumerate(encoded):
        input_ids[i, P - len(ids):] = torch.tensor(ids)
        attention_mask[i, P - len(ids):] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)

    def ours(seed):
        ro = generate(model, tok, prompts, max_new_tokens=new_tokens, temperature=1.0, top_p=1.0,
                      seed=seed)
        return int(ro.completion_lengths.sum())

    def hf(seed):
        torch.manual_seed(seed)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                             temperature=1.0, top_p=1.0, top_k=0, min_new_tokens=new_tokens,
                             max_new_tokens=new_tokens, pad_token_id=pad, eos_token_id=eos)
        return int((out[:, P:] != pad).sum())

    times = {"ours": [], "hf": []}
    counts = {}
    with torch.no_grad(), never_ends(model, [eos, pad]):
        ours(0), hf(0)                                   # warm-up (allocator, kernels, caches)
        for r in range(repeats):
            for name, fn in (("ours", ours), ("hf", hf)):
                seconds, counts[name] = timed(lambda: fn(r + 1), device)
                times[name].append(seconds)
    t_ours, t_hf = statistics.median(times["ours"]), statistics.median(times["hf"])
    return {
        "device": device.type, "size": size, "params": count_parameters(model), "batch": batch,
        "new_tokens": new_tokens, "tokens_ours": counts["ours"], "tokens_hf": counts["hf"],
        "ours_tok_s": counts["ours"] / t_ours, "hf_tok_s": counts["hf"] / t_hf,
        "speedup": (counts["ours"] / t_ours) / (counts["hf"] / t_hf),
    }


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} intra-op threads), transformers {transformers.__version__}, "
            f"Python {platform.python_version()}, GPU: {gpu}")


def format_table(rows, header_lines) -> str:
    lines = [*header_lines, "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---:" if i > 1 else "---" for i in range(len(COLUMNS))) + "|"]
    for r in rows:
        same = "" if r["tokens_ours"] == r["tokens_hf"] else " (MISMATCH)"
        lines.append(
            f"| {r['device']} | {r['size']} ({r['params'] / 1e6:.2f}M) | {r['batch']} | "
            f"{r['new_tokens']} | {r['tokens_ours']} / {r['tokens_hf']}{same} | "
            f"{r['ours_tok_s']:,.0f} | {r['hf_tok_s']:,.0f} | {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", nargs="+", help="model sizes (default: small base [+ large on cuda])")
    p.add_argument("--batches", nargs="+", type=int, help="batch sizes (default: 1 16 64 [+ 256 on cuda])")
    p.add_argument("--new-tokens", nargs="+", type=int, default=[64], help="tokens per row (default: 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell; the median is reported")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave torch's choice)")
    p.add_argument("--out", help="append the table (with command, machine, date) to this file")
    p.add_argument("--quick", action="store_true", help="tiny grid (tiny model, batch 1 and 4, 4 tokens)")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        sizes, batches, new_tokens, repeats = ["tiny"], [1, 4], [4], 1
    else:
        sizes = args.sizes or (["small", "base", "large"] if cuda else ["small", "base"])
        batches = args.batches or ([1, 16, 64, 256] if cuda else [1, 16, 64])
        new_tokens, repeats = args.new_tokens, args.repeats
    tok = build_tokenizer()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for size in sizes:
        for batch in batches:
            for n in new_tokens:
                rows.append(bench_one(size, batch, n, device, repeats, tok))
                r = rows[-1]
                print(f"  {size} batch={batch} new={n}: ours {r['ours_tok_s']:,.0f} tok/s, "
                      f"HF {r['hf_tok_s']:,.0f} tok/s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    argv = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/bench_sampler.py " + " ".join(map(shlex.quote, argv))
    header = [
        f"### Sampler: minimopd `generate` vs transformers `generate` ({datetime.date.today()})",
        "",
        f"- command: `{command.strip()}` (median of {repeats} after 1 warm-up; sampling at T=1.0)",
        f"- machine: {machine(device)}",
        f"- 1-min load average: {load_before:.2f} before, {load_after:.2f} after",
    ]
    table = format_table(rows, header)
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + table)
    return table


if __name__ == "__main__":
    main()
