"""Objectives: what the online loop minimises on one minibatch of experience.

    objective(logits, logprobs, values, minibatch) -> (loss, stats)

    logits:    (B, T, V) current policy logits, already divided by the sampling temperature
    logprobs:  (B, T) token-aligned log-probs of the sampled tokens under those logits
    values:    (B, T) the value head's current predictions (a PolicyWithValue), else None
    minibatch: an `Experience` (rows of one rollout batch: masks, sampling log-probs,
               advantages, returns, reference log-probs, the signal's teacher tensors)

Each objective builds a per-token loss and reduces it with `losses.aggregate` (the one reducer
all objectives share, `config.aggregation`), the pattern of trl's `DistillationTrainer`:
divergence with reduction none, then one reducer. `stats` is a dict of python floats the loop
averages into the history.

    clipped_pg   GRPO, Dr.GRPO, DAPO, RLOO, sampled-token OPD (`losses.grpo_loss`)
    ppo          clipped surrogate + clipped value loss on a PolicyWithValue (InstructGPT)
    truncated_is policy gradient with truncated importance weights (MiMo-V2-Flash's MOPD loss)
    reverse_kl   exact reverse KL to a teacher over the full vocabulary or a top-k support
                 (DeepSeek V4's OPD); needs no advantage
    jsd          GKD's generalised JSD to the teacher's full distribution (`jsd_beta`: 1 reverse
                 KL, 0 forward KL); needs no advantage
"""
from __future__ import annotations

import torch

from . import losses


def _teacher_weighted(per_token: torch.Tensor, mb) -> torch.Tensor:
    """(B, T) per-token divergence times each row's teacher weight (MOPD's per-domain weights,
    `SignalOutput.row_weights`), before the shared reducer; unchanged when there are none."""
    weights = getattr(mb.signal, "row_weights", None)
    return per_token if weights is None else per_token * weights.to(per_token)[:, None]


class ClippedPolicyGradient:
    """The clipped importance-weighted policy gradient with the experience's advantages, plus
    `kl_beta` x a KL estimate to the reference when one is given (GRPO's k3 term).

    `loss_fn` has the signature of `losses.grpo_loss`; the GRPO lab passes the student's own.
    """
    needs_values = False

    def __init__(self, config, loss_fn=None):
        self.cfg = config
        self.loss_fn = loss_fn or losses.grpo_loss

    def __call__(self, logits, logprobs, values, mb):
        cfg = self.cfg
        ref = mb.ref_logprobs
        return self.loss_fn(logprobs, mb.logprobs, mb.advantages, mb.mask, eps_low=cfg.eps_low,
                            eps_high=cfg.eps_high, aggregation=cfg.aggregation,
                            max_tokens=cfg.max_new_tokens, ref_logprobs=ref,
                            beta=cfg.kl_beta if ref is not None else 0.0, kl_kind=cfg.kl_kind)


class PPOObjective:
    """PPO (InstructGPT): clipped surrogate on GAE advantages + `vf_coef` x the clipped value
    loss, one loss for the policy and its value head (one optimiser, one gradient clip). The
    KL to the reference is not here: the `gae` estimator folded it into the per-token rewards.
    """
    needs_values = True

    def __init__(self, config):
        self.cfg = config

    def __call__(self, logits, logprobs, values, mb):
        cfg = self.cfg
        if values is None or mb.old_values is None or mb.returns is None:
            raise ValueError("loss='ppo' needs a value head and GAE returns: train a "
                             "minimopd.models.PolicyWithValue with advantage='gae'")
        pg, clipped = losses.ppo_clip_loss(logprobs, mb.logprobs, mb.advantages, cfg.eps_low, cfg.eps_high)
        vl = losses.value_loss(values, mb.old_values, mb.returns, clip=cfg.vf_clip)
        pg_loss = losses.aggregate(pg, mb.mask, cfg.aggregation, cfg.max_new_tokens)
        v_loss = losses.aggregate(vl, mb.mask, cfg.aggregation, cfg.max_new_tokens)
        loss = pg_loss + cfg.vf_coef * v_loss
        with torch.no_grad():
            ratio = torch.exp(logprobs - mb.logprobs)
            stats = {"loss": float(loss), "pg_loss": float(pg_loss), "value_loss": float(v_loss),
                     "clip_frac": float(losses.masked_mean(clipped, mb.mask)),
                     "ratio_mean": float(losses.masked_mean(ratio, mb.mask)),
                     "value_mean": float(losses.masked_mean(values, mb.mask)),
                     "return_mean": float(losses.masked_mean(mb.returns, mb.mask))}
        return loss, stats


