"""Tests for minimopd.losses (and the re-exported minimopd.kl / minimopd.advantages).

Three kinds of checks, CS336 style:
  1. tiny hand-computed cases (numbers written out in the test),
  2. straightforward loop-based reference implementations written here, compared
     on seeded random tensors, values AND autograd gradients,
  3. gradcheck in float64 on a few functions.
"""

from __future__ import annotations

import math

import pytest
import torch

from minimopd import losses as L

torch.set_default_dtype(torch.float32)


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


# ============================================================================ masked statistics


def test_masked_sum_and_mean_match_loops_and_ignore_nan_padding():
    g = gen(1)
    v = torch.randn(4, 6, generator=g)
    m = random_mask(4, 6, seed=1)
    m[3] = 0  # an all-masked row
    v[m == 0] = float("nan")  # padding garbage must not leak
    v.requires_grad_(True)

    s_all, mean_all = L.masked_sum(v, m), L.masked_mean(v, m)
    s_row, mean_row = L.masked_sum(v, m, dim=1), L.masked_mean(v, m, dim=1)

    vals = [[v[b, t].item() for t in range(6) if m[b, t]] for b in range(4)]
    flat = [x for row in vals for x in row]
    close(s_all, sum(flat))
    close(mean_all, sum(flat) / len(flat))
    close(s_row, [sum(r) for r in vals])
    close(mean_row, [sum(r) / len(r) if r else 0.0 for r in vals])

    mean_row.sum().backward()
    expected_grad = torch.zeros(4, 6)
    for b in range(4):
        if m[b].sum() > 0:
            expected_grad[b] = m[b] / m[b].sum()
    close(v.grad, expected_grad)  # exactly 0 (not NaN) at padding
    assert not torch.isnan(v.grad).any()


def test_masked_mean_all_zero_mask_is_zero_with_zero_grad():
    v = torch.randn(2, 3, requires_grad=True)
    m = torch.zeros(2, 3)
    out = L.masked_mean(v, m)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(v.grad, torch.zeros(2, 3))
    assert torch.equal(L.masked_mean(v, m, dim=1), torch.zeros(2))


def test_masked_whiten_statistics():
    g = gen(2)
    v = torch.randn(3, 7, generator=g) * 5 + 3
    m = random_mask(3, 7, seed=2)
    w = L.masked_whiten(v, m)
    sel = w[m.bool()]
    close(sel.mean(), 0.0, atol=1e-5)
    close(sel.std(), 1.0, atol=1e-4)  # unbiased std over masked entries
    assert torch.equal(w[~m.bool()], torch.zeros_like(w[~m.bool()]))
    # shift_mean=False only rescales: mean of the originals is kept
    w2 = L.masked_whiten(v, m, shift_mean=False)
    orig = v[m.bool()]
    close(w2[m.bool()].mean(), orig.mean(), atol=1e-4)
    close(w2[m.bool()], (orig - orig.mean()) / orig.std() + orig.mean(), atol=1e-4)
    # all-zero mask -> zeros, no NaN
    assert torch.equal(L.masked_whiten(v, torch.zeros_like(m)), torch.zeros_like(v))


# ============================================================================ per-token quantities


def test_token_logprobs_matches_manual_log_softmax_gather():
    g = gen(3)
    logits = torch.randn(2, 5, 11, generator=g, requires_grad=True)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    out = L.token_logprobs(logits, ids)
    ref = torch.zeros(2, 5)
    for b in range(2):
        for t in range(1, 5):
            ref[b, t] = torch.log_softmax(logits[b, t - 1], dim=-1)[ids[b, t]]
    close(out, ref)
    assert torch.equal(out[:, 0], torch.zeros(2))
    g1 = torch.autograd.grad(out.sum(), logits)[0]
    g2 = torch.autograd.grad(ref.sum(), logits)[0]
    close(g1, g2)
    assert torch.equal(g1[:, -1], torch.zeros(2, 11))  # last logits predict nothing


def test_token_logprobs_temperature_and_dtypes():
    g = gen(4)
    logits = torch.randn(2, 4, 9, generator=g)
    ids = torch.randint(0, 9, (2, 4), generator=g)
    close(L.token_logprobs(logits, ids, temperature=2.0), L.token_logprobs(logits / 2.0, ids))
    out_bf16 = L.token_logprobs(logits.bfloat16(), ids)
    assert out_bf16.dtype == torch.float32
    close(out_bf16, L.token_logprobs(logits.bfloat16().float(), ids))
    assert L.token_logprobs(logits.double(), ids).dtype == torch.float64
    with pytest.raises(ValueError, match="temperature"):
        L.token_logprobs(logits, ids, temperature=0.0)
    with pytest.raises(ValueError, match="input_ids"):
        L.token_logprobs(logits, ids[:, :3])


def test_token_logprobs_gradcheck():
    g = gen(5)
    logits = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 4, (2, 3), generator=g)
    assert torch.autograd.gradcheck(lambda x: L.token_logprobs(x, ids, temperature=0.7), (logits,))


