"""Signals that score whole completions: a verifier program (RLVR) or a learned reward model (RLHF)."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Sequence

import torch

from ..models import GatedRewardModel, RewardModel, count_parameters
from ..rewards import accuracy_reward
from ..tasks import format_ok
from ..tokenizer import check_compatible
from .base import PLACEMENTS, SignalOutput, check_rows, model_key, placed


class VerifierSignal:
    """RLVR: a rule-based reward per completion, `reward_fn(example, completion) -> float`.

    Defaults to the task's own verifier (`accuracy_reward`). Rewards are checked: a NaN, an
    infinity or a non-number stops training with the offending prompt and completion named.
    """
    rollout_topk = 0

    def __init__(self, reward_fn: Callable | None = None):
        self.reward_fn = reward_fn or accuracy_reward
        self.name = getattr(self.reward_fn, "__name__", "reward")

    def spec(self) -> dict:
        return {"kind": "verifier", "reward": self.name}

    def setup(self, model, tokenizer, device) -> None:
        pass

    def __call__(self, rollout, examples: Sequence) -> SignalOutput:
        check_rows(rollout, examples)
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


class RewardModelSignal:
    """RLHF: a `models.RewardModel` scores each completion at its last real token.

    The reward model reads the rollout's own token ids, so it must share the student's
    tokenizer (checked in `setup`). `scores` (logged as accuracy) stay the task's own score,
    the hidden gold scorer for the preference domain: the reward model never sees it.

    `unfinished_reward`: the reward of a response that hit the token budget without ending,
    instead of the reward model's score of a cut-off text (Huang et al. 2024, "The N+
    implementation details of RLHF": -1). None scores it like any other."""
    rollout_topk = 0

    def __init__(self, reward_model, *, key: str | None = None, placement: str = "device",
                 unfinished_reward: float | None = None):
        if unfinished_reward is not None and not math.isfinite(unfinished_reward):
            raise ValueError(f"unfinished_reward must be a finite number or None, got {unfinished_reward}")
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
        if not isinstance(reward_model, (RewardModel, GatedRewardModel)):
            raise TypeError(f"RewardModelSignal needs a minimopd.models.RewardModel (a scalar head on "
                            f"a causal LM) or a GatedRewardModel, got {type(reward_model).__name__}")
        self.model, self.placement = reward_model.eval(), placement
        self.key, self.unfinished_reward = key, unfinished_reward
        self.verifier = VerifierSignal()
        self.n_params = count_parameters(reward_model)

    def spec(self) -> dict:
        spec = {"kind": "reward_model", "model": self.key or model_key(self.model)}
        if self.unfinished_reward is not None:
            spec["unfinished_reward"] = self.unfinished_reward
        return spec

    def setup(self, model, tokenizer, device) -> None:
        check_compatible(tokenizer, self.model, role="reward model")
        self.device = device

    @torch.no_grad()
    def __call__(self, rollout, examples: Sequence) -> SignalOutput:
        check_rows(rollout, examples)
        out = self.verifier(rollout, examples)
        device = rollout.input_ids.device
        with placed(self.model, device, self.placement):
            rewards = self.model(rollout.input_ids, rollout.attention_mask).float()
        bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
        if bad:
            raise FloatingPointError(f"the reward model's head returned {rewards[bad[0]].item()} for rows "
                                     f"{bad[:5]} (prompt {examples[bad[0]].prompt!r}); retrain it with a lower "
                                     "learning rate or check its checkpoint")
        rewards = rewards.to(device)
        metrics = dict(out.metrics)
        if self.unfinished_reward is not None:
            unfinished = ~rollout.finished.to(device).bool()
            rewards = torch.where(unfinished, torch.full_like(rewards, self.unfinished_reward), rewards)
            metrics["unfinished"] = unfinished.float().mean().item()
        tokens = int(rollout.attention_mask.sum())
        return replace(out, rewards=rewards, kind="reward_model", forward_tokens=tokens,
                       flops=2.0 * self.n_params * tokens, metrics=metrics)
