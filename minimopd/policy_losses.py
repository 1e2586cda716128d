"""Policy-gradient losses: the PPO clipped surrogate, MiMo-V2-Flash's truncated importance
weights, the PPO value loss, and the GRPO family (the shared `aggregate` reducer, `grpo_loss`).

Imported and re-exported by ``minimopd.losses`` (the one import the trainers and labs use), whose
docstring states the conventions: per-token tensors are (B, T) and token-aligned, outputs
unreduced unless said otherwise, masked positions contribute exactly 0, work in float32 (float64
stays float64 for gradcheck).
"""

from __future__ import annotations

import torch

from minimopd.kl import kl_estimate
from minimopd.masked import _as_float, masked_mean, masked_sum

AGGREGATIONS = ("grpo", "dr_grpo", "dapo")
GRPO_AGGREGATIONS = AGGREGATIONS   # the name the GRPO lab and older code use


# ----------------------------------------------------------------------------- PPO


def _policy_inputs(logprobs, sampler_logprobs, advantages):
    """The inputs of a per-token policy-gradient loss in one float dtype: current log-probs
    (gradient flows), the sampling policy's log-probs and the advantages (both constant), a
    (B,) per-sequence advantage made (B, 1) so that it broadcasts over the tokens."""
    logprobs = _as_float(logprobs)
    sampler_logprobs = _as_float(sampler_logprobs).detach().to(logprobs.dtype)
    advantages = _as_float(advantages).detach().to(logprobs.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    return logprobs, sampler_logprobs, advantages


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate, per token (to be MINIMISED).

        rho = exp(logp - old_logp)
        L   = max(-A * rho, -A * clip(rho, 1 - eps_low, 1 + eps_high))

    The max of the two negated objectives is the pessimistic bound: once rho
    has moved past the clip edge in the direction the advantage rewards
    (rho > 1+eps_high with A > 0, or rho < 1-eps_low with A < 0) the clipped
    branch wins, it is constant in logp, and that token stops pushing. Moves in
    the harmful direction are never clipped. ``eps_high > eps_low`` is DAPO's
    "clip-higher", which leaves more room to raise low-probability tokens.

    Args:
        logprobs: (B, T) current-policy log-probs (gradient flows).
        old_logprobs: (B, T) log-probs under the sampling policy (constant).
        advantages: (B, T) per-token or (B,) per-sequence (broadcast over T).
        eps_low: lower clip range.
        eps_high: upper clip range; None means eps_low (symmetric PPO).

    Returns:
        (loss (B, T), clipped (B, T) float 0/1): ``clipped`` is 1 exactly where
        the clipped branch was strictly larger, i.e. where the token receives no
        gradient. Both unmasked: apply your mask when reducing.
    """
    eps_high = eps_low if eps_high is None else eps_high
    logprobs, old_logprobs, advantages = _policy_inputs(logprobs, old_logprobs, advantages)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped_obj = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    clipped = clipped_obj > unclipped
    # Select the branch explicitly: gradient is exactly -A * rho on unclipped tokens
    # and exactly 0 on clipped ones (torch.maximum gives the same numbers, but hides
    # which branch was taken, and we need that for the clip fraction anyway).
    loss = torch.where(clipped, clipped_obj, unclipped)
    return loss, clipped.to(loss.dtype)


def truncated_is_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    low: float = 0.8,
    high: float = 1.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy gradient with truncated importance weights, per token (to be MINIMISED); the
    MOPD loss of MiMo-V2-Flash.

        w = sg(exp(logp - sampler_logp)) if low <= that ratio <= high, else 0
        L = -w * A * logp

    The weight corrects for the update policy differing from the one that sampled (a later
    minibatch, an inference engine); a token whose ratio left [low, high] is dropped rather
    than clipped, so it contributes no gradient at all. At ratio 1 (the first minibatch) the
    gradient is the plain REINFORCE one, -A d logp, as for the clipped loss.

    Args:
        logprobs: (B, T) current-policy log-probs (gradient flows).
        sampler_logprobs: (B, T) log-probs under the sampling policy (constant).
        advantages: (B, T) per-token or (B,) per-sequence (broadcast over T).
        low, high: the window of importance ratios kept (0 < low <= 1 <= high).

    Returns:
        (loss (B, T), dropped (B, T) float 0/1): ``dropped`` is 1 where the ratio left the
        window. Both unmasked: apply your mask when reducing.
    """
    if not 0 < low <= 1 <= high:
        raise ValueError(f"the importance-ratio window must contain 1: 0 < low <= 1 <= high, got [{low}, {high}]")
    logprobs, sampler_logprobs, advantages = _policy_inputs(logprobs, sampler_logprobs, advantages)
    ratio = torch.exp(logprobs.detach() - sampler_logprobs)
    keep = (ratio >= low) & (ratio <= high)
    weight = torch.where(keep, ratio, torch.zeros_like(ratio))
    return -weight * advantages * logprobs, (~keep).to(logprobs.dtype)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip: float | None = 0.2,
) -> torch.Tensor:
    """PPO value-head loss with optional value clipping, per token.

        L = 0.5 * max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2)

    Clipping keeps the value head from moving far from its rollout-time
    prediction in one update (the value analogue of the policy clip). Taking the
    max (not the clipped term alone) means clipping can only make the loss larger,
    never hide an error.

    Args:
        values: (B, T) current value predictions (gradient flows).
        old_values: (B, T) predictions at rollout time (constant).
        returns: (B, T) targets, e.g. from ``gae`` (constant).
        clip: clip range; None disables clipping (plain 0.5 * MSE).

    Returns:
        (B, T) unmasked losses.
    """
    values = _as_float(values)
    returns = _as_float(returns).detach().to(values.dtype)
    loss = (values - returns) ** 2
    if clip is not None:
        old_values = _as_float(old_values).detach().to(values.dtype)
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        loss = torch.maximum(loss, (v_clipped - returns) ** 2)
    return 0.5 * loss