def test_token_entropy():
    g = gen(6)
    logits = torch.randn(2, 4, 5, generator=g)
    out = L.token_entropy(logits)
    ref = torch.zeros(2, 4)
    for b in range(2):
        for t in range(1, 4):
            p = torch.softmax(logits[b, t - 1], -1)
            ref[b, t] = -(p * p.log()).sum()
    close(out, ref)
    close(L.token_entropy(torch.zeros(1, 3, 8)), [[0.0, math.log(8), math.log(8)]])
    # a -inf logit (banned token) contributes 0, not NaN
    banned = logits.clone()
    banned[..., 0] = float("-inf")
    assert torch.isfinite(L.token_entropy(banned)).all()


# ============================================================================ SFT / Bradley-Terry


def test_sft_loss_hand_case_and_masking():
    logprobs = torch.tensor([[0.0, -1.0, -2.0, -9.0], [0.0, -0.5, float("-inf"), -3.0]], requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]])
    out = L.sft_loss(logprobs, mask)
    close(out, [1.5, 0.0])
    out.sum().backward()
    close(logprobs.grad, [[0.0, -0.5, -0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_bradley_terry_hand_case():
    c = torch.tensor([1.0, 0.0, 2.0], requires_grad=True)
    r = torch.tensor([0.0, 0.0, 0.0])
    out = L.bradley_terry_loss(c, r)
    close(out, [math.log1p(math.exp(-1.0)), math.log(2.0), math.log1p(math.exp(-2.0))])
    out_m = L.bradley_terry_loss(c, r, margin=1.0)
    close(out_m, [math.log(2.0), math.log1p(math.exp(1.0)), math.log1p(math.exp(-1.0))])
    out_mt = L.bradley_terry_loss(c, r, margin=torch.tensor([1.0, 1.0, 1.0]))
    close(out_mt, out_m)
    out.sum().backward()
    close(c.grad, -torch.sigmoid(-(c.detach() - r)))  # d/dx -log sigma(x) = -sigma(-x)
    # no overflow for large negative differences
    assert torch.isfinite(L.bradley_terry_loss(torch.tensor([-1000.0]), torch.tensor([1000.0]))).all()


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


# ============================================================================ PPO


def test_ppo_clip_loss_hand_cases_both_edges_both_signs():
    ratios = torch.tensor([0.5, 0.9, 1.0, 1.1, 1.5])
    logp = ratios.log().unsqueeze(0).repeat(2, 1).requires_grad_(True)
    old = torch.zeros(2, 5)
    adv = torch.tensor([1.0, -1.0])  # (B,): row 0 positive, row 1 negative
    loss, clipped = L.ppo_clip_loss(logp, old, adv, eps_low=0.2)
    # A=+1: max(-rho, -clip(rho)) ; clip(rho) = [0.8, 0.9, 1, 1.1, 1.2]
    #   rho=0.5 -> max(-0.5, -0.8) = -0.5 (unclipped: lowering a good token is never clipped)
    #   rho=1.5 -> max(-1.5, -1.2) = -1.2 (clipped)
    # A=-1: rho=0.5 -> max(0.5, 0.8) = 0.8 (clipped) ; rho=1.5 -> max(1.5, 1.2) = 1.5
    close(loss, [[-0.5, -0.9, -1.0, -1.1, -1.2], [0.8, 0.9, 1.0, 1.1, 1.5]])
    close(clipped, [[0, 0, 0, 0, 1], [1, 0, 0, 0, 0]])
    loss.sum().backward()
    # d/dlogp (-A rho) = -A rho on the unclipped branch, 0 on the clipped one
    close(logp.grad, [[-0.5, -0.9, -1.0, -1.1, 0.0], [0.0, 0.9, 1.0, 1.1, 1.5]])


def test_ppo_clip_loss_asymmetric_clip_higher():
    logp = torch.tensor([[math.log(1.25), math.log(0.75)]])
    old = torch.zeros(1, 2)
    pos = torch.tensor([[1.0, -1.0]])
    _, c_sym = L.ppo_clip_loss(logp, old, pos, eps_low=0.2)
    loss, c_asym = L.ppo_clip_loss(logp, old, pos, eps_low=0.2, eps_high=0.28)
    close(c_sym, [[1.0, 1.0]])
    close(c_asym, [[0.0, 1.0]])  # 1.25 < 1.28 is inside; 0.75 < 0.8 still clipped
    close(loss, [[-1.25, 0.8]])


def _ppo_reference(logp, old, adv, el, eh):
    out = torch.zeros_like(logp)
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            a = adv[b] if adv.dim() == 1 else adv[b, t]
            rho = torch.exp(logp[b, t] - old[b, t])
            out[b, t] = torch.max(-a * rho, -a * torch.clamp(rho, 1 - el, 1 + eh))
    return out


def test_ppo_clip_loss_matches_reference_and_broadcasts():
    g = gen(8)
    logp = (torch.randn(3, 6, generator=g) * 0.3).requires_grad_(True)
    old = torch.randn(3, 6, generator=g) * 0.3
    adv = torch.randn(3, generator=g)
    loss, _ = L.ppo_clip_loss(logp, old, adv, 0.1, 0.3)
    ref = _ppo_reference(logp, old, adv, 0.1, 0.3)
    close(loss, ref)
    close(torch.autograd.grad(loss.sum(), logp)[0], torch.autograd.grad(ref.sum(), logp)[0])
    loss2, _ = L.ppo_clip_loss(logp, old, adv[:, None].expand(3, 6), 0.1, 0.3)
    close(loss2, loss)


def test_ppo_clip_loss_gradcheck():
    g = gen(9)
    # ratios kept away from the clip edges (non-differentiable kinks)
    logp = (torch.rand(2, 3, generator=g, dtype=torch.float64) * 0.1 - 0.05).requires_grad_(True)
    old = torch.zeros(2, 3, dtype=torch.float64)
    old[0, 0] = 0.6  # row 0 token 0: ratio ~0.55, clipped for A<0
    adv = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: L.ppo_clip_loss(x, old, adv)[0], (logp,))


def test_value_loss_hand_cases():
    v = torch.tensor([[1.0, 0.5, 0.3]], requires_grad=True)
    v_old = torch.tensor([[0.0, 0.0, 0.0]])
    ret = torch.tensor([[0.0, 0.5, 1.0]])
    out = L.value_loss(v, v_old, ret, clip=0.2)
    # tok0: (1-0)^2=1 vs clipped (0.2-0)^2=0.04 -> 0.5*1
    # tok1: (0.5-0.5)^2=0 vs clipped (0.2-0.5)^2=0.09 -> 0.5*0.09 (clipped term wins, grad 0)
    # tok2: (0.3-1)^2=0.49 vs clipped (0.2-1)^2=0.64 -> 0.5*0.64
    close(out, [[0.5, 0.045, 0.32]])
    out.sum().backward()
    close(v.grad, [[1.0, 0.0, 0.0]])
    close(L.value_loss(v, v_old, ret, clip=None), 0.5 * (v - ret) ** 2)


# ============================================================================ DPO


def test_dpo_hand_cases():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-2.0])
    rc, rr = torch.tensor([-1.5]), torch.tensor([-1.5])
    # h = (-1 + 1.5) - (-2 + 1.5) = 1
    loss, cr, rj = L.dpo_loss(pc, pr, rc, rr, beta=0.1)
    close(loss, [math.log1p(math.exp(-0.1))])  # -log sigma(0.1)
    close(cr, [0.05])
    close(rj, [-0.05])
    loss_ls, _, _ = L.dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1)
    close(loss_ls, [0.9 * math.log1p(math.exp(-0.1)) + 0.1 * math.log1p(math.exp(0.1))])
    loss_ipo, _, _ = L.dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="ipo")
    close(loss_ipo, [(1.0 - 1.0 / 0.2) ** 2])  # (1 - 5)^2 = 16


