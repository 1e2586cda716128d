"""Loss functions for LLM post-training: SFT, reward models, PPO, DPO, GRPO, distillation.

This is the one import the trainers and labs use: it defines the per-token,
supervised, reward-model and DPO losses and re-exports the policy-gradient losses
(PPO clip, truncated IS, value, GRPO and its ``aggregate``: ``minimopd.policy_losses``),
the masked statistics / advantage estimators (``minimopd.advantages``) and the KL /
divergence functions (``minimopd.kl``), so

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
from minimopd.policy_losses import (
    AGGREGATIONS,
    GRPO_AGGREGATIONS,
    aggregate,
    grpo_loss,
    ppo_clip_loss,
    truncated_is_loss,
    value_loss,
)

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
    # policy-gradient losses (minimopd.policy_losses)
    "ppo_clip_loss",
    "truncated_is_loss",
    "value_loss",
    "AGGREGATIONS",
    "GRPO_AGGREGATIONS",
    "aggregate",
    "grpo_loss",
    # defined here
    "token_logprobs",
    "token_entropy",
    "sft_loss",
    "sequence_logps",
    "bradley_terry_loss",
    "DPO_LOSS_TYPES",
    "dpo_loss",
    "check_finite",
]

DPO_LOSS_TYPES = ("sigmoid", "ipo")


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
