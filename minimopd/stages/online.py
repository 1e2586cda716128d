"""The online trainer: the one loop behind PPO, GRPO, Dr.GRPO, DAPO, RLOO, R1-Zero/R1 reasoning
RL, on-policy distillation and MOPD.

    collect_experience:  prompts -> student rollouts (KV-cache sampler) -> SIGNAL -> reference
                         log-probs (and old values) -> ESTIMATOR -> Experience
    optimize:            for epoch, minibatch: OBJECTIVE(logits, logprobs, values, minibatch)
                         -> loss -> one clipped optimiser step

Every method of the lineage is this loop with three parts swapped, each chosen by name in the
config or passed in as an object:

* the signal (`signals/`): a verifier, a reward model, a teacher, teachers routed by domain;
* the advantage estimator (advantages.ESTIMATORS, `advantage=`): group, group_nostd, rloo,
  none, teacher_token, gae;
* the objective (objectives.OBJECTIVES, `loss=`): clipped_pg, ppo, reverse_kl, jsd, truncated_is.

The presets below name the combinations of the papers. What each one changes relative to its
paper, in this miniature:

* grpo (DeepSeekMath): group-normalised advantages, per-sequence mean. No KL term by default
  (`kl_beta=0`; the paper uses 0.04 with k3); one update per rollout batch, so the ratio is 1
  and the clip is inactive unless you raise `epochs` / `minibatches`.
* dr_grpo (Liu et al. 2025): no std scaling, constant normaliser N * max_new_tokens. As in the
  paper.
* dapo (Yu et al. 2025): clip-higher (0.2 / 0.28), token-level mean, dynamic sampling, no KL.
  Dynamic sampling *drops* all-equal groups from the batch instead of re-sampling until the
  batch is full, so the batch shrinks; the soft over-long penalty is off unless you set
  `overlong_buffer`.
* rloo (Ahmadian et al. 2024): leave-one-out baseline, in the clipped loss with a per-sequence
  mean; the paper uses plain REINFORCE and k1 KL folded into the reward.
* ppo (InstructGPT): GAE over a value head on the same backbone (`PolicyWithValue`), whitened
  advantages, per-token k1 KL folded into the reward, clipped surrogate + clipped value loss.
  kl_beta is fixed, or adapted towards a sequence KL `kl_target` by Ziegler et al.'s controller
  (`advantages.adaptive_kl_beta`). The paper's value function is a separate 6B model
  initialised from the reward model, and it adds the pretraining loss (PPO-ptx); neither is
  done here. A response that never ends can be given a fixed reward instead of the reward
  model's (`RewardModelSignal(unfinished_reward=-1)`, as in the "N+ implementation details").
* opd_sampled (Thinking Machines / Qwen3, Nemotron 3 Ultra): per-token advantage
  log p_T - log p_S on the sampled tokens in the clipped loss, token-level mean; add an outcome
  advantage with `outcome_weight` (MiMo-V2-Flash's alpha).
* opd_full (DeepSeek V4): the exact full-vocabulary reverse KL at every sampled prefix, no
  advantage; the paper weighs several teachers per token, we route one teacher per prompt.
* opd_topk: the exact reverse KL over a k-token support plus a tail bucket (trl's async
  distillation form), the support being the student's top-k recorded by the sampler.
* opd_jsd / opd_forward (GKD, Agarwal et al. 2024, on-policy with lambda = 1): the generalised
  JSD with beta 0.5 / the forward KL(p_T || p_S) to the teacher's full distribution at every
  sampled prefix. Not what the frontier recipes use; here because the reverse KL's gradient
  vanishes where the student is certain and wrong, and the forward KL's does not.
* mopd_mimo (MiMo-V2-Flash): the sampled-token advantage in a policy gradient whose importance
  weights are truncated (a token whose ratio leaves [1 - eps_low, 1 + eps_high] is dropped, not
  clipped), per-sequence mean; the paper adds alpha x the outcome (GRPO) advantage: set
  `outcome_weight`, which needs groups (group_size > 1) for its baseline.

Run it: `minimopd lineage --recipes tulu3` (GRPO on the SFT model), or call `train_online`.
"""
from __future__ import annotations

