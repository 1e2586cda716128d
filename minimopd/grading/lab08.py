"""Lab 08 (multi-teacher on-policy distillation): the router and one MOPD update.

    route(names, teachers) -> {teacher: [rows]}                                      2 points
    mopd_advantages(student_logprobs, teacher_logprobs, mask, rewards, group_size,
                    row_weights=None, alpha=0.0) -> (B, L)                           4 points
    mopd_loss(logprobs, sampler_logprobs, advantages, mask, low=0.8, high=1.2) -> ()  4 points

The references are the library's: `minimopd.signals.route_rows` (what `RoutedTeacherSignal`
groups rows with), `minimopd.advantages.mopd_advantages` (the `teacher_token` estimator) and
`losses.truncated_is_loss` reduced per sequence (`aggregate(..., "grpo")`: MiMo-V2-Flash's MOPD
loss, the `truncated_is` objective). The classic slips are the wrong versions (`*_WRONG`).
"""
from __future__ import annotations

import torch

from .compare import compare_values
from .engine import LABS, TRACE_LEN, TRAIN_BATCH, Case, GradedFunction, _response_mask, _rng

DOMAINS = ("add", "sort", "reverse", "count")


# --------------------------------------------------------------------------- route

def _reference_route(names, teachers):
    from ..signals import route_rows
    return route_rows(names, teachers)


def _compare_route(expected, got):
    """The groups must match exactly: no teacher without rows, no row twice."""
    if isinstance(got, dict):
        extra = sorted(set(got) - set(expected), key=str)
        if extra:
            return (f"the dict has key(s) {extra} with no rows here; list only the teachers that score "
                    "at least one row")
    return compare_values(expected, got)


def _route_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    cases = []
    for _ in range(3):
        n = r.randint(4, 12)
        names = [r.choice(DOMAINS) for _ in range(n)]
        cases.append(Case("a mixed batch, every domain has a teacher", (names, list(DOMAINS))))
    names = [r.choice(DOMAINS[:2]) for _ in range(6)]
    cases.append(Case("teachers with no row in this batch", (names, list(DOMAINS)),
                      hint="only the teachers that have rows get a key"))
    cases.append(Case("one domain only", (["count"] * 5, ["count", "add"])))
    cases.append(Case("teacher_id names that are not domains", (["math_v2", "code", "math_v2", "code"],
                                                                ("code", "math_v2")),
                      hint="route by the name each row carries; the teachers may come in any collection"))
    g = [r.choice(DOMAINS) for _ in range(TRAIN_BATCH)]
    cases.append(Case("a training step: 64 prompts x 2 samples", ([d for d in g for _ in range(2)], list(DOMAINS))))
    return cases


def _by_order(names, teachers):
    out = {}
    for i, n in enumerate(names):
        out.setdefault(n, []).insert(0, i)
    return out


ROUTE_WRONG = (
    (lambda names, teachers: {t: [i for i, n in enumerate(names) if n == t] for t in teachers},
     "a teacher with no rows in the batch gets no key (it would be run on an empty batch)"),
    (lambda names, teachers: {n: [j for j, m in enumerate(sorted(names)) if m == n] for n in set(names)},
     "the row indices are positions in the original batch: do not sort the names first"),
    (_by_order, "list each teacher's rows in increasing order"),
    (lambda names, teachers: {n: [i + 1 for i, m in enumerate(names) if m == n] for n in set(names)},
     "row indices start at 0"),
)


# --------------------------------------------------------------------------- mopd_advantages

def _reference_mopd_advantages(student_logprobs, teacher_logprobs, mask, rewards, group_size,
                               row_weights=None, alpha=0.0):
    from ..advantages import mopd_advantages
    return mopd_advantages(student_logprobs, teacher_logprobs, mask, rewards, group_size,
                           row_weights=row_weights, alpha=alpha)


def _adv_case(r, g, n_prompts, G, L, *, dtype=torch.float32, weights=True, rewards=None):
    B = n_prompts * G
    s = (-torch.rand(B, L, generator=g, dtype=torch.float64) * 2).to(dtype)
    t = (s.double() + torch.randn(B, L, generator=g, dtype=torch.float64)).clamp(max=0).to(dtype)
    if rewards is None:
        rewards = torch.tensor([float(r.random() < 0.5) for _ in range(B)], dtype=dtype)
    w = None
    if weights:
        per_prompt = [r.choice((0.0, 0.5, 1.0, 2.0)) for _ in range(n_prompts)]
        w = torch.tensor([x for x in per_prompt for _ in range(G)], dtype=dtype)
    return (s, t, _response_mask(r, B, L).to(dtype), rewards, G), w