class ReverseKLObjective:
    """Exact per-token reverse KL(p_S || p_T) to the teacher on the student's own samples,
    averaged with `aggregate`: the full vocabulary when the signal gave the teacher's whole
    distribution (`TeacherSignal(mode="full")`), the k-token support (with the tail bucket
    when `topk_tail`) when it gave a top-k one. No advantage, no ratio: the gradient is the
    exact one of the divergence at every visited prefix."""
    needs_values = False

    def __init__(self, config):
        self.cfg = config

    def __call__(self, logits, logprobs, values, mb):
        sig = mb.signal
        if sig.full_logprobs is not None:
            per_token = losses.token_reverse_kl(logits, mode="full", teacher_full_logprobs=sig.full_logprobs)
        elif sig.support_ids is not None:
            per_token = losses.token_reverse_kl(logits, mode="topk", support_ids=sig.support_ids,
                                                teacher_support_logprobs=sig.support_logprobs,
                                                tail=self.cfg.topk_tail)
        else:
            raise ValueError("loss='reverse_kl' needs the teacher's distribution: use "
                             "TeacherSignal(teacher, mode='full') or mode='topk' (sampled-token "
                             "distillation is advantage='teacher_token' with loss='clipped_pg')")
        loss = losses.aggregate(_teacher_weighted(per_token, mb), mb.mask, self.cfg.aggregation,
                                self.cfg.max_new_tokens)
        with torch.no_grad():
            stats = {"loss": float(loss), "kl": float(losses.masked_mean(per_token, mb.mask))}
        return loss, stats


class JSDObjective:
    """GKD's generalised Jensen-Shannon divergence (Agarwal et al. 2024) to the teacher's full
    distribution, on the student's own samples: `jsd_beta` = 1 is the reverse KL of `reverse_kl`,
    0 the forward KL(p_T || p_S) (on-policy supervised distillation), 0.5 the symmetric JSD.
    The forward side keeps a gradient where the student is certain and wrong, where the reverse
    KL's vanishes (`kl.generalized_jsd`). Needs `TeacherSignal(teacher, mode="full")`."""
    needs_values = False

    def __init__(self, config):
        self.cfg = config

    def __call__(self, logits, logprobs, values, mb):
        if mb.signal.full_logprobs is None:
            raise ValueError("loss='jsd' needs the teacher's whole distribution: use "
                             "TeacherSignal(teacher, mode='full')")
        per_token = losses.generalized_jsd(logits, beta=self.cfg.jsd_beta,
                                           teacher_full_logprobs=mb.signal.full_logprobs)
        loss = losses.aggregate(_teacher_weighted(per_token, mb), mb.mask, self.cfg.aggregation,
                                self.cfg.max_new_tokens)
        with torch.no_grad():   # the reverse KL for the history (the loss itself when beta = 1)
            kl = per_token if self.cfg.jsd_beta == 1 else losses.token_reverse_kl(
                logits, mode="full", teacher_full_logprobs=mb.signal.full_logprobs)
            stats = {"loss": float(loss), "kl": float(losses.masked_mean(kl, mb.mask))}
        return loss, stats


class TruncatedISPolicyGradient:
    """MiMo-V2-Flash's MOPD loss: -w_t A_t log pi per token, w_t the importance ratio to the
    sampling policy where it lies in [1 - eps_low, 1 + eps_high] and 0 outside
    (`losses.truncated_is_loss`), reduced with `aggregation` ("grpo": MiMo's 1/|y| per sequence).
    With the `teacher_token` estimator, A_t = log p_T - log p_S (+ outcome_weight x the GRPO
    outcome advantage: MiMo's alpha)."""
    needs_values = False

    def __init__(self, config):
        self.cfg = config

    def __call__(self, logits, logprobs, values, mb):
        cfg = self.cfg
        high = cfg.eps_low if cfg.eps_high is None else cfg.eps_high
        per_token, dropped = losses.truncated_is_loss(logprobs, mb.logprobs, mb.advantages,
                                                      low=1.0 - cfg.eps_low, high=1.0 + high)
        loss = losses.aggregate(per_token, mb.mask, cfg.aggregation, cfg.max_new_tokens)
        with torch.no_grad():
            ratio = torch.exp(logprobs - mb.logprobs)
            stats = {"loss": float(loss), "dropped_frac": float(losses.masked_mean(dropped, mb.mask)),
                     "ratio_mean": float(losses.masked_mean(ratio, mb.mask))}
        return loss, stats


OBJECTIVES = {"clipped_pg": ClippedPolicyGradient, "ppo": PPOObjective, "reverse_kl": ReverseKLObjective,
              "jsd": JSDObjective, "truncated_is": TruncatedISPolicyGradient}


def make_objective(config, loss_fn=None):
    """The objective `config.loss` names; `loss_fn` (a `grpo_loss`-shaped hook) replaces
    the clipped policy gradient's loss."""
    name = config.loss
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    if loss_fn is not None:
        if name != "clipped_pg":
            raise ValueError(f"loss_fn replaces the clipped policy-gradient loss; loss={name!r} has none")
        return ClippedPolicyGradient(config, loss_fn)
    return OBJECTIVES[name](config)
