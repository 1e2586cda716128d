"""Tests for minimopd.advantages (re-exported by minimopd.losses): GAE, group-relative (GRPO)
and leave-one-out (RLOO) advantages, the on-policy distillation advantages (one teacher and
routed), and KL-penalised rewards. Hand cases and loop references."""

from __future__ import annotations

import math

import pytest
import torch

from minimopd import losses as L
from tensor_checks import close, gen, random_mask

torch.set_default_dtype(torch.float32)


# ============================================================================ GAE


def test_gae_hand_1x3():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    adv, ret = L.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # delta2 = 1 + 0 - 0.7 = 0.3 (value after the last token is 0)
    # delta1 = 0 + 0.9*0.7 - 0.6 = 0.03 ; delta0 = 0 + 0.9*0.6 - 0.5 = 0.04
    # A2 = 0.3 ; A1 = 0.03 + 0.45*0.3 = 0.165 ; A0 = 0.04 + 0.45*0.165 = 0.11425
    close(adv, [[0.11425, 0.165, 0.3]])
    close(ret, [[0.61425, 0.765, 1.0]])
    # defaults gamma=1, lam=0.95: delta = [0.1, 0.1, 0.3]
    adv_d, _ = L.gae(rewards, values, mask)
    close(adv_d, [[0.1 + 0.95 * (0.1 + 0.95 * 0.3), 0.1 + 0.95 * 0.3, 0.3]])


def _gae_reference(rewards, values, mask, gamma, lam):
    """Direct definition A_t = sum_l (gamma lam)^l delta_{t+l} on each row's response slice."""
    B, T = rewards.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        idx = [t for t in range(T) if mask[b, t]]
        r = [float(rewards[b, t]) for t in idx]
        v = [float(values[b, t]) for t in idx] + [0.0]
        deltas = [r[i] + gamma * v[i + 1] - v[i] for i in range(len(idx))]
        for i, t in enumerate(idx):
            adv[b, t] = sum((gamma * lam) ** l * deltas[i + l] for l in range(len(idx) - i))
    return adv, torch.where(mask.bool(), adv + values.double(), torch.zeros_like(adv))


def test_gae_matches_reference_with_padding_and_no_grad():
    g = gen(7)
    B, T = 5, 9
    rewards = torch.randn(B, T, generator=g)
    values = torch.randn(B, T, generator=g, requires_grad=True)
    mask = random_mask(B, T, seed=7)
    mask[4] = 0
    mask[4, -3:] = 1  # response running to the last column
    adv, ret = L.gae(rewards, values, mask, gamma=0.97, lam=0.9)
    ref_adv, ref_ret = _gae_reference(rewards, values.detach(), mask, 0.97, 0.9)
    close(adv, ref_adv, atol=1e-5)
    close(ret, ref_ret, atol=1e-5)
    assert not adv.requires_grad and not ret.requires_grad
    # rewards/values at padding are ignored
    rewards2, values2 = rewards.clone(), values.detach().clone()
    rewards2[mask == 0] = 123.0
    values2[mask == 0] = -55.0
    adv2, ret2 = L.gae(rewards2, values2, mask, gamma=0.97, lam=0.9)
    close(adv2, adv)
    close(ret2, ret)


# ============================================================================ group advantages


