"""The student's side of grading: run a notebook's cells and call its functions on the cases.

Everything here may run next to hostile code, so it only *collects* what the student's
function did — its output, the error it raised (with the notebook cell and line), its inputs
after the call, the gradients it produced, whether it called the library's own implementation —
as plain data (`codec`). The verdict is computed elsewhere (`engine.verdict`), from that data,
in a process the student's code never ran in (`sandbox`).
"""
from __future__ import annotations

import contextlib
import io
import linecache
import os
import sys
import traceback
from typing import Any, Callable, Optional

import torch

from .compare import _clone, _float_tensors

_GRADER_DIR = os.path.dirname(os.path.abspath(__file__))
GRAD_WEIGHT_SEED = 10_000   # + case seed: the random weighting of the outputs for the gradient check


def _in_grader(filename: str) -> bool:
    """Is this traceback frame the grader's own code (not the student's, not the reference's)?"""
    return os.path.dirname(os.path.abspath(filename)) == _GRADER_DIR


def where(exc: BaseException) -> str:
    """'cell 7 (impl-masked-mean), line 3: `return x / n`' for the student's innermost frame."""
    frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if not _in_grader(fr.filename)]
    cells = [fr for fr in frames if fr.filename.startswith("<cell ")]
    frame = (cells or frames or [None])[-1]
    if frame is None:
        return ""
    place = frame.filename.strip("<>") if frame.filename.startswith("<") else os.path.basename(frame.filename)
    code = f": `{frame.line.strip()}`" if frame.line else ""
    return f"{place}, line {frame.lineno}{code}"


def error_record(exc: BaseException) -> dict:
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ raises
        message = "<unprintable message>"
    return {"type": type(exc).__name__, "message": message[:500], "where": where(exc),
            "not_implemented": isinstance(exc, NotImplementedError)}


# --------------------------------------------------------------------------- the library tripwire

