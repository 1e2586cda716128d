"""Tests for minimopd.policy_losses (re-exported by minimopd.losses): the PPO clipped surrogate,
the value loss, the GRPO family's loss and its aggregations, the shared reducer, and the
truncated importance-sampling loss. Hand cases, loop references compared on value and gradient,
gradcheck (tests/test_losses.py describes the three kinds)."""

from __future__ import annotations

import math

import pytest
import torch

from minimopd import losses as L
from tensor_checks import close, gen, random_mask

torch.set_default_dtype(torch.float32)


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


# ============================================================================ the shared reducer

def test_aggregate_is_the_reducer_grpo_loss_uses():
    g = gen(26)
    x = torch.randn(3, 5, generator=g)
    m = random_mask(3, 5, seed=26)
    close(L.aggregate(x, m, "dapo"), (x * m).sum() / m.sum())
    close(L.aggregate(x, m, "dr_grpo", max_tokens=8), (x * m).sum() / (3 * 8))
    close(L.aggregate(x, m, "grpo"), ((x * m).sum(1) / m.sum(1)).mean())
    with pytest.raises(ValueError, match="unknown aggregation"):
        L.aggregate(x, m, "mean")


# ============================================================================ truncated importance sampling

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
