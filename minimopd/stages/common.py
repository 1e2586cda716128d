"""The one offline batch loop shared by pretraining, SFT, reward modelling, DPO and
rejection-sampling SFT, plus the `StageResult` every stage returns.

Offline stages differ only in where batches come from and how a batch becomes a loss, so a
stage hands `train_offline` a batch iterator and a `step_fn(model, batch) -> (loss, metrics)`;
the loop owns the optimiser, the learning-rate schedule, gradient clipping, the NaN guard
(`losses.check_finite`, shared with the online loop),
the progress bar, periodic evaluation and the metrics history.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from ..losses import check_finite
from ..memory import oom_hint
from ..progress import bar as progress_bar
from ..threads import stage_threads


@dataclass
class StageResult:
    """What every stage returns: the trained model and one metrics dict per step."""
    model: Any
    history: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)   # totals: wall time, tokens, final eval, ...

    def last(self, key: str, default=None):
        """The most recent value of a metric (skipping steps that did not log it)."""
        for row in reversed(self.history):
            if key in row:
                return row[key]
        return default


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1    # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0


def make_optimizer(model, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW; decay matrices only: norms and biases are scale parameters, decaying them hurts
    tiny models. The fused implementation (one kernel for all parameters; ~9x faster than the
    per-tensor loop torch picks on a CPU for a 0.1M-parameter model) where torch has it."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)
    except (RuntimeError, TypeError, ValueError):   # a device or dtype without a fused kernel
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warm-up then cosine decay to `min_lr_ratio * lr`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def train_offline(model, batches: Iterator[dict], step_fn: Callable, *, steps: int,
                  optim: OptimConfig, stage: str, device: str = "cpu",
                  eval_fn: Callable | None = None, eval_every: int = 0,
                  log_every: int = 1, progress: bool = True, stop_at: int | None = None) -> StageResult:
    """Run `steps` optimiser steps; `step_fn(model, batch)` returns `(loss, metrics_dict)`.

    `stop_at` = k (1 <= k <= steps) stops after k steps of the same run (same batches, same
    learning-rate schedule, which still spans `steps`): the run's checkpoint at step k.

    `eval_fn(model) -> dict` runs every `eval_every` steps and at the end; its metrics are
    merged into that step's history row (prefixed with `eval/`). Runs with the thread count of
    `threads.stage_threads(model)`.
    """
    with stage_threads(model):
        return _train_offline(model, batches, step_fn, steps=steps, optim=optim, stage=stage,
                              device=device, eval_fn=eval_fn, eval_every=eval_every,
                              log_every=log_every, progress=progress, stop_at=stop_at)


def _batch_knobs(batch) -> str:
    shape = next((tuple(v.shape) for v in batch.values() if torch.is_tensor(v) and v.dim() == 2), None)
    return (f"a batch of {shape[0]} sequences x {shape[1]} tokens (batch_size, seq_len / the longest "
            "example)" if shape else "this batch (batch_size)")


def _train_offline(model, batches, step_fn, *, steps, optim, stage, device, eval_fn, eval_every,
                   log_every, progress, stop_at=None) -> StageResult:
    if stop_at is not None and not 1 <= stop_at <= steps:
        raise ValueError(f"stop_at={stop_at} must lie in 1..steps ({steps}): it is the step of the run to stop after")
    run_steps = steps if stop_at is None else stop_at
    model.to(device)
    model.train()
    opt = make_optimizer(model, optim)
    history: list[dict] = []
    start = time.perf_counter()
    tokens_seen = slots_seen = 0
    eval_time = 0.0
    bar = progress_bar(range(run_steps), desc=stage, progress=progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, optim)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
        with oom_hint(stage, lambda: _batch_knobs(batch)):
            loss, metrics = step_fn(model, batch)
            check_finite("the loss", loss, step, stage=stage)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        if "attention_mask" in batch:
            tokens_seen += int(batch["attention_mask"].sum())
            slots_seen += batch["attention_mask"].numel()
        now = time.perf_counter()
        # tokens/s: real (non-padding) tokens per second of training, evaluation time excluded;
        # padding: the share of the batches' token slots that were padding.
        row = {"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"],
               "grad_norm": float(grad_norm), "tokens": tokens_seen, "time": now - start,
               "tokens_per_s": tokens_seen / max(now - start - eval_time, 1e-9),
               "padding": 1.0 - tokens_seen / max(slots_seen, 1)}
        row.update({k: (v.item() if torch.is_tensor(v) else v) for k, v in metrics.items()})
        last = step == run_steps - 1
        if eval_fn is not None and ((eval_every and (step + 1) % eval_every == 0) or last):
            model.eval()
            t_eval = time.perf_counter()
            row.update({f"eval/{k}": v for k, v in eval_fn(model).items()})
            eval_time += time.perf_counter() - t_eval
            model.train()
        if step % log_every == 0 or last or any(k.startswith("eval/") for k in row):
            history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
    model.eval()
    wall = time.perf_counter() - start
    info = {"wall_time": wall, "tokens": tokens_seen, "steps": run_steps,
            **({} if stop_at is None else {"schedule_steps": steps}),
            "tokens_per_s": tokens_seen / max(wall - eval_time, 1e-9),
            "padding": 1.0 - tokens_seen / max(slots_seen, 1), "threads": torch.get_num_threads()}
    return StageResult(model=model, history=history, info=info)


def cycle_batches(items: list, batch_size: int, collate_fn: Callable, *, seed: int = 0):
    """Endless shuffled mini-batches over `items` (a new permutation each epoch)."""
    if not items:
        raise ValueError("no training items: the dataset is empty")
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(items), generator=g).tolist()
        for i in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            yield collate_fn([items[j] for j in order[i:i + batch_size]])
