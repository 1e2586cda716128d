"""How many CPU threads torch uses for a stage: chosen per model and machine, overridable.

torch defaults to one intra-op thread per core. For the course's models that default is wrong
in two ways: the smallest models are dispatch-bound (a second thread buys ~20% and costs a core
that a notebook kernel or a test process needs), and on a shared machine threads that compete
with other busy processes thrash; a pretraining step measured 4.1 s with the default on a loaded
2-core machine and 0.39 s with one thread. So every stage runs inside `stage_threads(model)`:

1. `MINIMOPD_THREADS=n` (a positive integer) wins;
2. else `OMP_NUM_THREADS`, if set, is left to torch (which already honours it);
3. else `set_threads(n)` called by the user wins;
4. else: 1 thread for models under `SMALL_MODEL_PARAMS`, otherwise the number of cores that are
   idle right now (measured over a short window from /proc/stat, or the load average where
   there is none), at least 1 and at most the cores this process may use.

The previous torch setting is restored when the stage ends.
"""
from __future__ import annotations

import contextlib
import os
import time

import torch

THREADS_ENV = "MINIMOPD_THREADS"
SMALL_MODEL_PARAMS = 500_000     # below this (the `tiny` size) one thread is as fast as two
PROBE_SECONDS = 0.2
PROBE_TTL = 30.0                 # re-measure idle cores at most this often

_user_threads: int | None = None
_probe_cache: tuple[float, float] | None = None   # (time, idle cores)


def set_threads(n: int | None) -> None:
    """Use `n` threads in every stage from now on (None: back to the automatic choice)."""
    global _user_threads
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"set_threads takes a positive integer or None, got {n!r}")
    _user_threads = n


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)   # idle + iowait
    return idle, sum(fields)


def idle_cores() -> float:
    """How many cores are idle now: /proc/stat over PROBE_SECONDS (cached for PROBE_TTL), or
    cores minus the 1-minute load average where /proc/stat does not exist."""
    global _probe_cache
    now = time.monotonic()
    if _probe_cache is not None and now - _probe_cache[0] < PROBE_TTL:
        return _probe_cache[1]
    cores = os.cpu_count() or 1
    first = _cpu_times()
    if first is not None:
        time.sleep(PROBE_SECONDS)
        second = _cpu_times()
        busy_total = second[1] - first[1]
        idle = cores * (second[0] - first[0]) / busy_total if busy_total > 0 else float(cores)
    elif hasattr(os, "getloadavg"):
        idle = cores - os.getloadavg()[0]
    else:
        idle = float(cores)
    _probe_cache = (now, idle)
    return idle


def _from_env() -> int | None:
    raw = os.environ.get(THREADS_ENV)
    if raw is None or raw.strip() == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r} is not a positive integer; set it to the number of "
                         f"CPU threads to use (e.g. {THREADS_ENV}=1), or unset it for the automatic choice")
    return n


def threads_for(model=None) -> int | None:
    """The thread count a stage on `model` should use, or None to leave torch's setting
    (OMP_NUM_THREADS is set). See the module docstring for the rules."""
    env = _from_env()
    if env is not None:
        return env
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    if _user_threads is not None:
        return _user_threads
    if model is not None:
        n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        if n_params < SMALL_MODEL_PARAMS:
            return 1
    return max(1, min(usable_cores(), round(idle_cores())))


@contextlib.contextmanager
def stage_threads(model=None):
    """Run a block with `threads_for(model)` intra-op threads, restoring torch's setting after.
    Nested blocks keep the outer choice."""
    n = None if getattr(_state, "depth", 0) else threads_for(model)
    before = torch.get_num_threads()
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        if n is not None and n != before:
            torch.set_num_threads(n)
        yield n or before
    finally:
        _state.depth -= 1
        if n is not None and n != before:
            torch.set_num_threads(before)


def model_threads(fn):
    """Decorator: run `fn(model, ...)` inside `stage_threads(model)`."""
    import functools

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with stage_threads(model):
            return fn(model, *args, **kwargs)
    return wrapper


class _State:
    depth = 0


_state = _State()
