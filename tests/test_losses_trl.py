"""Cross-checks of minimopd.losses against trl (written against trl 1.16.0).

Where trl exposes the computation we call trl's own code on identical tensors:

* DPO: ``trl.DPOTrainer._compute_loss`` (trl/trainer/dpo_trainer.py), called with a
  minimal stand-in ``self`` and a stand-in model whose output carries the per-token
  log-probs (``outputs.log_probs``); reference log-probs go in through the
  precomputed-reference path (``precompute_ref_logps=True``).
* Reward model: ``trl.RewardTrainer.compute_loss`` (trl/trainer/reward_trainer.py)
  with a stand-in model returning the scalar rewards as ``logits``.
* GKD: the staticmethod ``trl.experimental.gkd.GKDTrainer.generalized_jsd_loss``
  (trl/experimental/gkd/gkd_trainer.py), called directly.
* GRPO loss: ``trl.GRPOTrainer._compute_loss`` (trl/trainer/grpo_trainer.py) with a
  stand-in ``self`` whose ``_get_per_token_logps_and_entropies`` returns our
  tensors; ``loss_type`` in {grpo, dr_grpo, dapo, bnpo}, eval mode so trl's
  gradient-accumulation normalisers are 1. Also compares trl's logged
  ``clip_ratio/*`` and ``kl`` metrics with our stats.

Where trl has no pure callable, the formula is transcribed (nothing copied from
a callable, only the arithmetic of the lines named):

* GRPO advantages: grpo_trainer.py ``_generate_and_score_completions``,
  ``multi_objective_aggregation == "sum_then_normalize"`` branch: group
  ``torch.nanmean`` / ``trl.trainer.utils.nanstd`` (called; Bessel-corrected),
  ``advantages = rewards - mean``; ``/ (std + 1e-4)`` unless scale_rewards == "none".
* RLOO advantages: rloo_trainer.py ``baselines = (grouped_sum - grouped_rewards) /
  (scorable_counts - 1)``, ``advantages = rewards - baselines``.

Convention differences found (documented in minimopd.losses as well):

* trl's DPO "sigmoid" ignores ``label_smoothing``; the conservative-DPO formula we
  implement is what trl's "aot" loss computes for a batch of one pair.
* trl's DPO "ipo" divides each sequence's log-ratio by its completion length; ours
  uses the h you pass (sequence sums = the IPO paper), so we match trl when fed
  per-token means. IPO's tau is beta in both.
* trl's GRPO std is unbiased (divide by G-1), like ours.
* trl's GKD ``beta=0`` is forward KL(teacher || student), ``beta=1`` reverse
  KL(student || teacher); ours is the same.
"""

from __future__ import annotations

import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from minimopd import losses as L

trl = pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def close(a, b, atol=1e-6, rtol=1e-5):
    torch.testing.assert_close(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=atol, rtol=rtol
    )


def gen(seed):
    return torch.Generator().manual_seed(seed)


class _Accelerator:
    """Single-process stand-in: gather/reduce are identities."""

    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def _metrics():
    return defaultdict(lambda: defaultdict(list))


def _response_masks(B, T, seed):
    g = gen(seed)
    m = torch.zeros(B, T)
    for b in range(B):
        start = int(torch.randint(1, 3, (1,), generator=g))
        m[b, start : start + int(torch.randint(1, T - start + 1, (1,), generator=g))] = 1
    return m


# ============================================================================ DPO