def test_dpo_matches_reference_and_grads():
    g = gen(10)
    args = [torch.randn(4, generator=g) * 3 for _ in range(4)]
    pc, pr = args[0].clone().requires_grad_(True), args[1].clone().requires_grad_(True)
    for loss_type, ls in [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0)]:
        loss, cr, rj = L.dpo_loss(pc, pr, args[2], args[3], beta=0.3, loss_type=loss_type, label_smoothing=ls)
        ref = []
        for i in range(4):
            h = (pc[i] - args[2][i]) - (pr[i] - args[3][i])
            if loss_type == "sigmoid":
                s = torch.sigmoid(0.3 * h)
                ref.append(-(1 - ls) * torch.log(s) - ls * torch.log(1 - s))
            else:
                ref.append((h - 1 / 0.6) ** 2)
        ref = torch.stack(ref)
        close(loss, ref, atol=1e-5)
        close(torch.autograd.grad(loss.sum(), (pc, pr)), torch.autograd.grad(ref.sum(), (pc, pr)), atol=1e-5)
        assert not cr.requires_grad and not rj.requires_grad
        close(cr, 0.3 * (args[0] - args[2]))


def test_dpo_gradcheck():
    g = gen(11)
    xs = [torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    refs = [torch.randn(3, generator=g, dtype=torch.float64) for _ in range(2)]
    for lt, ls in [("sigmoid", 0.1), ("ipo", 0.0)]:
        f = lambda a, b: L.dpo_loss(a, b, *refs, beta=0.5, loss_type=lt, label_smoothing=ls)[0]  # noqa: E731
        assert torch.autograd.gradcheck(f, tuple(xs))


def test_dpo_errors():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="sigmoid, ipo"):
        L.dpo_loss(x, x, x, x, loss_type="hinge")
    with pytest.raises(ValueError, match="only used by loss_type='sigmoid'"):
        L.dpo_loss(x, x, x, x, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        L.dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta"):
        L.dpo_loss(x, x, x, x, beta=0.0)


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


# ============================================================================ KL estimators


def test_kl_estimators_hand_values():
    logp = torch.tensor([math.log(0.5), math.log(0.25)])
    ref = torch.tensor([math.log(0.25), math.log(0.5)])
    ln2 = math.log(2.0)
    close(L.kl_estimate(logp, ref, "k1"), [ln2, -ln2])
    close(L.kl_estimate(logp, ref, "k2"), [0.5 * ln2**2, 0.5 * ln2**2])
    # k3 = ref/pi - 1 - log(ref/pi): [0.5 - 1 + ln2, 2 - 1 - ln2]
    close(L.kl_estimate(logp, ref, "k3"), [ln2 - 0.5, 1 - ln2])
    close(L.kl_estimate(logp, ref), L.kl_estimate(logp, ref, "k3"))


def test_kl_estimators_expectations_on_exact_categorical():
    # E_{y~pi}[k1] = E_{y~pi}[k3] = KL(pi || ref), computed exactly by weighting with pi
    g = gen(13)
    lp = torch.log_softmax(torch.randn(7, generator=g), -1)
    lr = torch.log_softmax(torch.randn(7, generator=g), -1)
    kl = (lp.exp() * (lp - lr)).sum()
    for kind in ("k1", "k3"):
        close((lp.exp() * L.kl_estimate(lp, lr, kind)).sum(), kl, atol=1e-6)
    assert (L.kl_estimate(lp, lr, "k3") >= 0).all()
    assert (L.kl_estimate(lp, lr, "k2") >= 0).all()


def test_kl_estimate_unknown_kind():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        L.kl_estimate(torch.zeros(2), torch.zeros(2), "k4")


# ============================================================================ GRPO


def _grpo_reference(logp, old, adv, mask, aggregation, max_tokens=None, ref=None, beta=0.0, el=0.2, eh=0.2):
    """Loop transcription of the aggregation formulas."""
    B, T = logp.shape
    per_seq = []
    total, count = 0.0, 0.0
    for b in range(B):
        s, n = 0.0, 0.0
        for t in range(T):
            if not mask[b, t]:
                continue
            a = adv[b] if adv.dim() == 1 else adv[b, t]
            rho = torch.exp(logp[b, t] - old[b, t])
            l = torch.max(-a * rho, -a * torch.clamp(rho, 1 - el, 1 + eh))
            if ref is not None:
                x = ref[b, t] - logp[b, t]
                l = l + beta * (torch.exp(x) - x - 1)
            s, n = s + l, n + 1
        per_seq.append(s / n if n else torch.zeros(()))
        total, count = total + s, count + n
    if aggregation == "grpo":
        return sum(per_seq) / B
    if aggregation == "dapo":
        return total / count
    return total / (B * (max_tokens or T))


@pytest.mark.parametrize("aggregation", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("per_token_adv", [False, True])
def test_grpo_loss_matches_reference(aggregation, per_token_adv):
    g = gen(14)
    B, T = 4, 7
    logp = (torch.randn(B, T, generator=g) * 0.3).requires_grad_(True)
    old = logp.detach() + torch.randn(B, T, generator=g) * 0.2
    ref = logp.detach() + torch.randn(B, T, generator=g) * 0.2
    adv = torch.randn(B, T, generator=g) if per_token_adv else torch.randn(B, generator=g)
    mask = random_mask(B, T, seed=14)
    loss, stats = L.grpo_loss(
        logp, old, adv, mask, aggregation=aggregation, ref_logprobs=ref, beta=0.05, max_tokens=10
    )
    expected = _grpo_reference(logp, old, adv, mask, aggregation, max_tokens=10, ref=ref, beta=0.05)
    close(loss, expected, atol=1e-6)
    g1 = torch.autograd.grad(loss, logp)[0]
    g2 = torch.autograd.grad(expected, logp)[0]
    close(g1, g2, atol=1e-6)
    assert torch.equal(g1[mask == 0], torch.zeros_like(g1[mask == 0]))
    kl = L.kl_estimate(logp.detach(), ref, "k3")
    close(stats["kl"], kl[mask.bool()].mean())
    assert isinstance(stats["clip_frac"], float)


def test_grpo_aggregations_differ_as_documented():
    # two sequences: short (1 token) and long (3 tokens); ratio 1 so per-token loss = -A
    mask = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 1]])
    logp = torch.zeros(2, 4, requires_grad=True)
    adv = torch.tensor([1.0, 2.0])
    res = {}
    for agg in ("grpo", "dapo", "dr_grpo"):
        loss, _ = L.grpo_loss(logp, logp.detach(), adv, mask, aggregation=agg)
        res[agg] = (loss.item(), torch.autograd.grad(loss, logp)[0])
    close(res["grpo"][0], -(1.0 + 2.0) / 2)  # mean of per-sequence means
    close(res["dapo"][0], -(1.0 + 3 * 2.0) / 4)  # token mean
    close(res["dr_grpo"][0], -(1.0 + 3 * 2.0) / (2 * 4))  # sum / (N * L_max), L_max = T = 4
    # the short sequence's token weighs 1/2 under grpo but 1/4 under dapo (grad = -A * weight)
    close(res["grpo"][1][0, 1], -1.0 / 2)
    close(res["dapo"][1][0, 1], -1.0 / 4)
    # a long-sequence token: 1/(2*3) under grpo, 1/4 under dapo
    close(res["grpo"][1][1, 2], -2.0 / 6)
    close(res["dapo"][1][1, 2], -2.0 / 4)
    loss_l, _ = L.grpo_loss(logp, logp.detach(), adv, mask, aggregation="dr_grpo", max_tokens=10)
    close(loss_l, -(1.0 + 6.0) / 20)