import random
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from .. import losses
from ..advantages import GROUP_ESTIMATORS, adaptive_kl_beta, get_estimator, legacy_estimator
from ..experience import Experience
from ..decoder import window_forward
from ..models import PolicyWithValue, count_parameters
from ..objectives import make_objective
from ..rollout import generate
from ..signals import VerifierSignal
from ..tasks import get_task
from ..memory import oom_hint
from ..threads import stage_threads
from .common import OptimConfig, StageResult, lr_at, make_optimizer
from .online_config import (ONLY_FOR, PRESETS, BudgetConfig, ObjectiveConfig,  # noqa: F401
                            OnlineConfig, SamplingConfig, preset)


def sample_examples(cfg: OnlineConfig, step: int, prompts=None):
    """The prompts of one step: fresh train-split items spread over the configured domains, or,
    given a pool `prompts` (e.g. the learnable ones `diagnose.learnable_examples` kept), the next
    `prompts_per_step` of a seeded shuffle of the pool, reshuffled after each pass."""
    if prompts is not None:
        if not prompts:
            raise ValueError("train_online got an empty prompt pool: the selection kept no prompt (every "
                             "one was solved or unreachable); widen the pool or pass prompts=None")
        n, k, orders, out = len(prompts), cfg.prompts_per_step, {}, []
        for i in range(step * k, (step + 1) * k):
            epoch, j = divmod(i, n)
            if epoch not in orders:
                orders[epoch] = random.Random(cfg.seed * 7_919 + epoch).sample(range(n), n)
            out.append(prompts[orders[epoch][j]])
        return out
    per = [cfg.prompts_per_step // len(cfg.domains)] * len(cfg.domains)
    for i in range(cfg.prompts_per_step % len(cfg.domains)):
        per[(step + i) % len(per)] += 1
    examples = []
    for d, (name, n) in enumerate(zip(cfg.domains, per)):
        if n:
            examples += get_task(name).sample(n, split="train", seed=cfg.seed * 100_003 + step * 31 + d,
                                              difficulty=cfg.difficulty)
    return examples


def shaped_rewards(rewards: torch.Tensor, lengths: torch.Tensor, cfg: OnlineConfig) -> torch.Tensor:
    """The signal's rewards with DAPO's soft over-long penalty: linear inside the last
    `overlong_buffer` tokens of the budget."""
    if not cfg.overlong_buffer:
        return rewards
    over = (lengths - (cfg.max_new_tokens - cfg.overlong_buffer)).clamp(min=0)
    return rewards - cfg.overlong_penalty * over / cfg.overlong_buffer


def collect_experience(model, tokenizer, cfg: OnlineConfig, step: int, *, signal, estimator,
                       ref_model=None, totals: dict, prompts=None) -> Experience:
    """One rollout batch: sample, score with the signal, add reference log-probs and old
    values, estimate advantages, decide which rows to keep. Counts compute into `totals` (2N
    FLOPs per forward token, the usual estimate; the signal counts its own models)."""
    examples = sample_examples(cfg, step, prompts)
    ro = generate(model, tokenizer, [ex.prompt for ex in examples], num_samples=cfg.group_size,
                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                  seed=cfg.seed * 1_000_003 + step, chat=cfg.chat,
                  topk=getattr(signal, "rollout_topk", 0))
    model.train()
    rows = [ex for ex in examples for _ in range(cfg.group_size)]
    out = signal(ro, rows)
    lengths = ro.completion_lengths.float()
    exp = Experience(input_ids=ro.input_ids, attention_mask=ro.attention_mask, mask=ro.completion_mask,
                     logprobs=ro.logprobs, examples=rows,
                     rewards=shaped_rewards(out.rewards.float(), lengths, cfg),
                     scores=out.scores.float(), signal=out, finished=ro.finished,
                     group_size=cfg.group_size, prompt_length=ro.prompt_length, prompt_index=ro.prompt_index)
    tokens = float(ro.attention_mask.sum())
    totals["tokens_generated"] += int(exp.mask.sum())
    totals["signal_tokens"] += out.forward_tokens
    totals["flops"] += 2.0 * count_parameters(model) * tokens + out.flops
    W = exp.prompt_length - 1      # the completion window: logits of columns W.. (see optimize)
    with torch.no_grad():
        if ref_model is not None:
            logits, _ = window_forward(ref_model, exp.input_ids, exp.attention_mask, exp.prompt_length,
                                       exp.prompt_index)
            if cfg.temperature > 0:
                logits = logits / cfg.temperature
            exp.ref_logprobs = F.pad(losses.token_logprobs(logits, exp.input_ids[:, W:]), (W, 0))
            totals["ref_tokens"] += int(tokens)
            totals["flops"] += 2.0 * count_parameters(ref_model) * tokens
        if isinstance(model, PolicyWithValue):
            _, values = window_forward(model, exp.input_ids, exp.attention_mask, exp.prompt_length,
                                       exp.prompt_index)
            exp.old_values = F.pad(values, (W, 0))
            totals["flops"] += 2.0 * count_parameters(model) * tokens
    exp.advantages, exp.returns = estimator(exp, cfg)
    losses.check_finite("advantages", exp.advantages, step, stage="online")
    exp.keep = torch.ones(len(exp), dtype=torch.bool, device=exp.mask.device)
    if cfg.dynamic_sampling:   # groups with identical rewards carry no learning signal
        spread = exp.rewards.view(-1, cfg.group_size).std(dim=1) > 1e-6
        exp.keep = spread.repeat_interleave(cfg.group_size)
    return exp


def optimize(model, opt, exp: Experience, objective, cfg: OnlineConfig, step: int, *,
             totals: dict) -> tuple[list[dict], float]:
    """`epochs` passes over the kept rows of `exp`, `minibatches` optimiser steps each.
    Returns the objective's stats per step and the policy entropy before the first update."""
    stats, entropy = [], float("nan")
    idx = exp.keep.nonzero().squeeze(1)
    if not len(idx):
        return stats, entropy
    n_params = count_parameters(model)
    W = exp.prompt_length - 1   # logits only over the completion window (all the losses use)
    for epoch in range(cfg.epochs):
        order = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(step * 7 + epoch))
                    .to(idx.device)]
        for m, rows in enumerate(order.chunk(cfg.minibatches)):
            full = exp.select(rows)
            logits, values = window_forward(model, full.input_ids, full.attention_mask, full.prompt_length,
                                            full.prompt_index)
            mb = full.narrow(W)
            if cfg.temperature > 0:
                logits = logits / cfg.temperature
            logprobs = losses.token_logprobs(logits, mb.input_ids)
            if epoch == 0 and m == 0:
                # No update has happened yet: the policy *is* the sampling policy, so its own
                # log-probs are pi_old exactly (the sampler's agree to float noise) and the
                # ratio is exactly 1, as in trl with one iteration per batch.
                mb.logprobs = logprobs.detach()
                entropy = losses.masked_mean(losses.token_entropy(logits.detach()), mb.mask).item()
            loss, step_stats = objective(logits, logprobs, values, mb)
            losses.check_finite("the loss", loss, step, stage="online")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            stats.append({**step_stats, "grad_norm": float(grad_norm)})
            totals["tokens_trained"] += int(mb.mask.sum())
            totals["flops"] += 6.0 * n_params * float(full.attention_mask.sum())
    return stats, entropy


