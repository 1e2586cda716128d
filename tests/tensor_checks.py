"""Shared helpers of the loss tests (test_losses, test_policy_losses, test_kl, test_advantages):
a tolerance comparison that walks tuples, a seeded generator, random response masks."""
from __future__ import annotations

import torch


def close(a, b, atol=1e-6, rtol=1e-5):
    if isinstance(a, (tuple, list)) and isinstance(a[0], torch.Tensor):
        for x, y in zip(a, b, strict=True):
            close(x, y, atol, rtol)
        return
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_mask(B, T, seed=0, contiguous=True):
    """(B, T) response masks: prompt of 1..2 tokens, response, then padding; row 0 full-ish."""
    g = gen(seed)
    mask = torch.zeros(B, T)
    for b in range(B):
        start = int(torch.randint(1, 3, (1,), generator=g))
        length = int(torch.randint(1, T - start + 1, (1,), generator=g))
        mask[b, start : start + length] = 1
    return mask
