"""The labs' autograder: compare a student's function with the library's reference.

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

Adding a lab (the registry is the extension point)
--------------------------------------------------
Write a case generator `seed -> list[Case]` (use `_rng(seed)` for a seeded `random.Random` and
`torch.Generator`, and give every edge case its own family name so feedback names it), then:

    LABS["lab04"] = [
        GradedFunction("dpo_loss", "minimopd.losses.dpo_loss", cases=_dpo_cases, points=4,
                       grad_wrt=(0, 1), hint="...", diagnose=_diagnose_dpo),
    ]

`reference` may be a callable or a dotted path resolved only when the function is checked, so
registering a lab never imports torch-heavy modules. `diagnose(case, expected, got)` is
optional: it recognises classic bugs (unshifted log-probs, a missing mask, ...) and returns a
targeted hint; otherwise the case's own hint, then the function's hint, is shown. A lab notebook
`solutions/labNN_*.ipynb` whose graded cells define functions with these names is then graded
by `grade_notebook` with no further code.
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
from functools import lru_cache
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
    parts += [f"{k}={v!r}" for k, v in case.kwargs.items()]
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
                     if not fr.filename.endswith(("grading.py",)) and fr.line), "")
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


# --------------------------------------------------------------------------- lab 01: SFT

def _rng(seed: int) -> tuple[random.Random, torch.Generator]:
    return random.Random(seed), torch.Generator().manual_seed(seed)


@lru_cache(maxsize=1)
def _tokenizer():
    from .tokenizer import build_tokenizer
    return build_tokenizer()


def _text(r: random.Random, lo: int, hi: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789+-*=?., "
    return "".join(r.choice(alphabet) for _ in range(r.randint(lo, hi)))


def _response_mask(r: random.Random, B: int, T: int, *, min_len: int = 1) -> torch.Tensor:
    """(B, T) float masks shaped like SFT batches: prompt zeros, response ones, padding zeros."""
    mask = torch.zeros(B, T)
    for b in range(B):
        start = r.randint(0, T - min_len)
        end = r.randint(start + min_len, T)
        mask[b, start:end] = 1.0
    return mask


def _sft_example_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    tok = _tokenizer()
    cases = [Case("chat examples", (tok, _text(r, 1, 20), _text(r, 1, 12))) for _ in range(3)]
    cases.append(Case("empty response", (tok, _text(r, 1, 10), ""),
                      hint="an empty response still ends with <|end|> (mask 1): the model learns to stop"))
    cases.append(Case("empty prompt", (tok, "", _text(r, 1, 8))))
    cases.append(Case("newlines and spaces", (tok, "sort: 3 1 2\n", " 1 2 3\n")))
    return cases


def _diagnose_sft_example(case: Case, expected, got) -> Optional[str]:
    tok, _, response = case.args
    exp_ids, exp_mask = expected
    ids, mask = [list(x.tolist() if isinstance(x, torch.Tensor) else x) for x in got]
    if ids == exp_ids[:-1]:
        return ("append the end-of-turn token tokenizer.eos_token_id (<|end|>) after the response, "
                "with mask 1 — the model must learn when to stop")
    if len(ids) != len(mask):
        return f"input_ids and loss_mask must have the same length (got {len(ids)} and {len(mask)})"
    if ids == exp_ids and mask and mask[-1] == 0 and exp_mask[-1] == 1:
        return "the final <|end|> is a response token too: give it mask 1"
    if ids == exp_ids and any(m and not e for m, e in zip(mask, exp_mask)):
        return ("only the response (and its <|end|>) gets mask 1; the prompt part "
                "chat_prompt(tokenizer, prompt) gets 0")
    if ids != exp_ids:
        return ("build the text as chat_prompt(tokenizer, prompt) + response + <|end|>, tokenized with "
                "add_special_tokens=False: '<|user|>{prompt}<|end|><|assistant|>{response}<|end|>'")
    return None


def _collate_examples(r: random.Random, n: int, lengths: list[int]) -> list:
    out = []
    for L in lengths[:n]:
        ids = [r.randint(5, 104) for _ in range(L)]
        cut = r.randint(0, L - 1)
        out.append((ids, [0] * cut + [1] * (L - cut)))
    return out


def _collate_cases(seed: int) -> list[Case]:
    r, _ = _rng(seed)
    cases = []
    for _ in range(2):
        B = r.randint(2, 5)
        cases.append(Case("ragged batch", (_collate_examples(r, B, [r.randint(1, 12) for _ in range(B)]), 0)))
    cases.append(Case("custom pad_id", (_collate_examples(r, 3, [3, 7, 5]), r.randint(6, 99)),
                      hint="fill padding with the pad_id argument, not a hard-coded 0"))
    cases.append(Case("B=1", (_collate_examples(r, 1, [r.randint(1, 9)]), 0)))
    L = r.randint(2, 8)
    cases.append(Case("equal lengths", (_collate_examples(r, 3, [L, L, L]), 0)))
    cases.append(Case("single-token examples", (_collate_examples(r, 2, [1, 1]), 0)))
    for c in cases:
        c.desc = f"{len(c.args[0])} examples of lengths {[len(i) for i, _ in c.args[0]]}, pad_id={c.args[1]}"
    return cases


def _diagnose_collate(case: Case, expected, got) -> Optional[str]:
    examples, pad_id = case.args
    if not isinstance(got, dict) or "input_ids" not in got:
        return None
    ids = got["input_ids"]
    T = expected["input_ids"].shape[1]
    left = torch.full_like(expected["input_ids"], pad_id)
    for i, (row, _) in enumerate(examples):
        left[i, T - len(row):] = torch.tensor(row)
    if isinstance(ids, torch.Tensor) and ids.shape == left.shape and torch.equal(ids, left) \
            and not torch.equal(left, expected["input_ids"]):
        return ("pad on the RIGHT: real tokens first, then pad_id (token-aligned log-probs and "
                "masks assume right padding)")
    lm = got.get("loss_mask")
    if isinstance(lm, torch.Tensor) and not lm.is_floating_point():
        return "loss_mask is float (it multiplies float log-probs); input_ids and attention_mask are long"
    am = got.get("attention_mask")
    if isinstance(am, torch.Tensor) and isinstance(lm, torch.Tensor) and am.shape == lm.shape \
            and torch.equal(am.float(), lm.float()) and not torch.equal(expected["attention_mask"].float(),
                                                                       expected["loss_mask"]):
        return "attention_mask is 1 on every real token (prompt and response); loss_mask only on the response"
    if isinstance(ids, torch.Tensor) and ids.shape == expected["input_ids"].shape \
            and not torch.equal(ids, expected["input_ids"]):
        pads = ids[expected["attention_mask"] == 0].unique()
        if pads.numel() == 1 and int(pads) != pad_id:
            return f"fill padding with the pad_id argument (= {pad_id} here), not a hard-coded {int(pads)}"
        return f"pad every row to the longest example, right-padded with pad_id (= {pad_id} here)"
    return None


def _logits_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def make(B, T, V, scale=2.0, dtype=torch.float32):
        logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
        return (logits, torch.randint(V, (B, T), generator=g))

    cases = [Case("random shapes", make(r.randint(2, 4), r.randint(2, 9), r.randint(3, 12))) for _ in range(3)]
    cases.append(Case("B=1", make(1, r.randint(2, 9), r.randint(3, 12))))
    cases.append(Case("two tokens (one prediction)", make(r.randint(1, 3), 2, r.randint(3, 12)),
                      hint="only token 1 is predicted (by logits[:, 0]); column 0 is 0"))
    cases.append(Case("float64 input", make(2, r.randint(2, 6), 7, dtype=torch.float64),
                      hint="keep the input's dtype: no hard-coded .float()"))
    cases.append(Case("large logits", make(2, r.randint(3, 6), 9, scale=400.0),
                      hint="use torch.log_softmax (numerically stable), not softmax(...).log()"))
    return cases


def _diagnose_token_logprobs(case: Case, expected, got) -> Optional[str]:
    logits, ids = case.args
    if not isinstance(got, torch.Tensor):
        return "return a (B, T) tensor"
    if got.shape[:1] == ids.shape[:1] and got.dim() == 2 and got.shape[1] == ids.shape[1] - 1:
        return "return (B, T), token-aligned: column t holds the log-prob of token t, column 0 = 0"
    if got.shape != expected.shape:
        return None
    got = got.detach().to(expected.dtype)
    lp = torch.log_softmax(logits.double(), -1)
    same_pos = lp.gather(-1, ids.unsqueeze(-1)).squeeze(-1).to(expected.dtype)
    if torch.isnan(got).any() or torch.isinf(got).any():
        return "use torch.log_softmax (numerically stable), not softmax(...).log()"
    if torch.allclose(got, same_pos, rtol=1e-4, atol=1e-5):
        return ("off by one: logits at position t-1 predict token t, so score input_ids[:, 1:] with "
                "logits[:, :-1] and place the result at columns 1..T-1 (column 0 = 0)")
    if ids.shape[1] > 1 and torch.allclose(got[:, :-1], expected[:, 1:], rtol=1e-4, atol=1e-5):
        return ("your values sit one column to the LEFT: the log-prob of token t belongs at column t "
                "(token-aligned), and column 0 is 0")
    if torch.allclose(got[:, 1:], expected[:, 1:], rtol=1e-4, atol=1e-5):
        return "column 0 must be 0: the first token has no prediction"
    if torch.allclose(got, expected.exp(), rtol=1e-4, atol=1e-5):
        return "return log-probabilities (log_softmax), not probabilities"
    return None


def _masked_mean_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def vals(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    cases = []
    for _ in range(2):
        B, T = r.randint(2, 5), r.randint(2, 10)
        cases.append(Case("random shapes, dim=None", (vals(B, T), _response_mask(r, B, T), None)))
        cases.append(Case("random shapes, per row (dim=1)", (vals(B, T), _response_mask(r, B, T), 1),
                          hint="with dim=1 return one mean per row, shape (B,)"))
    B, T = r.randint(2, 4), r.randint(2, 8)
    cases.append(Case("all-zero mask", (vals(B, T), torch.zeros(B, T), None),
                      hint="divide by max(mask.sum(), 1): an empty mask must give 0, not nan"))
    mask = _response_mask(r, 3, T)
    mask[r.randint(0, 2)] = 0.0
    cases.append(Case("a row with an all-zero mask (dim=1)", (vals(3, T), mask, 1),
                      hint="divide each row by max(its mask sum, 1): empty rows give 0, not nan"))
    cases.append(Case("B=1", (vals(1, T), _response_mask(r, 1, T), 1)))
    cases.append(Case("single token", (vals(2, 1), torch.ones(2, 1), None)))
    cases.append(Case("float64 input", (vals(2, T, dtype=torch.float64), _response_mask(r, 2, T), 1),
                      hint="keep the input's dtype: no hard-coded .float()"))
    return cases


def _diagnose_masked_mean(case: Case, expected, got) -> Optional[str]:
    values, mask, dim = case.args
    if not isinstance(got, torch.Tensor):
        return "return a tensor (no .item()): the result must stay differentiable"
    if got.shape != expected.shape:
        return (f"with dim={dim} the result has shape {_shape(expected)}: "
                + ("one scalar over all masked entries" if dim is None else f"reduce only dimension {dim}"))
    if torch.isnan(got).any() and not torch.isnan(expected).any():
        return "divide by max(mask.sum(), 1): an all-zero mask must give 0, not nan"
    plain = values.mean() if dim is None else values.mean(dim)
    if torch.allclose(got.detach().to(plain.dtype), plain, rtol=1e-4, atol=1e-5):
        return "the mask is not applied: average only where mask == 1, sum(values * mask) / mask.sum()"
    return None


def _sft_loss_cases(seed: int) -> list[Case]:
    r, g = _rng(seed)

    def lp(*shape, dtype=torch.float32):
        return (-3 * torch.rand(*shape, generator=g, dtype=torch.float64)).to(dtype)

    cases = []
    for _ in range(3):
        B, T = r.randint(2, 5), r.randint(3, 12)
        cases.append(Case("random batch", (lp(B, T), _response_mask(r, B, T))))
    B, T = 3, r.randint(3, 10)
    mask = _response_mask(r, B, T)
    mask[r.randint(0, B - 1)] = 0.0
    cases.append(Case("a row with no response tokens", (lp(B, T), mask),
                      hint="a row whose mask is all zero has loss 0, not nan: divide by max(count, 1)"))
    cases.append(Case("B=1", (lp(1, T), _response_mask(r, 1, T))))
    cases.append(Case("single token", (lp(2, 1), torch.ones(2, 1))))
    cases.append(Case("float64 input", (lp(2, T, dtype=torch.float64), _response_mask(r, 2, T)),
                      hint="keep the input's dtype: no hard-coded .float()"))
    return cases


def _diagnose_sft_loss(case: Case, expected, got) -> Optional[str]:
    logprobs, mask = case.args
    if not isinstance(got, torch.Tensor):
        return "return a (B,) tensor (no .item()): the loss must stay differentiable"
    if got.dim() == 0 or got.shape != expected.shape:
        return ("return one loss per example, shape (B,): average each row over its OWN response "
                "tokens (sum over dim=-1), not over the whole batch")
    got = got.detach().to(expected.dtype)
    ok = lambda x: torch.allclose(got, x.to(expected.dtype), rtol=1e-4, atol=1e-5)  # noqa: E731
    if torch.isnan(got).any():
        return "a row with no response tokens has loss 0, not nan: divide by max(mask.sum(-1), 1)"
    if ok(-expected):
        return "the loss is the NEGATIVE log-likelihood: -sum(logprobs * mask) / count"
    if ok(-(logprobs * mask).sum(-1)):
        return "average, don't sum: divide each row by its number of response tokens"
    if ok(-(logprobs * mask).sum(-1) / mask.sum().clamp(min=1)):
        return "each row is divided by the batch's token count: divide by that row's own mask.sum(-1)"
    if ok(-logprobs.mean(-1)):
        return "the mask is not applied: only response tokens (mask == 1) count"
    return None


LABS["lab01"] = [
    GradedFunction(
        "build_sft_example", "minimopd.data.build_sft_example", _sft_example_cases, points=2,
        output_names=("input_ids", "loss_mask"), diagnose=_diagnose_sft_example,
        hint="ids = chat_prompt(tokenizer, prompt) tokens (mask 0) + response tokens + eos (mask 1)"),
    GradedFunction(
        "collate", "minimopd.data.collate", _collate_cases, points=1, diagnose=_diagnose_collate,
        hint="right-pad to the longest example: input_ids/attention_mask long, loss_mask float"),
    GradedFunction(
        "token_logprobs", "minimopd.losses.token_logprobs", _logits_cases, points=3, grad_wrt=(0,),
        diagnose=_diagnose_token_logprobs,
        hint="out[:, t] = log_softmax(logits[:, t-1])[input_ids[:, t]], out[:, 0] = 0"),
    GradedFunction(
        "masked_mean", "minimopd.losses.masked_mean", _masked_mean_cases, points=2, grad_wrt=(0,),
        diagnose=_diagnose_masked_mean,
        hint="sum(values * mask) / max(mask.sum(), 1), over `dim` when given"),
    GradedFunction(
        "sft_loss", "minimopd.losses.sft_loss", _sft_loss_cases, points=2, grad_wrt=(0,),
        diagnose=_diagnose_sft_loss,
        hint="per example: -sum(logprobs * mask, -1) / max(mask.sum(-1), 1), shape (B,)"),
]


if __name__ == "__main__":
    sys.exit(main())
