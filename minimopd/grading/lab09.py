"""Lab 09 (support overlap): how well a teacher covers the student's samples, how much of the gap a
run recovered, and the compute it took to reach an accuracy.

    support_overlap(student_logprobs, teacher_logprobs, token_ids, mask, k=8) -> dict   5 points
    compute_to_reach(flops, accuracy, target, window=10) -> float                       3 points
    gap_recovery(start, student, teacher) -> float                                      2 points

The references are the library's (`minimopd.distill.support_overlap`, `compute_to_reach`,
`gap_recovery`). The classic slips are the wrong versions (`*_WRONG`).
"""
from __future__ import annotations

import math

import torch

from .engine import LABS, Case, GradedFunction, _response_mask, _rng, _vocab


# --------------------------------------------------------------------------- support_overlap

def _overlap_case(r, g, B, T, V, *, dtype=torch.float32, teacher_scale=3.0, same=False):
    s = torch.log_softmax(torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2, -1)
    t = s.clone() if same else torch.log_softmax(torch.randn(B, T, V, generator=g, dtype=torch.float64) * teacher_scale, -1)
    ids = torch.multinomial(s.exp().reshape(-1, V), 1, generator=g).reshape(B, T)
    return s.to(dtype), t.to(dtype), ids, _response_mask(r, B, T)


def _overlap_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("random distributions, the student's own samples", _overlap_case(r, g, r.randint(2, 4), r.randint(3, 8),
                                                                                  r.randint(6, 12)), {"k": r.randint(2, 4)})
             for _ in range(3)]
    cases.append(Case("the teacher is the student", _overlap_case(r, g, 2, 5, 8, same=True), {"k": 3},
                      hint="a teacher equal to the student: KL 0, the same log-prob on both sides"))
    cases.append(Case("a near-certain teacher", _overlap_case(r, g, 3, 4, 9, teacher_scale=12.0), {"k": 2}))
    cases.append(Case("k = V: every token is in the teacher's top-k", _overlap_case(r, g, 2, 4, 6), {"k": 6}))
    cases.append(Case("float64 input", _overlap_case(r, g, 2, 4, 7, dtype=torch.float64), {"k": 3}))
    cases.append(Case("a probe batch: real vocabulary, k = 8", _overlap_case(r, g, 16, 64, _vocab()), {"k": 8}))
    return cases


def _overlap_variant(s, t, ids, mask, k=8, *, forward=False, sampled_kl=False, topk_of="teacher", masked=True):
    s, t, m = s.double(), t.double(), mask.double() if masked else torch.ones_like(mask, dtype=torch.float64)
    kl = (t.exp() * (t - s)).sum(-1) if forward else (s.exp() * (s - t)).sum(-1)
    idx = ids.long()[..., None]
    t_tok, s_tok = t.gather(-1, idx).squeeze(-1), s.gather(-1, idx).squeeze(-1)
    if sampled_kl:
        kl = s_tok - t_tok
    top = (t if topk_of == "teacher" else s).topk(min(k, t.shape[-1]), dim=-1).indices
    inside = (top == idx).any(-1).double()
    mean = lambda x: float((x * m).sum() / m.sum().clamp(min=1))  # noqa: E731
    return {"reverse_kl": mean(kl), "teacher_logprob": mean(t_tok), "student_logprob": mean(s_tok),
            "in_topk": mean(inside)}


OVERLAP_WRONG = (
    (lambda *a, **k: _overlap_variant(*a, **k, forward=True),
     "reverse_kl is KL(p_S || p_T) = sum_v p_S (log p_S - log p_T): the student's distribution weighs the terms"),
    (lambda *a, **k: _overlap_variant(*a, **k, sampled_kl=True),
     "reverse_kl is the exact KL over the whole vocabulary at each position, not the sampled token's "
     "log-ratio (that is its one-sample estimate)"),
    (lambda *a, **k: _overlap_variant(*a, **k, topk_of="student"),
     "in_topk asks whether the sampled token is among the TEACHER's k most likely tokens"),
    (lambda *a, **k: _overlap_variant(*a, **k, masked=False),
     "average over the masked positions only (completion tokens), not over every position"),
)


# --------------------------------------------------------------------------- compute_to_reach

def _curve(r, n, *, rising=True):
    flops, acc, total = [], [], 0.0
    for i in range(n):
        total += r.uniform(0.5, 2.0) * 1e9
        flops.append(total)
        p = min(0.95, 0.1 + (0.8 * i / n if rising else 0.0))
        acc.append(float(r.random() < p))
    return flops, acc