# ----------------------------------------------------------------------------- GRPO


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    aggregation: str = "dapo",
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss to the scalar an optimiser steps on: the one reducer every
    objective shares (policy gradient, value loss, reverse KL).

    With N sequences, masks m and lengths |o_i| = sum_t m_it:

        "grpo":     (1/N) sum_i (1/|o_i|) sum_t m_it l_it   per-sequence mean, then mean
        "dr_grpo":  sum_it m_it l_it / (N * L_max)          constant normaliser (Dr.GRPO)
        "dapo":     sum_it m_it l_it / sum_it m_it          token-level mean (DAPO)

    "grpo" gives each sequence equal total weight, so a token in a short response weighs
    more than one in a long response (a length bias: short correct and long wrong answers
    are both favoured). "dapo" weighs every token equally. "dr_grpo" divides by a constant,
    so no length-dependent weighting at all; with L_max = T it equals "dapo" times
    (tokens / (N * T)).

    Args:
        per_token: (B, T) unreduced loss.
        mask: (B, T) response mask (a float mask weights tokens).
        aggregation: "grpo" | "dr_grpo" | "dapo".
        max_tokens: L_max for "dr_grpo" (default: T = mask.shape[1]).

    Returns:
        0-dim tensor; 0 (not NaN) for an all-zero mask.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of grpo, dr_grpo, dapo")
    n_seq, n_cols = mask.shape
    if max_tokens is None:
        max_tokens = n_cols
    if aggregation == "grpo":
        return masked_mean(per_token, mask, dim=1).mean() if n_seq > 0 else masked_sum(per_token, mask)
    if aggregation == "dr_grpo":
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
        return masked_sum(per_token, mask) / (max(n_seq, 1) * max_tokens)
    return masked_mean(per_token, mask)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    aggregation: str = "grpo",
    max_tokens: int | None = None,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_kind: str = "k3",
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO-family policy loss: clipped surrogate + optional KL, aggregated to a scalar.

    Per token:  l_t = ppo_clip_loss(logp, old_logp, A)_t + beta * KL_t(pi || ref)
    (KL_t = ``kl_estimate(logp, ref_logp, kl_kind)``, k3 by default, as in GRPO), reduced
    to a scalar by ``aggregate`` ("grpo": per-sequence mean then mean; "dr_grpo": a
    constant normaliser N * L_max; "dapo": token-level mean; see there for the length bias
    each one has or removes).

    Args:
        logprobs: (B, T) current policy log-probs (gradient flows).
        old_logprobs: (B, T) sampling-policy log-probs (constant).
        advantages: (B,) per-sequence (e.g. ``group_advantages``) or (B, T).
        mask: (B, T) response mask.
        eps_low, eps_high: clip ranges (eps_high=None -> eps_low).
        aggregation: "grpo" | "dr_grpo" | "dapo".
        max_tokens: L_max for "dr_grpo" (default: T = mask.shape[1]).
        ref_logprobs: (B, T) reference log-probs; needed when beta != 0.
        beta: KL coefficient.
        kl_kind: "k1" | "k2" | "k3".

    Returns:
        (loss: scalar tensor, stats: dict of python floats) with stats
        "loss", "pg_loss" (same aggregation without the KL term), "clip_frac"
        (masked fraction of tokens on the clipped branch), "clip_frac_low",
        "clip_frac_high" (split by side, as trl logs them), "kl" (masked mean
        KL estimate; 0.0 when no ref_logprobs), "ratio_mean".
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of grpo, dr_grpo, dapo")
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError(f"beta={beta} needs ref_logprobs for the KL term (pass ref_logprobs or set beta=0)")
    if logprobs.shape != mask.shape or old_logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must all be (B, T)"
        )
    if aggregation == "dr_grpo" and max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")

    pg, clipped = ppo_clip_loss(logprobs, old_logprobs, advantages, eps_low, eps_high)
    per_token = pg
    kl = None
    if ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs.detach(), kl_kind)
        if beta != 0.0:
            per_token = per_token + beta * kl

    loss = aggregate(per_token, mask, aggregation, max_tokens)
    with torch.no_grad():
        adv = _as_float(advantages)
        adv = adv.unsqueeze(-1) if adv.dim() == 1 else adv
        adv = torch.broadcast_to(adv, pg.shape)
        ratio = torch.exp(_as_float(logprobs) - _as_float(old_logprobs))
        stats = {
            "loss": float(loss.detach()),
            "pg_loss": float(aggregate(pg.detach(), mask, aggregation, max_tokens)),
            "clip_frac": float(masked_mean(clipped, mask)),
            "clip_frac_low": float(masked_mean((clipped > 0) & (adv < 0), mask)),
            "clip_frac_high": float(masked_mean((clipped > 0) & (adv > 0), mask)),
            "kl": float(masked_mean(kl.detach(), mask)) if kl is not None else 0.0,
            "ratio_mean": float(masked_mean(ratio, mask)),
        }
    return loss, stats
