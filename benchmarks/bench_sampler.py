"""Sampler throughput: minimopd's `generate` vs transformers' `model.generate`.

For every (model size, prompts x samples, new tokens) cell of a grid, both samplers run on the
SAME freshly initialised Qwen3 model with the SAME prompts (built by
`minimopd.rollout.encode_prompts`, left-padded, identical token ids): P prompts, G samples of
each (transformers: `num_return_sequences=G`), temperature 1.0, top-p 1.0, no top-k. The number
printed is generated tokens per second of wall time, median of `--repeats` timed runs after one
untimed warm-up of each sampler, the two interleaved so that background load hits both alike.
Both run with the same intra-op thread count (`--threads`, default: minimopd's own choice for
the model, `minimopd.threads`).

Equal lengths. Both samplers must produce exactly N tokens per row, or the faster one is simply
the one that stopped earlier: ours gets `eos_token_id=-1` (no row ends early), transformers gets
a forward hook that bans `<|end|>` and `<|pad|>` plus `min_new_tokens=N`. Tokens are counted
independently (ours: `Rollout.completion_lengths`; transformers: non-pad new tokens) and the
table shows both counts, which must match. (Stopping rows early is where our sampler gains
more, since finished rows leave its batch: the online-step benchmark measures that workload.)

What is timed. Ours: the whole `generate` call (prompt encoding, prefill, decode loop, per-token
log-probs, decoding to text). transformers: `model.generate` on the pre-tokenised batch only.
So the comparison is, if anything, tilted towards transformers.

Memory (`--memory`): each sampler runs once more in a fresh child process, which reports how far
its resident set size rose above what it was just before the call (sampled every 5 ms
from /proc/self/statm while the call runs), and on CUDA how far the peak allocated
GPU memory rose.

Run (from the repo root; numbers go into BENCHMARKS.md with the command, machine and date):

    python benchmarks/bench_sampler.py                        # default grid, cuda if available
    python benchmarks/bench_sampler.py --device cpu --sizes small --cells 16x8 --repeats 5
    python benchmarks/bench_sampler.py --memory --out BENCHMARKS.md
    python benchmarks/bench_sampler.py --quick                # tiny grid in seconds (the test)
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))      # benchmarks/common.py
from common import append, load_average, machine, peak_memory  # noqa: E402
from minimopd.models import build_model, count_parameters  # noqa: E402
from minimopd.rollout import encode_prompts, generate  # noqa: E402
from minimopd.threads import stage_threads  # noqa: E402
from minimopd.tokenizer import build_tokenizer  # noqa: E402

COLUMNS = ["device", "model (params)", "prompts x samples", "new tokens", "threads",
           "tokens ours / HF", "ours tok/s", "transformers tok/s", "speed-up (ours/HF)",
           "peak mem ours / HF (MB)"]


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


def samplers(size: str, prompts_n: int, samples: int, new_tokens: int, device: torch.device, tok):
    """The model and the two samplers of one cell, each `fn(seed) -> tokens generated`."""
    model = build_model(size, tok, seed=0).to(device).eval()
    prompts = make_prompts(prompts_n)
    pad, eos = tok.pad_token_id, tok.eos_token_id
    encoded = encode_prompts(tok, prompts)              # exactly what `generate` feeds the model
    P = max(len(ids) for ids in encoded)
    input_ids = torch.full((prompts_n, P), pad, dtype=torch.long)
    attention_mask = torch.zeros((prompts_n, P), dtype=torch.long)
    for i, ids in enumerate(encoded):
        input_ids[i, P - len(ids):] = torch.tensor(ids)
        attention_mask[i, P - len(ids):] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)

    def ours(seed):
        ro = generate(model, tok, prompts, num_samples=samples, max_new_tokens=new_tokens,
                      temperature=1.0, top_p=1.0, seed=seed, eos_token_id=-1)
        return int(ro.completion_lengths.sum())

    def hf(seed):
        torch.manual_seed(seed)
        with never_ends(model, [eos, pad]):
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, min_new_tokens=new_tokens,
                                 max_new_tokens=new_tokens, num_return_sequences=samples,
                                 pad_token_id=pad, eos_token_id=eos)
        return int((out[:, P:] != pad).sum())

    return model, {"ours": ours, "hf": hf}


def bench_one(size, prompts_n, samples, new_tokens, device, repeats, tok, threads, memory):
    model, fns = samplers(size, prompts_n, samples, new_tokens, device, tok)
    times = {"ours": [], "hf": []}
    counts = {}
    pin = _pinned(threads, model)
    with torch.no_grad(), pin as n_threads:
        fns["ours"](0), fns["hf"](0)                     # warm-up (allocator, kernels, caches)
        for r in range(repeats):
            for name in ("ours", "hf"):
                seconds, counts[name] = timed(lambda: fns[name](r + 1), device)
                times[name].append(seconds)
    t_ours, t_hf = statistics.median(times["ours"]), statistics.median(times["hf"])
    row = {
        "device": device.type, "size": size, "params": count_parameters(model), "prompts": prompts_n,
        "samples": samples, "new_tokens": new_tokens, "threads": n_threads,
        "tokens_ours": counts["ours"], "tokens_hf": counts["hf"],
        "ours_tok_s": counts["ours"] / t_ours, "hf_tok_s": counts["hf"] / t_hf,
        "speedup": (counts["ours"] / t_ours) / (counts["hf"] / t_hf), "mem": None,
    }
    if memory:
        row["mem"] = {name: child_peak_memory(name, size, prompts_n, samples, new_tokens, device, n_threads)
                      for name in ("ours", "hf")}
    return row


def _pinned(threads, model):
    if threads:
        @contextmanager
        def fixed():
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                yield threads
            finally:
                torch.set_num_threads(before)
        return fixed()
    return stage_threads(model)


def child_peak_memory(name, size, prompts_n, samples, new_tokens, device, threads) -> float:
    """MB by which one run of sampler `name` raised the RSS (CPU) or the allocated GPU
    memory (CUDA) of a fresh process at its peak (`common.peak_memory`)."""
    spec = json.dumps({"name": name, "size": size, "prompts": prompts_n, "samples": samples,
                       "new_tokens": new_tokens, "device": device.type, "threads": threads})
    out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _child(spec: str) -> None:
    s = json.loads(spec)
    torch.set_num_threads(s["threads"])
    device = torch.device(s["device"])
    _, fns = samplers(s["size"], s["prompts"], s["samples"], s["new_tokens"], device, build_tokenizer())
    with torch.no_grad():
        fns[s["name"]](0)            # warm-up: allocator pools and lazy initialisation
        with peak_memory(device) as mem:
            fns[s["name"]](1)
    print(mem["vram_mb"] if device.type == "cuda" else mem["rss_mb"])


def format_table(rows, header_lines) -> str:
    lines = [*header_lines, "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---:" if i > 1 else "---" for i in range(len(COLUMNS))) + "|"]
    for r in rows:
        same = "" if r["tokens_ours"] == r["tokens_hf"] else " (MISMATCH)"
        mem = "-" if r["mem"] is None else f"{r['mem']['ours']:.0f} / {r['mem']['hf']:.0f}"
        lines.append(
            f"| {r['device']} | {r['size']} ({r['params'] / 1e6:.2f}M) | {r['prompts']} x {r['samples']} | "
            f"{r['new_tokens']} | {r['threads']} | {r['tokens_ours']} / {r['tokens_hf']}{same} | "
            f"{r['ours_tok_s']:,.0f} | {r['hf_tok_s']:,.0f} | {r['speedup']:.2f}x | {mem} |")
    return "\n".join(lines) + "\n"


def parse_cell(text: str) -> tuple[int, int]:
    try:
        p, g = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a cell is PROMPTSxSAMPLES, e.g. 16x8; got {text!r}") from None
    return p, g


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", nargs="+", help="model sizes (default: small base [+ large on cuda])")
    p.add_argument("--cells", nargs="+", type=parse_cell,
                   help="PROMPTSxSAMPLES cells (default: 1x1 16x1 16x8 64x8 [+ 64x16 on cuda])")
    p.add_argument("--new-tokens", nargs="+", type=int, default=[48], help="tokens per row (default: 48)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell; the median is reported")
    p.add_argument("--threads", type=int, help="intra-op threads for both samplers (default: minimopd's choice)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (child processes)")
    p.add_argument("--out", help="append the table (with command, machine, date) to this file")
    p.add_argument("--quick", action="store_true", help="tiny grid (tiny model, 1x1 and 2x2, 4 tokens)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.child:
        _child(args.child)
        return ""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.quick:
        sizes, cells, new_tokens, repeats = ["tiny"], [(1, 1), (2, 2)], [4], 1
    else:
        sizes = args.sizes or (["small", "base", "large"] if cuda else ["small", "base"])
        cells = args.cells or ([(1, 1), (16, 1), (16, 8), (64, 8), (64, 16)] if cuda
                               else [(1, 1), (16, 1), (16, 8), (64, 8)])
        new_tokens, repeats = args.new_tokens, args.repeats
    tok = build_tokenizer()
    load_before = load_average()
    rows = []
    for size in sizes:
        for prompts_n, samples in cells:
            for n in new_tokens:
                rows.append(bench_one(size, prompts_n, samples, n, device, repeats, tok, args.threads,
                                      args.memory))
                r = rows[-1]
                print(f"  {size} {prompts_n}x{samples} new={n}: ours {r['ours_tok_s']:,.0f} tok/s, "
                      f"HF {r['hf_tok_s']:,.0f} tok/s ({r['speedup']:.2f}x)", file=sys.stderr, flush=True)
    load_after = load_average()
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
    append(args.out, table)
    return table


if __name__ == "__main__":
    main()
