"""Lab 01 (SFT): cases, known wrong versions and the registry entry of its five functions.

Each function's classic bugs are listed as wrong versions (`*_WRONG`: a function with the
reference's signature and the hint to give when the student's output equals it); a short
`_diagnose_*` remains only for what no single wrong version expresses (a wrong shape, a missing
<|end|> whatever the mask, ids that differ anywhere, a loss mask that is not float).
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Optional

import torch

from .engine import LABS, TRAIN_BATCH, TRAIN_LEN, Case, GradedFunction, _rng, _response_mask, _shape


@lru_cache(maxsize=1)
def _tokenizer():
    from ..tokenizer import build_tokenizer
    return build_tokenizer()


def _text(r: random.Random, lo: int, hi: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789+-*=?., "
    return "".join(r.choice(alphabet) for _ in range(r.randint(lo, hi)))


def _sft_example_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    tok = _tokenizer()
    cases = [Case("chat examples", (tok, _text(r, 1, 20), _text(r, 1, 12))) for _ in range(3)]
    cases.append(Case("empty response", (tok, _text(r, 1, 10), ""),
                      hint="an empty response still ends with <|end|> (mask 1): the model learns to stop"))
    cases.append(Case("empty prompt", (tok, "", _text(r, 1, 8))))
    cases.append(Case("newlines and spaces", (tok, "sort: 3 1 2\n", " 1 2 3\n")))
    cases.append(Case("a long worked answer (training size)", (tok, _text(r, 20, 40), _text(r, 100, 140))))
    return cases


def _sft_example(tokenizer, prompt, response):
    from ..data import build_sft_example
    return build_sft_example(tokenizer, prompt, response)


def _eos_masked(tok, prompt, response):
    ids, mask = _sft_example(tok, prompt, response)
    return ids, mask[:-1] + [0]


def _mask_everything(tok, prompt, response):
    ids, _ = _sft_example(tok, prompt, response)
    return ids, [1] * len(ids)


SFT_EXAMPLE_WRONG = (
    (_eos_masked, "the final <|end|> is a response token too: give it mask 1"),
    (_mask_everything, "only the response (and its <|end|>) gets mask 1; the prompt part "
                       "chat_prompt(tokenizer, prompt) gets 0"),
)


def _diagnose_sft_example(case: Case, expected, got) -> Optional[str]:
    """The final <|end|> missing (whatever the mask: no wrong version can say that), lists of
    different lengths, or other ids."""
    ids, mask = [list(x.tolist() if isinstance(x, torch.Tensor) else x) for x in got]
    if ids == expected[0][:-1]:
        return ("append the end-of-turn token tokenizer.eos_token_id (<|end|>) after the response, with mask 1 "
                "— the model must learn when to stop")
    if len(ids) != len(mask):
        return f"input_ids and loss_mask must have the same length (got {len(ids)} and {len(mask)})"
    if ids != expected[0]:
        return ("build the text as chat_prompt(tokenizer, prompt) + response + <|end|>, tokenized with "
                "add_special_tokens=False: '<|user|>{prompt}<|end|><|assistant|>{response}<|end|>'")
    return None


def _collate_examples(r: random.Random, n: int, lengths: list[int]) -> list:
    out = []
    for L in lengths[:n]:
        ids = [r.randint(5, 104) for _ in range(L)]
        cut = r.randint(0, L - 1)
        out.append((ids, [0] * cut + [1] * (L - cut)))
    return out


def _collate_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    cases = []
    for _ in range(2):
        B = r.randint(2, 5)
        cases.append(Case("ragged batch", (_collate_examples(r, B, [r.randint(1, 12) for _ in range(B)]), 0)))
    cases.append(Case("custom pad_id", (_collate_examples(r, 3, [3, 7, 5]), r.randint(6, 99)),
                      hint="fill padding with the pad_id argument, not a hard-coded 0"))
    cases.append(Case("B=1", (_collate_examples(r, 1, [r.randint(1, 9)]), 0)))
    L = r.randint(2, 8)
    cases.append(Case("equal lengths", (_collate_examples(r, 3, [L, L, L]), 0)))
    cases.append(Case("single-token examples", (_collate_examples(r, 2, [1, 1]), 0)))
    for c in cases:
        c.desc = f"{len(c.args[0])} examples of lengths {[len(i) for i, _ in c.args[0]]}, pad_id={c.args[1]}"
    cases.append(Case("a full training batch", (_collate_examples(r, TRAIN_BATCH, [r.randint(1, TRAIN_LEN)
                                                                              for _ in range(TRAIN_BATCH)]), 0)))
    return cases


def _collate(examples, pad_id):
    from ..data import collate
    return collate(examples, pad_id)


def _left_padded(examples, pad_id):
    batch = _collate(examples, pad_id)
    T = batch["input_ids"].shape[1]
    return {k: torch.stack([row.roll(T - len(ids)) for row, (ids, _) in zip(v, examples)])
            for k, v in batch.items()}


def _attention_is_loss_mask(examples, pad_id):
    batch = _collate(examples, pad_id)
    return {**batch, "attention_mask": batch["loss_mask"].long()}


def _pad_with_zero(examples, pad_id):
    batch = _collate(examples, pad_id)
    return {**batch, "input_ids": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 0)}


COLLATE_WRONG = (
    (_left_padded, "pad on the RIGHT: real tokens first, then pad_id (token-aligned log-probs and masks "
                   "assume right padding)"),
    (_attention_is_loss_mask, "attention_mask is 1 on every real token (prompt and response); loss_mask "
                              "only on the response"),
    (_pad_with_zero, "fill padding with the pad_id argument, not a hard-coded 0"),
)


def _diagnose_collate(case: Case, expected, got) -> Optional[str]:
    lm = got.get("loss_mask") if isinstance(got, dict) else None
    if isinstance(lm, torch.Tensor) and not lm.is_floating_point():
        return "loss_mask is float (it multiplies float log-probs); input_ids and attention_mask are long"
    return None


def _logits_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def make(B, T, V, scale=2.0, dtype=torch.float32):
        logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
        return (logits, torch.randint(V, (B, T), generator=g))

    cases = [Case("random shapes", make(r.randint(2, 4), r.randint(2, 9), r.randint(3, 12))) for _ in range(3)]
    cases.append(Case("B=1", make(1, r.randint(2, 9), r.randint(3, 12))))
    cases.append(Case("two tokens (one prediction)", make(r.randint(1, 3), 2, r.randint(3, 12)),
                      hint="only token 1 is predicted (by logits[:, 0]); column 0 is 0"))
    cases.append(Case("float64 input", make(2, r.randint(2, 6), 7, dtype=torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("large logits", make(2, r.randint(3, 6), 9, scale=400.0),
                      hint="use torch.log_softmax (numerically stable), not softmax(...).log()"))
    V = len(_tokenizer())
    cases.append(Case("a training batch: real vocabulary, long rows", make(TRAIN_BATCH, r.randint(100, TRAIN_LEN), V)))
    return cases


def _token_logprobs(logits, input_ids):
    from ..losses import token_logprobs
    return token_logprobs(logits, input_ids)


def _unshifted(logits, input_ids):
    return torch.log_softmax(logits, -1).gather(-1, input_ids.unsqueeze(-1)).squeeze(-1)


def _left_aligned(logits, input_ids):
    lp = _token_logprobs(logits, input_ids)
    return torch.cat([lp[:, 1:], torch.zeros_like(lp[:, :1])], 1)


TOKEN_LOGPROBS_WRONG = (
    (_unshifted, "off by one: logits at position t-1 predict token t, so score input_ids[:, 1:] with "
                 "logits[:, :-1] and place the result at columns 1..T-1 (column 0 = 0)"),
    (_left_aligned, "your values sit one column to the LEFT: the log-prob of token t belongs at column t "
                    "(token-aligned), and column 0 is 0"),
    (lambda logits, ids: _token_logprobs(logits, ids).exp(),
     "return log-probabilities (log_softmax), not probabilities"),
)


def _diagnose_token_logprobs(case: Case, expected, got) -> Optional[str]:
    """One column short, or right everywhere but column 0 (any values there)."""
    if got.dim() == 2 and got.shape[0] == expected.shape[0] and got.shape[1] == expected.shape[1] - 1:
        return "return (B, T), token-aligned: column t holds the log-prob of token t, column 0 = 0"
    if got.shape == expected.shape and torch.allclose(got[:, 1:].detach().to(expected.dtype), expected[:, 1:],
                                                      rtol=1e-4, atol=1e-5):
        return "column 0 must be 0: the first token has no prediction"
    return None


def _masked_mean_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def vals(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    cases = []
    for _ in range(2):
        B, T = r.randint(2, 5), r.randint(2, 10)
        cases.append(Case("random shapes, dim=None", (vals(B, T), _response_mask(r, B, T), None)))
        cases.append(Case("random shapes, per row (dim=1)", (vals(B, T), _response_mask(r, B, T), 1),
                          hint="with dim=1 return one mean per row, shape (B,)"))
    B, T = r.randint(2, 4), r.randint(2, 8)
    cases.append(Case("all-zero mask", (vals(B, T), torch.zeros(B, T), None),
                      hint="divide by max(mask.sum(), 1): an empty mask must give 0, not nan"))
    mask = _response_mask(r, 3, T)
    mask[r.randint(0, 2)] = 0.0
    cases.append(Case("a row with an all-zero mask (dim=1)", (vals(3, T), mask, 1),
                      hint="divide each row by max(its mask sum, 1): empty rows give 0, not nan"))
    cases.append(Case("B=1", (vals(1, T), _response_mask(r, 1, T), 1)))
    cases.append(Case("single token", (vals(2, 1), torch.ones(2, 1), None)))
    cases.append(Case("float64 input", (vals(2, T, dtype=torch.float64), _response_mask(r, 2, T), 1),
                      hint="keep the input's dtype: no hard-coded .float()"))
    B, T = TRAIN_BATCH, r.randint(100, TRAIN_LEN)
    cases.append(Case("a training batch, dim=None", (vals(B, T), _response_mask(r, B, T), None)))
    cases.append(Case("a training batch, per row (dim=1)", (vals(B, T), _response_mask(r, B, T), 1)))
    return cases


MASKED_MEAN_WRONG = (
    (lambda values, mask, dim=None: values.mean() if dim is None else values.mean(dim),
     "the mask is not applied: average only where mask == 1, sum(values * mask) / mask.sum()"),
)


def _diagnose_masked_mean(case: Case, expected, got) -> Optional[str]:
    dim = case.args[2]
    if got.shape != expected.shape:
        return (f"with dim={dim} the result has shape {_shape(expected)}: "
                + ("one scalar over all masked entries" if dim is None else f"reduce only dimension {dim}"))
    return None


def _sft_loss_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def lp(*shape, dtype=torch.float32):
        return (-3 * torch.rand(*shape, generator=g, dtype=torch.float64)).to(dtype)

    cases = []
    for _ in range(3):
        B, T = r.randint(2, 5), r.randint(3, 12)
        cases.append(Case("random batch", (lp(B, T), _response_mask(r, B, T))))
    B, T = 3, r.randint(3, 10)
    mask = _response_mask(r, B, T)
    mask[r.randint(0, B - 1)] = 0.0
    cases.append(Case("a row with no response tokens", (lp(B, T), mask),
                      hint="a row whose mask is all zero has loss 0, not nan: divide by max(count, 1)"))
    cases.append(Case("B=1", (lp(1, T), _response_mask(r, 1, T))))
    cases.append(Case("single token", (lp(2, 1), torch.ones(2, 1))))
    cases.append(Case("float64 input", (lp(2, T, dtype=torch.float64), _response_mask(r, 2, T)),
                      hint="keep the input's dtype: no hard-coded .float()"))
    B, T = TRAIN_BATCH, r.randint(100, TRAIN_LEN)
    cases.append(Case("a training batch", (lp(B, T), _response_mask(r, B, T))))
    return cases


def _diagnose_sft_loss(case: Case, expected, got) -> Optional[str]:
    if got.shape != expected.shape:
        return ("return one loss per example, shape (B,): average each row over its OWN response "
                "tokens (sum over dim=-1), not over the whole batch")
    return None


SFT_LOSS_WRONG = (   # the usual slips, as functions of (logprobs, mask)
    (lambda lp, m: (lp * m).sum(-1) / m.sum(-1).clamp(min=1),
     "the loss is the NEGATIVE log-likelihood: -sum(logprobs * mask) / count"),
    (lambda lp, m: -(lp * m).sum(-1), "average, don't sum: divide each row by its number of response tokens"),
    (lambda lp, m: -(lp * m).sum(-1) / m.sum().clamp(min=1),
     "each row is divided by the batch's token count: divide by that row's own mask.sum(-1)"),
    (lambda lp, m: -lp.mean(-1), "the mask is not applied: only response tokens (mask == 1) count"),
)


LABS["lab01"] = [
    GradedFunction(
        "build_sft_example", "minimopd.data.build_sft_example", _sft_example_cases, points=2,
        output_names=("input_ids", "loss_mask"), wrong=SFT_EXAMPLE_WRONG, diagnose=_diagnose_sft_example,
        hint="ids = chat_prompt(tokenizer, prompt) tokens (mask 0) + response tokens + eos (mask 1)"),
    GradedFunction(
        "collate", "minimopd.data.collate", _collate_cases, points=1, wrong=COLLATE_WRONG,
        diagnose=_diagnose_collate,
        hint="right-pad to the longest example: input_ids/attention_mask long, loss_mask float"),
    GradedFunction(
        "token_logprobs", "minimopd.losses.token_logprobs", _logits_cases, points=3, grad_wrt=(0,),
        wrong=TOKEN_LOGPROBS_WRONG, diagnose=_diagnose_token_logprobs,
        nan_hint="use torch.log_softmax (numerically stable), not softmax(...).log()",
        hint="out[:, t] = log_softmax(logits[:, t-1])[input_ids[:, t]], out[:, 0] = 0"),
    GradedFunction(
        "masked_mean", "minimopd.losses.masked_mean", _masked_mean_cases, points=2, grad_wrt=(0,),
        wrong=MASKED_MEAN_WRONG, diagnose=_diagnose_masked_mean,
        nan_hint="divide by max(mask.sum(), 1): an all-zero mask must give 0, not nan",
        hint="sum(values * mask) / max(mask.sum(), 1), over `dim` when given"),
    GradedFunction(
        "sft_loss", "minimopd.losses.sft_loss", _sft_loss_cases, points=2, grad_wrt=(0,), wrong=SFT_LOSS_WRONG,
        diagnose=_diagnose_sft_loss,
        nan_hint="a row with no response tokens has loss 0, not nan: divide by max(mask.sum(-1), 1)",
        hint="per example: -sum(logprobs * mask, -1) / max(mask.sum(-1), 1), shape (B,)"),
]