def _adv_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = []
    for _ in range(2):
        args, w = _adv_case(r, g, r.randint(2, 4), r.randint(2, 4), r.randint(3, 8))
        cases.append(Case("weights and an outcome term", args, {"row_weights": w, "alpha": r.choice((0.3, 1.0))}))
    args, w = _adv_case(r, g, 3, 2, 6)
    cases.append(Case("alpha = 0: the weighted teacher term alone", args, {"row_weights": w, "alpha": 0.0}))
    args, _ = _adv_case(r, g, 2, 3, 5, weights=False)
    cases.append(Case("no weights (None): every row weighs 1", args, {"alpha": 0.5},
                      hint="row_weights=None means a weight of 1 for every row"))
    args, w = _adv_case(r, g, 2, 4, 5, rewards=torch.ones(8))
    cases.append(Case("every sample of a group right: no outcome advantage", args, {"row_weights": w, "alpha": 1.0},
                      hint="a group whose rewards are all equal has outcome advantage 0 (its std is 0)"))
    args, w = _adv_case(r, g, 5, 1, 4)
    cases.append(Case("one sample per prompt (G = 1)", args, {"row_weights": w, "alpha": 0.5},
                      hint="a group of one sample has no spread: its outcome advantage is 0 (torch's .std() of a "
                           "single value is nan)"))
    args, w = _adv_case(r, g, 2, 3, 4, dtype=torch.float64)
    cases.append(Case("float64 input", args, {"row_weights": w, "alpha": 0.5},
                      hint="keep the input's dtype: no hard-coded .float()"))
    args, w = _adv_case(r, g, TRAIN_BATCH, 2, TRACE_LEN)
    cases.append(Case("a training step: 64 prompts x 2 samples", args, {"row_weights": w, "alpha": 0.5}))
    return cases


def _adv_variant(s, t, m, rewards, G, row_weights=None, alpha=0.0, *, unbiased=True, mask_outcome=True,
                 weight_outcome=False, weights=True, sign=1.0):
    s64, t64, m64 = s.double(), t.double(), m.double()
    w = torch.ones(s.shape[0], dtype=torch.float64) if row_weights is None or not weights else row_weights.double()
    grouped = rewards.double().view(-1, G)
    std = grouped.std(dim=1, unbiased=unbiased, keepdim=True) if G > 1 else torch.zeros_like(grouped[:, :1])
    outcome = ((grouped - grouped.mean(dim=1, keepdim=True)) / (std + 1e-4)).reshape(-1, 1)
    if weight_outcome:
        outcome = outcome * w[:, None]
    outcome = outcome * m64 if mask_outcome else outcome.expand_as(m64)
    return (sign * w[:, None] * (t64 - s64) * m64 + alpha * outcome).to(s.dtype)


ADV_WRONG = (
    (lambda *a, **k: _adv_variant(*a, **k, sign=-1.0),
     "the sign: the teacher term is log p_T - log p_S"),
    (lambda *a, **k: _adv_variant(*a, **k, weights=False),
     "multiply each row's teacher term by its row weight (its domain's weight)"),
    (lambda *a, **k: _adv_variant(*a, **k, weight_outcome=True),
     "the weight scales the teacher term only; the outcome term is alpha x the GRPO advantage as it is"),
    (lambda *a, **k: _adv_variant(*a, **k, mask_outcome=False),
     "the outcome advantage too is 0 outside the mask (prompt and padding positions)"),
    (lambda *a, **k: _adv_variant(*a, **k, unbiased=False),
     "GRPO's group std is the unbiased one (divide by G - 1), as torch's .std() and trl"),
)


# --------------------------------------------------------------------------- mopd_loss

def _reference_mopd_loss(logprobs, sampler_logprobs, advantages, mask, low=0.8, high=1.2):
    from ..losses import aggregate, truncated_is_loss
    per_token, _ = truncated_is_loss(logprobs, sampler_logprobs, advantages, low=low, high=high)
    return aggregate(per_token, mask, "grpo")


