"""Out-of-memory errors that say which knob to turn.

A CUDA out-of-memory error deep inside a forward pass names an allocation, not the setting that
caused it. `oom_hint(stage, knobs)` re-raises it as `OutOfMemoryHint` (a `MemoryError`) whose
message names the stage and the batch knobs that shrink its memory, e.g.::

    with oom_hint("online", "prompts_per_step=16, group_size=8, max_new_tokens=128"):
        experience = collect_experience(...)
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


class OutOfMemoryHint(MemoryError):
    """The device ran out of memory in a named stage; the message lists the knobs to lower."""


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@contextmanager
def oom_hint(stage: str, knobs):
    """Turn an out-of-memory error raised inside the block into `OutOfMemoryHint`. `knobs` is
    the text naming the settings, or a function returning it (called only on an error, so a
    hot loop pays nothing for the message)."""
    try:
        yield
    except OutOfMemoryHint:
        raise
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if callable(knobs):
            knobs = knobs()
        raise OutOfMemoryHint(
            f"{stage}: the device ran out of memory with {knobs}. Lower one of these (or use a "
            f"smaller model / profile) and run again. ({first[:200]})") from None
