"""Student code runs here, in a child process with time limits; verdicts stay in the grader.

    results, cell_errors = run_isolated("labs/lab01_sft.ipynb", "lab01", ["masked_mean", ...],
                                        seeds=HIDDEN_SEEDS, n_ref_outputs={...})

The child (`python -m minimopd.grading.sandbox JOBDIR`) imports the grading package, builds the
cases from their seeds *before* any student code runs, sets a tripwire on the library's own
implementation of each graded function, runs the notebook's cells, then calls each function on
its cases (`student.run_case`) and writes what happened to JOBDIR (`codec`: JSON + safetensors,
never pickle). It announces each step on a status pipe: `cell N`, `fn NAME`, `done NAME`.

The parent (the grader) reads those lines with deadlines. A cell that hangs or ends the process
is skipped on a restart and reported; a function that hangs, exits (`sys.exit`, `os._exit`, a
signal) or crashes the interpreter gets 0 points with a message saying which, and grading goes
on with the others in a fresh child. Whatever the student's code patches (the grader's
`check`, `torch.allclose`, ...) is patched in the child only, whose verdicts are not trusted:
the parent compares the returned values with the reference itself.

This stops accidents and the usual tricks; it is not a security boundary against a student who
attacks the grading machine (run untrusted submissions in a container for that).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from . import codec

FUNCTION_TIME_LIMIT = 60.0     # seconds for all the cases of one function
NOTEBOOK_TIME_LIMIT = 300.0    # seconds for the cells before the graded functions run


@dataclass
class Outcome:
    """What the child reported for one graded function: per case, `student.run_case`'s record;
    or `failure` (it hung, exited, was not defined, used the library's own implementation)."""
    cases: list = field(default_factory=list)
    failure: Optional[str] = None
    reference_calls: int = 0      # calls of the library's own implementation while graded
    origin: str = ""              # module.qualname of the student's function


# --------------------------------------------------------------------------- the child

def _child(jobdir: str) -> int:
    status_fd = int(os.environ["MINIMOPD_GRADING_STATUS_FD"])

    def say(line: str) -> None:
        os.write(status_fd, (line + "\n").encode())

    with open(os.path.join(jobdir, "job.json")) as f:
        job = json.load(f)
    import importlib.util

    from . import LABS, find
    from .student import Tripwire, execute_notebook, run_case
    for i, spec_file in enumerate(job["spec_files"]):   # labs registered outside the package
        spec = importlib.util.spec_from_file_location(f"_minimopd_lab_spec_{i}", spec_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    lab = job["lab"]
    if lab not in LABS:
        say(f"error no autograder for {lab!r}")
        return 3
    gfs = [find(name, lab) for name in job["functions"]]
    cases = {gf.name: [(seed, c) for seed in job["seeds"] for c in gf.cases(seed)] for gf in gfs}
    tripwire = Tripwire()
    tripwire.install({gf.name: gf.forbidden() for gf in gfs})   # imports the library modules first
    say("cells")
    ns, errors = execute_notebook(job["notebook"], frozenset(job["skip_cells"]),
                                  on_cell=lambda i: say(f"cell {i}"))
    with open(os.path.join(jobdir, "cells.json"), "w") as f:
        json.dump(errors, f)
    say("functions")
    for gf in gfs:
        say(f"fn {gf.name}")
        fn = ns.get(gf.name)
        record: dict = {"defined": callable(fn), "cases": []}
        if callable(fn):
            n_ref = job["n_ref_outputs"].get(gf.name, [])
            with tripwire.watching(gf.name):
                for k, (seed, case) in enumerate(cases[gf.name]):
                    record["cases"].append(run_case(fn, case, seed, gf.grad_wrt, n_ref[k] if k < len(n_ref) else 0))
                    if record["cases"][-1].get("error", {}).get("not_implemented"):
                        break   # one NotImplementedError says it all
            record["reference_calls"] = tripwire.calls.get(gf.name, 0)
            record["origin"] = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', '?')}"
        codec.write(os.path.join(jobdir, f"fn_{gf.name}"), record)
        say(f"done {gf.name}")
    return 0


# --------------------------------------------------------------------------- the parent

def _spec_files(lab_functions) -> list[str]:
    """Source files of labs registered outside this package (a child must import them too)."""
    import inspect

    here = os.path.dirname(os.path.abspath(__file__))
    files = []
    for gf in lab_functions:
        try:
            path = os.path.abspath(inspect.getsourcefile(gf.cases))
        except TypeError:
            continue
        if os.path.dirname(path) != here and path not in files:
            files.append(path)
    return files


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _exit_reason(proc: subprocess.Popen) -> str:
    rc = proc.returncode
    if rc is not None and rc < 0:
        try:
            return f"was killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"ended the process (exit code {rc}: sys.exit, os._exit or a fatal error)"


def run_isolated(notebook: str, lab: str, functions: list[str], *, seeds, n_ref_outputs: dict,
                 lab_functions, time_limit: float = FUNCTION_TIME_LIMIT,
                 notebook_time_limit: float = NOTEBOOK_TIME_LIMIT) -> tuple[dict[str, Outcome], list[str]]:
    """Grade `functions` of `notebook` in child processes; return per function its `Outcome`
    and the cells that raised (or hung, or exited: those are skipped and the child restarted)."""
    if os.name != "posix":
        raise ValueError("minimopd grade runs student code in a POSIX child process (Linux, macOS); "
                         "on Windows use WSL, or nbgrader's autograde (see the README)")
    pending, outcomes, skip, skipped_notes = list(functions), {}, [], []
    spec_files = _spec_files(lab_functions)
    cell_errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="minimopd-grade-") as jobdir:
        attempts = 0
        while pending:
            attempts += 1
            if attempts > len(functions) + 50:     # cannot happen: every restart makes progress
                for name in pending:
                    outcomes[name] = Outcome(failure="grading error: the grader restarted too often")
                break
            job = {"notebook": os.path.abspath(notebook), "lab": lab, "functions": pending,
                   "seeds": list(seeds), "skip_cells": skip, "n_ref_outputs": n_ref_outputs,
                   "spec_files": spec_files}
            with open(os.path.join(jobdir, "job.json"), "w") as f:
                json.dump(job, f)
            if os.path.exists(os.path.join(jobdir, "cells.json")):
                os.remove(os.path.join(jobdir, "cells.json"))
            read_fd, write_fd = os.pipe()
            env = dict(os.environ, MINIMOPD_GRADING_STATUS_FD=str(write_fd), PYTHONWARNINGS="ignore",
                       MINIMOPD_THREADS=os.environ.get("MINIMOPD_THREADS", "1"))
            with open(os.path.join(jobdir, "child.log"), "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "minimopd.grading.sandbox", jobdir],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                        pass_fds=(write_fd,), start_new_session=True,
                                        cwd=os.path.dirname(os.path.abspath(notebook)) or ".")
            os.close(write_fd)
            phase, current, buffer = "start", None, b""
            deadline = time.monotonic() + notebook_time_limit + 60   # imports included
            cells_deadline = None
            ended = None     # None: clean end of stream; "timeout"
            with os.fdopen(read_fd, "rb", buffering=0) as status:
                while True:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        ended = "timeout"
                        break
                    ready, _, _ = select.select([status], [], [], wait)
                    if not ready:
                        continue
                    chunk = status.read(65536)
                    if not chunk:
                        break
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        word, _, arg = line.decode(errors="replace").partition(" ")
                        if word == "cells":
                            phase, cells_deadline = "cells", time.monotonic() + notebook_time_limit
                            deadline = cells_deadline
                        elif word == "cell" and phase == "cells":
                            current = int(arg)
                        elif word == "functions":
                            phase, current = "functions", None
                        elif word == "fn" and arg in pending:
                            phase, current = "function", arg
                            deadline = time.monotonic() + time_limit
                        elif word == "done" and arg == current:
                            outcomes[arg] = _read_outcome(os.path.join(jobdir, f"fn_{arg}"))
                            pending.remove(arg)
                            phase, current = "functions", None
                            deadline = time.monotonic() + time_limit
                        elif word == "error":
                            for name in pending:
                                outcomes[name] = Outcome(failure=f"grading error: {arg}")
                            pending = []
            if ended == "timeout":
                _kill(proc)
            else:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _kill(proc)
            if os.path.exists(os.path.join(jobdir, "cells.json")):
                with open(os.path.join(jobdir, "cells.json")) as f:
                    cell_errors = json.load(f)
            if not pending:
                break
            why = (f"did not finish within {time_limit if phase == 'function' else notebook_time_limit:g} s"
                   if ended == "timeout" else _exit_reason(proc))
            if phase == "function" and current in pending:
                outcomes[current] = Outcome(failure=f"{why} while being graded (an endless loop, sys.exit, "
                                                    f"os._exit or a crash in `{current}`?)")
                pending.remove(current)
            elif phase == "cells" and current is not None:
                from .student import cell_name, notebook_cells
                labels = {i: lab for i, lab, _ in notebook_cells(notebook)}
                skip.append(current)
                skipped_notes.append(f"{cell_name(current, labels.get(current, ''))}: {why}; the grader skipped it")
            else:   # the child failed before the notebook ran: nothing to retry
                with open(os.path.join(jobdir, "child.log"), "rb") as f:
                    tail = f.read()[-1500:].decode(errors="replace").strip().splitlines()
                for name in pending:
                    outcomes[name] = Outcome(failure="grading error: the grading process " + why
                                             + (f": {tail[-1]}" if tail else ""))
                pending = []
    return outcomes, sorted(cell_errors + skipped_notes, key=lambda s: int(s.split()[1].rstrip(":")))


def _read_outcome(path: str) -> Outcome:
    try:
        record = codec.read(path)
    except Exception as exc:  # noqa: BLE001 - a result the student's code tampered with
        return Outcome(failure=f"grading error: unreadable result ({type(exc).__name__})")
    if not record.get("defined"):
        return Outcome(failure="not defined")
    return Outcome(cases=record["cases"], reference_calls=int(record.get("reference_calls", 0)),
                   origin=str(record.get("origin", "")))


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
