"""The autograder's machinery: compare a student's function with the library's reference.

A lab asks the student to write small functions (`masked_mean`, `sft_loss`, ...). Each one is
described by a `GradedFunction`: where the reference lives, how to generate test cases (seeded
random tensors of varying shapes plus edge cases), how many points it is worth and what to say
when it is wrong. `check(name, fn)` runs those cases and prints one verdict per case family:

    masked_mean: random shapes (4 cases) ... ok
    masked_mean: all-zero mask ... FAILED: [values (2, 5) float32, mask (2, 5) float32 all zeros,
        dim=None] expected 0.0, got nan — divide by max(mask.sum(), 1) ...

Values AND (for differentiable functions) gradients w.r.t. the float inputs named in
`grad_wrt` are compared with a tolerance that depends on the dtype. `grade_notebook(path)` runs
a student's notebook without a kernel and grades every function of its lab
(`minimopd grade labs/lab01_sft.ipynb`).

This module holds no lab: each lab's cases live in `minimopd/grading/labNN.py` and register
themselves in `LABS` (see the package docstring for how to add one). `_rng` and
`_response_mask` are shared helpers for writing case generators.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import math
import os
import random
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

NOT_IMPLEMENTED = "not implemented yet: fill in the cell between the markers"
VISIBLE_SEEDS = (0,)
HIDDEN_SEEDS = (0, 1, 2, 3, 4, 5)
# (rtol, atol) per floating dtype; other dtypes are compared exactly.
TOLERANCES = {torch.float64: (1e-7, 1e-9), torch.float32: (1e-4, 1e-5),
              torch.float16: (1e-2, 1e-3), torch.bfloat16: (2e-2, 1e-2)}


@dataclass
class Case:
    """One call of the function under test: `fn(*args, **kwargs)`.

    `family` groups cases in the printed verdicts ("random shapes", "all-zero mask", ...);
    `hint` is shown when this case fails (unless `diagnose` finds something more specific);
    `desc` overrides the automatic description of the arguments.
    """
    family: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    hint: str = ""
    desc: str = ""


@dataclass
class GradedFunction:
    """A function a lab asks for, with its reference implementation and its test cases."""
    name: str
    reference: Callable | str
    cases: Callable[[int], list[Case]]
    points: float
    hint: str = ""
    grad_wrt: tuple[int, ...] = ()          # positional args whose gradients are compared
    output_names: tuple[str, ...] = ()      # names of the elements of a tuple output
    diagnose: Optional[Callable[[Case, Any, Any], Optional[str]]] = None
    compare: Optional[Callable[[Any, Any], Optional[str]]] = None  # default: compare_values

    def resolve(self) -> Callable:
        """The reference callable (imports a dotted path on first use)."""
        if callable(self.reference):
            return self.reference
        module, _, attr = self.reference.replace(":", ".").rpartition(".")
        return getattr(importlib.import_module(module), attr)


# --------------------------------------------------------------------------- comparison

def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x + 0.0:.6g}"  # + 0.0 turns -0.0 into 0
    return repr(x)


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ("," if t.dim() == 1 else "") + ")"


def compare_values(expected: Any, got: Any, path: str = "") -> Optional[str]:
    """None when `got` matches `expected` (recursively, dtype-aware tolerance), else why not."""
    where = f"{path}: " if path else ""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where}expected a torch.Tensor of shape {_shape(expected)}, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"{where}expected shape {_shape(expected)}, got shape {_shape(got)}"
        if got.dtype != expected.dtype:
            return f"{where}expected dtype {expected.dtype}, got {got.dtype}"
        exp, res = expected.detach().cpu(), got.detach().cpu()
        if not exp.is_floating_point():
            if torch.equal(exp, res):
                return None
            idx = tuple(int(i) for i in (exp != res).nonzero()[0])
            return f"{where}at index {idx} expected {exp[idx].item()}, got {res[idx].item()}"
        rtol, atol = TOLERANCES.get(exp.dtype, (1e-5, 1e-8))
        finite = exp[torch.isfinite(exp)]
        # Absolute error grows with the magnitude of what is computed (e.g. log-softmax of logits
        # of size 400 has ~1e-4 float32 noise even on entries near 0): scale atol with the tensor.
        atol *= max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
        if torch.allclose(res, exp, rtol=rtol, atol=atol, equal_nan=True):
            return None
        bad = ~torch.isclose(res, exp, rtol=rtol, atol=atol, equal_nan=True)
        if exp.dim() == 0:
            return f"{where}expected {_fmt(exp.item())}, got {_fmt(res.item())}"
        idx = tuple(int(i) for i in bad.nonzero()[0])
        return (f"{where}{int(bad.sum())} of {exp.numel()} values differ; at index {idx} "
                f"expected {_fmt(exp[idx].item())}, got {_fmt(res[idx].item())}")
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{where}expected a dict with keys {sorted(expected)}, got {type(got).__name__}"
        missing = [k for k in expected if k not in got]
        if missing:
            return f"{where}missing key(s) {missing}"
        for k in expected:
            msg = compare_values(expected[k], got[k], f"{path}[{k!r}]" if path else repr(k))
            if msg:
                return msg
        return None
    if isinstance(expected, (list, tuple)):
        if isinstance(got, torch.Tensor):
            got = got.tolist()
        if not isinstance(got, (list, tuple)):
            return f"{where}expected a {type(expected).__name__} of {len(expected)} items, got {type(got).__name__}"
        if all(isinstance(v, int) for v in expected) and all(isinstance(v, int) for v in got):
            if list(got) == list(expected):
                return None
            first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), None)
            lengths = f"expected {len(expected)} items, got {len(got)}" if len(got) != len(expected) else ""
            diff = (f"first difference at position {first}: expected {expected[first]}, got {got[first]}"
                    if first is not None else "")
            return where + "; ".join(s for s in (lengths, diff) if s)
        if len(got) != len(expected):
            return f"{where}expected {len(expected)} items, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            msg = compare_values(e, g, f"{path}[{i}]")
            if msg:
                return msg
        return None
    if isinstance(expected, float) and isinstance(got, (int, float)):
        if math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-8) or (math.isnan(got) and math.isnan(expected)):
            return None
        return f"{where}expected {_fmt(expected)}, got {_fmt(float(got))}"
    if got != expected:
        return f"{where}expected {expected!r}, got {got!r}"
    return None


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _float_tensors(x: Any) -> list[torch.Tensor]:
    """Every floating-point tensor inside an output (tensor, tuple/list, dict), in order."""
    if isinstance(x, torch.Tensor):
        return [x] if x.is_floating_point() else []
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _float_tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _float_tensors(v)]
    return []


def _describe(case: Case, names: list[str]) -> str:
    if case.desc:
        return f"[{case.desc}]"
    parts = []
    for i, a in enumerate(case.args):
        name = names[i] if i < len(names) else f"arg{i}"
        if isinstance(a, torch.Tensor):
            note = " all zeros" if a.numel() and not a.any() else ""
            parts.append(f"{name} {_shape(a)} {str(a.dtype).replace('torch.', '')}{note}")
        elif isinstance(a, str):
            parts.append(f"{name}={a[:24]!r}" + ("..." if len(a) > 24 else ""))
        elif isinstance(a, (list, tuple)):
            parts.append(f"{name}: {len(a)} items")
        elif isinstance(a, (int, float, bool, type(None))):
            parts.append(f"{name}={a!r}")
        else:
            parts.append(name)
    parts += [f"{k} {_shape(v)} {str(v.dtype).replace('torch.', '')}" if isinstance(v, torch.Tensor)
              else f"{k}={v!r}" for k, v in case.kwargs.items()]
    return "[" + ", ".join(parts) + "]"


# --------------------------------------------------------------------------- checking

LABS: dict[str, list[GradedFunction]] = {}


def find(name: str, lab: Optional[str] = None) -> GradedFunction:
    """The registered `GradedFunction` called `name` (in `lab`, or in any lab)."""
    labs = [lab] if lab else list(LABS)
    for key in labs:
        for gf in LABS.get(key, []):
            if gf.name == name:
                return gf
    raise KeyError(f"no graded function {name!r}" + (f" in {lab}" if lab else "")
                   + f"; known: {sorted({g.name for k in labs for g in LABS.get(k, [])})}")


class _NotImplemented(Exception):
    pass


_GRADER_DIR = os.path.dirname(os.path.abspath(__file__))


def _in_grader(filename: str) -> bool:
    """Is this traceback frame the grader's own code (not the student's, not the reference's)?"""
    return os.path.dirname(os.path.abspath(filename)) == _GRADER_DIR


