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

from minimopd.masked import _as_float

__all__ = ["KL_KINDS", "kl_estimate", "token_reverse_kl", "token_log_softmax", "generalized_jsd"]

KL_KINDS = ("k1", "k2", "k3")
# Probability floor of the top-k tail bucket: float32 sums of k probabilities carry ~1e-7 of
# rounding, so a tail below this is noise; clamping also keeps log(0) out of the gradient.
TAIL_FLOOR = 1e-6


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


def token_log_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Token-aligned full next-token log-distributions: (B, T, V) logits -> (B, T, V) float.

        out[:, t] = log softmax(logits[:, t-1] / temperature),   out[:, 0] = 0

    What a teacher signal stores for the exact full-vocabulary KL, aligned like
    ``token_logprobs`` so a (B, T) response mask selects the positions that count.
    """
    logp = F.log_softmax(_prediction_logits(logits, temperature), dim=-1)
    return torch.cat([logp.new_zeros(logp.shape[0], 1, logp.shape[-1]), logp], dim=1)


def _with_tail(support_logprobs: torch.Tensor) -> torch.Tensor:
    """(..., k) full-vocabulary log-probs on a support -> (..., k+1) with the tail bucket
    log(1 - sum_k p) appended (floored at ``TAIL_FLOOR``), a proper distribution again."""
    mass = support_logprobs.exp().sum(dim=-1, keepdim=True)
    tail = torch.log((1.0 - mass).clamp(min=TAIL_FLOOR))
    return torch.cat([support_logprobs, tail], dim=-1)


def token_reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    mode: str = "full",
    k: int = 8,
    *,
    support_ids: torch.Tensor | None = None,
    teacher_support_logprobs: torch.Tensor | None = None,
    teacher_full_logprobs: torch.Tensor | None = None,
    tail: bool = False,
) -> torch.Tensor:
    """Exact per-position reverse KL(p_S || p_T) between next-token distributions.

        full:  KL_t = sum_v p_S(v) (log p_S(v) - log p_T(v))             over the whole vocab
        topk:  the same sum over a support S_t of k tokens, in one of two forms:
               tail=False  both p_S and p_T renormalised over S_t (a true KL >= 0; k=1 gives 0)
               tail=True   S_t plus one "tail" bucket holding the rest of each distribution,
                           log(1 - sum_{v in S_t} p(v)): k+1 categories, so a small k still
                           sees the mass the student puts outside the support (trl's async
                           distillation and MOPD implementations use this form).

    Reverse KL is mode-seeking: it penalises the student for putting mass where the teacher
    has little, which is what on-policy distillation minimises. The support S_t is:

    * ``support_ids`` when given: (B, T, k) token ids, token-aligned (row t is the support of
      the distribution that predicts token t), e.g. the student's top-k recorded by the
      sampler, or the teacher's top-k. The teacher's side is ``teacher_support_logprobs``
      (B, T, k), its *full-vocabulary* log-probs at those ids (what a teacher signal stores),
      or else gathered from ``teacher_logits``.
    * otherwise the student's current top-k (``k``), chosen without gradient, with the
      teacher's side gathered from ``teacher_logits``.

    For "full", the teacher's side is ``teacher_logits`` or, token-aligned like everything a
    teacher signal stores, ``teacher_full_logprobs`` (B, T, V) with row t the distribution
    that predicts token t (``token_log_softmax``). k >= V with tail=False equals "full". No
    gradient reaches the teacher.

    Args:
        student_logits: (B, T, V) student logits (gradient flows).
        teacher_logits: (B, T, V) teacher logits (or log-probs) on the same tokens; needed for
            "full" and for "topk" without ``teacher_support_logprobs``.
        mode: "full" | "topk".
        k: support size for "topk" when ``support_ids`` is None (values above V clamp to V).
        support_ids: (B, T, k) long, optional (see above).
        teacher_support_logprobs: (B, T, k), optional (see above).
        teacher_full_logprobs: (B, T, V) token-aligned teacher log-probs, optional (see above).
        tail: add the tail bucket (mode "topk" only).

    Returns:
        (B, T) token-aligned: column t is the KL of the distributions predicting token t
        (from logits[:, t-1]); column 0 is 0.
    """
    if mode not in ("full", "topk"):
        raise ValueError(f"unknown mode {mode!r}; expected 'full' or 'topk'")
    if teacher_logits is not None:
        _check_pair(student_logits, teacher_logits)
    elif teacher_full_logprobs is not None:
        _check_pair(student_logits, teacher_full_logprobs)
    elif mode == "full" or teacher_support_logprobs is None:
        raise ValueError("token_reverse_kl needs the teacher's side: teacher_logits or teacher_full_logprobs "
                         "(mode 'full'), or teacher_support_logprobs / teacher_logits (mode 'topk')")
    s = _prediction_logits(student_logits)
    if mode == "full":
        if tail:
            raise ValueError("tail=True only applies to mode='topk' (the full KL has no tail)")
        if teacher_full_logprobs is not None:
            logp_t = _as_float(teacher_full_logprobs[:, 1:].detach()).to(s.dtype)
        else:
            logp_t = F.log_softmax(_prediction_logits(teacher_logits.detach()).to(s.dtype), dim=-1)
        return _prepend_zero_column(_kl_rows(F.log_softmax(s, dim=-1), logp_t))

    if support_ids is None:
        if k < 1:
            raise ValueError(f"k must be >= 1 for mode='topk', got {k}")
        # The student's own top-k (it is the distribution we sample from); a discrete choice,
        # so no gradient goes through it.
        idx = s.detach().topk(min(k, s.shape[-1]), dim=-1).indices        # (B, T-1, k)
    else:
        if support_ids.shape[:2] != student_logits.shape[:2] or support_ids.dim() != 3:
            raise ValueError(f"support_ids must be (B, T, k) = {tuple(student_logits.shape[:2])} + (k,), "
                             f"got {tuple(support_ids.shape)}")
        idx = support_ids[:, 1:].long()
    if teacher_support_logprobs is None and teacher_logits is None:
        raise ValueError("mode 'topk' needs teacher_support_logprobs or teacher_logits")
    if teacher_support_logprobs is not None:
        if teacher_support_logprobs.shape[:2] != student_logits.shape[:2] or \
                teacher_support_logprobs.shape[-1] != idx.shape[-1]:
            raise ValueError(f"teacher_support_logprobs {tuple(teacher_support_logprobs.shape)} must be "
                             f"(B, T, k) like support_ids {tuple(idx.shape)} (k = {idx.shape[-1]})")
        t_sup = _as_float(teacher_support_logprobs[:, 1:].detach()).to(s.dtype)
    else:
        t_sup = F.log_softmax(_prediction_logits(teacher_logits.detach()).to(s.dtype), dim=-1).gather(-1, idx)
    s_sup = F.log_softmax(s, dim=-1).gather(-1, idx)   # full-vocabulary log-probs on the support
    if tail:
        logp_s, logp_t = _with_tail(s_sup), _with_tail(t_sup)
    else:   # renormalise both over the support
        logp_s, logp_t = F.log_softmax(s_sup, dim=-1), F.log_softmax(t_sup, dim=-1)
    return _prepend_zero_column(_kl_rows(logp_s, logp_t))  # (B, T-1) -> (B, T)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    *,
    teacher_full_logprobs: torch.Tensor | None = None,
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

    On-policy distillation passes the teacher as a teacher signal stores it:
    ``teacher_full_logprobs`` (B, T, V), token-aligned (row t predicts token t, what
    ``token_log_softmax`` returns), already at the temperature it was scored with, so
    ``temperature`` then applies to the student only.

    Why a direction matters on the student's own samples: the gradient of the reverse KL with
    respect to the student's logits at one position is p_S(v) (log p_S(v)/p_T(v) - KL), which
    vanishes wherever the student is already certain (p_S near one-hot), right or wrong; the
    forward KL's is p_S - p_T, which does not.

    Args:
        student_logits: (B, T, V), gradient flows.
        teacher_logits: (B, T, V), treated as a constant (detached); or
        teacher_full_logprobs: (B, T, V) token-aligned teacher log-probs (see above).
        beta: interpolation coefficient in [0, 1].
        temperature: softmax temperature (> 0).

    Returns:
        (B, T) token-aligned (column 0 = 0), >= 0.
    """
    if (teacher_logits is None) == (teacher_full_logprobs is None):
        raise ValueError("generalized_jsd needs exactly one of teacher_logits or teacher_full_logprobs")
    _check_pair(student_logits, teacher_logits if teacher_logits is not None else teacher_full_logprobs)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    logp_s = F.log_softmax(_prediction_logits(student_logits, temperature), dim=-1)
    if teacher_full_logprobs is not None:
        logp_t = _as_float(teacher_full_logprobs[:, 1:].detach()).to(logp_s.dtype)
    else:
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