def step_metrics(exp: Experience, stats: list[dict], entropy: float, cfg: OnlineConfig) -> dict:
    """One history row: reward, accuracy, lengths (correct / wrong), entropy, what was kept,
    the objective's stats averaged over the step's updates, the KL to the reference, and with a
    teacher signal `teacher_kl`: the per-token reverse KL to the teacher estimated on the batch's
    own samples before the update (mean of log p_S - log p_T over the sampled tokens; the same
    one-sample estimate whatever the distillation mode, where the objective's "kl" is the exact
    one for the full and top-k modes only)."""
    lengths, correct = exp.lengths, exp.scores >= 1.0
    row = {"reward": exp.rewards.mean().item(), "accuracy": exp.scores.mean().item(),
           "length": lengths.mean().item(),
           "length_correct": lengths[correct].mean().item() if correct.any() else float("nan"),
           "length_wrong": lengths[~correct].mean().item() if (~correct).any() else float("nan"),
           "entropy": entropy, "kept_fraction": exp.keep.float().mean().item(),
           "truncated": (~exp.finished).float().mean().item()}
    for key in dict.fromkeys(["loss", "clip_frac", "kl", "ratio_mean"] + [k for s in stats for k in s]):
        vals = [s[key] for s in stats if key in s]
        row[key] = sum(vals) / len(vals) if vals else float("nan")
    if exp.ref_logprobs is not None:
        row["kl_ref"] = losses.masked_mean(losses.kl_estimate(exp.logprobs, exp.ref_logprobs, cfg.kl_kind),
                                           exp.mask).item()
    teacher = getattr(exp.signal, "teacher_logprobs", None)
    if teacher is not None:   # the same estimate for every distillation mode: log p_S - log p_T on the samples
        row["teacher_kl"] = losses.masked_mean(exp.logprobs - teacher, exp.mask).item()
    return row