def _call(fn: Callable, case: Case, args: tuple) -> Any:
    try:
        return fn(*args, **case.kwargs)
    except NotImplementedError:
        raise _NotImplemented() from None


def _run_case(gf: GradedFunction, ref: Callable, fn: Callable, case: Case, seed: int,
              names: list[str]) -> Optional[str]:
    """None if `fn` passes `case`, else the feedback line (without the function name)."""
    def fail(msg: str, expected: Any = None, got: Any = None, hint: Optional[str] = None) -> str:
        if hint is None and gf.diagnose is not None and got is not None:
            try:
                hint = gf.diagnose(case, expected, got)
            except Exception:  # a diagnosis must never hide the real failure
                hint = None
        hint = hint or case.hint or gf.hint
        return f"{_describe(case, names)} {msg}" + (f" — {hint}" if hint else "")

    expected = ref(*_clone(case.args), **case.kwargs)
    args = _clone(case.args)
    try:
        got = _call(fn, case, args)
    except _NotImplemented:
        raise
    except Exception as exc:  # the student's code crashed: say where
        tb = traceback.extract_tb(exc.__traceback__)
        line = next((f" (line {fr.lineno}: {fr.line})" for fr in reversed(tb)
                     if not _in_grader(fr.filename) and fr.line), "")
        return fail(f"raised {type(exc).__name__}: {exc}{line}")
    compare = gf.compare or compare_values
    if gf.output_names and isinstance(expected, tuple) and isinstance(got, (tuple, list)) \
            and len(got) == len(expected):
        msg = next((m for e, g, n in zip(expected, got, gf.output_names) if (m := compare(e, g, n))), None)
    else:
        msg = compare(expected, got)
    if msg:
        return fail(msg, expected, got)
    for i, (before, after) in enumerate(zip(case.args, args)):
        if isinstance(before, torch.Tensor) and not torch.equal(before, after.detach()):
            name = names[i] if i < len(names) else f"argument {i}"
            return fail(f"modified its input `{name}` in place",
                        hint="work on a copy (x = x * mask, not x *= mask or x.masked_fill_)")
    if gf.grad_wrt:
        return _grad_case(gf, ref, fn, case, seed, names, fail)
    return None


