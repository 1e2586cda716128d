"""Signals: what the online trainer learns from, computed on the student's own rollouts.

A signal is a callable `signal(rollout, examples) -> SignalOutput`. `examples[i]` is the task
item that produced row i of the rollout. Which signal a stage uses is what distinguishes RLVR
(a verifier), RLHF (a reward model) and on-policy distillation (a teacher's log-probs); the loop
in `stages/online.py` is the same for all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .rewards import accuracy_reward
from .tasks import format_ok


@dataclass
class SignalOutput:
    rewards: torch.Tensor                       # (N,) sequence-level reward per rollout row
    scores: torch.Tensor                        # (N,) task score (accuracy), for logging
    token_advantages: torch.Tensor | None = None   # (N, T) per-token signal (distillation)
    forward_tokens: int = 0                     # tokens pushed through an extra model (teacher/RM)
    flops: float = 0.0                          # that extra model's compute (2 x params x tokens)
    metrics: dict = field(default_factory=dict)


class VerifierSignal:
    """RLVR: a rule-based reward per completion, `reward_fn(example, completion) -> float`.

    Defaults to the task's own verifier (`accuracy_reward`). Rewards are checked: a NaN, an
    infinity or a non-number stops training with the offending prompt and completion named.
    """

    def __init__(self, reward_fn: Callable | None = None):
        self.reward_fn = reward_fn or accuracy_reward
        self.name = getattr(self.reward_fn, "__name__", "reward")

    def __call__(self, rollout, examples: Sequence) -> SignalOutput:
        if len(examples) != len(rollout):
            raise ValueError(f"signal got {len(examples)} examples for {len(rollout)} rollout rows")
        rewards, scores = [], []
        for i, (ex, text) in enumerate(zip(examples, rollout.texts)):
            value = self.reward_fn(ex, text)
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(f"reward function {self.name} returned a tensor of shape "
                                     f"{tuple(value.shape)} for row {i}; it must return one float")
                value = value.item()
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"reward function {self.name} returned {type(value).__name__} for "
                                f"row {i}; it must return a float")
            if not math.isfinite(value):
                raise ValueError(f"reward function {self.name} returned {value} for prompt "
                                 f"{ex.prompt!r} and completion {text!r}; rewards must be finite")
            rewards.append(float(value))
            scores.append(accuracy_reward(ex, text) if ex.answer else float(value))
        device = rollout.input_ids.device
        fmt = sum(format_ok(t) and bool(f) for t, f in zip(rollout.texts, rollout.finished.tolist()))
        return SignalOutput(rewards=torch.tensor(rewards, device=device),
                            scores=torch.tensor(scores, device=device),
                            metrics={"format_rate": fmt / max(len(rollout), 1)})
