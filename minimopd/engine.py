"""The sampling engine behind `rollout.generate`: a decode loop written for RL-sized batches.

An RL or distillation step samples G completions for each of P prompts. `model.generate` treats
that as P x G unrelated rows: it prefills every prompt G times, grows its key/value cache by
concatenation at every step, and runs the whole module tree (masks, cache objects, output
records) for every token. This engine does the same mathematics with less work:

* **one prefill per prompt**: the P prompts are prefilled once and their keys/values copied to
  the G samples (nanochat's engine does the same);
* **a preallocated cache**: one (rows, kv_heads, prompt + max_new_tokens, head_dim) buffer per
  layer, written in place; attention reads the filled part;
* **a lean step**: the decoder is the model's own weights in a few fused operations (q/k/v in
  one matmul, gate/up in one, `F.rms_norm`, SDPA with grouped-query attention), nothing else;
* **finished rows leave the batch** (on the CPU): once enough rows have produced `<|end|>`,
  the batch is compacted, so answers of different lengths do not pay for the longest one;
* **on CUDA, a static decode step**: the step attends over the whole buffer with a mask, so
  its shapes never change and it is captured once as a CUDA graph and replayed (tiny models
  are launch-bound there); the loop checks for finished rows every few steps only.

It runs the decoder-only architectures that share Llama's block (Qwen2, Qwen3, Llama,
Mistral without sliding windows): `supports(model)` says why not otherwise, and `generate`
then falls back to a plain transformers loop. Log-probs equal a full forward pass of the model
(tests/test_rollout.py), and greedy decoding equals `model.generate` token for token.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kl import _prepend_zero_column
from .models import PolicyWithValue, last_hidden_state, position_ids_from_mask, unwrap

GRAPH_CHECK_EVERY = 4    # CUDA: look for all-finished every this many steps (one host sync)


def supports(model) -> str | None:
    """None if the engine can run `model`, else the reason it cannot."""
    cfg = model.config
    if getattr(cfg, "hidden_act", None) != "silu":
        return f"hidden_act={getattr(cfg, 'hidden_act', None)!r} (the engine implements SwiGLU)"
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "sliding_window", None) not in (None, 0) \
            and getattr(cfg, "model_type", "") == "mistral":
        return "sliding-window attention"
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        return f"{type(model).__name__} has no model.layers"
    attn, mlp = layers[0].self_attn, layers[0].mlp
    if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) or \
            not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        return "its layers are not Llama-style (q/k/v/o projections and a gate/up/down MLP)"
    if getattr(model.model, "rotary_emb", None) is None:
        return "no rotary embedding module"
    return None


def _rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    # The transformers formula (float32 statistics, then back), for bf16 / fp16 models.
    h = x.float()
    h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return h if weight is None else weight * h


def _interleave(d: int) -> torch.Tensor:
    """Permutation of a head's d dims that puts rotary pairs (i, i + d/2) next to each other."""
    half = torch.arange(d // 2)
    return torch.stack([half, half + d // 2], dim=1).reshape(-1)


@dataclass
class _Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    qk_norm: torch.Tensor | None   # (hq + hk, d): q_norm's weight per query head, k_norm's per key head
    wo: torch.Tensor
    bo: torch.Tensor | None
    ln2: torch.Tensor
    wgu: torch.Tensor
    wd: torch.Tensor


class Decoder:
    """A model's weights arranged for decoding (q/k/v and gate/up fused), and the forward pass
    of one chunk of tokens against a preallocated key/value cache."""

    def __init__(self, model):
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.embed = model.get_input_embeddings().weight
        self.lm_head = model.get_output_embeddings().weight
        self.norm = model.model.norm.weight
        self.rotary = model.model.rotary_emb
        self.scale = getattr(model.model.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        hq, hk, d = self.n_heads, self.n_kv, self.head_dim
        # Rotary embeddings as complex products: within every query and key head the dims are
        # reordered so that each rotated pair (i, i + d/2) is adjacent. Attention scores are dot
        # products of queries and keys, which one shared reordering leaves unchanged, and values
        # are not reordered, so nothing downstream sees it.
        perm = _interleave(d).to(model.device if hasattr(model, "device") else "cpu")

        def heads(w, n):   # reorder the dims of each of n heads (rows of a projection, or a bias)
            return w.view(n, d, *w.shape[1:])[:, perm].reshape(w.shape)

        # Fused weights are built from the live parameters: under autograd (training) gradients
        # flow back through the concatenations; under no_grad (sampling) they are plain copies.
        self.layers = []
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            biases = [p.bias for p in (a.q_proj, a.k_proj, a.v_proj)]
            self.layers.append(_Layer(
                ln1=layer.input_layernorm.weight,
                wqkv=torch.cat([heads(a.q_proj.weight, hq), heads(a.k_proj.weight, hk), a.v_proj.weight]),
                bqkv=(torch.cat([heads(biases[0], hq), heads(biases[1], hk), biases[2]])
                      if biases[0] is not None else None),
                qk_norm=torch.cat([a.q_norm.weight[perm].expand(hq, -1), a.k_norm.weight[perm].expand(hk, -1)])
                if hasattr(a, "q_norm") else None,
                wo=a.o_proj.weight, bo=a.o_proj.bias, ln2=layer.post_attention_layernorm.weight,
                wgu=torch.cat([m.gate_proj.weight, m.up_proj.weight]), wd=m.down_proj.weight))
        self.dtype, self.device = self.embed.dtype, self.embed.device

    def rope_table(self, length: int) -> torch.Tensor:
        """(length, head_dim / 2) complex rotations cos + i sin for positions 0..length-1, from
        the model's own rotary module (so every rope variant it implements is honoured)."""
        dummy = torch.zeros(1, 1, self.head_dim, dtype=self.dtype, device=self.device)
        cos, sin = self.rotary(dummy, torch.arange(length, device=self.device)[None])
        half = self.head_dim // 2
        return torch.complex(cos[0, :, :half].float(), sin[0, :, :half].float())

    def new_cache(self, rows: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        shape = (rows, self.n_kv, length, self.head_dim)
        return [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                 torch.zeros(shape, dtype=self.dtype, device=self.device)) for _ in self.layers]

    def forward(self, ids, rope, cache, start, mask, *, window: int | None = None):
        """Hidden states (B, S, H) after the final norm for token ids (B, S) at cache columns
        start..start+S-1. `rope` (B, S, head_dim/2) holds the rows' complex rotations; `mask` is
        the (B, 1, S, K) additive attention mask (0 or -inf) over the first K = `window` cache
        columns (default start + S). `start` may be a 0-dim tensor (the CUDA-graph step writes
        at a position held on the device)."""
        B, S = ids.shape
        K = window if window is not None else start + S
        x = F.embedding(ids.reshape(-1), self.embed)       # (B*S, H): 2-D activations throughout
        rope = rope.reshape(B * S, 1, -1)
        bias = self._bias(mask, B, S, K)
        cols = start + torch.arange(S, device=ids.device) if torch.is_tensor(start) else None
        for lw, (kc, vc) in zip(self.layers, cache):
            q, k, v = self._qkv(lw, x, B, S, rope)
            if cols is None:
                kc[:, :, start:start + S] = k
                vc[:, :, start:start + S] = v
            else:
                kc.index_copy_(2, cols, k)
                vc.index_copy_(2, cols, v)
            x = self._finish(lw, x, self._attend(q, kc[:, :, :K], vc[:, :, :K], bias))
        return _rms_norm(x, self.norm, self.eps).view(B, S, -1)

    def prefix_forward(self, prompt_ids, prompt_attn, row_prompt=None, comp_ids=None):
        """Final hidden states of U prompts (U, P) and of R continuations (R, L) of them, where
        row r continues prompt `row_prompt[r]`: each prompt is computed once however many rows
        share it, and its keys/values are reused by those rows (differentiable: the gradients of
        all rows of a prompt meet in its one computation). Returns (prompt hidden (U, P, H),
        continuation hidden (R, L, H) or None). Without continuations it is the plain forward
        pass of a left- or right-padded batch (the offline stages train with it)."""
        U, P = prompt_ids.shape
        pos = position_ids_from_mask(prompt_attn)
        valid = prompt_attn.bool()
        causal = torch.ones(P, P, dtype=torch.bool, device=valid.device).tril()
        p_mask = _additive((causal & valid[:, None, :]) | torch.eye(P, dtype=torch.bool, device=valid.device),
                           self.dtype)[:, None]                                          # (U, 1, P, P)
        p_bias = self._bias(p_mask, U, P, P)
        xp = F.embedding(prompt_ids.reshape(-1), self.embed)
        cont = comp_ids is not None and comp_ids.shape[1] > 0
        if cont:
            R, L = comp_ids.shape
            c_pos = pos[:, -1:][row_prompt] + 1 + torch.arange(L, device=comp_ids.device)  # (R, L)
            c_allowed = torch.cat([valid[row_prompt][:, None, :].expand(R, L, P),
                                   torch.ones(L, L, dtype=torch.bool, device=valid.device).tril().expand(R, L, L)],
                                  dim=-1)
            c_bias = self._bias(_additive(c_allowed, self.dtype)[:, None], R, L, P + L)   # over P+L keys
            xc = F.embedding(comp_ids.reshape(-1), self.embed)
            rope = self.rope_table(int(c_pos.max()) + 1)
            c_rope = rope[c_pos].reshape(R * L, 1, -1)
        else:
            rope = self.rope_table(int(pos.max()) + 1)
        p_rope = rope[pos].reshape(U * P, 1, -1)
        for lw in self.layers:
            qp, kp, vp = self._qkv(lw, xp, U, P, p_rope)
            if cont:
                qc, kc, vc = self._qkv(lw, xc, R, L, c_rope)
                keys = torch.cat([kp[row_prompt], kc], dim=2)
                values = torch.cat([vp[row_prompt], vc], dim=2)
                xc = self._finish(lw, xc, self._attend(qc, keys, values, c_bias))
            xp = self._finish(lw, xp, self._attend(qp, kp, vp, p_bias))
        hidden = _rms_norm(xp, self.norm, self.eps).view(U, P, -1)
        return hidden, (_rms_norm(xc, self.norm, self.eps).view(R, L, -1) if cont else None)

    def _qkv(self, lw: _Layer, x, B: int, S: int, rope):
        """Queries (B, hq, S, d), keys and values (B, hk, S, d) of one layer from its input
        x (B*S, H), rotary applied. (Activations stay 2-D: matmuls on (B*S, H) are ~25% faster
        on a CPU than on (B, S, H).)"""
        hq, hk, d = self.n_heads, self.n_kv, self.head_dim
        qkv = F.linear(_rms_norm(x, lw.ln1, self.eps), lw.wqkv, lw.bqkv).view(B * S, hq + 2 * hk, d)
        qk, v = qkv[:, :hq + hk], qkv[:, hq + hk:]
        if lw.qk_norm is not None:   # Qwen3: per-head RMSNorm of queries and keys, in one call
            qk = _rms_norm(qk, None, self.eps) * lw.qk_norm
        pairs = torch.view_as_complex(qk.float().reshape(B * S, hq + hk, d // 2, 2))
        qk = torch.view_as_real(pairs * rope).to(x.dtype).view(B, S, hq + hk, d).transpose(1, 2)
        return qk[:, :hq], qk[:, hq:], v.view(B, S, hk, d).transpose(1, 2)

    def _finish(self, lw: _Layer, x, o):
        """The rest of a layer after attention: output projection, residual, SwiGLU MLP;
        x is (B*S, H), o (B, hq, S, d)."""
        x = x + F.linear(o.transpose(1, 2).reshape(x.shape[0], -1), lw.wo, lw.bo)
        gate, up = F.linear(_rms_norm(x, lw.ln2, self.eps), lw.wgu).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, lw.wd)

    def _bias(self, mask, B: int, S: int, K: int):
        """The additive mask (B, 1, S, K) as `_attend` consumes it: as is for SDPA (GPU), else
        expanded once per forward pass to (B * hk, g * S, K) for the batched matmuls."""
        if self.device.type == "cuda":
            return mask
        hk, g = self.n_kv, self.n_heads // self.n_kv
        return mask.expand(B, hk, S, K)[:, :, None].expand(B, hk, g, S, K).reshape(B * hk, g * S, K)

    def _attend(self, q, k, v, bias):
        """Grouped-query attention of q (B, hq, S, d) over keys/values (B, hk, K, d) with the
        additive mask from `_bias`. On a GPU: fused SDPA. On a CPU: two batched matmuls over
        (row, kv head) pairs with the query heads of a group stacked, about twice as fast as
        SDPA for one-token decode steps."""
        B, hq, S, d = q.shape
        hk, K = k.shape[1], k.shape[2]
        if q.is_cuda:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale,
                                                  enable_gqa=hq != hk)
        g = hq // hk
        scores = torch.baddbmm(bias, q.reshape(B * hk, g * S, d), k.reshape(B * hk, K, d).transpose(1, 2),
                               alpha=self.scale)
        out = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(B * hk, K, d))
        return out.view(B, hq, S, d)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.lm_head).float()


def first_rows(prompt_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, row_prompt): for rows labelled with the prompt they continue, the index of one
    row per distinct prompt (U,) and, per row, which of those U prompts it continues (R,)."""
    uniq, row_prompt = torch.unique(prompt_index, return_inverse=True)
    rows = torch.arange(len(prompt_index), device=prompt_index.device)
    first = torch.full((len(uniq),), len(prompt_index), dtype=torch.long, device=prompt_index.device)
    first = first.scatter_reduce(0, row_prompt, rows, reduce="amin")
    return first, row_prompt


def window_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                   prompt_index: torch.Tensor | None = None):
    """Logits (B, T-W, V) and, for a `PolicyWithValue`, values (B, T-W) of the completion
    window of rollout rows, W = prompt_length - 1: the positions whose predictions a loss on
    completion tokens uses (window column j predicts window token j + 1, as everywhere; values
    are token-aligned, column 0 is 0).

    With `prompt_index` (which prompt each row continues) and a model the engine runs, each
    prompt is computed once for all rows that share it (`Decoder.prefix_forward`), gradients
    included; otherwise one full forward pass of the model, cut to the window."""
    lm = unwrap(model)
    P = prompt_length
    if prompt_index is not None and supports(lm) is None:
        first, row_prompt = first_rows(prompt_index)
        prompt_hidden, cont_hidden = Decoder(lm).prefix_forward(
            input_ids[first, :P], attention_mask[first, :P], row_prompt, input_ids[:, P:])
        hidden = torch.cat([prompt_hidden[:, -1:][row_prompt], cont_hidden], dim=1)
    else:
        hidden = last_hidden_state(lm, input_ids, attention_mask)[:, P - 1:]
    logits = lm.get_output_embeddings()(hidden)
    values = None
    if isinstance(model, PolicyWithValue):
        values = _prepend_zero_column(model.head(hidden)[:, :-1].float())
    return logits, values


def _additive(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """Boolean "may attend" mask -> additive mask (0 where allowed, -inf elsewhere)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


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