def test_grpo_clip_frac_and_kl_stats():
    logp = torch.log(torch.tensor([[1.0, 1.5, 0.5, 1.0]]))
    old = torch.zeros(1, 4)
    mask = torch.tensor([[0, 1, 1, 1]])
    _, s_pos = L.grpo_loss(logp, old, torch.tensor([1.0]), mask)
    _, s_neg = L.grpo_loss(logp, old, torch.tensor([-1.0]), mask)
    close(s_pos["clip_frac"], 1 / 3)  # only rho=1.5 with A>0
    close(s_pos["clip_frac_high"], 1 / 3)
    close(s_pos["clip_frac_low"], 0.0)
    close(s_neg["clip_frac_low"], 1 / 3)  # only rho=0.5 with A<0
    assert s_pos["kl"] == 0.0  # no reference given
    close(s_pos["ratio_mean"], (1.5 + 0.5 + 1.0) / 3)


def test_grpo_kl_term_added_per_token():
    g = gen(15)
    logp = torch.randn(2, 5, generator=g) * 0.1
    ref = torch.randn(2, 5, generator=g) * 0.1
    mask = random_mask(2, 5, seed=15)
    adv = torch.randn(2, generator=g)
    base, _ = L.grpo_loss(logp, logp, adv, mask, aggregation="dapo")
    with_kl, st = L.grpo_loss(logp, logp, adv, mask, aggregation="dapo", ref_logprobs=ref, beta=0.5)
    k3 = L.kl_estimate(logp, ref, "k3")[mask.bool()].mean()
    close(with_kl, base + 0.5 * k3)
    close(st["pg_loss"], base)
    # ref given with beta=0: KL is only logged
    no_kl, st0 = L.grpo_loss(logp, logp, adv, mask, aggregation="dapo", ref_logprobs=ref)
    close(no_kl, base)
    close(st0["kl"], k3)


