"""Lab 05 (GRPO / Dr.GRPO): group advantages, the k3 KL estimator and the GRPO-family loss.

The references are the library's (`minimopd.advantages.group_advantages`, `minimopd.kl.kl_estimate`
with kind "k3", `minimopd.losses.grpo_loss`). The classic bugs of each function are its wrong
versions (`*_WRONG`), recomputed in float64; those that only make sense for some arguments
(eps_high given, a KL term, one aggregation) `_skip()` the other cases.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .engine import LABS, TRAIN_BATCH, TRAIN_LEN, Case, GradedFunction, _rng, _response_mask, _skip, compare_values


# --------------------------------------------------------------------------- group_advantages

def _reference_group_advantages(rewards, group_size, scale_std=True, eps=1e-4):
    from ..advantages import group_advantages
    return group_advantages(rewards, group_size, scale_std=scale_std, eps=eps)


def _group_adv_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def binary(n):
        return (torch.rand(n, generator=g) < r.uniform(0.2, 0.8)).float()

    cases = []
    for _ in range(2):
        G, n = r.choice([2, 4, 8]), r.randint(2, 4)
        cases.append(Case("binary rewards (verifier), scale_std=True", (binary(n * G), G)))
    for _ in range(2):
        G, n = r.choice([3, 4, 6]), r.randint(2, 4)
        rewards = torch.randn(n * G, generator=g) * r.uniform(0.5, 3.0) + r.uniform(-2, 2)
        cases.append(Case("continuous rewards, scale_std=True", (rewards, G)))
    G, n = r.choice([4, 8]), r.randint(2, 4)
    cases.append(Case("scale_std=False (Dr.GRPO)", (binary(n * G), G), {"scale_std": False},
                      hint="scale_std=False: only subtract the group mean, no division"))
    rewards = torch.randn(3 * 4, generator=g) * 2
    cases.append(Case("continuous rewards, scale_std=False", (rewards, 4), {"scale_std": False}))
    G = r.choice([4, 5])
    rewards = torch.cat([torch.ones(G), torch.zeros(G), binary(G), torch.full((G,), 0.5)])
    rewards[2 * G] = 1.0 - rewards[2 * G + 1]  # the mixed group is really mixed
    cases.append(Case("all-equal groups (zero variance)", (rewards, G),
                      hint="an all-correct or all-wrong group has std 0: std + eps keeps the division "
                           "finite and its advantages are exactly 0"))
    cases.append(Case("group_size=1", (torch.randn(r.randint(2, 5), generator=g), 1),
                      hint="a group of one has no spread: its std is taken as 0, so its advantage is 0 "
                           "(torch's unbiased std of a single value is nan)"))
    G = r.choice([2, 4])
    cases.append(Case("custom eps", (torch.randn(3 * G, generator=g), G), {"eps": r.choice([0.5, 1.0])},
                      hint="use the eps argument, not a hard-coded 1e-4"))
    cases.append(Case("one group", (binary(8), 8)))
    G = 4
    cases.append(Case("R1 rewards (0, 0.5, 1.5)",
                      (torch.tensor([r.choice([0.0, 0.5, 1.5]) for _ in range(3 * G)]), G)))
    cases.append(Case("float64 input", (torch.randn(2 * 4, generator=g, dtype=torch.float64), 4),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training step: 16 prompts x G=8", (binary(16 * 8), 8)))
    cases.append(Case("a training step: 16 prompts x G=8, scale_std=False",
                      (torch.randn(16 * 8, generator=g), 8), {"scale_std": False}))
    return cases


def _scaled(adv):
    """A wrong version of the scale_std=True branch, `adv(x, groups, group_means, eps)` on the float64
    rewards `x` and their (n, G) view (skipped when scale_std=False)."""
    def wrong(rewards, group_size, scale_std=True, eps=1e-4):
        if not scale_std:
            _skip()
        x = rewards.double()
        groups = x.view(-1, group_size)
        return adv(x, groups, groups.mean(1, keepdim=True), eps).reshape(-1)
    return wrong


def _std(groups):
    """The unbiased per-group std, 0 for a group of one (torch's is nan there)."""
    return groups.std(1, keepdim=True) if groups.shape[1] > 1 else torch.zeros_like(groups[:, :1])


def _divides_anyway(rewards, group_size, scale_std=True, eps=1e-4):
    return _skip() if scale_std else _reference_group_advantages(rewards.double(), group_size, True, eps)


def _wrong_layout(x, groups, mean, eps):
    if groups.shape[1] == 1:
        _skip()
    alt = x.view(groups.shape[1], -1)  # groups read column-wise
    return (alt - alt.mean(0, keepdim=True)) / (alt.std(0, keepdim=True) + eps)


GROUP_ADV_WRONG = (
    (_scaled(lambda x, g, m, eps: torch.full_like(g, float("nan")) if g.shape[1] == 1 else _skip()),
     "a group of one has no spread: take its std as 0 (torch.std of one value is nan), so its advantage is 0"),
    (_scaled(lambda x, g, m, eps: g - m),
     "scale_std=True divides by the group std (GRPO); scale_std=False only centres (Dr.GRPO)"),
    (_divides_anyway, "scale_std=False means no division by the std: A = r - mean (Dr.GRPO)"),
    (_scaled(lambda x, g, m, eps: (g - m) / (g.std(1, unbiased=False, keepdim=True) + eps)),
     "use the UNBIASED std (divide by G - 1, torch's default .std()), as trl and the library do; "
     "you used the biased (population) std"),
    (_scaled(lambda x, g, m, eps: (g - m) / (x.std() + eps)),
     "the std must be taken per group (over the G samples of one prompt), not over the whole batch"),
    (_scaled(lambda x, g, m, eps: (g - x.mean()) / (_std(g) + eps)),
     "the mean must be taken per group (reshape(-1, G).mean(1)), not over the whole batch"),
    (_scaled(lambda x, g, m, eps: (x - x.mean()) / (x.std() + eps)),
     "mean and std are per GROUP (the G samples of one prompt), not over the whole batch"),
    (_scaled(lambda x, g, m, eps: (g - m) / torch.sqrt(_std(g) ** 2 + eps)),
     "add eps to the std, (r - mean) / (std + eps), not inside the square root"),
    (_scaled(lambda x, g, m, eps: (g - m) / (_std(g) + 1e-4)), "use the eps argument, not a hard-coded 1e-4"),
    (_scaled(lambda x, g, m, eps: (g - m) / _std(g)), "add eps to the std: (r - mean) / (std + eps)"),
    (_scaled(_wrong_layout), "rewards are laid out group by group [g0s0, g0s1, ..., g1s0, ...]: "
                             "group them with reshape(-1, G)"),
)


def _diagnose_group_adv(case: Case, expected, got) -> Optional[str]:
    if got.shape != expected.shape:
        return ("return a flat (N,) tensor in the same layout as `rewards` "
                "(reshape(-1, G) to compute, then reshape(-1) back)")
    return None


# --------------------------------------------------------------------------- k3_kl

def _reference_k3_kl(logprobs, ref_logprobs):
    from ..kl import kl_estimate
    return kl_estimate(logprobs, ref_logprobs, "k3")


def _kl_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def pair(*shape, spread=0.5, dtype=torch.float32):
        lp = -3 * torch.rand(*shape, generator=g, dtype=torch.float64) - 0.01
        ref = lp + spread * torch.randn(*shape, generator=g, dtype=torch.float64)
        return lp.to(dtype), ref.to(dtype)

    cases = [Case("random log-probs", pair(r.randint(2, 5), r.randint(2, 9))) for _ in range(3)]
    cases.append(Case("far-apart policies", pair(3, r.randint(3, 8), spread=3.0),
                      hint="k3 = exp(ref - logp) - (ref - logp) - 1; near pi = ref it looks like "
                           "0.5 * x**2 (k2), far away it does not"))
    lp, _ = pair(2, r.randint(2, 7))
    cases.append(Case("identical policies", (lp, lp.clone()), hint="pi = ref gives exactly 0"))
    cases.append(Case("1-D input", pair(r.randint(3, 9)), hint="any shape: work elementwise"))
    cases.append(Case("float64 input", pair(2, 5, dtype=torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training step (N x T of a rollout batch)", pair(2 * TRAIN_BATCH, TRAIN_LEN)))
    return cases


# k3 = r - log r - 1 with r = ref / pi; x = log pi - log ref below. The usual slips, as functions:
K3_WRONG = (
    (lambda lp, ref: torch.expm1(lp - ref) - (lp - ref),
     "wrong direction: with r = ref / pi = exp(ref_logprobs - logprobs), k3 = r - log r - 1; you "
     "used pi / ref (that estimates KL(ref || pi), and its gradient has the wrong sign)"),
    (lambda lp, ref: lp - ref, "that is k1 = log pi - log ref (unbiased but noisy, and can be negative); "
                               "k3 = r - log r - 1 with r = ref / pi"),
    (lambda lp, ref: ref - lp, "k3 = r - log r - 1 with r = ref / pi, not log r alone"),
    (lambda lp, ref: 0.5 * (lp - ref) ** 2, "that is k2 = (log r)^2 / 2; k3 = r - log r - 1 with r = ref / pi"),
    (lambda lp, ref: torch.exp(ref - lp) + (lp - ref), "subtract 1: k3 = r - log r - 1 (so that pi = ref gives 0)"),
    (lambda lp, ref: -(torch.expm1(ref - lp) + (lp - ref)), "k3 is >= 0: r - log r - 1, not its negative"),
    (lambda lp, ref: torch.exp(ref - lp) - 1 - (lp - ref),
     "k3 = r - log r - 1, and log r = ref_logprobs - logprobs: minus log r is PLUS (logprobs - ref_logprobs)"),
)


# --------------------------------------------------------------------------- grpo_loss

def _compare_loss_stats(expected: Any, got: Any, path: str = "") -> Optional[str]:
    """Compare the loss (value, dtype, shape); only check that stats is a dict."""
    if path == "stats":
        return None if isinstance(got, dict) else (
            f"stats: expected a dict of floats (e.g. {{'clip_frac': 0.1, 'kl': 0.0}}), got {type(got).__name__}")
    if path == "loss":
        return compare_values(expected, got, "loss")
    return (f"expected a tuple (loss, stats), got {type(got).__name__}"
            + (f" of {len(got)} items" if isinstance(got, (tuple, list)) else ""))


def _policy_batch(r, g, B, T, *, spread=None, dtype=torch.float32, token_adv=False):
    spread = r.uniform(0.2, 0.6) if spread is None else spread   # ratios well past both clip edges
    lp = -2 * torch.rand(B, T, generator=g, dtype=torch.float64) - 0.05
    old = lp + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = 1.5 * torch.randn(*((B, T) if token_adv else (B,)), generator=g, dtype=torch.float64)
    mask = _response_mask(r, B, T, min_len=min(T, 2)).to(dtype)
    return lp.to(dtype), old.to(dtype), adv.to(dtype), mask


def _grpo_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def dims():
        return r.randint(2, 6), r.randint(3, 12)

    cases = []
    for agg in ("grpo", "dr_grpo", "dapo"):
        for _ in range(2):
            cases.append(Case(f"aggregation={agg!r}", _policy_batch(r, g, *dims()), {"aggregation": agg}))
    cases[0].kwargs = {}  # the defaults: eps_low=0.2, eps_high=None, aggregation="grpo"
    cases.append(Case("aggregation='dr_grpo', max_tokens=L_max", _policy_batch(r, g, *dims()),
                      {"aggregation": "dr_grpo", "max_tokens": r.randint(12, 40)},
                      hint="Dr.GRPO divides the masked sum by the constant N * max_tokens (T when None)"))
    for agg in ("grpo", "dapo"):
        cases.append(Case("asymmetric clipping (eps_high > eps_low)", _policy_batch(r, g, *dims(), spread=0.5),
                          {"aggregation": agg, "eps_low": r.choice([0.1, 0.2]), "eps_high": r.choice([0.28, 0.4])},
                          hint="clip the ratio to [1 - eps_low, 1 + eps_high] (eps_high=None means eps_low)"))
    for agg in ("grpo", "dr_grpo", "dapo"):
        B, T = dims()
        lp, old, adv, mask = _policy_batch(r, g, B, T)
        ref = lp + 0.4 * torch.randn(B, T, generator=g).to(lp.dtype)
        cases.append(Case("beta > 0 (k3 KL penalty)", (lp, old, adv, mask),
                          {"aggregation": agg, "ref_logprobs": ref, "beta": r.choice([0.04, 0.1, 0.5])},
                          hint="add beta * k3 per token to the clipped loss, then aggregate both together"))
    B, T = dims()
    lp, old, adv, mask = _policy_batch(r, g, B, T)
    cases.append(Case("ref_logprobs given, beta=0", (lp, old, adv, mask),
                      {"ref_logprobs": lp + 0.4 * torch.randn(B, T, generator=g), "beta": 0.0},
                      hint="with beta=0 the KL term does not enter the loss"))
    for agg in ("grpo", "dapo"):
        cases.append(Case("per-token advantages (B, T)", _policy_batch(r, g, *dims(), token_adv=True),
                          {"aggregation": agg},
                          hint="advantages may be (B,) (one per sequence, broadcast over T) or (B, T)"))
    for agg in ("grpo", "dr_grpo", "dapo"):
        B, T = r.randint(3, 6), r.randint(3, 10)
        lp, old, adv, mask = _policy_batch(r, g, B, T)
        mask[r.randrange(B)] = 0.0
        cases.append(Case("rows with an all-zero mask", (lp, old, adv, mask), {"aggregation": agg},
                          hint="an empty row contributes 0 and no nan (clamp denominators to >= 1); in "
                               "'grpo' and 'dr_grpo' it still counts in the 1/N"))
    lp, old, adv, mask = _policy_batch(r, g, 3, 5)
    cases.append(Case("all-zero mask", (lp, old, adv, torch.zeros_like(mask)),
                      {"aggregation": r.choice(["grpo", "dr_grpo", "dapo"])},
                      hint="no response tokens: the loss is 0 (not nan) and still a differentiable tensor"))
    lp, old, adv, mask = _policy_batch(r, g, *dims())
    cases.append(Case("on-policy (old_logprobs == logprobs)", (lp, lp.clone(), adv, mask),
                      {"aggregation": r.choice(["grpo", "dapo"])},
                      hint="at ratio 1 nothing is clipped: the gradient is -A / (aggregation's normaliser)"))
    cases.append(Case("B=1", _policy_batch(r, g, 1, r.randint(3, 9)), {"aggregation": "grpo"}))
    B, T = dims()
    lp, old, adv, mask = _policy_batch(r, g, B, T, dtype=torch.float64)
    cases.append(Case("float64 input", (lp, old, adv, mask),
                      {"aggregation": "dr_grpo", "ref_logprobs": lp + 0.2 * torch.randn(B, T, generator=g,
                                                                                      dtype=torch.float64),
                       "beta": 0.1},
                      hint="keep the input's dtype: no hard-coded .float()"))
    for agg in ("grpo", "dr_grpo", "dapo"):
        cases.append(Case("a training step (N x T of a rollout batch)",
                          _policy_batch(r, g, 2 * TRAIN_BATCH, r.randint(100, TRAIN_LEN)), {"aggregation": agg}))
    return cases


def _grpo_variant(lp, old, adv, mask, *, eps_low=0.2, eps_high=None, aggregation="grpo", max_tokens=None,
                  ref_logprobs=None, beta=0.0, pick="max", clip="ratio", kl_sign=1.0, kl="k3",
                  empty_rows="count", ratio_sign=1.0) -> torch.Tensor:
    """The GRPO loss in float64, with switches that reproduce the classic bugs."""
    lp, old, mask = lp.double(), old.double(), mask.double()
    adv = adv.double()
    adv = adv[:, None] if adv.dim() == 1 else adv
    hi = eps_low if eps_high is None else eps_high
    ratio = torch.exp(ratio_sign * (lp - old))
    if clip == "ratio":
        a, b = -adv * ratio, -adv * ratio.clamp(1 - eps_low, 1 + hi)
    elif clip == "advantage":
        a, b = -adv * ratio, -adv.clamp(1 - eps_low, 1 + hi) * ratio
    else:  # no clipping
        a = b = -adv * ratio
    per_tok = torch.maximum(a, b) if pick == "max" else torch.minimum(a, b)
    if ref_logprobs is not None and beta:
        x = lp - ref_logprobs.double()
        k = {"k3": torch.expm1(-x) + x, "k1": x, "rev": torch.expm1(x) - x}[kl]
        per_tok = per_tok + kl_sign * beta * k
    N, T = mask.shape
    L = T if max_tokens is None else max_tokens
    lens = mask.sum(1)
    if aggregation == "grpo":
        rows = (per_tok * mask).sum(1) / lens.clamp(min=1)
        n = N if empty_rows == "count" else max(int((lens > 0).sum()), 1)
        return rows.sum() / n
    if aggregation == "dr_grpo":
        n = N if empty_rows == "count" else max(int((lens > 0).sum()), 1)
        return (per_tok * mask).sum() / (n * L)
    if aggregation == "sum_over_n":
        return (per_tok * mask).sum() / N
    return (per_tok * mask).sum() / mask.sum().clamp(min=1)


def _grpo_wrong(when=lambda kw: True, **bug):
    """A wrong version of grpo_loss: `_grpo_variant` with the `bug` switches, as (loss, {}); it
    applies to the cases whose keyword arguments satisfy `when`."""
    def wrong(lp, old, adv, mask, **kw):
        if not when(kw):
            _skip()
        return _grpo_variant(lp, old, adv, mask, **{**kw, **bug}), {}
    return wrong


def _objective(lp, old, adv, mask, **kw):
    return -_grpo_variant(lp, old, adv, mask, **kw), {}


def _eps_swapped(lp, old, adv, mask, **kw):
    if kw.get("eps_high") is None:
        _skip()
    return _grpo_variant(lp, old, adv, mask, **{**kw, "eps_low": kw["eps_high"],
                                                "eps_high": kw.get("eps_low", 0.2)}), {}


def _agg(kw) -> str:
    return kw.get("aggregation", "grpo")


def _has_kl(kw) -> bool:
    """Does a KL term enter the loss (ref_logprobs given and beta > 0)?"""
    return kw.get("ref_logprobs") is not None and bool(kw.get("beta"))


_AGGREGATIONS = {
    "grpo": "(1/N) sum_i (1/|o_i|) sum_t m_it l_it (per-sequence mean, then mean over the N rows)",
    "dr_grpo": "sum_it m_it l_it / (N * max_tokens), max_tokens = T when None",
    "dapo": "sum_it m_it l_it / sum_it m_it (one mean over all response tokens)",
}

GRPO_WRONG = (
    (_objective, "the loss is MINIMISED: per token -min(rho A, clip(rho) A) = max(-rho A, -clip(rho) A); "
                 "you returned the objective (sign flipped)"),
    (_grpo_wrong(pick="min"), "min instead of max: the loss (to minimise) is the pessimistic bound "
                              "max(-rho A, -clip(rho) A) — min of the objectives, max of the negated ones"),
    (_grpo_wrong(clip="advantage"), "clip the RATIO rho = exp(logp - old_logp) to [1 - eps_low, 1 + eps_high], "
                                    "not the advantage"),
    (_grpo_wrong(clip="none"), "the ratio is not clipped: take max(-rho A, -clip(rho, 1 - eps_low, "
                               "1 + eps_high) A) per token"),
    (_grpo_wrong(ratio_sign=-1.0), "the ratio is pi / pi_old = exp(logprobs - old_logprobs), not its inverse"),
    (_grpo_wrong(lambda kw: kw.get("eps_high") is not None, eps_high=None),
     "eps_high is ignored: the upper clip edge is 1 + eps_high (DAPO's clip-higher), the lower 1 - eps_low"),
    (_eps_swapped, "eps_low and eps_high are swapped: clip(rho, 1 - eps_low, 1 + eps_high)"),
    (_grpo_wrong(_has_kl, kl_sign=-1.0), "KL sign: the penalty is ADDED to the loss, + beta * k3 (we minimise), "
                                         "which pulls the policy back toward the reference"),
    (_grpo_wrong(_has_kl, beta=0.0), "beta > 0: add beta * k3(logprobs, ref_logprobs) per token before "
                                     "aggregating"),
    (_grpo_wrong(_has_kl, kl="k1"), "the KL term is the k3 estimator (your k3_kl), not k1 = logp - ref_logp"),
    (_grpo_wrong(_has_kl, kl="rev"), "the KL term has the wrong direction: k3 uses r = ref / pi (check your k3_kl)"),
    (_grpo_wrong(lambda kw: kw.get("ref_logprobs") is not None and not kw.get("beta"), beta=1.0),
     "beta=0: the KL term must not enter the loss"),
    *((_grpo_wrong(lambda kw, a=agg: _agg(kw) == a, aggregation=other),
       f"wrong normaliser: your value is the {other!r} aggregation; aggregation={agg!r} is {want}")
      for agg, want in _AGGREGATIONS.items() for other in _AGGREGATIONS if other != agg),
    (_grpo_wrong(lambda kw: _agg(kw) == "dr_grpo" and kw.get("max_tokens") is not None, max_tokens=None),
     "use max_tokens (L_max) when given: divide by N * max_tokens, not N * T"),
    (_grpo_wrong(lambda kw: _agg(kw) == "dr_grpo", aggregation="sum_over_n"),
     "wrong normaliser: Dr.GRPO divides the masked sum by the constant N * max_tokens, not by N alone"),
    (_grpo_wrong(lambda kw: _agg(kw) in ("grpo", "dr_grpo"), empty_rows="skip"),
     "an empty row still counts in N: divide by the number of rows N, not by the number of non-empty rows"),
)


def _diagnose_grpo(case: Case, expected, got) -> Optional[str]:
    loss = got[0]
    if loss.dim() != 0:
        return (f"aggregate to a scalar (0-dim) loss; you returned shape {tuple(loss.shape)} — "
                f"aggregation={_agg(case.kwargs)!r} says how to reduce the masked per-token losses")
    return None


def _reference_grpo_loss(logprobs, old_logprobs, advantages, mask, *, eps_low=0.2, eps_high=None,
                         aggregation="grpo", max_tokens=None, ref_logprobs=None, beta=0.0):
    from ..losses import grpo_loss
    return grpo_loss(logprobs, old_logprobs, advantages, mask, eps_low=eps_low, eps_high=eps_high,
                     aggregation=aggregation, max_tokens=max_tokens, ref_logprobs=ref_logprobs, beta=beta)


LABS["lab05"] = [
    GradedFunction(
        "group_advantages", _reference_group_advantages, _group_adv_cases, points=3,
        library=("minimopd.advantages.group_advantages",), wrong=GROUP_ADV_WRONG, diagnose=_diagnose_group_adv,
        nan_hint="divide by (std + eps), so that a zero-variance group gives 0, not nan",
        hint="per group of G: (r - mean) / (std + eps) with the unbiased std; only r - mean if not scale_std"),
    GradedFunction(
        "k3_kl", _reference_k3_kl, _kl_cases, points=2, grad_wrt=(0,), wrong=K3_WRONG,
        library=("minimopd.kl.kl_estimate",),
        hint="with log r = ref_logprobs - logprobs: k3 = exp(log r) - log r - 1, per token"),
    GradedFunction(
        "grpo_loss", _reference_grpo_loss, _grpo_cases, points=5, grad_wrt=(0,),
        library=("minimopd.losses.grpo_loss",), output_names=("loss", "stats"), compare=_compare_loss_stats,
        wrong=GRPO_WRONG, diagnose=_diagnose_grpo,
        nan_hint="an empty row (or mask) must not give nan: clamp every denominator to >= 1",
        hint="per token max(-rho A, -clip(rho) A) + beta * k3, masked, then the aggregation's normaliser"),
]
