"""Lab 07 (on-policy distillation): the sampled-token advantage, and the exact reverse KL over the
full vocabulary and over a top-k support with its tail bucket.

The student writes them on the completion window, position by position (no shift: row t of
every (B, L, ...) input is the distribution that produced token t):

    opd_advantages(student_logprobs, teacher_logprobs, mask) -> (B, L)   2 points
    full_reverse_kl(student_logits, teacher_logprobs) -> (B, L)          4 points
    topk_reverse_kl(student_logits, support_ids, teacher_support_logprobs, tail=True) -> (B, L)   4 points

The references are the library's (`minimopd.advantages.opd_advantages`,
`minimopd.kl.token_reverse_kl`, which works on token-aligned tensors: the adapters below shift
by one column). The classic slips are the wrong versions (`*_WRONG`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .engine import LABS, TRACE_LEN, TRAIN_BATCH, Case, GradedFunction, _rng, _response_mask, _skip, _vocab


# --------------------------------------------------------------------------- opd_advantages

def _reference_opd_advantages(student_logprobs, teacher_logprobs, mask):
    from ..advantages import opd_advantages
    return opd_advantages(student_logprobs, teacher_logprobs, mask)


def _logprob_pair(g, B, L, dtype=torch.float32, spread=1.0):
    s = -torch.rand(B, L, generator=g, dtype=torch.float64) * 3
    t = s + spread * torch.randn(B, L, generator=g, dtype=torch.float64)
    return s.clamp(max=0).to(dtype), t.clamp(max=0).to(dtype)


def _opd_adv_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = []
    for _ in range(3):
        B, L = r.randint(2, 5), r.randint(3, 10)
        cases.append(Case("random log-probs with a response mask", (*_logprob_pair(g, B, L), _response_mask(r, B, L))))
    s, _ = _logprob_pair(g, 3, 6)
    cases.append(Case("the teacher is the student", (s, s.clone(), torch.ones(3, 6)),
                      hint="log p_T - log p_S is 0 everywhere when the two agree"))
    B, L = 3, 7
    cases.append(Case("float64 input", (*_logprob_pair(g, B, L, torch.float64), _response_mask(r, B, L).double()),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training step (N x L of a rollout batch)",
                      (*_logprob_pair(g, 2 * TRAIN_BATCH, TRACE_LEN), _response_mask(r, 2 * TRAIN_BATCH, TRACE_LEN))))
    return cases


OPD_ADV_WRONG = (
    (lambda s, t, m: (s - t) * m, "the sign: A_t = log p_T - log p_S (push toward tokens the teacher likes "
                                  "more than the student does)"),
    (lambda s, t, m: t - s, "multiply by the mask: prompt and padding positions get advantage 0"),
    (lambda s, t, m: t * m, "the advantage is the log-ratio log p_T - log p_S, not the teacher's log-prob alone"),
    (lambda s, t, m: (t.exp() - s.exp()) * m, "use log-probabilities, not probabilities: A_t = log p_T - log p_S"),
)


# --------------------------------------------------------------------------- full_reverse_kl

def _reference_full_reverse_kl(student_logits, teacher_logprobs):
    from ..kl import token_reverse_kl
    s = torch.cat([student_logits, student_logits[:, -1:]], dim=1)      # token-aligned: shift by one
    t = torch.cat([teacher_logprobs[:, :1], teacher_logprobs], dim=1)
    return token_reverse_kl(s, mode="full", teacher_full_logprobs=t)[:, 1:]


def _distributions(g, B, L, V, dtype=torch.float32, scale=2.0, teacher_scale=3.0):
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64) * scale
    teacher = torch.log_softmax(torch.randn(B, L, V, generator=g, dtype=torch.float64) * teacher_scale, -1)
    return logits.to(dtype), teacher.to(dtype)


def _full_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("random distributions", _distributions(g, r.randint(2, 4), r.randint(2, 6), r.randint(5, 12)))
             for _ in range(3)]
    logits, _ = _distributions(g, 2, 4, 9)
    cases.append(Case("the teacher is the student", (logits, torch.log_softmax(logits.double(), -1).float()),
                      hint="KL(p || p) = 0: softmax the student's logits before comparing"))
    logits, _ = _distributions(g, 2, 3, 7)
    cases.append(Case("a uniform teacher", (logits, torch.full((2, 3, 7), -torch.log(torch.tensor(7.0)).item())),
                      hint="against a uniform teacher, KL(p_S || U) = log V - H(p_S)"))
    cases.append(Case("a near-certain teacher", _distributions(g, 2, 4, 8, teacher_scale=12.0),
                      hint="teacher log-probs can be very negative: work with log-probs, never log(exp(...))"))
    cases.append(Case("float64 input", _distributions(g, 2, 3, 6, torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training step: real vocabulary, long traces",
                      _distributions(g, TRAIN_BATCH // 4, r.randint(100, TRACE_LEN), _vocab())))
    return cases


def _log_softmax(x):
    return torch.log_softmax(x.double(), -1)


FULL_WRONG = (
    (lambda s, t: (t.double().exp() * (t.double() - _log_softmax(s))).sum(-1),
     "that is the forward KL(p_T || p_S); on-policy distillation minimises the reverse KL(p_S || p_T) = "
     "sum_v p_S(v) (log p_S(v) - log p_T(v)), mode-seeking"),
    (lambda s, t: (_log_softmax(s).exp() * (t.double() - _log_softmax(s))).sum(-1),
     "the sign: KL(p_S || p_T) = sum_v p_S (log p_S - log p_T) >= 0"),
    (lambda s, t: -(_log_softmax(s).exp() * t.double()).sum(-1),
     "that is the cross-entropy -sum p_S log p_T; subtract the student's entropy: add sum p_S log p_S"),
    (lambda s, t: (F.softmax(s.double(), -1) * (s.double() - t.double())).sum(-1),
     "the student's side must be log-probabilities: log_softmax(student_logits), not the raw logits"),
    (lambda s, t: (_log_softmax(s).exp() * (_log_softmax(s) - t.double())).mean(-1),
     "sum over the vocabulary (an expectation under p_S), not a mean"),
)


# --------------------------------------------------------------------------- topk_reverse_kl

def _reference_topk_reverse_kl(student_logits, support_ids, teacher_support_logprobs, tail=True):
    from ..kl import token_reverse_kl
    s = torch.cat([student_logits, student_logits[:, -1:]], dim=1)
    ids = torch.cat([support_ids[:, :1], support_ids], dim=1)
    t = torch.cat([teacher_support_logprobs[:, :1], teacher_support_logprobs], dim=1)
    return token_reverse_kl(s, mode="topk", support_ids=ids, teacher_support_logprobs=t, tail=tail)[:, 1:]


def _support_case(g, B, L, V, k, *, dtype=torch.float32, of="student"):
    logits, teacher = _distributions(g, B, L, V, dtype)
    source = logits if of == "student" else teacher
    ids = source.double().topk(k, dim=-1).indices if of != "random" else \
        torch.stack([torch.randperm(V, generator=g)[:k] for _ in range(B * L)]).view(B, L, k)
    return logits, ids, teacher.gather(-1, ids)


def _topk_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = []
    for _ in range(2):
        B, L, V = r.randint(2, 4), r.randint(2, 6), r.randint(8, 14)
        cases.append(Case("the student's top-k, with the tail bucket", _support_case(g, B, L, V, r.randint(2, 5))))
    cases.append(Case("the student's top-k, renormalised (tail=False)", _support_case(g, 2, 4, 10, 3), {"tail": False},
                      hint="tail=False: renormalise both distributions over the k support tokens"))
    cases.append(Case("the teacher's top-k, with the tail bucket", _support_case(g, 3, 3, 9, 3, of="teacher")))
    cases.append(Case("a random support", _support_case(g, 2, 5, 11, 4, of="random")))
    cases.append(Case("k = 1 without the tail", _support_case(g, 2, 3, 6, 1), {"tail": False},
                      hint="one renormalised token is the same distribution on both sides: KL 0"))
    cases.append(Case("k = V without the tail: the full KL", _support_case(g, 2, 3, 6, 6), {"tail": False},
                      hint="with the whole vocabulary as support, the top-k KL is the full KL"))
    cases.append(Case("float64 input", _support_case(g, 2, 3, 7, 3, dtype=torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training step: real vocabulary, k = 8, long traces",
                      _support_case(g, TRAIN_BATCH // 4, r.randint(100, TRACE_LEN), _vocab(), 8)))
    return cases


def _with_tail(logp):
    from ..kl import TAIL_FLOOR
    mass = logp.exp().sum(-1, keepdim=True)
    return torch.cat([logp, torch.log((1 - mass).clamp(min=TAIL_FLOOR))], -1)


def _topk_variant(s, ids, t, tail, *, use_tail=None, reverse=True, renorm_teacher=True):
    """The top-k KL in float64, with switches that reproduce the classic slips."""
    ls = _log_softmax(s).gather(-1, ids)
    lt = t.double()
    use_tail = tail if use_tail is None else use_tail
    if use_tail:
        ls, lt = _with_tail(ls), _with_tail(lt)
    else:
        ls = ls - ls.logsumexp(-1, keepdim=True)
        if renorm_teacher:
            lt = lt - lt.logsumexp(-1, keepdim=True)
    p, q = (ls, lt) if reverse else (lt, ls)
    return (p.exp() * (p - q)).sum(-1)


TOPK_WRONG = (
    (lambda s, ids, t, tail=True: _topk_variant(s, ids, t, tail, use_tail=False) if tail else _skip(),
     "tail=True: add one bucket per distribution holding the mass outside the support, "
     "log(1 - sum_k p), so that k + 1 categories cover the whole vocabulary"),
    (lambda s, ids, t, tail=True: _topk_variant(s, ids, t, tail, use_tail=True) if not tail else _skip(),
     "tail=False: no tail bucket; renormalise both sides over the support (log_softmax of the k values)"),
    (lambda s, ids, t, tail=True: _topk_variant(s, ids, t, tail, renorm_teacher=False) if not tail else _skip(),
     "renormalise the teacher's side over the support too, not only the student's"),
    (lambda s, ids, t, tail=True: _topk_variant(s, ids, t, tail, reverse=False),
     "that is the forward KL(p_T || p_S) on the support; distillation minimises KL(p_S || p_T)"),
    (lambda s, ids, t, tail=True: (_log_softmax(s).exp().gather(-1, ids)
                                   * (_log_softmax(s).gather(-1, ids) - t.double())).sum(-1),
     "the support's terms alone are not a KL: renormalise over the support (tail=False) or add the "
     "tail bucket (tail=True)"),
)


LABS["lab07"] = [
    GradedFunction(
        "opd_advantages", _reference_opd_advantages, _opd_adv_cases, points=2, wrong=OPD_ADV_WRONG,
        library=("minimopd.advantages.opd_advantages", "minimopd.losses.opd_advantages"),
        hint="A_t = (log p_T(y_t) - log p_S(y_t)) * mask, detached"),
    GradedFunction(
        "full_reverse_kl", _reference_full_reverse_kl, _full_cases, points=4, grad_wrt=(0,), wrong=FULL_WRONG,
        library=("minimopd.kl.token_reverse_kl", "minimopd.losses.token_reverse_kl"),
        nan_hint="use log_softmax (never log(softmax)) and multiply p_S by the log-ratio: 0 * (-inf) is nan",
        hint="KL_t = sum_v p_S(v) (log p_S(v) - log p_T(v)), p_S = softmax(student_logits[t])"),
    GradedFunction(
        "topk_reverse_kl", _reference_topk_reverse_kl, _topk_cases, points=4, grad_wrt=(0,), wrong=TOPK_WRONG,
        library=("minimopd.kl.token_reverse_kl", "minimopd.losses.token_reverse_kl"),
        hint="gather log_softmax(student_logits) at support_ids; with tail, append log(1 - sum p) "
             "(floored at 1e-6) to both sides; then sum_k p_S (log p_S - log p_T)"),
]