def test_grpo_all_masked_and_errors():
    logp = torch.randn(2, 3, requires_grad=True)
    mask = torch.zeros(2, 3)
    for agg in ("grpo", "dr_grpo", "dapo"):
        loss, stats = L.grpo_loss(logp, logp.detach(), torch.ones(2), mask, aggregation=agg)
        assert loss.item() == 0.0 and all(math.isfinite(v) for v in stats.values())
        assert torch.equal(torch.autograd.grad(loss, logp)[0], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="grpo, dr_grpo, dapo"):
        L.grpo_loss(logp, logp, torch.ones(2), mask, aggregation="bnpo")
    with pytest.raises(ValueError, match="ref_logprobs"):
        L.grpo_loss(logp, logp, torch.ones(2), mask, beta=0.1)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        L.grpo_loss(logp, logp, torch.ones(2), mask, ref_logprobs=logp, kl_kind="k9")


def test_grpo_gradcheck():
    g = gen(16)
    logp = (torch.randn(2, 4, generator=g, dtype=torch.float64) * 0.05).requires_grad_(True)
    ref = torch.randn(2, 4, generator=g, dtype=torch.float64) * 0.1
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    adv = torch.tensor([0.5, -1.0], dtype=torch.float64)
    # old is a copy made once: gradcheck perturbs logp in place, and a view would move with it
    old = logp.detach().clone() + 0.01
    for agg in ("grpo", "dr_grpo", "dapo"):
        f = lambda x: L.grpo_loss(x, old, adv, mask, aggregation=agg, ref_logprobs=ref, beta=0.1)[0]  # noqa: E731
        assert torch.autograd.gradcheck(f, (logp,))


# ============================================================================ distillation


def _full_kl_reference(s_logits, t_logits):
    """Loop over positions: KL(p||q) = sum p (log p - log q), column t from logits[t-1]."""
    B, T, _ = s_logits.shape
    out = [[torch.zeros(())] for _ in range(B)]
    for b in range(B):
        for t in range(1, T):
            p = torch.softmax(s_logits[b, t - 1], -1)
            q = torch.softmax(t_logits[b, t - 1], -1)
            out[b].append((p * (p.log() - q.log())).sum())
    return torch.stack([torch.stack(r) for r in out])


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


def test_token_reverse_kl_full_matches_reference_and_properties():
    g = gen(18)
    s = torch.randn(2, 5, 9, generator=g, requires_grad=True)
    t = torch.randn(2, 5, 9, generator=g, requires_grad=True)
    out = L.token_reverse_kl(s, t)
    ref = _full_kl_reference(s, t.detach())
    close(out, ref, atol=1e-6)
    close(
        torch.autograd.grad(out.sum(), s, retain_graph=True)[0], torch.autograd.grad(ref.sum(), s)[0], atol=1e-6
    )
    assert (out >= 0).all()
    assert torch.equal(out[:, 0], torch.zeros(2))
    close(L.token_reverse_kl(s, s.detach().clone()), torch.zeros(2, 5), atol=1e-6)
    # teacher is a constant
    out.sum().backward()
    assert t.grad is None or torch.equal(t.grad, torch.zeros_like(t))
    # alignment: the last position's logits predict nothing
    s2 = s.detach().clone()
    s2[:, -1] += torch.randn(2, 9, generator=g)
    close(L.token_reverse_kl(s2, t), out)


