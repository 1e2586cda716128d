"""What a long run shows while it works: recipe k of n, stage k of n, a bar per stage named after
it, a one-line summary when a stage ends, a bar while evaluating.

`minimopd lineage` opens a `recipe(...)` context per recipe; inside it, `cache.cached_stage`
reports each stage (`stage(...)`), the training loops name their bars with `label(...)` and
`evaluate` shows a bar (`bar(...)`). Outside such a context (a notebook calling the library,
the tests) nothing extra is printed and the loops keep their plain bars.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional


@dataclass
class _Run:
    name: str
    k: int
    n: int
    stages: Optional[int]                # stages the recipe builds (None: unknown)
    enabled: bool = True
    started: float = field(default_factory=time.perf_counter)
    lineage_started: float = field(default_factory=time.perf_counter)
    seen: list = field(default_factory=list)   # stage keys met so far, in order
    current: Optional[str] = None


_run: Optional[_Run] = None


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@contextlib.contextmanager
def recipe(name: str, k: int, n: int, *, stages: Optional[int] = None, enabled: bool = True,
           lineage_started: Optional[float] = None):
    """Within this block, stages report themselves as stage j of `stages` of recipe `k` of `n`."""
    global _run
    previous = _run
    _run = _Run(name, k, n, stages, enabled)
    if lineage_started is not None:
        _run.lineage_started = lineage_started
    if enabled:
        print(f"\n-- recipe {k}/{n}: {name}" + (f" ({stages} stages)" if stages else ""), flush=True)
    try:
        yield _run
    finally:
        _run = previous


def active() -> bool:
    return _run is not None and _run.enabled


def label(default: str) -> str:
    """The bar's name: "[2/4 tulu3 · stage 3/3] rlvr" inside a recipe, else `default`."""
    if _run is None:
        return default
    if _run.current is None:
        return f"[{_run.k}/{_run.n} {_run.name}] {default}"
    j = _run.seen.index(_run.current) + 1 if _run.current in _run.seen else len(_run.seen)
    of = f"/{_run.stages}" if _run.stages else ""
    return f"[{_run.k}/{_run.n} {_run.name} · stage {j}{of}] {_run.current.rsplit('-', 1)[0]}"


@contextlib.contextmanager
def stage(key: str):
    """Mark the stage `key` (e.g. "rlvr-64cb...") as the one running; yields a `done(how)`
    callback that prints its one-line summary."""
    if _run is None:
        yield lambda how: None
        return
    first = key not in _run.seen
    if first:
        _run.seen.append(key)
    previous, _run.current = _run.current, key
    t0 = time.perf_counter()

    def done(how: str) -> None:
        if _run is not None and _run.enabled and (first or how == "trained"):   # a reload says nothing new
            took = time.perf_counter() - t0
            print(f"   {label(key)}: {how}" + (f" in {_fmt_time(took)}" if how == "trained" else "")
                  + f"  (recipe {_fmt_time(time.perf_counter() - _run.started)}, "
                  f"lineage {_fmt_time(time.perf_counter() - _run.lineage_started)})", flush=True)
    try:
        yield done
    finally:
        _run.current = previous


def bar(iterable: Iterable, *, desc: str, total: Optional[int] = None, progress: Optional[bool] = None):
    """A text tqdm bar named after the running stage; shown if `progress` (default: inside a recipe).

    Plain text, not a notebook widget: a saved notebook shows the bar's last state, never "Error
    displaying widget: model not found". Inside a recipe the bar goes away when done (the stage's
    summary line stays); elsewhere its final state stays as the record."""
    from tqdm.std import tqdm

    show = active() if progress is None else (progress and (_run is None or _run.enabled))
    return tqdm(iterable, desc=label(desc), total=total, disable=not show, leave=_run is None,
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