def _trl_dpo(tok_c, tok_r, ref_c, ref_r, mask_c, mask_r, beta, loss_type, label_smoothing=0.0):
    """Run trl's DPOTrainer._compute_loss on token-aligned (B, T) per-token log-probs."""
    from trl import DPOTrainer

    per_token = torch.cat([tok_c, tok_r])  # trl batches are [chosen; rejected]
    completion_mask = torch.cat([mask_c, mask_r])
    # trl's log_probs column j scores token j+1 (shifted); ours is token-aligned -> drop column 0
    log_probs = (per_token * completion_mask)[:, 1:]
    n = log_probs.shape[0]
    out = SimpleNamespace(
        log_probs=log_probs,
        entropy=torch.zeros_like(log_probs),
        mean_logits=torch.zeros_like(log_probs),
        is_top1=torch.zeros_like(log_probs, dtype=torch.bool),
    )
    stub = SimpleNamespace(
        model=SimpleNamespace(training=False),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics=_metrics(),
        _total_train_tokens=0,
        _tp_size=1,
        args=SimpleNamespace(),
    )
    inputs = {
        "input_ids": torch.zeros(n, per_token.shape[1], dtype=torch.long),
        "attention_mask": torch.ones(n, per_token.shape[1], dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "ref_chosen_logps": ref_c,
        "ref_rejected_logps": ref_r,
    }
    loss = DPOTrainer._compute_loss(stub, lambda **kw: out, inputs, return_outputs=False)
    return loss, stub._metrics["eval"]


def _dpo_inputs(seed, B=4, T=6):
    g = gen(seed)
    tok_c = (-torch.rand(B, T, generator=g) * 2).requires_grad_(True)
    tok_r = (-torch.rand(B, T, generator=g) * 2).requires_grad_(True)
    mask_c, mask_r = _response_masks(B, T, seed), _response_masks(B, T, seed + 100)
    ref_c = L.masked_sum(-torch.rand(B, T, generator=g) * 2, mask_c, dim=1)
    ref_r = L.masked_sum(-torch.rand(B, T, generator=g) * 2, mask_r, dim=1)
    return tok_c, tok_r, ref_c, ref_r, mask_c, mask_r


def test_dpo_sigmoid_matches_trl_values_grads_and_rewards():
    tok_c, tok_r, ref_c, ref_r, mask_c, mask_r = _dpo_inputs(0)
    trl_loss, metrics = _trl_dpo(tok_c, tok_r, ref_c, ref_r, mask_c, mask_r, beta=0.3, loss_type="sigmoid")
    pc, pr = L.masked_sum(tok_c, mask_c, dim=1), L.masked_sum(tok_r, mask_r, dim=1)
    ours, cr, rj = L.dpo_loss(pc, pr, ref_c, ref_r, beta=0.3)
    close(ours.mean(), trl_loss)
    g_trl = torch.autograd.grad(trl_loss, (tok_c, tok_r))
    g_ours = torch.autograd.grad(ours.mean(), (tok_c, tok_r))
    for a, b in zip(g_trl, g_ours):
        close(a, b)
    close(cr.mean(), metrics["rewards/chosen"][0])
    close(rj.mean(), metrics["rewards/rejected"][0])
    close((cr > rj).float().mean(), metrics["rewards/accuracies"][0])


def test_dpo_ipo_matches_trl_when_fed_per_token_means():
    tok_c, tok_r, ref_c, ref_r, mask_c, mask_r = _dpo_inputs(1)
    trl_loss, _ = _trl_dpo(tok_c, tok_r, ref_c, ref_r, mask_c, mask_r, beta=0.5, loss_type="ipo")
    len_c, len_r = mask_c.sum(1), mask_r.sum(1)
    pc, pr = L.masked_sum(tok_c, mask_c, dim=1), L.masked_sum(tok_r, mask_r, dim=1)
    # trl's IPO length-normalises each log-ratio; feed our function per-token means to match
    ours, _, _ = L.dpo_loss(pc / len_c, pr / len_r, ref_c / len_c, ref_r / len_r, beta=0.5, loss_type="ipo")
    close(ours.mean(), trl_loss)
    g_trl = torch.autograd.grad(trl_loss, tok_c)[0]
    close(torch.autograd.grad(ours.mean(), tok_c)[0], g_trl)
    # ...while the paper's form on sequence sums differs (lengths > 1 here)
    raw, _, _ = L.dpo_loss(pc, pr, ref_c, ref_r, beta=0.5, loss_type="ipo")
    assert not torch.allclose(raw.mean(), trl_loss.detach())


def test_dpo_label_smoothing_vs_trl():
    tok_c, tok_r, ref_c, ref_r, mask_c, mask_r = _dpo_inputs(2)
    pc, pr = L.masked_sum(tok_c, mask_c, dim=1), L.masked_sum(tok_r, mask_r, dim=1)
    # trl 1.16 "sigmoid" ignores label_smoothing
    trl_sig, _ = _trl_dpo(tok_c, tok_r, ref_c, ref_r, mask_c, mask_r, 0.2, "sigmoid", label_smoothing=0.2)
    close(L.dpo_loss(pc, pr, ref_c, ref_r, beta=0.2)[0].mean(), trl_sig)
    # conservative DPO = trl's "aot" for one pair (its sort over the batch is then the identity)
    ours, _, _ = L.dpo_loss(pc, pr, ref_c, ref_r, beta=0.2, label_smoothing=0.2)
    for i in range(4):
        s = slice(i, i + 1)
        trl_aot, _ = _trl_dpo(tok_c[s], tok_r[s], ref_c[s], ref_r[s], mask_c[s], mask_r[s], 0.2, "aot", 0.2)
        close(ours[i], trl_aot)


# ============================================================================ reward model


def _trl_reward_loss(chosen, rejected, margin=None):
    from trl import RewardTrainer

    logits = torch.cat([chosen, rejected]).unsqueeze(-1)  # (2B, 1): trl batches are [chosen; rejected]
    stub = SimpleNamespace(
        model=SimpleNamespace(training=False),
        args=SimpleNamespace(center_rewards_coefficient=None),
        accelerator=_Accelerator(),
        _metrics=_metrics(),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {"input_ids": torch.zeros(logits.shape[0], 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)}
    if margin is not None:
        inputs["margin"] = margin
    return RewardTrainer.compute_loss(stub, lambda **kw: SimpleNamespace(logits=logits), inputs)


def test_bradley_terry_matches_trl_reward_trainer():
    g = gen(3)
    c = (torch.randn(5, generator=g) * 2).requires_grad_(True)
    r = (torch.randn(5, generator=g) * 2).requires_grad_(True)
    margin = torch.rand(5, generator=g)
    for m in (None, margin):
        trl_loss = _trl_reward_loss(c, r, m)
        ours = L.bradley_terry_loss(c, r, margin=0.0 if m is None else m).mean()
        close(ours, trl_loss)
        g_trl = torch.autograd.grad(trl_loss, (c, r))
        g_ours = torch.autograd.grad(ours, (c, r))
        for a, b in zip(g_trl, g_ours):
            close(a, b)


# ============================================================================ GKD


def _gkd():
    from trl.experimental.gkd import GKDTrainer

    return GKDTrainer.generalized_jsd_loss


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_matches_trl(beta, temperature):
    g = gen(4)
    s = (torch.randn(2, 5, 11, generator=g) * 2).requires_grad_(True)
    t = torch.randn(2, 5, 11, generator=g) * 2
    ours = L.generalized_jsd(s, t, beta=beta, temperature=temperature)
    # trl works on logits already aligned with their targets: logits[:, :-1] predict tokens 1..T-1
    trl_tok = _gkd()(s[:, :-1], t[:, :-1], beta=beta, temperature=temperature, reduction="none").sum(-1)
    close(ours[:, 1:], trl_tok, atol=1e-6)
    close(torch.autograd.grad(ours.sum(), s)[0], torch.autograd.grad(trl_tok.sum(), s)[0], atol=1e-6)
    # trl's masked "batchmean" (labels = -100 off the response) is our masked token mean
    mask = _response_masks(2, 5, seed=4)
    labels = torch.where(mask[:, 1:].bool(), torch.zeros(2, 4, dtype=torch.long), torch.full((2, 4), -100))
    trl_bm = _gkd()(s[:, :-1], t[:, :-1], labels=labels, beta=beta, temperature=temperature)
    close(L.masked_mean(ours, mask), trl_bm, atol=1e-6)


def test_gkd_beta_endpoints_are_forward_and_reverse_kl_in_trl():
    g = gen(5)
    s, t = torch.randn(1, 4, 6, generator=g), torch.randn(1, 4, 6, generator=g)
    f = _gkd()
    close(f(s[:, :-1], t[:, :-1], beta=1.0, reduction="none").sum(-1), L.token_reverse_kl(s, t)[:, 1:])
    close(f(s[:, :-1], t[:, :-1], beta=0.0, reduction="none").sum(-1), L.token_reverse_kl(t, s)[:, 1:])


# ============================================================================ GRPO


def _trl_grpo(logp, old, ref, adv, mask, loss_type, beta, eps_low, eps_high, max_completion_length):
    from trl import GRPOTrainer

    B, T = logp.shape
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **kw: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=False),  # eval: no gradient-accumulation normaliser
        max_completion_length=max_completion_length,
        accelerator=_Accelerator(),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        current_gradient_accumulation_steps=1,
        _metrics=_metrics(),
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        # our (B, T) tensors play trl's completion tensors; prompt columns simply have mask 0
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": mask.sum(),
    }
    if beta != 0.0:
        inputs["ref_per_token_logps"] = ref
    loss = GRPOTrainer._compute_loss(stub, None, inputs)
    return loss, stub._metrics["eval"]


