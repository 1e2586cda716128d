"""Loss functions for LLM post-training: SFT, reward models, PPO, DPO, GRPO, distillation.

This is the one import the trainers and labs use: it defines the losses and
re-exports the masked statistics / advantage estimators (``minimopd.advantages``)
and the KL / divergence functions (``minimopd.kl``), so

    from minimopd.losses import masked_mean, gae, grpo_loss, token_reverse_kl

works for everything. All functions are pure tensor code (no model, no I/O).

Shapes: B = batch, T = sequence length (prompt + response), V = vocab size.

Conventions (the whole project relies on them):

* Per-token tensors are (B, T) and TOKEN-ALIGNED:
  ``logprobs[:, t] = log p(input_ids[:, t] | input_ids[:, :t])``, computed from
  ``logits[:, t - 1]``; column 0 is 0 (nothing predicts the first token).
  Masks are (B, T) with 1 on the tokens that count, same alignment, so a mask
  is never shifted.
* Outputs are unreduced (per example or per token) unless the name/docstring
  says otherwise. Masked positions contribute exactly 0 to values and gradients;
  an all-zero mask gives 0, never NaN.
* Inputs may be float32/float64/bf16. Work happens in float32 (float64 stays
  float64, so ``torch.autograd.gradcheck`` works); outputs are float32/float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minimopd.advantages import (
    gae,
    group_advantages,
    kl_penalized_rewards,
    mopd_advantages,
    opd_advantages,
    rloo_advantages,
)
from minimopd.kl import (
    KL_KINDS,
    _prediction_logits,
    _prepend_zero_column,
    generalized_jsd,
    kl_estimate,
    token_log_softmax,
    token_reverse_kl,
)
from minimopd.masked import _as_float, masked_mean, masked_sum, masked_whiten

__all__ = [
    # masked statistics and advantages (minimopd.advantages)
    "masked_sum",
    "masked_mean",
    "masked_whiten",
    "gae",
    "kl_penalized_rewards",
    "group_advantages",
    "rloo_advantages",
    "opd_advantages",
    "mopd_advantages",
    # KL and divergences (minimopd.kl)
    "KL_KINDS",
    "kl_estimate",
    "token_reverse_kl",
    "token_log_softmax",
    "generalized_jsd",
    # defined here
    "token_logprobs",
    "token_entropy",
    "sft_loss",
    "sequence_logps",
    "bradley_terry_loss",
    "ppo_clip_loss",
    "truncated_is_loss",
    "value_loss",
    "DPO_LOSS_TYPES",
    "dpo_loss",
    "AGGREGATIONS",
    "GRPO_AGGREGATIONS",
    "aggregate",
    "grpo_loss",
    "check_finite",
]

DPO_LOSS_TYPES = ("sigmoid", "ipo")
AGGREGATIONS = ("grpo", "dr_grpo", "dapo")
GRPO_AGGREGATIONS = AGGREGATIONS   # the name the GRPO lab and older code use


# ----------------------------------------------------------------------------- per-token quantities


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Token-aligned log-probabilities of the tokens actually in ``input_ids``.

        out[:, t] = log softmax(logits[:, t-1] / temperature)[input_ids[:, t]],   out[:, 0] = 0

    Computed as ``logit[y] - logsumexp(logits)`` in float32, which never
    materialises the full (B, T, V) log-softmax. Use the same ``temperature`` as
    the sampler when these log-probs enter an importance ratio, otherwise the
    ratio is off even for an unchanged policy.

    Args:
        logits: (B, T, V) model outputs (any float dtype).
        input_ids: (B, T) long token ids.
        temperature: > 0.

    Returns:
        (B, T) float32 (float64 for float64 logits).
    """
    if input_ids.shape != logits.shape[:2]:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} must match logits (B, T) = {tuple(logits.shape[:2])}")
    pred = _prediction_logits(logits, temperature)  # (B, T-1, V)
    picked = pred.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return _prepend_zero_column(picked - torch.logsumexp(pred, dim=-1))


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution that predicts each token.

        out[:, t] = H(softmax(logits[:, t-1])) = -sum_v p(v) log p(v),   out[:, 0] = 0

    Differentiable (an entropy bonus needs the gradient); detach for logging.

    Args:
        logits: (B, T, V).

    Returns:
        (B, T) float32/float64, token-aligned like ``token_logprobs``.
    """
    logp = F.log_softmax(_prediction_logits(logits), dim=-1)
    p = logp.exp()
    # where(): tokens with p = 0 (e.g. -inf logits) add 0, not 0 * -inf = NaN.
    ent = -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(dim=-1)
    return _prepend_zero_column(ent)


# ----------------------------------------------------------------------------- supervised / reward model


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean negative log-likelihood over the masked (response) tokens.

        loss_b = - sum_t mask[b, t] * logprobs[b, t] / sum_t mask[b, t]

    Per-example means weight every example equally regardless of length; take
    ``masked_sum(-logprobs, mask) / masked_sum(ones, mask)`` yourself if you want
    every token to count equally instead.

    Args:
        logprobs: (B, T) token-aligned log-probs (``token_logprobs``).
        mask: (B, T) 1 on tokens to learn (response tokens).

    Returns:
        (B,) losses; 0 for an example with no masked tokens.
    """
    return -masked_mean(logprobs, mask, dim=1)


