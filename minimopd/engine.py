"""The sampling engine behind `rollout.generate`: a decode loop written for RL-sized batches.

An RL or distillation step samples G completions for each of P prompts. `model.generate` treats
that as P x G unrelated rows: it prefills every prompt G times, grows its key/value cache by
concatenation at every step, and runs the whole module tree (masks, cache objects, output
records) for every token. This engine does the same mathematics with less work:

* **one prefill per prompt**: the P prompts are prefilled once and their keys/values copied to
  the G samples (nanochat's engine does the same);
* **a preallocated cache**: one (rows, kv_heads, prompt + max_new_tokens, head_dim) buffer per
  layer, written in place; attention reads the filled part;
* **a lean step**: `decoder.Decoder`, the model's own weights in a few fused operations (q/k/v
  in one matmul, gate/up in one, `F.rms_norm`, SDPA with grouped-query attention), nothing else;
* **finished rows leave the batch** (on the CPU): once enough rows have produced `<|end|>`,
  the batch is compacted, so answers of different lengths do not pay for the longest one;
* **on CUDA, a static decode step**: the step attends over the whole buffer with a mask, so
  its shapes never change and it is captured once as a CUDA graph and replayed (tiny models
  are launch-bound there); the loop checks for finished rows every few steps only.

It runs the decoder-only architectures that share Llama's block (Qwen2, Qwen3, Llama,
Mistral without sliding windows): `decoder.supports(model)` says why not otherwise, and
`generate` then falls back to a plain transformers loop. Log-probs equal a full forward pass of
the model (tests/test_rollout.py), and greedy decoding equals `model.generate` token for token.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .decoder import Decoder, _additive
from .models import position_ids_from_mask

GRAPH_CHECK_EVERY = 4    # CUDA: look for all-finished every this many steps (one host sync)


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero out the tail of each row outside the smallest set with cumulative mass >= top_p."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p  # always keeps the top token
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return probs * keep


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator, topk: int):
    """Next tokens (B,), their log-probs under logits / temperature before top-p (B,), and the
    top-k ids of that distribution (B, k) or None. temperature 0 is greedy."""
    scaled = logits / temperature if temperature not in (0, 1) else logits
    logprobs = torch.log_softmax(scaled, dim=-1)
    if temperature > 0:
        probs = logprobs.exp()
        if top_p < 1:
            probs = _top_p_filter(probs, top_p)
        # An exponential race: argmax_v p_v / E_v with E_v ~ Exp(1) picks v with probability
        # p_v (the Gumbel-max trick in another form), in two cheap ops instead of multinomial.
        race = torch.rand(probs.shape, generator=generator, device=probs.device).log_().neg_()
        nxt = (probs / race).argmax(dim=-1)
    else:
        nxt = logits.argmax(dim=-1)
    tops = logprobs.topk(min(topk, logprobs.shape[-1]), dim=-1).indices if topk else None
    return nxt, logprobs.gather(1, nxt[:, None]).squeeze(1), tops


@dataclass
class Samples:
    tokens: torch.Tensor       # (N, L) long, pad after a row's <|end|>
    logprobs: torch.Tensor     # (N, L) float, 0 after the end
    topk: torch.Tensor | None  # (N, L, k) long
    finished: torch.Tensor     # (N,) bool


@torch.no_grad()
def decode(model, prompt_ids: torch.Tensor, prompt_attn: torch.Tensor, *, num_samples: int,
           max_new_tokens: int, temperature: float, top_p: float, generator, topk: int,
           eos: int, pad: int, graphs: bool | None = None) -> Samples:
    """Sample `num_samples` continuations of each left-padded prompt row (P, S) of `prompt_ids`;
    rows come out prompt-major (N = P * num_samples). See the module docstring."""
    dec = Decoder(model)
    P, S = prompt_ids.shape
    G, N, T = num_samples, prompt_ids.shape[0] * num_samples, S + max_new_tokens
    device = prompt_ids.device
    rope = dec.rope_table(T)

    # One prefill per prompt, then its keys and values copied to the prompt's G samples.
    pos = position_ids_from_mask(prompt_attn)
    valid = prompt_attn.bool()
    causal = torch.ones(S, S, dtype=torch.bool, device=device).tril()
    allowed = (causal & valid[:, None, :]) | torch.eye(S, dtype=torch.bool, device=device)  # pads see themselves
    pcache = dec.new_cache(P, S)
    hidden = dec.forward(prompt_ids, rope[pos], pcache, 0, _additive(allowed[:, None], dec.dtype))
    first = dec.logits(hidden[:, -1]).repeat_interleave(G, dim=0)                   # (N, V)
    cache = dec.new_cache(N, T)
    for (kc, vc), (pk, pv) in zip(cache, pcache):
        kc[:, :, :S] = pk.repeat_interleave(G, dim=0)
        vc[:, :, :S] = pv.repeat_interleave(G, dim=0)
    keys = torch.ones(N, T, dtype=torch.bool, device=device)
    keys[:, :S] = valid.repeat_interleave(G, dim=0)
    key_bias = _additive(keys, dec.dtype)                  # (N, T): -inf on the prompts' padding
    next_pos = pos[:, -1].repeat_interleave(G) + 1                                  # (N,)

    tokens = torch.full((N, max_new_tokens), pad, dtype=torch.long, device=device)
    logps = torch.zeros(N, max_new_tokens, dtype=torch.float32, device=device)
    tops = torch.zeros(N, max_new_tokens, topk, dtype=torch.long, device=device) if topk else None
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    use_graph = device.type == "cuda" if graphs is None else graphs
    step_fn = (_StaticStep(dec, cache, keys, rope, S, T, graph=device.type == "cuda")
               if use_graph else None)

    rows = None   # after a compaction: the original index of each row still in the batch
    logits, steps = first, 0
    for step in range(max_new_tokens):
        nxt, lp, top = sample_next(logits, temperature, top_p, generator, topk)
        at = slice(None) if rows is None else rows
        done = finished[at]
        nxt.masked_fill_(done, pad)                                # finished rows emit padding
        tokens[at, step] = nxt
        logps[at, step] = lp.masked_fill_(done, 0.0)
        if topk:
            tops[at, step] = top
        finished[at] = done | (nxt == eos)
        steps = step + 1
        if step == max_new_tokens - 1:
            break   # no forward pass for a token that will never be sampled
        if step_fn is not None:
            if (step + 1) % GRAPH_CHECK_EVERY == 0 and bool(finished.all()):
                break
            logits = step_fn(nxt, next_pos + step, S + step)
            continue
        live = ~finished[at]
        n_live, n_rows = int(live.sum()), len(live)
        if n_live == 0:
            break
        if n_live < n_rows and (n_rows - n_live) * (max_new_tokens - step - 1) >= 2 * n_live:
            # Compact: finished rows leave the batch (their cache rows are dropped).
            keep = live.nonzero().squeeze(1)
            rows = keep if rows is None else rows[keep]
            nxt, next_pos, key_bias = nxt[keep], next_pos[keep], key_bias[keep]
            cache = [(kc[keep], vc[keep]) for kc, vc in cache]
        cur = S + step
        hidden = dec.forward(nxt[:, None], rope[next_pos + step][:, None], cache, cur,
                             key_bias[:, None, None, :cur + 1])
        logits = dec.logits(hidden[:, -1])
    if step_fn is not None and bool(finished.all()):
        # the static step checks for the end only every GRAPH_CHECK_EVERY steps: drop the
        # columns after the last row's <|end|>, so both paths return the same shape
        steps = int((tokens[:, :steps] == eos).float().argmax(dim=1).max()) + 1
    return Samples(tokens=tokens[:, :steps], logprobs=logps[:, :steps],
                   topk=None if tops is None else tops[:, :steps], finished=finished)


class _StaticStep:
    """The decode step with fixed shapes: all N rows, attention over the whole buffer with a
    mask that opens one more column per step, the write position held on the device. On CUDA
    it is captured once as a CUDA graph and replayed; elsewhere (and if capture fails) it runs
    eagerly, which is what the CPU tests exercise."""

    def __init__(self, dec: Decoder, cache, keys, rope, S: int, T: int, *, graph: bool):
        N = keys.shape[0]
        dev = keys.device
        self.dec, self.cache, self.S, self.T, self.rope = dec, cache, S, T, rope
        self.cols = torch.arange(T, device=dev)
        self.keys = keys
        self.ids = torch.zeros(N, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(N, 1, dtype=torch.long, device=dev)
        self.cur = torch.zeros((), dtype=torch.long, device=dev)
        self.graph = None
        if graph:
            try:
                self._capture()
            except Exception as exc:  # pragma: no cover - needs a GPU
                warnings.warn(f"CUDA-graph capture of the decode step failed ({type(exc).__name__}: "
                              f"{exc}); decoding eagerly", stacklevel=3)
                self.graph = None

    def _run(self) -> torch.Tensor:
        mask = _additive((self.keys & (self.cols <= self.cur))[:, None, None, :], self.dec.dtype)
        hidden = self.dec.forward(self.ids, self.rope[self.pos], self.cache, self.cur, mask, window=self.T)
        return self.dec.logits(hidden[:, -1])

    def _capture(self):  # pragma: no cover - needs a GPU
        self.cur.fill_(self.S)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):   # warm-up outside the graph, as CUDA graphs require
                self._run()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._run()

    def __call__(self, nxt: torch.Tensor, pos: torch.Tensor, cur: int) -> torch.Tensor:
        self.ids.copy_(nxt[:, None])
        self.pos.copy_(pos[:, None])
        self.cur.fill_(cur)
        if self.graph is None:
            return self._run()
        self.graph.replay()  # pragma: no cover - needs a GPU
        return self.out.clone()  # pragma: no cover
