"""Masked statistics: sums, means and whitening over the tokens a mask selects.

Pure tensor functions shared by every loss, estimator and divergence of the library.

* Per-token tensors are (B, T) and TOKEN-ALIGNED: column t belongs to token t. Masks are
  (B, T) with 1 on tokens that count (usually response tokens), so a mask never has to be
  shifted.
* Masked positions contribute exactly 0 to values AND gradients, even when the masked-out
  values are NaN/inf (padding log-probs are often -inf). That is why masking uses
  ``torch.where`` instead of multiplying by the mask: ``0 * inf`` is NaN, and NaN survives a
  multiplication.
* An all-zero mask gives 0, never NaN.
* Outputs are float32, or float64 when the input is float64 (so gradcheck works).
"""

from __future__ import annotations

import torch

__all__ = ["masked_sum", "masked_mean", "masked_whiten"]


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
