"""Lab 03 (PPO, InstructGPT): the KL-penalised per-token reward, GAE, the clipped surrogate and the
clipped value loss.

    kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, beta) -> (B, T)     2 points
    gae(rewards, values, mask, gamma=1.0, lam=0.95) -> (advantages, returns)        4 points
    ppo_clip_loss(logprobs, old_logprobs, advantages, eps=0.2) -> (B, T)            2 points
    value_loss(values, old_values, returns, clip=0.2) -> (B, T)                     2 points

Every (B, T) tensor is token-aligned, with a response mask that is contiguous in each row (left or
right padding around it). The references are the library's (`advantages.kl_penalized_rewards`
with the k1 estimate, `advantages.gae`, `losses.ppo_clip_loss` with one clip range,
`losses.value_loss`); the classic slips are the wrong versions (`*_WRONG`).
"""
from __future__ import annotations

import torch

from .engine import LABS, TRAIN_BATCH, TRAIN_LEN, Case, GradedFunction, _rng, _response_mask, _skip


def _masked(x, mask):
    return x * (mask != 0).to(x.dtype)


def _tensors(g, B, T, dtype=torch.float32, scale=1.0):
    return (torch.randn(B, T, generator=g, dtype=torch.float64) * scale).to(dtype)


# --------------------------------------------------------------------------- kl_penalized_rewards

def _reference_kl_rewards(scores, logprobs, ref_logprobs, mask, beta):
    from ..advantages import kl_penalized_rewards
    return kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, beta, "k1")


def _kl_case(r, g, B, T, dtype=torch.float32, beta=None):
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype) * 3
    ref = -torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype) * 3
    scores = torch.randn(B, generator=g, dtype=torch.float64).to(dtype)
    return scores, logp, ref, _response_mask(r, B, T).to(dtype), r.choice([0.02, 0.05, 0.1]) if beta is None else beta


def _kl_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("random rollouts", _kl_case(r, g, r.randint(2, 5), r.randint(4, 10))) for _ in range(3)]
    cases.append(Case("beta = 0: the score alone", _kl_case(r, g, 3, 6, beta=0.0),
                      hint="with beta = 0 every token gets 0 but the last response token, which gets the score"))
    s, lp, ref, _, _ = _kl_case(r, g, 2, 6)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1.0]])
    cases.append(Case("padding after the response", (s, lp, ref, mask, 0.1),
                      hint="the score goes on the last token *of the response* (the last 1 of the mask), "
                           "not on the last column"))
    cases.append(Case("float64 input", _kl_case(r, g, 2, 5, torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training batch", _kl_case(r, g, 2 * TRAIN_BATCH, TRAIN_LEN)))
    return cases


def _last_index(mask):
    cols = torch.arange(mask.shape[1]).expand_as(mask)
    return torch.where(mask != 0, cols, torch.full_like(cols, -1)).max(dim=1).values


def _kl_variant(scores, logp, ref, mask, beta, *, sign=1.0, where="last", mask_penalty=True):
    pen = -beta * sign * (logp - ref)
    rewards = _masked(pen, mask) if mask_penalty else pen.clone()
    rows = torch.arange(mask.shape[0])
    if where == "last":
        col = _last_index(mask)
    elif where == "first":
        col = torch.argmax((mask != 0).to(torch.int64), dim=1)
    else:
        col = torch.full((mask.shape[0],), mask.shape[1] - 1)
    rewards[rows, col] += scores.to(rewards.dtype)
    return rewards


KL_WRONG = (
    (lambda s, lp, ref, m, b: _kl_variant(s, lp, ref, m, b, sign=-1.0) if b > 0 else _skip(),
     "the sign: the penalty is -beta * (log pi - log ref), so tokens the policy likes more than the "
     "reference cost reward"),
    (lambda s, lp, ref, m, b: _kl_variant(s, lp, ref, m, b, where="column"),
     "put the score on the last response token (the last position where mask is 1), not the last column"),
    (lambda s, lp, ref, m, b: _kl_variant(s, lp, ref, m, b, where="first"),
     "the score belongs on the *last* response token: the episode's reward arrives when it ends"),
    (lambda s, lp, ref, m, b: _kl_variant(s, lp, ref, m, b, mask_penalty=False) if b > 0 else _skip(),
     "multiply the penalty by the mask: prompt and padding positions get reward 0"),
    (lambda s, lp, ref, m, b: _masked(-b * (lp - ref) + s[:, None], m),
     "the score is added once, on the last response token, not on every token"),
)


# --------------------------------------------------------------------------- gae

def _gae_case(r, g, B, T, dtype=torch.float32, gamma=1.0, lam=0.95):
    return (_tensors(g, B, T, dtype, 0.5), _tensors(g, B, T, dtype), _response_mask(r, B, T).to(dtype)), \
        {"gamma": gamma, "lam": lam}


def _gae_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = []
    for _ in range(3):
        args, kw = _gae_case(r, g, r.randint(2, 5), r.randint(4, 10))
        cases.append(Case("random rollouts, gamma 1, lambda 0.95", args, kw))
    args, kw = _gae_case(r, g, 3, 7, gamma=0.9, lam=0.8)
    cases.append(Case("gamma 0.9, lambda 0.8", args, kw, hint="delta_t = r_t + gamma V_{t+1} - V_t; "
                                                               "A_t = delta_t + gamma lambda A_{t+1}"))
    args, kw = _gae_case(r, g, 2, 6, lam=1.0)
    cases.append(Case("lambda 1: Monte-Carlo returns", args, kw,
                      hint="with gamma = lambda = 1 the return R_t is the sum of the rewards from t to the end"))
    args, kw = _gae_case(r, g, 2, 6, lam=0.0)
    cases.append(Case("lambda 0: one-step TD", args, kw, hint="with lambda = 0, A_t = r_t + gamma V_{t+1} - V_t"))
    args, kw = _gae_case(r, g, 2, 6)
    args = (args[0], args[1], torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0.0]]))
    cases.append(Case("values at padding positions", args, kw,
                      hint="the value after the last response token is 0 (the episode ended); ignore the value "
                           "head's output at padding positions"))
    args, kw = _gae_case(r, g, 2, 5, torch.float64)
    cases.append(Case("float64 input", args, kw, hint="keep the input's dtype: no hard-coded .float()"))
    args, kw = _gae_case(r, g, TRAIN_BATCH, TRAIN_LEN)
    cases.append(Case("a training batch", args, kw))
    return cases