def _loss_case(r, g, B, L, *, drift=0.3, dtype=torch.float32, same=False):
    sampler = -torch.rand(B, L, generator=g, dtype=torch.float64) * 2
    logprobs = sampler.clone() if same else sampler + drift * torch.randn(B, L, generator=g, dtype=torch.float64)
    adv = torch.randn(B, L, generator=g, dtype=torch.float64)
    mask = _response_mask(r, B, L, min_len=1).double()
    return tuple(x.to(dtype) for x in (logprobs, sampler, adv, mask))


def _loss_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("ratios inside and outside the window", _loss_case(r, g, r.randint(2, 5), r.randint(3, 9)))
             for _ in range(2)]
    cases.append(Case("the first minibatch: ratio 1 everywhere", _loss_case(r, g, 3, 6, same=True),
                      hint="at ratio 1 every token is kept and the gradient is -A d log p per token"))
    cases.append(Case("a wider window", _loss_case(r, g, 3, 5, drift=0.5), {"low": 0.5, "high": 2.0}))
    cases.append(Case("a policy far from the sampler: most tokens dropped", _loss_case(r, g, 3, 5, drift=2.0),
                      hint="a token whose ratio left [low, high] contributes nothing: weight 0, no gradient"))
    cases.append(Case("float64 input", _loss_case(r, g, 2, 4, dtype=torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training step: 64 prompts x 2 samples", _loss_case(r, g, 2 * TRAIN_BATCH, TRACE_LEN)))
    return cases


def _loss_variant(lp, old, adv, m, low=0.8, high=1.2, *, clamp=False, detach=True, token_mean=False,
                  weighted=True, sign=1.0):
    ratio = torch.exp((lp.detach() if detach else lp) - old)
    if clamp:
        w = ratio.clamp(low, high)
    else:
        keep = (ratio >= low) & (ratio <= high)
        w = torch.where(keep, ratio, torch.zeros_like(ratio))
    if not weighted:
        w = torch.ones_like(ratio)
    per_token = -sign * w * adv * lp
    if token_mean:
        return (per_token * m).sum() / m.sum().clamp(min=1)
    return ((per_token * m).sum(1) / m.sum(1).clamp(min=1)).mean()


LOSS_WRONG = (
    (lambda *a, **k: _loss_variant(*a, **k, sign=-1.0),
     "the sign: the loss to MINIMISE is -w A log p (gradient ascent on w A log p)"),
    (lambda *a, **k: _loss_variant(*a, **k, clamp=True),
     "truncate, do not clamp: a token whose ratio left [low, high] gets weight 0 (MiMo drops it), "
     "where PPO would clip it to the edge of the window"),
    (lambda *a, **k: _loss_variant(*a, **k, weighted=False),
     "weight each token by its importance ratio exp(log p - log p_sampler), not by 1"),
    (lambda *a, **k: _loss_variant(*a, **k, token_mean=True),
     "reduce per sequence first (the mean over its own tokens), then average the sequences: MiMo's "
     "1/|y| normalisation, aggregate(..., 'grpo'), not one mean over all tokens"),
)


LABS["lab08"] = [
    GradedFunction(
        "route", _reference_route, _route_cases, points=2, wrong=ROUTE_WRONG, compare=_compare_route,
        library=("minimopd.signals.route_rows",),
        hint="one pass over the rows: groups.setdefault(name, []).append(i); a name with no teacher is a "
             "KeyError naming it and the teachers there are"),
    GradedFunction(
        "mopd_advantages", _reference_mopd_advantages, _adv_cases, points=4, wrong=ADV_WRONG,
        library=("minimopd.advantages.mopd_advantages", "minimopd.losses.mopd_advantages"),
        hint="w_i (log p_T - log p_S) + alpha (r_i - mean_g) / (std_g + 1e-4), times the mask, detached"),
    GradedFunction(
        "mopd_loss", _reference_mopd_loss, _loss_cases, points=4, grad_wrt=(0,), wrong=LOSS_WRONG,
        library=("minimopd.losses.truncated_is_loss",),
        hint="w = exp(log p - log p_sampler).detach() where it lies in [low, high], else 0; per token "
             "-w A log p; mean over each sequence's tokens, then over the sequences"),
]
