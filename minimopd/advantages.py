"""Advantage estimators: pure tensor functions, and the named estimators of the online loop.

Two layers:

* Pure functions (no model, no I/O; shapes below): ``gae``, ``group_advantages``,
  ``rloo_advantages``, ``opd_advantages``. Advantages are *constants* in a policy-gradient
  loss, so each returns a detached tensor.
* ``ESTIMATORS``: the same maths applied to one rollout batch (an ``Experience``), selected by
  name with ``OnlineConfig.advantage`` -- ``group``, ``group_nostd``, ``rloo``, ``none``,
  ``teacher_token`` and ``gae``. Each is ``estimator(experience, config) -> (advantages,
  returns)``; ``returns`` is None except for ``gae`` (the value targets).

Shapes: B = batch (sequences), T = sequence length (prompt + response tokens),
N = number of sampled completions (= num_prompts * group_size), G = group size. Per-token
tensors are token-aligned (column t belongs to token t), as everywhere in minimopd.
"""
from __future__ import annotations

import torch

from minimopd.kl import kl_estimate
from minimopd.masked import _apply_mask, _as_float, masked_mean, masked_sum, masked_whiten

__all__ = [
    "masked_sum",
    "masked_mean",
    "masked_whiten",
    "gae",
    "kl_penalized_rewards",
    "adaptive_kl_beta",
    "group_advantages",
    "rloo_advantages",
    "opd_advantages",
    "mopd_advantages",
    "ESTIMATORS",
    "get_estimator",
    "legacy_estimator",
]


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation over the masked (response) tokens.

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = sum_l (gamma * lam)^l delta_{t+l}        (computed backwards)
        R_t     = A_t + V_t                                (value-function targets)

    The masked tokens of a row are its response and are contiguous. The value
    "after" the last response token is 0: the episode ends there, and whatever
    follows (padding) has no value. The recursion only runs through masked
    positions, so left or right padding both work.

    Args:
        rewards: (B, T) per-token rewards, e.g. the sequence score on the last
            response token minus a per-token KL penalty.
        values: (B, T) value-head predictions V_t, token-aligned like ``rewards``.
        mask: (B, T) response mask.
        gamma: discount (1.0 is standard for LLM episodes).
        lam: GAE lambda; 1.0 gives Monte-Carlo returns minus V, 0.0 gives TD(0).

    Returns:
        (advantages (B, T), returns (B, T)), both detached (advantages and value
        targets are constants for the optimiser) and exactly 0 outside the mask.
    """
    rewards = _apply_mask(rewards.detach(), mask)
    values = _apply_mask(values.detach(), mask)
    keep = (mask != 0).to(rewards.dtype)
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_adv = torch.zeros_like(next_value)
    # Walk backwards. At a position outside the mask the carried "next" state is
    # reset to 0, so a row's recursion starts fresh at its last response token.
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = (delta + gamma * lam * next_adv) * keep[:, t]
        advantages[:, t] = adv_t
        next_value = values[:, t]  # already 0 outside the mask
        next_adv = adv_t
    returns = _apply_mask(advantages + values, mask)
    return advantages, returns


@torch.no_grad()
def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kl_kind: str = "k1",
) -> torch.Tensor:
    """InstructGPT's per-token reward: a KL penalty on every response token, the sequence score
    on the last one.

        r_t = -beta * KL_t(pi || ref)            for every response token t
        r_T += score                             on the last response token T

    with ``KL_t = kl_estimate(logprobs, ref_logprobs, kl_kind)`` (k1 = log pi - log ref, the
    per-token estimate PPO-RLHF uses). GAE then spreads the score back over the tokens.

    Args:
        scores: (B,) sequence-level rewards (reward-model score or verifier reward).
        logprobs: (B, T) sampling-policy log-probs of the response tokens.
        ref_logprobs: (B, T) reference-model log-probs of the same tokens.
        mask: (B, T) response mask (contiguous per row).
        beta: KL coefficient (>= 0); 0 leaves only the score.
        kl_kind: "k1" | "k2" | "k3".

    Returns:
        (B, T) detached per-token rewards, exactly 0 outside the mask; a row with an empty
        mask gets no score.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    rewards = _apply_mask(-beta * kl_estimate(logprobs.detach(), ref_logprobs.detach(), kl_kind), mask)
    keep = mask != 0
    cols = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(keep, cols, torch.full_like(cols, -1)).max(dim=1).values    # (B,)
    rows = (last >= 0).nonzero().squeeze(1)
    rewards[rows, last[rows]] += _as_float(scores.detach()).to(rewards.dtype)[rows]
    return rewards