def _check_setup(cfg: OnlineConfig, model, ref_model, objective) -> None:
    if cfg.advantage in GROUP_ESTIMATORS and cfg.group_size < 2:
        raise ValueError(f"advantage={cfg.advantage!r} compares samples of one prompt: "
                         f"group_size must be >= 2 (got {cfg.group_size})")
    if cfg.outcome_weight and cfg.group_size < 2:
        raise ValueError(f"outcome_weight={cfg.outcome_weight} adds the GRPO outcome advantage, which compares "
                         f"samples of one prompt: group_size must be >= 2 (got {cfg.group_size}), or set "
                         "outcome_weight=0")
    if cfg.kl_beta > 0 and ref_model is None:
        raise ValueError("kl_beta > 0 needs a frozen reference model: pass ref_model=...")
    if cfg.kl_target is not None:
        if (cfg.advantage, cfg.loss) != ("gae", "ppo"):
            raise ValueError(f"kl_target adapts the KL penalty folded into PPO's reward (advantage='gae', "
                             f"loss='ppo'); this stage uses advantage={cfg.advantage!r}, loss={cfg.loss!r}: "
                             "set kl_target=None")
        if not (cfg.kl_beta > 0 and cfg.kl_target > 0):
            raise ValueError(f"the adaptive KL controller scales kl_beta towards kl_target: both must be > 0 "
                             f"(kl_beta={cfg.kl_beta}, kl_target={cfg.kl_target})")
    if getattr(objective, "needs_values", False) and not isinstance(model, PolicyWithValue):
        raise ValueError(f"loss={cfg.loss!r} trains a value head: wrap the policy as "
                         "minimopd.models.PolicyWithValue(model)")


def train_online(model, tokenizer, config: OnlineConfig, *, signal=None, ref_model=None,
                 estimator=None, objective=None, eval_fn=None, advantage_fn=None, loss_fn=None,
                 prompts=None, device: str = "cpu", progress: bool = True) -> StageResult:
    """Optimise `model` on its own samples (see the module docstring). Returns the model and a
    per-step history of reward, accuracy, lengths (correct / wrong), entropy, KL, clip fraction
    and compute counters (tokens generated, trained, and forwarded through other models).

    `signal` defaults to the task verifier; `estimator` and `objective` default to the ones the
    config names. `prompts` (a list of task `Example`s) replaces fresh prompts by a pool (RL
    prompt selection; see `sample_examples`). Two older hooks still work: `advantage_fn(config, rewards,
    token_advantages)` and `loss_fn` (the signature of `losses.grpo_loss`), the GRPO lab's."""
    with stage_threads(model):
        return _train_online(model, tokenizer, config, signal=signal, ref_model=ref_model,
                             estimator=estimator, objective=objective, eval_fn=eval_fn,
                             advantage_fn=advantage_fn, loss_fn=loss_fn, prompts=prompts, device=device,
                             progress=progress)


