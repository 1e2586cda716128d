"""The online trainer: the one loop behind GRPO, Dr.GRPO, DAPO, RLOO, R1-Zero/R1 reasoning RL,
on-policy distillation and MOPD.

    sample prompts -> student rollouts (KV-cache sampler) -> SIGNAL -> ADVANTAGE -> clipped update

Every method of the lineage is this loop with two parts swapped: the *signal* (a verifier, a
reward model, a teacher's log-probs; see signals.py) and the *advantage* (group-normalised,
leave-one-out, or per-token from a teacher). The update is always the clipped importance-
weighted policy gradient of `losses.grpo_loss`, over `epochs` passes of a rollout batch, with the
ratio taken against the rollout policy's log-probs recorded at sampling time.

Run it alone (GRPO on the SFT model):  python -m minimopd.stages.online --profile smoke
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import torch

from .. import losses
from ..profiles import Profile, get_profile
from ..models import count_parameters
from ..rollout import forward_logits, generate, sequence_logprobs
from ..tasks import VERIFIABLE_DOMAINS, get_task
from .common import OptimConfig, StageResult, make_optimizer
from ..signals import VerifierSignal

ADVANTAGES = ("group", "group_nostd", "rloo", "token", "none")


@dataclass
class OnlineConfig:
    steps: int = 10
    prompts_per_step: int = 8
    group_size: int = 4                 # G completions per prompt
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 5e-4
    epochs: int = 1                     # PPO epochs over each rollout batch
    minibatches: int = 1                # gradient steps per epoch
    advantage: str = "group"            # one of ADVANTAGES
    aggregation: str = "grpo"           # grpo | dr_grpo | dapo (see losses.grpo_loss)
    eps_low: float = 0.2
    eps_high: float | None = None       # None: symmetric; DAPO's clip-higher uses 0.28
    kl_beta: float = 0.0                # KL(pi || ref) penalty; 0 = no reference model (DAPO)
    kl_kind: str = "k3"
    dynamic_sampling: bool = False      # DAPO: drop groups whose rewards are all equal
    overlong_buffer: int = 0            # DAPO soft over-long penalty over the last N tokens
    overlong_penalty: float = 1.0
    outcome_weight: float = 0.0         # "token" advantage + this x group advantage (MOPD's alpha)
    domains: tuple[str, ...] = VERIFIABLE_DOMAINS
    difficulty: object = None           # None mixes all levels
    chat: bool = True
    max_kl: float = 20.0                # stop when the KL to the reference passes this
    flops_budget: float | None = None   # stop early once the estimated FLOPs reach this
    grad_clip: float = 1.0
    eval_every: int = 0
    seed: int = 0

    @classmethod
    def from_profile(cls, profile: Profile | str | None = None, **overrides) -> "OnlineConfig":
        p = get_profile(profile)
        base = dict(steps=p.rl_steps, prompts_per_step=p.rl_prompts, group_size=p.rl_group_size,
                    max_new_tokens=p.max_new_tokens, lr=p.rl_lr)
        return cls(**{**base, **overrides})


PRESETS = {  # the GRPO family as configurations of one loop
    "grpo": dict(advantage="group", aggregation="grpo"),
    "dr_grpo": dict(advantage="group_nostd", aggregation="dr_grpo"),
    "dapo": dict(advantage="group", aggregation="dapo", eps_high=0.28, dynamic_sampling=True,
                 kl_beta=0.0),
    "rloo": dict(advantage="rloo", aggregation="grpo"),
}


def preset(name: str, base: OnlineConfig) -> OnlineConfig:
    """`base` with the settings of a named algorithm (grpo, dr_grpo, dapo, rloo)."""
    if name not in PRESETS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(base, **PRESETS[name])


def compute_advantages(cfg: OnlineConfig, rewards: torch.Tensor, token_adv: torch.Tensor | None):
    """(N,) or (N, T) advantages from the signal, as selected by `cfg.advantage`."""
    G = cfg.group_size
    if cfg.advantage == "group":
        return losses.group_advantages(rewards, G, scale_std=True)
    if cfg.advantage == "group_nostd":
        return losses.group_advantages(rewards, G, scale_std=False)
    if cfg.advantage == "rloo":
        return losses.rloo_advantages(rewards, G)
    if cfg.advantage == "none":
        return rewards
    if cfg.advantage == "token":
        if token_adv is None:
            raise ValueError("advantage='token' needs a signal that returns token_advantages "
                             "(a teacher signal); a verifier only gives sequence rewards")
        if cfg.outcome_weight:
            return token_adv + cfg.outcome_weight * losses.group_advantages(rewards, G)[:, None]
        return token_adv
    raise ValueError(f"unknown advantage {cfg.advantage!r}; choose one of {', '.join(ADVANTAGES)}")


def sample_examples(cfg: OnlineConfig, step: int):
    """The prompts of one step, spread over the configured domains (train split)."""
    per = [cfg.prompts_per_step // len(cfg.domains)] * len(cfg.domains)
    for i in range(cfg.prompts_per_step % len(cfg.domains)):
        per[(step + i) % len(per)] += 1
    examples = []
    for d, (name, n) in enumerate(zip(cfg.domains, per)):
        if n:
            examples += get_task(name).sample(n, split="train", seed=cfg.seed * 100_003 + step * 31 + d,
                                              difficulty=cfg.difficulty)
    return examples


def train_online(model, tokenizer, config: OnlineConfig, *, signal=None, ref_model=None,
                 eval_fn=None, advantage_fn=None, loss_fn=None, device: str = "cpu",
                 progress: bool = True) -> StageResult:
    """Optimise `model` on its own samples; see the module docstring. Returns the model and a
    per-step history of reward, accuracy, lengths (correct / wrong), entropy, KL, clip fraction
    and compute counters (tokens generated, trained, and forwarded through other models).

    `advantage_fn(config, rewards, token_advantages)` and `loss_fn` (same signature as
    `losses.grpo_loss`) replace the library's pieces — the labs plug the student's in here."""
    advantage_fn = advantage_fn or compute_advantages
    loss_fn = loss_fn or losses.grpo_loss
    from tqdm.auto import tqdm

    cfg = config
    if cfg.advantage in ("group", "group_nostd", "rloo") and cfg.group_size < 2:
        raise ValueError(f"advantage={cfg.advantage!r} compares samples of one prompt: "
                         f"group_size must be >= 2 (got {cfg.group_size})")
    if cfg.kl_beta > 0 and ref_model is None:
        raise ValueError("kl_beta > 0 needs a frozen reference model: pass ref_model=...")
    signal = signal or VerifierSignal()
    model.to(device).train()
    if ref_model is not None:
        ref_model.to(device).eval().requires_grad_(False)
    opt = make_optimizer(model, OptimConfig(lr=cfg.lr, weight_decay=0.0, grad_clip=cfg.grad_clip))
    totals = dict(tokens_generated=0, tokens_trained=0, ref_tokens=0, signal_tokens=0, flops=0.0)
    n_params = count_parameters(model)
    history, start = [], time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="online", disable=not progress, leave=False):
        examples = sample_examples(cfg, step)
        rows = [ex for ex in examples for _ in range(cfg.group_size)]
        ro = generate(model, tokenizer, [ex.prompt for ex in examples], num_samples=cfg.group_size,
                      max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                      top_p=cfg.top_p, seed=cfg.seed * 1_000_003 + step, chat=cfg.chat)
        model.train()
        out = signal(ro, rows)
        lengths = ro.completion_lengths.float()
        rewards = out.rewards.float()
        if cfg.overlong_buffer:   # DAPO: linear penalty inside the last `overlong_buffer` tokens
            over = (lengths - (cfg.max_new_tokens - cfg.overlong_buffer)).clamp(min=0)
            rewards = rewards - cfg.overlong_penalty * over / cfg.overlong_buffer
        adv = advantage_fn(cfg, rewards, out.token_advantages)
        losses.check_finite("advantages", adv, step)
        mask = ro.completion_mask
        keep = torch.ones(len(ro), dtype=torch.bool, device=mask.device)
        if cfg.dynamic_sampling:   # groups with identical rewards carry no learning signal
            spread = rewards.view(-1, cfg.group_size).std(dim=1) > 1e-6
            keep = spread.repeat_interleave(cfg.group_size)
        totals["tokens_generated"] += int(mask.sum())
        totals["signal_tokens"] += out.forward_tokens
        # Compute, in the usual 2N FLOPs per forward token / 6N per trained token estimate:
        # sampling runs the policy over prompt + completion; the signal's own model is counted
        # by the signal (teacher or reward model) in forward_tokens x its parameters.
        totals["flops"] += 2.0 * n_params * float(ro.attention_mask.sum()) + out.flops
        ref_lp = None
        if ref_model is not None:
            ref_lp = sequence_logprobs(ref_model, ro.input_ids, ro.attention_mask,
                                       temperature=cfg.temperature).detach()
            totals["ref_tokens"] += int(ro.attention_mask.sum())
            totals["flops"] += 2.0 * count_parameters(ref_model) * float(ro.attention_mask.sum())

        stats_acc, entropy = [], float("nan")
        idx = keep.nonzero().squeeze(1)
        if len(idx):
            for epoch in range(cfg.epochs):
                order = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(step * 7 + epoch))
                            .to(idx.device)]
                for m, mb in enumerate(order.chunk(cfg.minibatches)):
                    logits = forward_logits(model, ro.input_ids[mb], ro.attention_mask[mb])
                    if cfg.temperature > 0:
                        logits = logits / cfg.temperature
                    lp = losses.token_logprobs(logits, ro.input_ids[mb])
                    if epoch == 0 and m == 0:   # policy entropy before this step's updates
                        entropy = losses.masked_mean(losses.token_entropy(logits.detach()), mask[mb]).item()
                    loss, stats = loss_fn(
                        lp, ro.logprobs[mb], adv[mb], mask[mb], eps_low=cfg.eps_low,
                        eps_high=cfg.eps_high, aggregation=cfg.aggregation,
                        max_tokens=cfg.max_new_tokens,
                        ref_logprobs=None if ref_lp is None else ref_lp[mb],
                        beta=cfg.kl_beta if ref_lp is not None else 0.0, kl_kind=cfg.kl_kind)
                    losses.check_finite("loss", loss, step)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    stats_acc.append(stats)
                    totals["tokens_trained"] += int(mask[mb].sum())
                    totals["flops"] += 6.0 * n_params * float(ro.attention_mask[mb].sum())

        scores = out.scores.float()
        correct = scores >= 1.0
        row = {"step": step, "reward": rewards.mean().item(), "accuracy": scores.mean().item(),
               "length": lengths.mean().item(),
               "length_correct": lengths[correct].mean().item() if correct.any() else float("nan"),
               "length_wrong": lengths[~correct].mean().item() if (~correct).any() else float("nan"),
               "entropy": entropy, "kept_fraction": keep.float().mean().item(),
               "truncated": (~ro.finished).float().mean().item(),
               "time": time.perf_counter() - start, **totals, **out.metrics}
        for key in ("loss", "clip_frac", "kl", "ratio_mean"):
            vals = [s[key] for s in stats_acc if key in s]
            row[key] = sum(vals) / len(vals) if vals else float("nan")
        if ref_lp is not None:
            row["kl_ref"] = losses.masked_mean(losses.kl_estimate(ro.logprobs, ref_lp, cfg.kl_kind), mask).item()
            if row["kl_ref"] > cfg.max_kl:
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


if __name__ == "__main__":
    from ..evaluate import evaluate
    from ..recipes import sft_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--algo", default="grpo", choices=list(PRESETS))
    args = ap.parse_args()
    prof = get_profile(args.profile)
    model, tok = sft_model(prof)
    cfg = preset(args.algo, OnlineConfig.from_profile(prof))
    res = train_online(model, tok, cfg, device=prof.device)
    print(evaluate(res.model, tok, profile=prof).table())