def adaptive_kl_beta(beta: float, kl: float, target: float, n: int, horizon: int = 10_000) -> float:
    """The adaptive KL controller of Ziegler et al. (2019), used for PPO-RLHF's per-token penalty:

        e = clip(kl / target - 1, -0.2, 0.2)
        beta <- beta * (1 + e * n / horizon)

    beta:    the current KL coefficient (> 0: the controller scales it, 0 stays 0)
    kl:      the batch's mean sequence KL to the reference (nats, summed over a response's tokens)
    target:  the KL the controller steers towards (> 0; Ziegler et al.'s sentiment run: 6 nats)
    n:       responses in the batch; horizon: responses over which a persistent error of 20%
             changes beta by a factor of about e^0.2
    Returns the next beta: above the target beta grows, below it shrinks, by at most 20% x n / horizon.
    """
    if target <= 0 or horizon <= 0:
        raise ValueError(f"the KL target ({target}) and horizon ({horizon}) must be > 0")
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n / horizon)


def _check_groups(n: int, group_size: int) -> None:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if n % group_size != 0:
        raise ValueError(
            f"number of rewards ({n}) is not divisible by group_size ({group_size}); rewards must be laid out "
            "group by group [g0s0, g0s1, ..., g1s0, ...] with exactly group_size samples per prompt"
        )