class Tripwire:
    """Counts calls of the library's own implementation of each graded function while that
    function is being graded. Installed before any student code runs, so every later
    `from minimopd.losses import token_logprobs` binds the counting wrapper."""

    def __init__(self):
        self.active: Optional[str] = None
        self.calls: dict[str, int] = {}

    def install(self, forbidden: dict[str, tuple[str, ...]]) -> None:
        """`forbidden`: graded function name -> dotted paths of the library functions it must not call."""
        import importlib

        for name, paths in forbidden.items():
            for path in paths:
                module, _, attr = path.rpartition(".")
                original = getattr(importlib.import_module(module), attr)
                wrapper = self._wrap(name, original)
                for mod in list(sys.modules.values()):
                    if getattr(mod, "__name__", "").startswith("minimopd") and getattr(mod, attr, None) is original:
                        setattr(mod, attr, wrapper)

    def _wrap(self, name: str, original: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            if self.active == name:
                self.calls[name] = self.calls.get(name, 0) + 1
            return original(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = original.__name__, original.__doc__
        wrapper.__qualname__, wrapper.__module__ = original.__qualname__, original.__module__
        return wrapper

    @contextlib.contextmanager
    def watching(self, name: str):
        self.active = name
        try:
            yield
        finally:
            self.active = None


# --------------------------------------------------------------------------- one case

def run_case(fn: Callable, case, seed: int, grad_wrt: tuple[int, ...] = (), n_ref_outputs: int = 0) -> dict:
    """Call `fn` on `case` (and again with gradients if `grad_wrt`); return what it did.

    Keys: `value` (its output) or `error` (an `error_record`); `args_after` (the tensor inputs
    after the call, to detect in-place changes); `grad`: None, or `error`, or `n_diff` (how many
    float outputs require grad), `leaf` (one of them has no grad_fn) and `grads` (per argument
    index, the gradient of a fixed random weighting of the first `n_ref_outputs` such outputs).
    """
    args = _clone(case.args)
    out: dict[str, Any] = {"grad": None}
    try:
        out["value"] = fn(*args, **case.kwargs)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
        out["error"] = error_record(exc)
        return out
    out["args_after"] = [a if isinstance(a, torch.Tensor) else None for a in args]
    if grad_wrt:
        out["grad"] = _grad_run(fn, case, seed, grad_wrt, n_ref_outputs)
    return out


def grad_inputs(case, grad_wrt: tuple[int, ...]) -> tuple[dict, list]:
    """Copies of the case's arguments where those in `grad_wrt` require grad: (leaves, args);
    the function sees non-leaf views of the leaves, like a model's outputs."""
    leaves, args = {}, list(_clone(case.args))
    for i in grad_wrt:
        leaves[i] = args[i].requires_grad_(True)
        args[i] = leaves[i].clone()
    return leaves, args


def backprop_weighted(outputs: list, seed: int) -> None:
    """Backpropagate a fixed random weighting of `outputs` (the same draws for the reference's
    outputs and the student's, so their gradients can be compared)."""
    gen = torch.Generator().manual_seed(GRAD_WEIGHT_SEED + seed)
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in outputs]
    sum((t * w.to(t.dtype)).sum() for t, w in zip(outputs, weights)).backward()


def leaf_grads(leaves: dict) -> dict:
    return {i: (t.grad if t.grad is not None else torch.zeros_like(t)) for i, t in leaves.items()}


def _grad_run(fn, case, seed, grad_wrt, n_ref_outputs) -> dict:
    leaves, args = grad_inputs(case, grad_wrt)
    try:
        result = fn(*args, **case.kwargs)
        outs = [t for t in _float_tensors(result) if t.requires_grad]
        info = {"n_diff": len(outs), "leaf": any(t.grad_fn is None for t in outs)}
        if info["leaf"] or len(outs) < n_ref_outputs or not n_ref_outputs:
            return info
        backprop_weighted(outs[:n_ref_outputs], seed)
    except BaseException as exc:  # noqa: BLE001
        return {"error": error_record(exc)}
    info["grads"] = {str(i): g for i, g in leaf_grads(leaves).items()}
    return info


# --------------------------------------------------------------------------- notebooks

def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _is_test_cell(cell) -> bool:
    meta = _nbgrader(cell)
    return bool(meta.get("grade")) and not meta.get("solution")


def _runnable_source(source: str) -> str:
    """Cell source without IPython magics / shell escapes (comment them out, keep line numbers)."""
    return "\n".join(("# " + line) if line.lstrip().startswith(("%", "!")) else line
                     for line in source.split("\n"))


def notebook_cells(path: str) -> list[tuple[int, str, str]]:
    """The cells the grader runs: (index, label, source) of every code cell up to the last graded
    (solution) cell, without the test cells and without cells that are only a magic."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    graded = [i for i, c in enumerate(cells) if c.cell_type == "code" and _nbgrader(c).get("solution")]
    last = graded[-1] if graded else len(cells) - 1
    return [(i, _nbgrader(c).get("grade_id") or "", c.source)
            for i, c in enumerate(cells[: last + 1])
            if c.cell_type == "code" and not _is_test_cell(c) and not c.source.lstrip().startswith(("%", "!"))]


def cell_name(index: int, label: str) -> str:
    return f"cell {index}" + (f" ({label})" if label else "")


def run_cell(index: int, label: str, source: str, ns: dict) -> Optional[str]:
    """exec one cell in `ns` (its source registered so tracebacks show its lines); None, or the
    "cell N (label): Error: message" line if it raised (anything, exits included)."""
    filename = f"<{cell_name(index, label)}>"
    code_text = _runnable_source(source)
    linecache.cache[filename] = (len(code_text), None, code_text.splitlines(True), filename)
    sink = io.StringIO()
    try:
        code = compile(code_text, filename, "exec")
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            exec(code, ns)
    except BaseException as exc:  # noqa: BLE001 - a student's cell may raise anything
        if isinstance(exc, NotImplementedError):
            why = "NotImplementedError (it uses a function that is not implemented yet)"
        else:
            at = where(exc)
            message = error_record(exc)["message"]
            why = f"{type(exc).__name__}" + (f": {message}" if message else "") \
                + (f" ({at.split(', ', 1)[-1]})" if at else "")
        return f"{cell_name(index, label)}: {why}"
    return None


def execute_notebook(path: str, skip: frozenset = frozenset(), on_cell: Optional[Callable] = None
                     ) -> tuple[dict, list[str]]:
    """Run the notebook's cells (`notebook_cells`) in a fresh namespace, in its directory.

    Returns the namespace and a list of "cell N: error" strings for cells that raised. Runs the
    student's code in *this* process: the grader calls it only inside the sandbox."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    with contextlib.suppress(ImportError):
        from IPython.display import display
        ns["display"] = display
    errors = []
    here = os.getcwd()
    try:
        os.chdir(os.path.dirname(os.path.abspath(path)))
        for index, label, source in notebook_cells(path):
            if index in skip:
                continue
            if on_cell is not None:
                on_cell(index)
            err = run_cell(index, label, source, ns)
            if err:
                errors.append(err)
    finally:
        os.chdir(here)
    return ns, errors