def _grad_case(gf, ref, fn, case, seed, names, fail) -> Optional[str]:
    def run(f):
        leaves, args = {}, list(_clone(case.args))
        for i in gf.grad_wrt:
            leaves[i] = args[i].requires_grad_(True)
            args[i] = leaves[i].clone()  # non-leaf, like a model's output
        return leaves, _call(f, case, tuple(args))

    ref_args, ref_out = run(ref)
    try:
        stu_args, stu_out = run(fn)
    except _NotImplemented:
        raise
    except Exception as exc:
        return fail(f"raised {type(exc).__name__} when its input requires grad: {exc}",
                    hint="avoid in-place ops (x *= m, masked_fill_) on tensors autograd needs")
    # Backpropagate a fixed random weighting of every differentiable output tensor (a tuple or
    # dict output contributes all its tensors; the values already matched, so structures agree).
    gen = torch.Generator().manual_seed(10_000 + seed)
    ref_t = [t for t in _float_tensors(ref_out) if t.requires_grad]
    stu_t = [t for t in _float_tensors(stu_out) if t.requires_grad]
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in ref_t]
    arg_names = ", ".join(f"`{names[i]}`" if i < len(names) else f"argument {i}" for i in gf.grad_wrt)
    if len(stu_t) < len(ref_t) or any(t.grad_fn is None for t in stu_t):
        return fail(f"the output is not differentiable w.r.t. {arg_names}",
                    hint="no .detach(), .item(), .tolist() or torch.tensor(...) on the way: the loss must "
                         "backpropagate")
    if not ref_t:
        return None
    sum((t * w.to(t.dtype)).sum() for t, w in zip(ref_t, weights)).backward()
    sum((t * w.to(t.dtype)).sum() for t, w in zip(stu_t, weights)).backward()
    for i in gf.grad_wrt:
        name = names[i] if i < len(names) else f"argument {i}"
        expected = ref_args[i].grad if ref_args[i].grad is not None else torch.zeros_like(ref_args[i])
        got = stu_args[i].grad if stu_args[i].grad is not None else torch.zeros_like(stu_args[i])
        msg = compare_values(expected, got, f"gradient w.r.t. `{name}`")
        if msg:
            return fail(msg, hint="the values match but the gradients do not: a masked or detached term "
                                  "leaks into (or is cut out of) the backward pass")
    return None


