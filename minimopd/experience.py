"""`Experience`: one rollout batch with everything the update needs, the contract between
`collect_experience` and `optimize` in the online loop (stages/online.py).

The sampler fills the token tensors, the signal its outputs (`SignalOutput`), the reference
model `ref_logprobs`, a value head `old_values`, an advantage estimator `advantages` and
`returns`; the loop decides `keep`. An objective then reads a minibatch of it
(`experience.select(idx)`), never the models that produced it. This is the same split as trl's
`_generate_and_score_completions` -> `_compute_loss(inputs)`, written as a dataclass.

All (N, T) tensors share the sampler's layout: rows grouped prompt-major ([p0s0, p0s1, ...,
p1s0, ...], `group_size` samples per prompt), the prompt left-padded to `prompt_length` P,
per-token values TOKEN-ALIGNED (column t belongs to token t), `mask` 1 on completion tokens.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


def narrow_columns(obj, start: int, width: int):
    """A copy of dataclass `obj` with every per-token field (a tensor of two or more dims whose
    second dimension is `width`, or a nested dataclass) cut to columns start..width-1."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if torch.is_tensor(value) and value.dim() > 1 and value.shape[1] == width:
            changes[f.name] = value[:, start:]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = narrow_columns(value, start, width)
    return dataclasses.replace(obj, **changes)


def select_rows(obj, idx: torch.Tensor, n: int):
    """A copy of dataclass `obj` with every per-row field (a tensor or list whose first
    dimension is `n`, or a nested dataclass) indexed by `idx`; other fields are shared."""
    changes = {}
    rows = idx.tolist()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == n:
            changes[f.name] = value[idx.to(value.device)]
        elif isinstance(value, list) and len(value) == n:
            changes[f.name] = [value[i] for i in rows]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = select_rows(value, idx, n)
    return dataclasses.replace(obj, **changes)


@dataclass
class Experience:
    input_ids: torch.Tensor            # (N, T) long: prompt (left-padded) + completion
    attention_mask: torch.Tensor       # (N, T) long, 1 on real tokens
    mask: torch.Tensor                 # (N, T) float, 1 on completion tokens (incl. <|end|>)
    logprobs: torch.Tensor             # (N, T) log pi_old(y_t) recorded at sampling time
    examples: list                     # N task items (Example), examples[i] produced row i
    rewards: torch.Tensor              # (N,) sequence reward after shaping (e.g. over-long penalty)
    scores: torch.Tensor               # (N,) task score (accuracy), for logging
    signal: Any                        # the signal's SignalOutput (teacher log-probs, support, ...)
    finished: torch.Tensor             # (N,) bool, the row ended with <|end|>
    group_size: int                    # G samples per prompt
    prompt_length: int                 # P
    prompt_index: torch.Tensor | None = None   # (N,) which prompt of the batch row i continues
    ref_logprobs: torch.Tensor | None = None   # (N, T) log pi_ref(y_t), when a reference is used
    old_values: torch.Tensor | None = None     # (N, T) V(s_t) at sampling time (PPO)
    advantages: torch.Tensor | None = None     # (N,) per sequence or (N, T) per token
    returns: torch.Tensor | None = None        # (N, T) value targets (GAE)
    keep: torch.Tensor | None = None           # (N,) bool: rows the update trains on

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def domains(self) -> list[str]:
        return [ex.domain for ex in self.examples]

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) completion lengths in tokens."""
        return self.mask.sum(dim=1)

    def select(self, idx: torch.Tensor) -> "Experience":
        """The rows `idx` (a long tensor) as an Experience of their own: a minibatch."""
        return select_rows(self, idx, len(self))

    def narrow(self, start: int) -> "Experience":
        """Every per-token tensor cut to columns `start`.. (the prompt length shrinks by
        `start`): the completion window the update computes logits for, `start` being
        prompt_length - 1 (the last prompt token, whose logits predict the first completion
        token). Masks are 0 on prompt columns, so every masked quantity is unchanged."""
        width = self.input_ids.shape[1]
        return dataclasses.replace(narrow_columns(self, start, width), prompt_length=self.prompt_length - start)
