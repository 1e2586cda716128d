"""The model's own weights as a lean decoder: the forward passes behind the sampling engine
(`engine.decode`) and the completion-window scoring of rollout rows (`window_forward`).

`Decoder` reads a Llama-style block (Qwen2, Qwen3, Llama, Mistral without sliding windows; see
`supports`) into a few fused operations: q/k/v in one matmul, gate/up in one, `F.rms_norm`,
SDPA with grouped-query attention, a key/value cache written in place. `prefix_forward` computes
each distinct prompt once for every row that continues it, with gradients, which is what a loss
on G samples per prompt needs; `window_forward` uses it when it can and falls back to one full
forward pass of the model otherwise; at every real position the two agree, gradients included
(tests/test_rollout.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kl import _prepend_zero_column
from .models import PolicyWithValue, last_hidden_state, position_ids_from_mask, unwrap


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