def sequence_logps(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probability of each response as a whole: the sum of its tokens' log-probs.

        log pi(y | x) = sum_t mask[b, t] * logprobs[b, t]

    DPO compares these sums between the policy and the reference (a mean would change the
    objective: IPO as trl computes it divides by the length; see ``dpo_loss``).

    Args:
        logprobs: (B, T) token-aligned log-probs (``token_logprobs``).
        mask: (B, T) 1 on the response's tokens (its end-of-turn token included).

    Returns:
        (B,) sums; 0 for a row with no masked tokens.
    """
    return masked_sum(_as_float(logprobs), mask, dim=1)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Bradley-Terry pairwise reward-model loss.

        L = -log sigma(r_w - r_l - margin)

    ``-logsigmoid`` (softplus of the negative) is used instead of log(sigmoid(.))
    so large negative differences do not underflow to log(0).

    Args:
        chosen_rewards: (B,) scalar rewards of the preferred responses.
        rejected_rewards: (B,) rewards of the dispreferred responses.
        margin: float or (B,) tensor; demands r_w exceed r_l by at least this much
            (Llama-2 style graded preferences).

    Returns:
        (B,) losses.
    """
    diff = _as_float(chosen_rewards) - _as_float(rejected_rewards)
    if isinstance(margin, torch.Tensor):
        margin = margin.to(diff.dtype)
    return -F.logsigmoid(diff - margin)


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


# ----------------------------------------------------------------------------- DPO


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimisation losses from sequence log-probs.

        h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]
        sigmoid: L = -(1 - ls) log sigma(beta h) - ls log sigma(-beta h)
        ipo:     L = (h - 1 / (2 beta))^2                       (IPO's tau is beta)

    "sigmoid" with ls > 0 is conservative DPO (labels flipped with probability
    ls). Differences from trl 1.16's DPOTrainer: its "sigmoid" ignores
    ``label_smoothing`` (only "robust"/"aot"/"exo_pair" use it), and its "ipo"
    divides each sequence's log-ratio by its completion length before forming h.
    Here h uses whatever you pass: sequence sums give the paper's IPO, per-token
    means give trl's.

    Args:
        policy_chosen_logps: (B,) sum of policy log-probs over each chosen response.
        policy_rejected_logps: (B,) same for the rejected responses.
        ref_chosen_logps: (B,) reference-model sums (constants).
        ref_rejected_logps: (B,) reference-model sums.
        beta: KL strength (> 0); larger keeps the policy closer to the reference.
        loss_type: "sigmoid" | "ipo".
        label_smoothing: ls in [0, 0.5), only for "sigmoid".

    Returns:
        (losses (B,), chosen_rewards (B,), rejected_rewards (B,)), where the
        implicit rewards beta * (log pi - log ref) are detached (for logging:
        reward accuracy = mean(chosen > rejected)).
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of sigmoid, ipo")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if loss_type != "sigmoid" and label_smoothing != 0.0:
        raise ValueError(f"label_smoothing is only used by loss_type='sigmoid', got loss_type={loss_type!r}")
    chosen_logratio = _as_float(policy_chosen_logps) - _as_float(ref_chosen_logps).detach()
    rejected_logratio = _as_float(policy_rejected_logps) - _as_float(ref_rejected_logps).detach()
    h = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    else:
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


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


# ----------------------------------------------------------------------------- debugging


def check_finite(name: str, tensor: torch.Tensor | float, step: int | None = None, *,
                 stage: str | None = None) -> torch.Tensor | float:
    """Raise ``FloatingPointError`` if ``tensor`` holds NaN or inf; otherwise return it unchanged.

    The one NaN guard of the library: every trainer (offline and online) calls it on every
    loss, so a blow-up stops the run at the step where it happened, with a message that says
    what went wrong and what to try, instead of silently training on NaN weights.

    Args:
        name: what the value is ("the loss", "advantages", ...), used in the message.
        tensor: tensor (any shape) or python number.
        step: optional training step for the message.
        stage: optional stage name ("sft", "online", ...) that prefixes the message.
    """
    t = torch.as_tensor(tensor)
    if t.is_floating_point() or t.is_complex():
        t_det = t.detach()
        if not bool(torch.isfinite(t_det).all()):
            n_nan = int(torch.isnan(t_det).sum())
            n_inf = int(torch.isinf(t_det).sum())
            where = f" at step {step}" if step is not None else ""
            prefix = f"{stage}: " if stage else ""
            raise FloatingPointError(
                f"{prefix}{name}{where} is not finite ({n_nan} NaN, {n_inf} inf out of {t_det.numel()} values). "
                "Hint: lower the learning rate (or enable gradient clipping), and check the inputs: "
                "-inf log-probs on unmasked tokens, an all-masked batch, out-of-range token ids, or "
                "bf16 overflow in the logits; or resume from the last good checkpoint."
            )
    return tensor