def _run(gf: GradedFunction, fn: Callable, seeds: tuple[int, ...], out=None) -> tuple[list[str], list[str]]:
    """Run every case; print a verdict per family; return (verdict lines, failure messages)."""
    out = out or sys.stdout
    ref = gf.resolve()
    try:
        names = list(inspect.signature(ref).parameters)
    except (TypeError, ValueError):
        names = []
    families: dict[str, list[Optional[str]]] = {}
    for seed in seeds:
        for case in gf.cases(seed):
            families.setdefault(case.family, []).append(_run_case(gf, ref, fn, case, seed, names))
    lines, failures = [], []
    for family, results in families.items():
        bad = [r for r in results if r]
        if bad:
            line = f"{gf.name}: {family} ... FAILED ({len(bad)}/{len(results)} cases): {bad[0]}"
            failures.append(f"{gf.name}: {family} {bad[0]}")
        else:
            line = f"{gf.name}: {family} ({len(results)} case{'s' * (len(results) > 1)}) ... ok"
        lines.append(line)
        print(line, file=out)
    return lines, failures


def check(name: str, fn: Callable, *, lab: Optional[str] = None, hidden: bool = False) -> float:
    """Compare `fn` with the reference of the graded function `name`; return its points.

    Prints one verdict per case family and raises `AssertionError` with the first failure's
    feedback if any case fails. `hidden=True` runs more random seeds (the autograder's run).
    """
    gf = find(name, lab)
    if not callable(fn):
        raise AssertionError(f"{name}: expected a function, got {type(fn).__name__}")
    try:
        _, failures = _run(gf, fn, HIDDEN_SEEDS if hidden else VISIBLE_SEEDS)
    except _NotImplemented:
        msg = f"{name}: {NOT_IMPLEMENTED} (replace `raise NotImplementedError()` with your code)"
        print(msg)
        raise AssertionError(msg) from None
    if failures:
        print(f"{name}: {len(failures)} case famil{'ies' if len(failures) > 1 else 'y'} failed — 0/{gf.points:g} points")
        raise AssertionError(failures[0])
    print(f"{name}: all {'hidden' if hidden else 'visible'} tests passed — {gf.points:g}/{gf.points:g} points")
    return float(gf.points)


# --------------------------------------------------------------------------- notebooks

@dataclass
class FunctionGrade:
    name: str
    points: float
    max_points: float
    feedback: str          # "ok" or the first failure
    log: str = ""          # every verdict line printed by check()


@dataclass
class GradeReport:
    notebook: str
    lab: str
    results: list[FunctionGrade]
    cell_errors: list[str] = field(default_factory=list)

    @property
    def points(self) -> dict[str, float]:
        return {r.name: r.points for r in self.results}

    @property
    def feedback(self) -> dict[str, str]:
        return {r.name: r.feedback for r in self.results}

    @property
    def total(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max(self) -> float:
        return sum(r.max_points for r in self.results)

    @property
    def full_marks(self) -> bool:
        return bool(self.results) and self.total == self.max

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.results] + [8])
        lines = [f"{self.lab} — {self.notebook}", "",
                 f"  {'function':<{width}}  {'points':>7}  result", f"  {'-' * (width + 40)}"]
        for r in self.results:
            short = r.feedback.removeprefix(f"{r.name}: ")
            if r.points == r.max_points:
                short = "ok"
            elif short.startswith(NOT_IMPLEMENTED):
                short = "not implemented yet"
            elif short.startswith(("not defined", "grading error")):
                short = short.split(" — ")[0].split(":")[0]
            else:
                short = "failed: " + short.split(" [")[0]
            if len(short) > 60:
                short = short[:57] + "..."
            lines.append(f"  {r.name:<{width}}  {r.points:>3g} / {r.max_points:<2g} {short}")
        lines += [f"  {'-' * (width + 40)}", f"  {'total':<{width}}  {self.total:>3g} / {self.max:<2g}"]
        if self.cell_errors:
            lines += ["", "cells that raised an error (grading went on):"]
            lines += [f"  {e}" for e in self.cell_errors]
        failed = [r for r in self.results if r.points < r.max_points]
        if failed:
            lines += ["", "feedback:"] + [f"  {r.feedback}" for r in failed]
        return "\n".join(lines)


def lab_of(path: str) -> str:
    """'labs/lab01_sft.ipynb' -> 'lab01'."""
    m = re.match(r"(lab\d+)", os.path.basename(path))
    if not m:
        raise ValueError(f"cannot tell the lab from the file name {path!r}: expected labNN_*.ipynb "
                         "(or pass lab='labNN')")
    return m.group(1)


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _is_test_cell(cell) -> bool:
    meta = _nbgrader(cell)
    return bool(meta.get("grade")) and not meta.get("solution")


def _runnable_source(source: str) -> str:
    """Cell source without IPython magics / shell escapes (comment them out, keep line numbers)."""
    return "\n".join(("# " + line) if line.lstrip().startswith(("%", "!")) else line
                     for line in source.split("\n"))


