"""Tests for minimopd.losses and minimopd.masked: masked statistics, per-token log-probs and
entropy, the SFT, Bradley-Terry and DPO losses, the dtype policy and check_finite. The other
objectives have their own files, one per module: test_policy_losses.py, test_kl.py,
test_advantages.py (all import through minimopd.losses, which re-exports them).

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
from tensor_checks import close, gen, random_mask

torch.set_default_dtype(torch.float32)


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
