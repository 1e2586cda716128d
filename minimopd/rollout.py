"""Batched sampling with a KV cache: the rollout function of every online stage.

`generate` left-pads the prompts, prefills each prompt once, then decodes one token per step for
all its samples, reusing the key/value cache, until every row has produced `<|end|>` or the
token budget runs out (the decode loop is `engine.decode`; see there for what makes it fast). It records the log-probability of each sampled token under the sampling
distribution (logits / temperature, before top-p truncation, as vLLM and trl report them), so an
RL or distillation stage gets pi_old(y_t) for free. Those log-probs equal a full forward pass on
the finished sequences (`models.sequence_logprobs`) up to float error: tests/test_rollout.py
checks it. With `topk=k` it also records the ids of the k most likely tokens at every step, the
support of top-k distillation.

    >>> ro = generate(model, tok, ["What is 2+2?"], num_samples=4, max_new_tokens=8, seed=0)
    >>> ro.texts            # 4 completions of the one prompt, grouped prompt-major
    >>> ro.logprobs.shape   # (4, T), token-aligned with ro.input_ids, 0 outside completions
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from transformers import DynamicCache

from . import engine
from .decoder import supports
from .models import position_ids_from_mask, unwrap
from .threads import model_threads
from .tokenizer import CHAT_TEMPLATE, chat_prompt, check_compatible


@dataclass
class Rollout:
    """A batch of sampled completions. Rows are grouped prompt-major: [p0s0, p0s1, ..., p1s0, ...].

    All (N, T) tensors share one alignment: the prompt is left-padded to a common length P and
    the completion follows (right-padded), so `input_ids[:, P:]` are the generated tokens.
    """
    input_ids: torch.Tensor        # (N, T) long
    attention_mask: torch.Tensor   # (N, T) long, 1 on real (non-pad) tokens
    completion_mask: torch.Tensor  # (N, T) float, 1 on generated tokens incl. the final <|end|>
    logprobs: torch.Tensor         # (N, T) float, log pi(y_t | <t) at sampling time, 0 elsewhere
    prompts: list[str]             # N user prompts (repeated num_samples times)
    texts: list[str]               # N decoded completions, special tokens dropped except tags
    prompt_index: torch.Tensor     # (N,) long, index into the original prompt list
    finished: torch.Tensor         # (N,) bool, True if the row ended with <|end|>
    prompt_length: int             # P, the padded prompt length
    meta: dict = field(default_factory=dict)
    topk_ids: torch.Tensor | None = None   # (N, T, k) long with generate(topk=k): the k most
                                           # likely ids of the distribution that sampled token t

    @property
    def completion_lengths(self) -> torch.Tensor:
        """(N,) number of generated tokens per row (the final <|end|> included)."""
        return self.completion_mask.sum(dim=1).long()

    @property
    def prompt_mask(self) -> torch.Tensor:
        """(N, T) float, 1 on real prompt tokens."""
        mask = self.attention_mask.float().clone()
        mask[:, self.prompt_length:] = 0
        return mask

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "Rollout":
        for name in ("input_ids", "attention_mask", "completion_mask", "logprobs",
                     "prompt_index", "finished", "topk_ids"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self


@lru_cache(maxsize=None)
def _cache_kwarg(model_class) -> str:
    """The name a model's forward takes its KV cache under: `cache` in transformers >= 5.24,
    `past_key_values` before (still accepted there, with a FutureWarning until 5.40)."""
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def completion_text(tokenizer, ids, eos: int | None = None) -> str:
    """The text of one completion's token ids: end-of-turn (`eos`, default the tokenizer's) and
    padding dropped, the reasoning tags (special tokens, which `skip_special_tokens=True` would
    delete) kept, so rewards can see them."""
    drop = {tokenizer.eos_token_id if eos is None else eos, tokenizer.pad_token_id}
    return tokenizer.decode([t for t in ids if t not in drop], skip_special_tokens=False)


def encode_prompts(tokenizer, prompts, *, chat: bool = True):
    """Token ids of each prompt (chat-formatted unless `chat=False`) as lists of ints.

    The course's own template only wraps the text (`<|user|>` + prompt + `<|end|><|assistant|>`),
    so it is rendered once around a marker and reused; any other template is rendered per prompt."""
    if chat:
        marker = "\x00prompt\x00"
        if tokenizer.chat_template == CHAT_TEMPLATE:
            head, tail = chat_prompt(tokenizer, marker).split(marker)
            texts = [head + p + tail for p in prompts]
        else:
            texts = [chat_prompt(tokenizer, p) for p in prompts]
    else:
        texts = list(prompts)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:   # the Rust tokenizer encodes a batch in one call
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


@torch.no_grad()
def _decode_with_transformers(model, prompt_ids, prompt_attn, *, num_samples, max_new_tokens,
                              temperature, top_p, generator, topk, eos, pad) -> engine.Samples:
    """The plain decode loop through the model's own forward and a `DynamicCache`: what
    `generate` uses for architectures the engine does not implement (`decoder.supports`)."""
    prompt_ids = prompt_ids.repeat_interleave(num_samples, dim=0)
    attn = prompt_attn.repeat_interleave(num_samples, dim=0)
    N = prompt_ids.shape[0]
    cache = {_cache_kwarg(type(model)): DynamicCache()}
    positions = position_ids_from_mask(attn)
    out = model(input_ids=prompt_ids, attention_mask=attn, position_ids=positions,
                use_cache=True, logits_to_keep=1, **cache)
    next_pos = positions[:, -1:] + 1
    tokens, logps, tops = [], [], []
    finished = torch.zeros(N, dtype=torch.bool, device=prompt_ids.device)
    for step in range(max_new_tokens):
        nxt, lp, top = engine.sample_next(out.logits[:, -1].float(), temperature, top_p, generator, topk)
        # Rows that already ended keep emitting padding with log-prob 0 and mask 0.
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
        tokens.append(nxt)
        logps.append(torch.where(finished, torch.zeros_like(lp), lp))
        tops.append(top)
        alive = ~finished
        finished = finished | (nxt == eos)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break   # no forward pass for a token that will never be sampled
        attn = torch.cat([attn, alive.long()[:, None]], dim=1)
        out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos,
                    use_cache=True, **cache)
        next_pos = next_pos + 1
    return engine.Samples(tokens=torch.stack(tokens, 1), logprobs=torch.stack(logps, 1),
                          topk=torch.stack(tops, 1) if topk else None, finished=finished)


@torch.no_grad()
@model_threads
def generate(model, tokenizer, prompts, *, num_samples: int = 1, max_new_tokens: int = 32,
             temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
             chat: bool = True, topk: int = 0, eos_token_id: int | None = None) -> Rollout:
    """Sample `num_samples` completions for each prompt; see the module docstring.

    `temperature=0` decodes greedily (log-probs are then those of the untempered model).
    `chat=False` feeds the prompts as raw text (for base models that never saw the chat format).
    `topk=k` records the k most likely token ids at every sampled position (`Rollout.topk_ids`).
    `eos_token_id` is the token that ends a row (default: the tokenizer's end of turn); -1
    never ends one early (benchmarks use it to time exactly `max_new_tokens` per row).
    """
    if isinstance(prompts, str):
        raise TypeError("generate() takes a list of prompts, got one string (it would be read as "
                        f"one prompt per character); pass [{prompts[:30]!r}]")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("generate() got an empty prompt list; pass at least one prompt")
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(f"num_samples ({num_samples}) and max_new_tokens ({max_new_tokens}) must be >= 1")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if topk < 0:
        raise ValueError(f"topk must be >= 0, got {topk}")
    model = unwrap(model)
    check_compatible(tokenizer, model)
    device = next(model.parameters()).device
    context = getattr(model.config, "max_position_embeddings", None)

    encoded = encode_prompts(tokenizer, prompts, chat=chat)
    P = max(len(ids) for ids in encoded)
    if context is not None and P + max_new_tokens > context:
        longest = max(range(len(prompts)), key=lambda i: len(encoded[i]))
        raise ValueError(
            f"prompt {longest} is {len(encoded[longest])} tokens and max_new_tokens={max_new_tokens}: "
            f"{P + max_new_tokens} exceeds the model's context of {context} tokens. Shorten the "
            f"prompt or lower max_new_tokens to at most {max(context - P, 0)}.")

    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    N = len(prompts) * num_samples
    prompt_ids = torch.full((len(prompts), P), pad, dtype=torch.long)
    prompt_attn = torch.zeros((len(prompts), P), dtype=torch.long)
    for i, ids in enumerate(encoded):
        prompt_ids[i, P - len(ids):] = torch.tensor(ids)
        prompt_attn[i, P - len(ids):] = 1
    prompt_ids, prompt_attn = prompt_ids.to(device), prompt_attn.to(device)

    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    was_training = model.training
    model.eval()
    run = engine.decode if supports(model) is None else _decode_with_transformers
    out = run(model, prompt_ids, prompt_attn, num_samples=num_samples, max_new_tokens=max_new_tokens,
              temperature=temperature, top_p=top_p, generator=generator, topk=topk, eos=eos, pad=pad)
    model.train(was_training)

    prompt_ids = prompt_ids.repeat_interleave(num_samples, dim=0)
    prompt_attn = prompt_attn.repeat_interleave(num_samples, dim=0)
    gen, gen_lp = out.tokens, out.logprobs                            # (N, L)
    # A generated token is real if it is not padding emitted after the row finished.
    ended_before = torch.zeros_like(gen, dtype=torch.bool)
    ended_before[:, 1:] = (gen[:, :-1] == eos).cumsum(dim=1).bool()
    gen_mask = (~ended_before).float()
    input_ids = torch.cat([prompt_ids, gen], dim=1)
    attention_mask = torch.cat([prompt_attn, gen_mask.long()], dim=1)
    completion_mask = torch.cat([torch.zeros_like(prompt_attn, dtype=torch.float), gen_mask], dim=1)
    logprobs = torch.cat([torch.zeros_like(prompt_attn, dtype=torch.float), gen_lp * gen_mask], dim=1)

    topk_ids = None
    if topk:
        gen_top = out.topk * gen_mask.long()[..., None]                   # (N, L, k)
        topk_ids = torch.cat([gen_top.new_zeros(N, P, gen_top.shape[-1]), gen_top], dim=1)
    finished = out.finished

    texts = [completion_text(tokenizer, [t for t, keep in zip(row, m) if keep], eos)
             for row, m in zip(gen.tolist(), gen_mask.tolist())]
    return Rollout(
        input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask,
        logprobs=logprobs, prompts=[p for p in prompts for _ in range(num_samples)], texts=texts,
        prompt_index=torch.arange(len(prompts), device=device).repeat_interleave(num_samples),
        finished=finished, prompt_length=P, topk_ids=topk_ids,
        meta={"temperature": temperature, "top_p": top_p, "seed": seed, "chat": chat},
    )