def test_token_reverse_kl_topk():
    g = gen(19)
    s = torch.randn(2, 4, 10, generator=g, requires_grad=True)
    t = torch.randn(2, 4, 10, generator=g)
    close(L.token_reverse_kl(s, t, mode="topk", k=10), L.token_reverse_kl(s, t), atol=1e-6)
    close(L.token_reverse_kl(s, t, mode="topk", k=50), L.token_reverse_kl(s, t), atol=1e-6)  # clamped to V
    close(L.token_reverse_kl(s, t, mode="topk", k=1), torch.zeros(2, 4))
    out = L.token_reverse_kl(s, t, mode="topk", k=3)
    ref = torch.zeros(2, 4)
    for b in range(2):
        for pos in range(1, 4):
            idx = s[b, pos - 1].detach().topk(3).indices
            p = torch.softmax(s[b, pos - 1, idx], -1)
            q = torch.softmax(t[b, pos - 1, idx], -1)
            ref[b, pos] = (p * (p.log() - q.log())).sum()
    close(out, ref, atol=1e-6)
    close(torch.autograd.grad(out.sum(), s)[0], torch.autograd.grad(ref.sum(), s)[0], atol=1e-6)
    assert (out >= 0).all()
    assert not torch.allclose(out, L.token_reverse_kl(s, t))  # restricting the support changes it


def _support_kl_reference(s_logits, t_logits, support, tail):
    """Loop over positions: reverse KL over a given token-aligned support (B, T, k), either
    renormalised over the support or with a (k+1)-th tail bucket holding the rest."""
    B, T, _ = s_logits.shape
    out = [[torch.zeros((), dtype=s_logits.dtype)] for _ in range(B)]
    for b in range(B):
        for pos in range(1, T):
            ids = support[b, pos]
            p = torch.softmax(s_logits[b, pos - 1], -1)[ids]
            q = torch.softmax(t_logits[b, pos - 1], -1)[ids]
            if tail:
                p = torch.cat([p, (1 - p.sum()).clamp(min=1e-6)[None]])
                q = torch.cat([q, (1 - q.sum()).clamp(min=1e-6)[None]])
            else:
                p, q = p / p.sum(), q / q.sum()
            out[b].append((p * (p.log() - q.log())).sum())
    return torch.stack([torch.stack(r) for r in out])


@pytest.mark.parametrize("tail", [False, True])
def test_token_reverse_kl_with_a_given_support_matches_a_loop(tail):
    g = gen(23)
    s = torch.randn(2, 5, 11, generator=g, requires_grad=True)
    t = torch.randn(2, 5, 11, generator=g)
    support = torch.stack([torch.randperm(11, generator=g)[:3] for _ in range(10)]).view(2, 5, 3)
    t_sup = L.token_log_softmax(t).gather(-1, support)          # what a teacher signal stores
    out = L.token_reverse_kl(s, mode="topk", support_ids=support, teacher_support_logprobs=t_sup, tail=tail)
    ref = _support_kl_reference(s, t, support, tail)
    close(out, ref, atol=1e-6)
    close(torch.autograd.grad(out.sum(), s, retain_graph=True)[0], torch.autograd.grad(ref.sum(), s)[0], atol=1e-6)
    # the same support from the teacher's logits gives the same values
    close(L.token_reverse_kl(s, t, mode="topk", support_ids=support, tail=tail), out, atol=1e-6)
    assert (out >= -1e-7).all() and torch.equal(out[:, 0], torch.zeros(2))
    s64 = s.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: L.token_reverse_kl(x, mode="topk", support_ids=support,
                                     teacher_support_logprobs=t_sup.double(), tail=tail), (s64,))


def test_tail_bucket_makes_small_k_informative_and_full_k_exact():
    g = gen(24)
    s = torch.randn(1, 4, 9, generator=g)
    t = torch.randn(1, 4, 9, generator=g)
    top1 = s.topk(1, dim=-1).indices.roll(1, dims=1)             # token-aligned student top-1
    no_tail = L.token_reverse_kl(s, t, mode="topk", support_ids=top1)
    with_tail = L.token_reverse_kl(s, t, mode="topk", support_ids=top1, tail=True)
    assert torch.equal(no_tail, torch.zeros(1, 4)) and (with_tail[:, 1:] > 0).all()
    everything = torch.arange(9).expand(1, 4, 9)
    close(L.token_reverse_kl(s, t, mode="topk", support_ids=everything, tail=True), L.token_reverse_kl(s, t),
          atol=1e-5)
    # a token-aligned teacher distribution (what TeacherSignal(mode="full") stores) works for "full"
    close(L.token_reverse_kl(s, mode="full", teacher_full_logprobs=L.token_log_softmax(t)),
          L.token_reverse_kl(s, t), atol=1e-6)
    with pytest.raises(ValueError, match="only applies to mode='topk'"):
        L.token_reverse_kl(s, t, tail=True)
    with pytest.raises(ValueError, match="needs the teacher's side"):
        L.token_reverse_kl(s, mode="full")
    with pytest.raises(ValueError, match="support_ids must be"):
        L.token_reverse_kl(s, t, mode="topk", support_ids=top1[:, :2])


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


