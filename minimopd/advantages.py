"""Masked statistics and advantage estimators.

Everything here is a pure tensor function: no model, no I/O. Shapes use

    B = batch (sequences), T = sequence length (prompt + response tokens),
    N = number of sampled completions (= num_prompts * group_size), G = group size.

Conventions shared with the rest of ``minimopd.losses``:

* Per-token tensors are (B, T) and TOKEN-ALIGNED: column t belongs to token t.
  Masks are (B, T) with 1 on tokens that count (usually response tokens), so a
  mask never has to be shifted.
* Masked positions contribute exactly 0 to values AND gradients, even when the
  masked-out values are NaN/inf (padding log-probs are often -inf). That is why
  masking uses ``torch.where`` instead of multiplying by the mask: ``0 * inf``
  is NaN, and NaN survives a multiplication.
* An all-zero mask gives 0, never NaN.
* Outputs are float32, or float64 when the input is float64 (so gradcheck works).

Advantages are *constants* in a policy-gradient loss, so every estimator here
returns a detached tensor.
"""

from __future__ import annotations

import torch

__all__ = [
    "masked_sum",
    "masked_mean",
    "masked_whiten",
    "gae",
    "group_advantages",
    "rloo_advantages",
    "opd_advantages",
]


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Upcast to float32 (bf16/fp16/int inputs) but keep float64 as float64.

    Low-precision sums over thousands of tokens lose digits quickly, so every
    reduction is done in at least float32.
    """
    if x.dtype == torch.float64:
        return x
    return x.to(torch.float32)


def _apply_mask(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values * mask`` where masked-out entries are exactly 0 (also for NaN/inf values).

    Args:
        values: float tensor (...,).
        mask: tensor broadcastable to ``values``; nonzero = counts. A float mask acts
            as a per-entry weight.

    Returns:
        tensor of ``values``' float dtype (see ``_as_float``), shape of the broadcast.
    """
    values = _as_float(values)
    keep = mask != 0
    # torch.where routes gradient only to the selected branch, so masked entries
    # get a gradient of exactly 0 instead of 0 * (something non-finite).
    return torch.where(keep, values * mask.to(values.dtype), torch.zeros((), dtype=values.dtype, device=values.device))


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` over the positions where ``mask`` is nonzero.

    Args:
        values: (B, T) (any shape) float tensor.
        mask: same shape as ``values`` (or broadcastable); 1/True = counts.
        dim: None -> sum over everything (scalar); an int -> sum over that dim
            (e.g. dim=1 gives one value per row, shape (B,)).

    Returns:
        scalar tensor if ``dim is None`` else ``values`` reduced over ``dim``.
    """
    masked = _apply_mask(values, mask)
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is nonzero.

    Args:
        values: (B, T) (any shape) float tensor.
        mask: same shape as ``values`` (or broadcastable).
        dim: None -> one scalar over all masked entries; an int -> per-slice mean
            (dim=1 gives (B,), one mean per sequence).

    Returns:
        scalar or reduced tensor. Slices whose mask is all zero give 0 (not NaN),
        and they pass zero gradient.
    """
    mask_f = torch.broadcast_to(_as_float(mask), torch.broadcast_shapes(values.shape, mask.shape))
    total = masked_sum(values, mask_f, dim=dim)
    count = mask_f.sum() if dim is None else mask_f.sum(dim=dim)
    count = count.to(total.dtype)
    nonempty = count > 0
    # Divide by 1 where the slice is empty: the numerator is already 0 there, and
    # this keeps 0/0 = NaN out of both the value and the backward pass.
    return torch.where(nonempty, total / torch.where(nonempty, count, torch.ones_like(count)), torch.zeros_like(total))


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Normalise ``values`` to zero mean / unit variance over the masked entries.

    Used by PPO to whiten GAE advantages across the whole batch: it makes the
    step size insensitive to the reward scale. The variance is the unbiased
    (Bessel-corrected) one over the masked entries, as in the classic trl/OpenAI
    ``masked_whiten``; with a single masked entry it falls back to the biased one.

    Args:
        values: (B, T) float tensor.
        mask: (B, T); 1 = counts.
        shift_mean: if False the mean is added back, i.e. only the scale changes
            (useful for rewards, whose sign carries meaning).
        eps: added to the variance before the square root.

    Returns:
        (B, T) whitened values, exactly 0 outside the mask (all-zero mask -> all 0).
    """
    values = _as_float(values)
    mean = masked_mean(values, mask)
    centered = values - mean
    var = masked_mean(centered**2, mask)
    count = _as_float(mask).sum()
    var = torch.where(count > 1, var * count / torch.clamp(count - 1, min=1), var)
    whitened = centered * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _apply_mask(whitened, mask)


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