@pytest.mark.parametrize(
    "trl_type,ours",
    [("grpo", "grpo"), ("dr_grpo", "dr_grpo"), ("dapo", "dapo"), ("bnpo", "dapo")],
)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_matches_trl(trl_type, ours, beta):
    g = gen(6)
    B, T = 6, 8
    logp = (torch.randn(B, T, generator=g) * 0.3 - 1).requires_grad_(True)
    old = logp.detach() + torch.randn(B, T, generator=g) * 0.25  # plenty of clipped tokens
    ref = logp.detach() + torch.randn(B, T, generator=g) * 0.3
    adv = L.group_advantages(torch.randn(B, generator=g), group_size=3)
    mask = _response_masks(B, T, seed=6)
    trl_loss, metrics = _trl_grpo(logp, old, ref, adv, mask, trl_type, beta, 0.2, 0.28, max_completion_length=12)
    loss, stats = L.grpo_loss(
        logp, old, adv, mask, eps_low=0.2, eps_high=0.28, aggregation=ours, max_tokens=12,
        ref_logprobs=ref if beta else None, beta=beta,
    )  # fmt: skip
    close(loss, trl_loss)
    close(torch.autograd.grad(loss, logp)[0], torch.autograd.grad(trl_loss, logp)[0])
    close(stats["clip_frac"], metrics["clip_ratio/region_mean"][0])
    close(stats["clip_frac_low"], metrics["clip_ratio/low_mean"][0])
    close(stats["clip_frac_high"], metrics["clip_ratio/high_mean"][0])
    assert stats["clip_frac"] > 0  # the comparison is not vacuous
    if beta:
        close(stats["kl"], metrics["kl"][0])


def test_group_advantages_match_trl_transcription():
    from trl.trainer.utils import nanstd

    g = gen(7)
    G = 4
    rewards = torch.randint(0, 3, (12,), generator=g).float()
    rewards[:G] = 1.0  # a zero-variance group
    # grpo_trainer.py, sum_then_normalize branch:
    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    close(L.group_advantages(rewards, G), (rewards - mean) / (std + 1e-4))  # scale_rewards="group"
    close(L.group_advantages(rewards, G, scale_std=False), rewards - mean)  # scale_rewards="none"
    # trl's nanstd is Bessel-corrected, i.e. torch.std's default
    close(nanstd(rewards.view(-1, G), dim=1), rewards.view(-1, G).std(dim=1))


def test_rloo_advantages_match_trl_transcription():
    g = gen(8)
    G = 4
    rewards = torch.randn(12, generator=g)
    grouped = rewards.view(-1, G)
    # rloo_trainer.py: baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    baselines = (grouped.sum(dim=1, keepdim=True) - grouped) / (G - 1)
    close(L.rloo_advantages(rewards, G), rewards - baselines.view(-1))