def execute_notebook(path: str) -> tuple[dict, list[str]]:
    """exec() the notebook's code cells up to its last graded (solution) cell, skipping test cells.

    Returns the namespace and a list of "cell N: error" strings for cells that raised.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    graded = [i for i, c in enumerate(cells) if c.cell_type == "code" and _nbgrader(c).get("solution")]
    last = graded[-1] if graded else len(cells) - 1
    ns: dict[str, Any] = {"__name__": "__main__"}
    with contextlib.suppress(ImportError):
        from IPython.display import display
        ns["display"] = display
    errors = []
    here = os.getcwd()
    sink = io.StringIO()
    try:
        os.chdir(os.path.dirname(os.path.abspath(path)))
        for i, cell in enumerate(cells[: last + 1]):
            if cell.cell_type != "code" or _is_test_cell(cell) or cell.source.lstrip().startswith(("%", "!")):
                continue
            label = _nbgrader(cell).get("grade_id") or cell.get("id") or ""
            try:
                code = compile(_runnable_source(cell.source), f"<cell {i}{' ' + label if label else ''}>", "exec")
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    exec(code, ns)
            except BaseException as exc:  # noqa: BLE001 - a student's cell may raise anything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                why = ("NotImplementedError (it uses a function that is not implemented yet)"
                       if isinstance(exc, NotImplementedError) else f"{type(exc).__name__}: {exc}")
                errors.append(f"cell {i}{f' ({label})' if label else ''}: {why}")
    finally:
        os.chdir(here)
    return ns, errors


def grade_notebook(path: str, *, lab: Optional[str] = None) -> GradeReport:
    """Run a lab notebook (no kernel) and grade every function of its lab on the hidden cases."""
    lab = lab or lab_of(path)
    if lab not in LABS:
        raise ValueError(f"no autograder for {lab!r}; known labs: {sorted(LABS)}")
    ns, errors = execute_notebook(path)
    results = []
    for gf in LABS[lab]:
        fn = ns.get(gf.name)
        log = io.StringIO()
        if not callable(fn):
            results.append(FunctionGrade(gf.name, 0.0, gf.points,
                                         f"{gf.name}: not defined — run the cell that defines `{gf.name}` "
                                         "and keep its name and signature"))
            continue
        try:
            with contextlib.redirect_stdout(log):
                pts = check(gf.name, fn, lab=lab, hidden=True)
            results.append(FunctionGrade(gf.name, pts, gf.points, "ok", log.getvalue()))
        except AssertionError as exc:
            results.append(FunctionGrade(gf.name, 0.0, gf.points, str(exc), log.getvalue()))
        except Exception as exc:  # noqa: BLE001 - e.g. a reference that cannot be imported
            results.append(FunctionGrade(gf.name, 0.0, gf.points,
                                         f"{gf.name}: grading error {type(exc).__name__}: {exc}", log.getvalue()))
    return GradeReport(notebook=str(path), lab=lab, results=results, cell_errors=errors)


def main(argv: Optional[list[str]] = None) -> int:
    """`minimopd grade NOTEBOOK [--lab labNN]`: print the report; 0 on full marks, else 1."""
    parser = argparse.ArgumentParser(prog="minimopd grade", description="Grade a lab notebook.")
    parser.add_argument("notebook", help="path to a lab notebook, e.g. labs/lab01_sft.ipynb")
    parser.add_argument("--lab", help="lab id (default: from the file name, labNN_*.ipynb)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case family's verdict")
    args = parser.parse_args(argv)
    if not os.path.exists(args.notebook):
        print(f"minimopd grade: no such notebook: {args.notebook}", file=sys.stderr)
        return 2
    try:
        report = grade_notebook(args.notebook, lab=args.lab)
    except ValueError as exc:
        print(f"minimopd grade: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        for r in report.results:
            print(r.log.rstrip() or f"{r.name}: {r.feedback}")
        print()
    print(report)
    return 0 if report.full_marks else 1


# --------------------------------------------------------------------------- case helpers

def _rng(seed: int) -> tuple[random.Random, torch.Generator]:
    """A seeded `random.Random` and `torch.Generator`: every case generator starts here."""
    return random.Random(seed), torch.Generator().manual_seed(seed)


def _response_mask(r: random.Random, B: int, T: int, *, min_len: int = 1) -> torch.Tensor:
    """(B, T) float masks shaped like SFT batches: prompt zeros, response ones, padding zeros."""
    mask = torch.zeros(B, T)
    for b in range(B):
        start = r.randint(0, T - min_len)
        end = r.randint(start + min_len, T)
        mask[b, start:end] = 1.0
    return mask