def _train_online(model, tokenizer, config, *, signal, ref_model, estimator, objective, eval_fn,
                  advantage_fn, loss_fn, prompts, device, progress) -> StageResult:
    from ..progress import bar as progress_bar

    cfg = config
    signal = signal or VerifierSignal()
    estimator = estimator or (legacy_estimator(advantage_fn) if advantage_fn else get_estimator(cfg.advantage))
    objective = objective or make_objective(cfg, loss_fn)
    _check_setup(cfg, model, ref_model, objective)
    model.to(device).train()
    if ref_model is not None:
        ref_model.to(device).eval().requires_grad_(False)
    if hasattr(signal, "setup"):   # a plain function `signal(rollout, examples)` works too
        signal.setup(model, tokenizer, device)
    optim = OptimConfig(lr=cfg.lr, weight_decay=0.0, grad_clip=cfg.grad_clip,
                        warmup_steps=cfg.warmup_steps, min_lr_ratio=cfg.min_lr_ratio)
    opt = make_optimizer(model, optim)
    totals = dict(tokens_generated=0, tokens_trained=0, ref_tokens=0, signal_tokens=0, flops=0.0)
    history, start = [], time.perf_counter()
    knobs = (f"prompts_per_step={cfg.prompts_per_step}, group_size={cfg.group_size}, "
             f"max_new_tokens={cfg.max_new_tokens}, minibatches={cfg.minibatches}")
    step_cfg = cfg              # PPO's adaptive controller changes kl_beta from step to step
    for step in progress_bar(range(cfg.steps), desc="online", progress=progress):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, optim)
        with oom_hint("online", knobs):
            exp = collect_experience(model, tokenizer, step_cfg, step, signal=signal, estimator=estimator,
                                     ref_model=ref_model, totals=totals, prompts=prompts)
            stats, entropy = optimize(model, opt, exp, objective, step_cfg, step, totals=totals)
        row = {"step": step, **step_metrics(exp, stats, entropy, step_cfg),
               "time": time.perf_counter() - start, "lr": opt.param_groups[0]["lr"], **totals,
               **exp.signal.metrics}
        if cfg.kl_target is not None:
            seq_kl = float(losses.masked_sum(losses.kl_estimate(exp.logprobs, exp.ref_logprobs, cfg.kl_kind),
                                             exp.mask, dim=1).mean())
            row.update(kl_beta=step_cfg.kl_beta, kl_sequence=seq_kl)
            step_cfg = replace(cfg, kl_beta=adaptive_kl_beta(step_cfg.kl_beta, seq_kl, cfg.kl_target, len(exp),
                                                             cfg.kl_horizon))
        if row.get("kl_ref", 0.0) > cfg.max_kl:
            raise FloatingPointError(
                f"online: KL to the reference reached {row['kl_ref']:.2f} nats/token at step {step}, "
                f"above max_kl={cfg.max_kl}. Lower the learning rate, raise kl_beta, or raise max_kl "
                "if this drift is intended.")
        if eval_fn is not None and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0)
                                    or step == cfg.steps - 1):
            row.update({f"eval/{k}": v for k, v in eval_fn(model).items()})
            model.train()
        history.append(row)
        if cfg.flops_budget is not None and totals["flops"] >= cfg.flops_budget:
            break
    model.eval()
    info = {"wall_time": time.perf_counter() - start, "steps": len(history), **totals}
    return StageResult(model=model, history=history, info=info)
