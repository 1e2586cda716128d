"""What every signal shares: the output it hands the loop, the protocol it meets, and the helpers
for naming and placing its models."""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import torch

from ..models import unwrap

TEACHER_MODES = ("sampled", "topk", "full")
PLACEMENTS = ("device", "swap")


@dataclass
class SignalOutput:
    """What a signal hands the loop. Per-token tensors are token-aligned with the rollout."""
    rewards: torch.Tensor                       # (N,) sequence-level reward per rollout row
    scores: torch.Tensor                        # (N,) task score (accuracy), for logging
    kind: str = "verifier"                      # "verifier" | "reward_model" | "teacher"
    teacher_logprobs: torch.Tensor | None = None   # (N, T) log p_T(y_t) of the sampled tokens
    support_ids: torch.Tensor | None = None        # (N, T, k) top-k support (mode "topk")
    support_logprobs: torch.Tensor | None = None   # (N, T, k) teacher log-probs on that support
    full_logprobs: torch.Tensor | None = None      # (N, T, V) teacher log-distribution ("full")
    teacher_ids: list[str] | None = None           # N names: which teacher scored each row
    row_weights: torch.Tensor | None = None        # (N,) weight of each row's teacher term (MOPD's
                                                   # per-domain weights); None: all 1
    forward_tokens: int = 0                     # tokens pushed through the signal's own models
    flops: float = 0.0                          # their compute (2 x params x tokens, per model)
    metrics: dict = field(default_factory=dict)


@runtime_checkable
class Signal(Protocol):
    rollout_topk: int       # > 0: the sampler must record the student's top-k ids (Rollout.topk_ids)

    def __call__(self, rollout, examples: Sequence) -> SignalOutput: ...

    def spec(self) -> dict: ...

    def setup(self, model, tokenizer, device) -> None: ...


def model_key(model) -> str:
    """A short digest of a model's weights: names a teacher or reward model in cache keys when
    no artifact key is given."""
    h = hashlib.sha256()
    for name, p in sorted(unwrap(model).state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def placed(model, device, placement: str):
    """Run a block with `model` on `device`; with "swap", park it back on the CPU afterwards."""
    model.to(device)
    try:
        yield model
    finally:
        if placement == "swap":
            model.to("cpu")


def check_rows(rollout, examples) -> None:
    if len(examples) != len(rollout):
        raise ValueError(f"signal got {len(examples)} examples for {len(rollout)} rollout rows")