@torch.no_grad()
def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale_std: bool = True,
    eps: float = 1e-4,
) -> torch.Tensor:
    """GRPO group-relative advantages (one scalar per completion).

        GRPO:     A_i = (r_i - mean_group) / (std_group + eps)
        Dr.GRPO:  A_i =  r_i - mean_group                      (scale_std=False)

    ``std_group`` is the UNBIASED (Bessel-corrected, divide by G-1) standard
    deviation, matching trl's GRPOTrainer (``trl.trainer.utils.nanstd`` applies
    ``count / (count - 1)``) and torch's ``Tensor.std`` default; eps=1e-4 is also
    trl's constant. Groups with G=1 have no spread: their std is taken as 0 (as
    trl does), so their advantage is 0.

    Args:
        rewards: (N,) scalar rewards laid out group by group
            [g0s0, g0s1, ..., g0s{G-1}, g1s0, ...].
        group_size: G, completions per prompt.
        scale_std: divide by the group std (GRPO) or not (Dr.GRPO).
        eps: keeps the division finite for zero-variance groups (all-correct or
            all-wrong groups then get advantage 0 instead of NaN).

    Returns:
        (N,) detached advantages, same layout as ``rewards``.
    """
    rewards = _as_float(rewards.detach()).reshape(-1)
    _check_groups(rewards.numel(), group_size)
    grouped = rewards.view(-1, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_std:
        if group_size > 1:
            std = grouped.std(dim=1, keepdim=True)  # unbiased, like trl
        else:
            std = torch.zeros_like(centered)
        centered = centered / (std + eps)
    return centered.reshape(-1)


@torch.no_grad()
def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE Leave-One-Out advantages.

        A_i = r_i - mean_{j != i, j in group} r_j = r_i - (sum_group - r_i) / (G - 1)

    The baseline excludes the sample itself, so it is independent of that
    sample and the policy-gradient estimate stays unbiased. (Equivalently
    A_i = G/(G-1) * (r_i - mean_group).)

    Args:
        rewards: (N,) rewards laid out group by group (see ``group_advantages``).
        group_size: G >= 2 (a leave-one-out baseline needs another sample).

    Returns:
        (N,) detached advantages.
    """
    if group_size < 2:
        raise ValueError(f"rloo_advantages needs group_size >= 2 (a leave-one-out baseline), got {group_size}")
    rewards = _as_float(rewards.detach()).reshape(-1)
    _check_groups(rewards.numel(), group_size)
    grouped = rewards.view(-1, group_size)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).reshape(-1)


def opd_advantages(
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """On-policy distillation per-token advantage on the sampled tokens.

        A_t = log p_T(y_t) - log p_S(y_t)      (stop-gradient)

    With y_t sampled from the student, E[A_t] = -KL(p_S || p_T) at that prefix:
    this is the single-sample (k1) estimate of the negative per-token reverse KL.
    Plugged into a policy-gradient loss it pushes the student toward tokens the
    teacher finds more likely than the student does.

    Args:
        student_logprobs: (B, T) token-aligned log p_S(y_t) (e.g. from ``token_logprobs``).
        teacher_logprobs: (B, T) token-aligned log p_T(y_t) on the same tokens.
        mask: (B, T) response mask.

    Returns:
        (B, T) detached advantages, exactly 0 outside the mask.
    """
    if student_logprobs.shape != teacher_logprobs.shape:
        raise ValueError(
            f"student_logprobs {tuple(student_logprobs.shape)} and teacher_logprobs "
            f"{tuple(teacher_logprobs.shape)} must have the same (B, T) shape"
        )
    diff = _as_float(teacher_logprobs.detach()) - _as_float(student_logprobs.detach())
    return _apply_mask(diff, mask)


def mopd_advantages(
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    group_size: int,
    row_weights: torch.Tensor | None = None,
    alpha: float = 0.0,
) -> torch.Tensor:
    """MOPD's per-token advantage (MiMo-V2-Flash): each row's routed teacher term, weighted by
    its domain, plus alpha x the GRPO outcome advantage of its group.

        A_it = w_i (log p_T(y_it) - log p_S(y_it)) + alpha * (r_i - mean_g) / (std_g + eps)

    Args:
        student_logprobs: (B, T) log p_S of the sampled tokens (sampling time).
        teacher_logprobs: (B, T) log p_T of the same tokens, each row under its own teacher.
        mask: (B, T) response mask.
        rewards: (B,) outcome rewards laid out group by group (`group_advantages`).
        group_size: G completions per prompt (the outcome term needs G > 1 to be non-zero).
        row_weights: (B,) per-row weight of the teacher term (its domain's), None for all 1.
        alpha: the outcome advantage's weight (0: pure distillation).

    Returns:
        (B, T) detached advantages, exactly 0 outside the mask.
    """
    adv = opd_advantages(student_logprobs, teacher_logprobs, mask)
    if row_weights is not None:
        if row_weights.shape != adv.shape[:1]:
            raise ValueError(f"row_weights must be one weight per row, shape ({adv.shape[0]},); "
                             f"got {tuple(row_weights.shape)}")
        adv = adv * _as_float(row_weights.detach()).to(adv.device, adv.dtype)[:, None]
    if alpha:
        outcome = group_advantages(rewards, group_size).to(adv.device, adv.dtype)
        adv = adv + alpha * _apply_mask(outcome[:, None].expand_as(adv), mask)
    return adv


# ----------------------------------------------------------------------------- named estimators
#
# `estimator(experience, config) -> (advantages, returns)`: the online loop calls the one that
# `OnlineConfig.advantage` names, after the signal and the reference model have run, so an
# estimator can read everything a rollout batch holds (rewards, group size, sampling and
# reference log-probs, the teacher's log-probs, old values). `config` is the OnlineConfig.


def _group(exp, cfg):
    return group_advantages(exp.rewards, exp.group_size, scale_std=True), None


def _group_nostd(exp, cfg):
    return group_advantages(exp.rewards, exp.group_size, scale_std=False), None


def _rloo(exp, cfg):
    return rloo_advantages(exp.rewards, exp.group_size), None


def _none(exp, cfg):
    """The raw sequence reward as the advantage (REINFORCE without a baseline); also what a
    direct-loss objective such as reverse KL gets, since it ignores advantages."""
    return exp.rewards, None


def _teacher_token(exp, cfg):
    """On-policy distillation's sampled-token advantage, log p_T(y_t) - log p_S(y_t) (times each
    row's teacher weight when the signal routes with per-domain weights), plus ``outcome_weight``
    x the group-normalised outcome advantage (MiMo-V2-Flash's alpha): `mopd_advantages`."""
    teacher = exp.signal.teacher_logprobs
    if teacher is None:
        raise ValueError("advantage='teacher_token' needs a teacher signal (TeacherSignal or "
                         "RoutedTeacherSignal) that returns teacher log-probs; this batch's signal "
                         f"({exp.signal.kind}) gives sequence rewards only")
    return mopd_advantages(exp.logprobs, teacher, exp.mask, exp.rewards, exp.group_size,
                           row_weights=exp.signal.row_weights, alpha=cfg.outcome_weight), None


def _gae(exp, cfg):
    """PPO (InstructGPT): per-token rewards with the KL penalty folded in, GAE over the value
    head's predictions, advantages whitened over the batch; returns are the value targets."""
    if exp.old_values is None:
        raise ValueError("advantage='gae' needs value predictions: train a PolicyWithValue "
                         "(minimopd.models.PolicyWithValue(model)) with loss='ppo'")
    beta = cfg.kl_beta if exp.ref_logprobs is not None else 0.0
    ref = exp.ref_logprobs if exp.ref_logprobs is not None else exp.logprobs
    rewards = kl_penalized_rewards(exp.rewards, exp.logprobs, ref, exp.mask, beta, cfg.kl_kind)
    adv, returns = gae(rewards, exp.old_values, exp.mask, gamma=cfg.gamma, lam=cfg.lam)
    if cfg.whiten_advantages:
        adv = masked_whiten(adv, exp.mask)
    return adv, returns


ESTIMATORS = {"group": _group, "group_nostd": _group_nostd, "rloo": _rloo, "none": _none,
              "teacher_token": _teacher_token, "gae": _gae}
GROUP_ESTIMATORS = ("group", "group_nostd", "rloo")   # compare the samples of one prompt


def get_estimator(name: str):
    """The estimator called `name` (see ``ESTIMATORS``)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]


def legacy_estimator(advantage_fn):
    """Wrap a hook of the older form ``advantage_fn(config, rewards, token_advantages)`` (the
    GRPO lab's) as an estimator. ``token_advantages`` is the sampled-token teacher advantage
    when the signal is a teacher, else None."""
    def estimator(exp, cfg):
        token_adv = None
        if exp.signal.teacher_logprobs is not None:
            token_adv = opd_advantages(exp.logprobs, exp.signal.teacher_logprobs, exp.mask)
        return advantage_fn(cfg, exp.rewards, token_adv), None
    return estimator