def _gae_variant(rewards, values, mask, gamma=1.0, lam=0.95, *, mask_values=True, add_values=True,
                 boot=None):
    keep = (mask != 0).to(rewards.dtype)
    rewards = rewards * keep
    values_used = values * keep if mask_values else values
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    nv = torch.zeros(B, dtype=rewards.dtype)
    na = torch.zeros(B, dtype=rewards.dtype)
    boot = gamma if boot is None else boot
    for t in reversed(range(T)):
        delta = rewards[:, t] + boot * nv - values_used[:, t]
        a = (delta + gamma * lam * na) * keep[:, t]
        adv[:, t] = a
        nv, na = values_used[:, t], a
    returns = (adv + values * keep) if add_values else adv
    return adv, returns * keep


GAE_WRONG = (
    (lambda r, v, m, gamma=1.0, lam=0.95: _gae_variant(r, v, m, gamma, lam, mask_values=False),
     "mask the values: the value after the last response token is 0, not the head's output at the "
     "padding position that follows"),
    (lambda r, v, m, gamma=1.0, lam=0.95: _gae_variant(r, v, m, gamma, lam, add_values=False),
     "the value targets are returns R_t = A_t + V_t, not the advantages"),
    (lambda r, v, m, gamma=1.0, lam=0.95: _gae_variant(r, v, m, gamma, lam, boot=gamma * lam)
        if lam != 1.0 else _skip(),
     "bootstrap with gamma V_{t+1} in delta_t; lambda only weighs the later deltas: A_t = delta_t + "
     "gamma lambda A_{t+1}"),
    (lambda r, v, m, gamma=1.0, lam=0.95: _gae_variant(r, v, m, lam, gamma) if gamma != lam else _skip(),
     "gamma and lambda are swapped"),
)


def _gae_outside_mask(case, expected, got):
    adv, _ = got
    if isinstance(adv, torch.Tensor) and adv.shape == expected[0].shape:
        outside = adv * (case.args[2] == 0).to(adv.dtype)
        if outside.abs().max() > 0:
            return "advantages and returns must be exactly 0 outside the response mask"
    return None


# --------------------------------------------------------------------------- ppo_clip_loss

def _reference_ppo_clip(logprobs, old_logprobs, advantages, eps=0.2):
    from ..losses import ppo_clip_loss
    return ppo_clip_loss(logprobs, old_logprobs, advantages, eps_low=eps, eps_high=eps)[0]


def _ppo_case(g, B, T, dtype=torch.float32, drift=0.3):
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    new = old + drift * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    return new.to(dtype), old.to(dtype), adv.to(dtype)


