"""KL estimators and distribution-level divergences between two LMs.

Pure tensor functions, no model. Shapes: B = batch, T = sequence length,
V = vocabulary size.

Alignment (the whole project relies on it): functions that take logits
(B, T, V) return per-token values (B, T) where column t describes the
distribution that PREDICTS token t, i.e. the one computed from
``logits[:, t - 1]``. Column 0 has no prediction and is 0. A (B, T) response
mask therefore applies to the outputs without any shifting.

Two families live here:

* Sample-based estimators of KL(pi || ref) from log-probs of sampled tokens
  (``kl_estimate``: k1, k2, k3), as used by PPO/GRPO KL penalties.
* Exact (or top-k) per-position divergences computed from full logits
  (``token_reverse_kl``, ``generalized_jsd``), as used by on-policy distillation
  and GKD. The teacher is always a constant: no gradient reaches its logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["KL_KINDS", "kl_estimate", "token_reverse_kl", "generalized_jsd"]

KL_KINDS = ("k1", "k2", "k3")


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """float32 for low-precision inputs, float64 kept (see advantages._as_float)."""
    return x if x.dtype == torch.float64 else x.to(torch.float32)


def _prepend_zero_column(x: torch.Tensor) -> torch.Tensor:
    """(B, T-1) values for tokens 1..T-1 -> (B, T) token-aligned values, column 0 = 0."""
    return torch.cat([x.new_zeros(x.shape[0], 1), x], dim=1)  # works for T-1 == 0 too


def _prediction_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, T, V) logits -> (B, T-1, V) float logits that predict tokens 1..T-1, divided by temperature."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    out = _as_float(logits[:, :-1])
    return out / temperature if temperature != 1.0 else out


def _kl_rows(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p(v) (log p(v) - log q(v)): (..., V) log-probs x 2 -> (...).

    Entries with p(v) = 0 contribute 0 (the 0 * log 0 = 0 convention). Writing it
    with ``torch.where`` on the difference keeps -inf logits (banned tokens) from
    turning the value or the gradient into NaN.
    """
    p = logp.exp()
    diff = torch.where(p > 0, logp - logq, torch.zeros_like(logp))
    return (p * diff).sum(dim=-1)


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.dim() != 3 or teacher_logits.dim() != 3:
        raise ValueError(
            f"student and teacher logits must be (B, T, V); got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"vocab size mismatch: student has {student_logits.shape[-1]} and teacher has "
            f"{teacher_logits.shape[-1]} logits per position; teacher and student must share a tokenizer "
            "(same vocabulary, same token ids) for a per-token divergence to make sense"
        )
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must cover the same (B, T) tokens"
        )


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-sample estimators of KL(pi || ref) from tokens sampled from pi.

    With log_ratio = log pi(y) - log ref(y) and y ~ pi (Schulman, "Approximating KL"):

        k1 = log_ratio                                  unbiased, high variance, can be < 0
        k2 = 0.5 * log_ratio**2                         biased (low bias near pi = ref), >= 0
        k3 = exp(-log_ratio) - 1 + log_ratio            unbiased, >= 0, low variance
           = ref/pi - log(ref/pi) - 1                   (GRPO's KL term; trl's ``per_token_kl``)

    k3 is written with ``expm1`` to keep precision when the ratio is close to 1,
    which is the common case early in training.

    Args:
        logprobs: (B, T) (any shape) log pi of the sampled tokens. Gradients flow.
        ref_logprobs: same shape, log ref of the same tokens.
        kind: "k1" | "k2" | "k3".

    Returns:
        same shape as the inputs, unreduced (apply a mask yourself).
    """
    if kind not in KL_KINDS:
        raise ValueError(f"unknown KL estimator kind {kind!r}; expected one of k1, k2, k3")
    log_ratio = _as_float(logprobs) - _as_float(ref_logprobs)
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    return torch.expm1(-log_ratio) + log_ratio


def token_reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mode: str = "full",
    k: int = 8,
) -> torch.Tensor:
    """Exact per-position reverse KL(p_S || p_T) between next-token distributions.

        full:  KL_t = sum_v p_S(v) (log p_S(v) - log p_T(v))           over the whole vocab
        topk:  the same sum restricted to S_t = the student's top-k tokens at t, with
               both p_S and p_T renormalised over S_t (so it is a true KL, >= 0).

    Reverse KL is mode-seeking: it penalises the student for putting mass where
    the teacher has little, which is what on-policy distillation minimises.
    "topk" is the cheap variant for large vocabularies (only k teacher logits per
    position are needed). Note k=1 always gives 0 (both renormalise to a point
    mass), and k >= V equals "full". The top-k support is chosen without gradient.

    Args:
        student_logits: (B, T, V) student logits (gradient flows).
        teacher_logits: (B, T, V) teacher logits on the same tokens (treated as a
            constant: detached).
        mode: "full" | "topk".
        k: support size for "topk" (>= 1; values above V are clamped to V).

    Returns:
        (B, T) token-aligned: column t is the KL of the distributions predicting
        token t (from logits[:, t-1]); column 0 is 0.
    """
    _check_pair(student_logits, teacher_logits)
    if mode not in ("full", "topk"):
        raise ValueError(f"unknown mode {mode!r}; expected 'full' or 'topk'")
    s = _prediction_logits(student_logits)
    t = _prediction_logits(teacher_logits.detach()).to(s.dtype)
    if mode == "topk":
        if k < 1:
            raise ValueError(f"k must be >= 1 for mode='topk', got {k}")
        k = min(k, s.shape[-1])
        # Pick the support from the student (it is the distribution we sample from);
        # the choice is discrete, so no gradient goes through it.
        idx = s.detach().topk(k, dim=-1).indices  # (B, T-1, k)
        s = s.gather(-1, idx)
        t = t.gather(-1, idx)
    # log_softmax over the (possibly restricted) support renormalises both sides.
    logp_s = F.log_softmax(s, dim=-1)
    logp_t = F.log_softmax(t, dim=-1)
    return _prepend_zero_column(_kl_rows(logp_s, logp_t))  # (B, T-1) -> (B, T)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-position generalised Jensen-Shannon divergence (GKD, Agarwal et al. 2023).

    Matches trl 1.16 ``trl.experimental.gkd.GKDTrainer.generalized_jsd_loss``
    (reduction="none", summed over the vocab). With S = student, T = teacher and
    the mixture M = (1 - beta) * p_S + beta * p_T:

        beta == 0:      KL(p_T || p_S)      forward KL  (mean-seeking; = SFT on teacher's distribution)
        beta == 1:      KL(p_S || p_T)      reverse KL  (mode-seeking; what on-policy distillation uses)
        0 < beta < 1:   beta * KL(p_T || M) + (1 - beta) * KL(p_S || M)

    Beware: like trl, the endpoints are special-cased. The mixture formula itself
    tends to 0 (not to the KLs) as beta -> 0 or 1, so the function is
    discontinuous at the endpoints. Both logits are divided by ``temperature``
    before the softmax, with no T**2 rescaling (as in trl).

    Args:
        student_logits: (B, T, V), gradient flows.
        teacher_logits: (B, T, V), treated as a constant (detached).
        beta: interpolation coefficient in [0, 1].
        temperature: softmax temperature (> 0).

    Returns:
        (B, T) token-aligned (column 0 = 0), >= 0.
    """
    _check_pair(student_logits, teacher_logits)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    logp_s = F.log_softmax(_prediction_logits(student_logits, temperature), dim=-1)
    logp_t = F.log_softmax(_prediction_logits(teacher_logits.detach(), temperature), dim=-1).to(logp_s.dtype)

    if beta == 0.0:
        out = _kl_rows(logp_t, logp_s)
    elif beta == 1.0:
        out = _kl_rows(logp_s, logp_t)
    else:
        # log M computed in log space: log((1-b) e^{log p_S} + b e^{log p_T}).
        b = torch.tensor(beta, dtype=logp_s.dtype, device=logp_s.device)
        log_m = torch.logsumexp(torch.stack([logp_s + torch.log1p(-b), logp_t + torch.log(b)]), dim=0)
        out = beta * _kl_rows(logp_t, log_m) + (1.0 - beta) * _kl_rows(logp_s, log_m)
    return _prepend_zero_column(out)