def test_group_advantages_hand_case_unbiased_std():
    r = torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 2.0])
    a = L.group_advantages(r, group_size=3)
    # group 0: mean 1/3, unbiased std = sqrt(((2/3)^2 + 2 (1/3)^2) / (3-1)) = sqrt(1/3)
    s = math.sqrt(1.0 / 3.0) + 1e-4
    close(a, [(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s, 0.0, 0.0, 0.0])
    # the biased (divide by G) std would give a different answer; make sure we are not using it
    biased = math.sqrt(2.0 / 9.0) + 1e-4
    assert abs(a[0].item() - (2 / 3) / biased) > 1e-2
    close(L.group_advantages(r, 3, scale_std=False), [2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0])


def test_group_advantages_random_matches_reference():
    g = gen(12)
    r = torch.randn(12, generator=g)
    a = L.group_advantages(r, 4, eps=1e-3)
    ref = []
    for k in range(3):
        grp = [float(x) for x in r[4 * k : 4 * k + 4]]
        mu = sum(grp) / 4
        sd = math.sqrt(sum((x - mu) ** 2 for x in grp) / 3)
        ref += [(x - mu) / (sd + 1e-3) for x in grp]
    close(a, ref, atol=1e-5)
    close(L.group_advantages(r, 4, scale_std=False), r - r.view(3, 4).mean(1).repeat_interleave(4))
    close(L.group_advantages(r, 1), torch.zeros(12))  # G=1: no spread, no signal


def test_group_advantages_errors():
    with pytest.raises(ValueError, match=r"\(5\).*\(3\)"):
        L.group_advantages(torch.zeros(5), 3)
    with pytest.raises(ValueError, match="group_size"):
        L.group_advantages(torch.zeros(4), 0)


def test_rloo_hand_case_and_errors():
    r = torch.tensor([1.0, 0.0, 0.0, 3.0, 1.0, 2.0])
    # group 0: 1 - (0+0)/2 = 1 ; 0 - (1+0)/2 = -0.5 ; group 1: 3 - 1.5, 1 - 2.5, 2 - 2
    close(L.rloo_advantages(r, 3), [1.0, -0.5, -0.5, 1.5, -1.5, 0.0])
    # identity A_i = G/(G-1) (r_i - mean)
    close(L.rloo_advantages(r, 3), 1.5 * L.group_advantages(r, 3, scale_std=False))
    with pytest.raises(ValueError, match="group_size >= 2"):
        L.rloo_advantages(r, 1)
    with pytest.raises(ValueError, match=r"\(6\).*\(4\)"):
        L.rloo_advantages(r, 4)


# ============================================================================ on-policy distillation advantages

def test_opd_advantages():
    s = torch.tensor([[0.0, -1.0, -2.0, -0.5]], requires_grad=True)
    t = torch.tensor([[0.0, -0.5, -3.0, float("-inf")]])
    m = torch.tensor([[0, 1, 1, 0]])
    a = L.opd_advantages(s, t, m)
    close(a, [[0.0, 0.5, -1.0, 0.0]])
    assert not a.requires_grad
    with pytest.raises(ValueError, match="same"):
        L.opd_advantages(s, t[:, :3], m)


def test_mopd_advantages_match_a_loop_reference():
    """A_it = w_i (log p_T - log p_S) + alpha (r_i - mean_g) / (std_g + eps) on completion tokens,
    0 elsewhere, written row by row and token by token."""
    g = gen(31)
    B, T, G = 6, 5, 3
    s, t = -torch.rand(B, T, generator=g), -torch.rand(B, T, generator=g) * 3
    m = (torch.rand(B, T, generator=g) > 0.3).float()
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    w = torch.tensor([2.0, 2.0, 2.0, 0.0, 0.5, 1.0])
    for alpha in (0.0, 0.7):
        want = torch.zeros(B, T)
        for i in range(B):
            grp = r[(i // G) * G:(i // G + 1) * G]
            outcome = float((r[i] - grp.mean()) / (grp.std() + 1e-4))
            for j in range(T):
                if m[i, j]:
                    want[i, j] = w[i] * (t[i, j] - s[i, j]) + alpha * outcome
        got = L.mopd_advantages(s.requires_grad_(), t, m, r, G, row_weights=w, alpha=alpha)
        close(got, want, atol=1e-6)
        assert not got.requires_grad
    close(L.mopd_advantages(s, t, m, r, G), L.opd_advantages(s, t, m))     # no weights, no alpha: OPD's
    with pytest.raises(ValueError, match="one weight per row"):
        L.mopd_advantages(s, t, m, r, G, row_weights=w[:4])


def test_opd_advantage_expectation_is_negative_reverse_kl():
    # E_{y ~ p_S}[log p_T(y) - log p_S(y)] = -KL(p_S || p_T), exactly, at every position
    g = gen(17)
    s_logits = torch.randn(1, 3, 6, generator=g)
    t_logits = torch.randn(1, 3, 6, generator=g)
    exp_adv = torch.zeros(1, 3)
    for tok in range(6):
        ids = torch.full((1, 3), tok)
        lp_s, lp_t = L.token_logprobs(s_logits, ids), L.token_logprobs(t_logits, ids)
        exp_adv += lp_s.exp() * L.opd_advantages(lp_s, lp_t, torch.ones(1, 3))
    close(exp_adv[:, 1:], -L.token_reverse_kl(s_logits, t_logits)[:, 1:], atol=1e-6)


def test_kl_penalized_rewards_matches_a_loop():
    g = gen(25)
    lp, ref = -torch.rand(3, 6, generator=g), -torch.rand(3, 6, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]).float()
    scores = torch.tensor([1.0, -2.0, 5.0])
    out = L.kl_penalized_rewards(scores, lp, ref, mask, beta=0.2)
    want = torch.zeros(3, 6)
    for b in range(3):
        cols = [t for t in range(6) if mask[b, t]]
        for t in cols:
            want[b, t] = -0.2 * (lp[b, t] - ref[b, t])
        if cols:
            want[b, cols[-1]] += scores[b]
    close(out, want)
    close(L.kl_penalized_rewards(scores, lp, ref, mask, beta=0.0).sum(1), torch.tensor([1.0, -2.0, 0.0]))
    with pytest.raises(ValueError, match="beta must be >= 0"):
        L.kl_penalized_rewards(scores, lp, ref, mask, beta=-1.0)