def test_aggregate_is_the_reducer_grpo_loss_uses():
    g = gen(26)
    x = torch.randn(3, 5, generator=g)
    m = random_mask(3, 5, seed=26)
    close(L.aggregate(x, m, "dapo"), (x * m).sum() / m.sum())
    close(L.aggregate(x, m, "dr_grpo", max_tokens=8), (x * m).sum() / (3 * 8))
    close(L.aggregate(x, m, "grpo"), ((x * m).sum(1) / m.sum(1)).mean())
    with pytest.raises(ValueError, match="unknown aggregation"):
        L.aggregate(x, m, "mean")


def test_token_reverse_kl_gradcheck_and_errors():
    g = gen(20)
    s = torch.randn(1, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, 5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: L.token_reverse_kl(x, t), (s,))
    assert torch.autograd.gradcheck(lambda x: L.token_reverse_kl(x, t, mode="topk", k=3), (s,))
    with pytest.raises(ValueError, match="share a tokenizer"):
        L.token_reverse_kl(s, torch.randn(1, 3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="'full' or 'topk'"):
        L.token_reverse_kl(s, t, mode="forward")
    with pytest.raises(ValueError, match="k must be >= 1"):
        L.token_reverse_kl(s, t, mode="topk", k=0)


def test_generalized_jsd_endpoints_and_mixture():
    g = gen(21)
    s = torch.randn(2, 4, 7, generator=g, requires_grad=True)
    t = torch.randn(2, 4, 7, generator=g)
    # beta=1: reverse KL(p_S || p_T); beta=0: forward KL(p_T || p_S)
    close(L.generalized_jsd(s, t, beta=1.0), L.token_reverse_kl(s, t), atol=1e-6)
    close(L.generalized_jsd(s, t, beta=0.0), _full_kl_reference(t, s.detach()), atol=1e-6)
    assert not torch.allclose(L.generalized_jsd(s, t, beta=0.0), L.generalized_jsd(s, t, beta=1.0))
    # interior: loop reference of beta KL(T||M) + (1-beta) KL(S||M), M = (1-beta) p_S + beta p_T
    for beta in (0.3, 0.5):
        out = L.generalized_jsd(s, t, beta=beta, temperature=2.0)
        ref = torch.zeros(2, 4)
        for b in range(2):
            for pos in range(1, 4):
                p = torch.softmax(s[b, pos - 1] / 2.0, -1)
                q = torch.softmax(t[b, pos - 1] / 2.0, -1)
                m = (1 - beta) * p + beta * q
                ref[b, pos] = beta * (q * (q.log() - m.log())).sum() + (1 - beta) * (p * (p.log() - m.log())).sum()
        close(out, ref, atol=1e-6)
        close(torch.autograd.grad(out.sum(), s)[0], torch.autograd.grad(ref.sum(), s)[0], atol=1e-6)
    js = L.generalized_jsd(s, t, beta=0.5)
    close(js, L.generalized_jsd(t, s.detach(), beta=0.5), atol=1e-6)  # symmetric at 0.5
    assert (js >= 0).all() and (js <= math.log(2) + 1e-6).all()
    close(L.generalized_jsd(s, t, beta=0.5, temperature=3.0), L.generalized_jsd(s / 3.0, t / 3.0, beta=0.5))


def test_generalized_jsd_from_a_teacher_signal_and_why_the_direction_matters():
    """The token-aligned teacher log-probs a TeacherSignal stores give the same values as the
    teacher's logits. At a position where the student is certain of a token the teacher
    rejects, the reverse KL's gradient on the student's logits (p_S (log p_S/p_T - KL)) is
    ~0, the forward KL's (p_S - p_T) is not."""
    g = gen(23)
    s = torch.randn(2, 4, 6, generator=g, requires_grad=True)
    t = torch.randn(2, 4, 6, generator=g)
    for beta in (0.0, 0.5, 1.0):
        close(L.generalized_jsd(s, beta=beta, teacher_full_logprobs=L.token_log_softmax(t)),
              L.generalized_jsd(s, t, beta=beta), atol=1e-6)
    certain = torch.tensor([[[12.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)   # p_S(0) ~ 1
    teacher = torch.tensor([[[0.0, 6.0, 0.0], [0.0, 0.0, 0.0]]])                       # p_T(0) ~ 0
    grads = {}
    for beta in (0.0, 1.0):
        (grad,) = torch.autograd.grad(L.generalized_jsd(certain, teacher, beta=beta).sum(), certain)
        grads[beta] = grad[0, 0]
    p_s, p_t = torch.softmax(certain[0, 0].detach(), -1), torch.softmax(teacher[0, 0], -1)
    close(grads[0.0], p_s - p_t, atol=1e-6)
    assert grads[1.0].abs().max() < 1e-3 < (p_s - p_t).abs().max() / 100, grads
    with pytest.raises(ValueError, match="exactly one"):
        L.generalized_jsd(s)
    with pytest.raises(ValueError, match="exactly one"):
        L.generalized_jsd(s, t, teacher_full_logprobs=L.token_log_softmax(t))


def test_generalized_jsd_gradcheck_and_errors():
    g = gen(22)
    s = torch.randn(1, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: L.generalized_jsd(x, t, beta=0.4, temperature=1.5), (s,))
    with pytest.raises(ValueError, match="beta"):
        L.generalized_jsd(s, t, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        L.generalized_jsd(s, t, temperature=0.0)
    with pytest.raises(ValueError, match="share a tokenizer"):
        L.generalized_jsd(s, torch.randn(1, 3, 5, dtype=torch.float64))


# ============================================================================ dtypes / check_finite


def test_dtype_policy():
    x16 = torch.randn(2, 3).bfloat16()
    m = torch.ones(2, 3)
    assert L.masked_mean(x16, m).dtype == torch.float32
    assert L.kl_estimate(x16, x16).dtype == torch.float32
    assert L.ppo_clip_loss(x16, x16, torch.ones(2))[0].dtype == torch.float32
    assert L.token_reverse_kl(torch.randn(1, 3, 4).bfloat16(), torch.randn(1, 3, 4)).dtype == torch.float32
    x64 = torch.randn(2, 3, dtype=torch.float64)
    assert L.masked_mean(x64, m, dim=1).dtype == torch.float64
    assert L.sft_loss(x64, m).dtype == torch.float64


def test_check_finite():
    t = torch.tensor([1.0, 2.0])
    assert L.check_finite("loss", t) is t
    assert L.check_finite("loss", 3.0) == 3.0
    with pytest.raises(FloatingPointError, match=r"grpo loss at step 17 .*1 NaN, 1 inf.*learning rate"):
        L.check_finite("grpo loss", torch.tensor([float("nan"), float("inf"), 0.0]), step=17)
    with pytest.raises(FloatingPointError, match="dpo loss is not finite"):
        L.check_finite("dpo loss", float("nan"))


# --------------------------------------------------------------------------- truncated IS (MiMo MOPD)

def _truncated_is_reference(logp, old, adv, low, high):
    out = torch.zeros_like(logp)
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            a = adv[b] if adv.dim() == 1 else adv[b, t]
            rho = float(torch.exp(logp[b, t] - old[b, t]))
            w = rho if low <= rho <= high else 0.0
            out[b, t] = -w * a * logp[b, t]
    return out


def test_truncated_is_loss_matches_a_loop_reference_value_and_gradient():
    g = gen(21)
    logp = (torch.randn(3, 6, generator=g, dtype=torch.float64) * 0.3 - 1.0).requires_grad_(True)
    old = logp.detach() + torch.randn(3, 6, generator=g, dtype=torch.float64) * 0.3
    for adv in (torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)):
        loss, dropped = L.truncated_is_loss(logp, old, adv, low=0.8, high=1.25)
        ref_logp = logp.detach().clone().requires_grad_(True)
        ref = _truncated_is_reference(ref_logp, old, adv, 0.8, 1.25)
        close(loss, ref)
        ratio = torch.exp(logp.detach() - old)
        close(dropped, ((ratio < 0.8) | (ratio > 1.25)).double())
        assert 0 < float(dropped.sum()) < dropped.numel()          # both kinds of tokens present
        w = torch.randn(3, 6, generator=g, dtype=torch.float64)
        (grad,) = torch.autograd.grad((loss * w).sum(), logp)
        (ref_grad,) = torch.autograd.grad((ref * w).sum(), ref_logp)
        close(grad, ref_grad)
        close(grad[dropped.bool()], torch.zeros(int(dropped.sum()), dtype=torch.float64))  # dropped: no gradient


def test_truncated_is_loss_at_ratio_one_is_reinforce_and_inside_the_window_the_is_gradient():
    g = gen(22)
    logp = (torch.randn(2, 4, generator=g, dtype=torch.float64) - 1).requires_grad_(True)
    adv = torch.randn(2, generator=g, dtype=torch.float64)
    loss, dropped = L.truncated_is_loss(logp, logp.detach(), adv)
    assert float(dropped.sum()) == 0
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    close(grad, -adv[:, None].expand(2, 4))                       # -A d logp
    # inside the window its gradient is the importance-weighted policy gradient, -rho A d logp:
    # that of the unclipped surrogate -rho A (w is a stop-gradient weight, so no gradcheck)
    old = logp.detach() + 0.05
    (grad,) = torch.autograd.grad(L.truncated_is_loss(logp, old, adv, 0.5, 2.0)[0].sum(), logp)
    (surrogate,) = torch.autograd.grad(L.ppo_clip_loss(logp, old, adv, eps_low=0.99, eps_high=10.0)[0].sum(), logp)
    close(grad, surrogate)
    with pytest.raises(ValueError, match="must contain 1"):
        L.truncated_is_loss(logp, old, adv, low=1.1, high=2.0)