def _ppo_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("ratios inside and outside the clip range", _ppo_case(g, r.randint(2, 5), r.randint(3, 9)))
             for _ in range(3)]
    lp, _, adv = _ppo_case(g, 2, 5)
    cases.append(Case("the first minibatch: ratio 1", (lp, lp.clone(), adv),
                      hint="at ratio 1 the loss is -A and its gradient is -A d log pi"))
    cases.append(Case("eps = 0.1", _ppo_case(g, 3, 4, drift=0.5), {"eps": 0.1}))
    cases.append(Case("far past the clip edge", _ppo_case(g, 2, 6, drift=2.0),
                      hint="past the edge in the direction the advantage rewards, the clipped branch is larger: "
                           "L = max(-A rho, -A clip(rho, 1 - eps, 1 + eps)), and that token gets no gradient"))
    cases.append(Case("float64 input", _ppo_case(g, 2, 4, torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training batch", _ppo_case(g, TRAIN_BATCH, TRAIN_LEN)))
    return cases


def _rho(lp, old):
    return torch.exp(lp - old)


PPO_WRONG = (
    (lambda lp, old, a, eps=0.2: torch.minimum(-a * _rho(lp, old), -a * _rho(lp, old).clamp(1 - eps, 1 + eps)),
     "take the max of the two *losses* (the min of the two objectives): the pessimistic bound"),
    (lambda lp, old, a, eps=0.2: -a * _rho(lp, old), "clip the ratio: max(-A rho, -A clip(rho, 1 - eps, 1 + eps))"),
    (lambda lp, old, a, eps=0.2: -a * _rho(lp, old).clamp(1 - eps, 1 + eps),
     "keep the unclipped term too: the loss is the max of the clipped and the unclipped one (clipping alone "
     "stops the gradient everywhere outside the range, also where the update goes the wrong way)"),
    (lambda lp, old, a, eps=0.2: torch.maximum(-a * _rho(old, lp), -a * _rho(old, lp).clamp(1 - eps, 1 + eps)),
     "the ratio is pi_new / pi_old = exp(logprobs - old_logprobs)"),
    (lambda lp, old, a, eps=0.2: torch.maximum(-a * (lp - old), -a * (lp - old).clamp(-eps, eps)),
     "the ratio is exp(logprobs - old_logprobs), not the log-ratio"),
)


# --------------------------------------------------------------------------- value_loss

def _reference_value_loss(values, old_values, returns, clip=0.2):
    from ..losses import value_loss
    return value_loss(values, old_values, returns, clip=clip)


def _value_case(g, B, T, dtype=torch.float32, drift=0.4):
    old = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = old + drift * torch.randn(B, T, generator=g, dtype=torch.float64)
    returns = old + torch.randn(B, T, generator=g, dtype=torch.float64)
    return values.to(dtype), old.to(dtype), returns.to(dtype)


def _value_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)
    cases = [Case("values near and far from the old ones", _value_case(g, r.randint(2, 5), r.randint(3, 9)))
             for _ in range(3)]
    v, _, ret = _value_case(g, 2, 5)
    cases.append(Case("the first minibatch: values = old values", (v, v.clone(), ret),
                      hint="when nothing moved, both branches are 0.5 (V - R)^2"))
    cases.append(Case("clip = 0.5", _value_case(g, 3, 4, drift=1.0), {"clip": 0.5}))
    cases.append(Case("float64 input", _value_case(g, 2, 4, torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("a training batch", _value_case(g, TRAIN_BATCH, TRAIN_LEN)))
    return cases


def _vclip(v, old, clip):
    return old + (v - old).clamp(-clip, clip)


VALUE_WRONG = (
    (lambda v, old, ret, clip=0.2: 0.5 * torch.minimum((v - ret) ** 2, (_vclip(v, old, clip) - ret) ** 2),
     "the max of the clipped and unclipped squared errors (the pessimistic one), as for the policy"),
    (lambda v, old, ret, clip=0.2: torch.maximum((v - ret) ** 2, (_vclip(v, old, clip) - ret) ** 2),
     "the value loss has a factor 0.5: 0.5 * max((V - R)^2, (V_clipped - R)^2)"),
    (lambda v, old, ret, clip=0.2: 0.5 * (v - ret) ** 2,
     "clip the new value around the old one, V_old + clip(V - V_old, -clip, clip), and take the max"),
    (lambda v, old, ret, clip=0.2: 0.5 * torch.maximum((v - ret) ** 2, (v.clamp(-clip, clip) - ret) ** 2),
     "clip the *change* of the value around the old prediction, V_old + clip(V - V_old, -clip, clip), "
     "not the value itself"),
)


LABS["lab03"] = [
    GradedFunction("kl_penalized_rewards", _reference_kl_rewards, _kl_cases, points=2, wrong=KL_WRONG,
                   library=("minimopd.advantages.kl_penalized_rewards", "minimopd.losses.kl_penalized_rewards"),
                   hint="r_t = -beta (log pi - log ref) on every response token (0 elsewhere), plus the score "
                        "on the last response token"),
    GradedFunction("gae", "minimopd.advantages.gae", _gae_cases, points=4, wrong=GAE_WRONG,
                   output_names=("advantages", "returns"), diagnose=_gae_outside_mask,
                   library=("minimopd.advantages.gae", "minimopd.losses.gae"),
                   hint="walk t from the end: delta_t = r_t + gamma V_{t+1} - V_t (V after the response = 0), "
                        "A_t = delta_t + gamma lambda A_{t+1}, R_t = A_t + V_t; 0 outside the mask"),
    GradedFunction("ppo_clip_loss", _reference_ppo_clip, _ppo_cases, points=2, grad_wrt=(0,), wrong=PPO_WRONG,
                   library=("minimopd.losses.ppo_clip_loss",),
                   hint="rho = exp(logprobs - old_logprobs); L = max(-A rho, -A clip(rho, 1 - eps, 1 + eps))"),
    GradedFunction("value_loss", _reference_value_loss, _value_cases, points=2, grad_wrt=(0,), wrong=VALUE_WRONG,
                   library=("minimopd.losses.value_loss",),
                   hint="V_clip = V_old + clip(V - V_old, -clip, clip); L = 0.5 max((V - R)^2, (V_clip - R)^2)"),
]