def _reach_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    cases = []
    for _ in range(3):
        flops, acc = _curve(r, r.randint(20, 60))
        cases.append(Case("a rising accuracy curve", (flops, acc, r.choice((0.3, 0.5, 0.6))), {"window": r.choice((3, 5))}))
    flops, acc = _curve(r, 30, rising=False)
    cases.append(Case("a target never reached", (flops, acc, 0.9), {"window": 5},
                      hint="never reached within the run: return float('nan')"))
    cases.append(Case("reached at the first full window", ([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 0.0], 1.0),
                      {"window": 3}, hint="the first step that has a full window is step window - 1"))
    cases.append(Case("a lucky first step does not count", ([5.0, 6.0, 7.0, 8.0, 9.0], [1.0, 0.0, 0.0, 1.0, 1.0], 0.6),
                      {"window": 3}, hint="only full windows count: a mean over fewer than `window` steps is not yet "
                                          "a measurement"))
    cases.append(Case("exactly at the target", ([1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 0.5, 0.5], 0.5), {"window": 2},
                      hint="reached means the trailing mean is >= target"))
    cases.append(Case("window = 1: the raw accuracy", ([1.0, 3.0, 6.0], [0.2, 0.7, 0.9], 0.7), {"window": 1}))
    return cases


def _reach_variant(flops, acc, target, window=10, *, full=True, strict=False, index=False, raw=False):
    for i in range(len(acc)):
        if full and i < window - 1:
            continue
        part = acc[i:i + 1] if raw else acc[max(0, i - window + 1):i + 1]
        mean = sum(part) / len(part)
        if (mean > target) if strict else (mean >= target):
            return float(i) if index else float(flops[i])
    return math.nan


REACH_WRONG = (
    (lambda *a, **k: _reach_variant(*a, **k, full=False),
     "only full windows count: start at step window - 1"),
    (lambda *a, **k: _reach_variant(*a, **k, raw=True),
     "compare the trailing mean over the last `window` steps, not one step's accuracy (one step is noisy)"),
    (lambda *a, **k: _reach_variant(*a, **k, strict=True),
     "reached means >= target"),
    (lambda *a, **k: _reach_variant(*a, **k, index=True),
     "return the compute at that step, flops[i], not the step number"),
)


# --------------------------------------------------------------------------- gap_recovery

def _gap_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    cases = []
    for _ in range(3):
        s0, t = sorted(r.uniform(0, 1) for _ in range(2))
        cases.append(Case("a student between its start and the teacher", (s0, r.uniform(s0, t), t)))
    cases.append(Case("the student lost ground", (0.4, 0.3, 0.8), hint="a loss is a negative recovery"))
    cases.append(Case("the student passed its teacher", (0.2, 0.9, 0.8)))
    cases.append(Case("no gap: the teacher is no better than the start", (0.6, 0.7, 0.6),
                      hint="with no gap there is nothing to recover: return float('nan'), never a division by 0"))
    cases.append(Case("a teacher worse than the start", (0.6, 0.7, 0.5), hint="no gap: float('nan')"))
    return cases


GAP_WRONG = (
    (lambda s0, s, t: (s - s0) / (t - s0) if t != s0 else math.nan,
     "a teacher worse than the start leaves no gap either: nan whenever teacher - start <= 0"),
    (lambda s0, s, t: s / t if t > s0 else math.nan, "recovery is (student - start) / (teacher - start)"),
    (lambda s0, s, t: (s - s0) / (t - s0) if t > s0 else 0.0, "no gap: return float('nan'), not 0"),
)


LABS["lab09"] = [
    GradedFunction(
        "support_overlap", "minimopd.distill.support_overlap", _overlap_cases, points=5, wrong=OVERLAP_WRONG,
        hint="mean over the mask of: sum_v p_S (log p_S - log p_T); log p_T and log p_S at the sampled token; "
             "whether the sampled token is in the teacher's top-k"),
    GradedFunction(
        "compute_to_reach", "minimopd.distill.compute_to_reach", _reach_cases, points=3, wrong=REACH_WRONG,
        hint="for i from window - 1: if mean(accuracy[i - window + 1 : i + 1]) >= target, return flops[i]; "
             "else nan"),
    GradedFunction(
        "gap_recovery", "minimopd.distill.gap_recovery", _gap_cases, points=2, wrong=GAP_WRONG,
        hint="(student - start) / (teacher - start), nan when teacher - start <= 0"),
]
