"""Tests for minimopd.kl (re-exported by minimopd.losses): the k1/k2/k3 KL estimators, the
per-token reverse KL over the full vocabulary, a top-k support and a given support with its tail
bucket, and the generalized Jensen-Shannon divergence. Hand cases, loop references compared on
value and gradient, gradcheck."""

from __future__ import annotations

import math

import pytest
import torch

from minimopd import losses as L
from tensor_checks import close, gen

torch.set_default_dtype(torch.float32)


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
