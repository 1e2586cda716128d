"""The autograder's machinery: compare a student's function with the library's reference.

A lab asks the student to write small functions (`masked_mean`, `sft_loss`, ...). Each one is
described by a `GradedFunction`: where the reference lives, how to generate test cases (seeded
random tensors of varying shapes plus edge cases), how many points it is worth and what to say
when it is wrong. `check(name, fn)` runs those cases and prints one verdict per case family:

    masked_mean: random shapes (4 cases) ... ok
    masked_mean: all-zero mask ... FAILED: [values (2, 5) float32, mask (2, 5) float32 all zeros,
        dim=None] expected 0.0, got nan — divide by max(mask.sum(), 1) ...

Values AND (for differentiable functions) gradients w.r.t. the float inputs named in
`grad_wrt` are compared with a tolerance that depends on the dtype (`compare.py`).

Grading is split in two so that student code can never decide its own grade: `student.run_case`
calls the student's function and records what it did (output, error, inputs after the call,
gradients) as plain data; `verdict` compares that record with the reference's output here. In a
lab, `check` does both in the notebook's process (quick feedback); `grade_notebook`
(`report.py`, `minimopd grade`) runs the student's side in a sandboxed child process.

Feedback: a failing case's hint is, in this order, the hint of the first known wrong version
(`GradedFunction.wrong`) whose output equals the student's; a generic diagnosis of the
output's form (returned None, not a tuple, a number where a tensor is due, not a number where a
float is due); the lab's `diagnose` (shapes and other structure); `nan_hint` when the output has
nan/inf where the reference's is finite; the case's hint; the function's hint.

This module holds no lab: each lab's cases live in `minimopd/grading/labNN.py` and register
themselves in `LABS` (see the package docstring for how to add one). `_rng` and
`_response_mask` are shared helpers for writing case generators, `_skip` for wrong versions
that only apply to some cases.
"""
from __future__ import annotations

import importlib
import inspect
import random
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .compare import TOLERANCES, _clone, _describe, _float_tensors, _shape, compare_values  # noqa: F401
from .feedback import _nonfinite, compare_output, form_hint, matching_wrong_version, same_output  # noqa: F401
from .student import backprop_weighted, grad_inputs, leaf_grads, run_case

NOT_IMPLEMENTED = "not implemented yet: fill in the cell between the markers"
VISIBLE_SEEDS = (0,)
HIDDEN_SEEDS = (0, 1, 2, 3, 4, 5)
# Every lab's Part 2 trains with the functions it grades: cases reach those sizes (a `cpu`-profile
# batch of 64 rows, reasoning rollouts of ~160 tokens), so a function that breaks only on long
# rows, a real vocabulary or a full batch cannot pass.
TRAIN_BATCH, TRAIN_LEN = 64, 160
TRACE_LEN = 128            # the longest completion the OPD stages sample (4 x 32 new tokens)


def _vocab() -> int:
    """The course tokenizer's vocabulary size (105): the size a training step sees."""
    from ..tokenizer import build_tokenizer
    return len(build_tokenizer())


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
    """A function a lab asks for, with its reference implementation and its test cases.

    A lab's spec is a list of these: points, the reference, a case generator, the known wrong
    versions with their hints (`wrong`), optionally a `diagnose` for what a wrong version cannot
    express (a wrong shape, say) and a `nan_hint`. The comparison, "which wrong version does
    this output match", the output's form (tensor, float, tuple), dtypes and the feedback are
    the engine's.

    `library`: dotted paths of the library functions that *are* this function (a student who
    calls one of them gets no points); by default the reference, when it is a dotted path."""
    name: str
    reference: Callable | str
    cases: Callable[[int], list[Case]]
    points: float
    hint: str = ""
    grad_wrt: tuple[int, ...] = ()          # positional args whose gradients are compared
    output_names: tuple[str, ...] = ()      # names of the elements of a tuple output
    diagnose: Optional[Callable[[Case, Any, Any], Optional[str]]] = None
    compare: Optional[Callable[[Any, Any], Optional[str]]] = None  # default: compare_values
    library: tuple[str, ...] = ()
    # known wrong versions, most specific first: (a function with the same signature, the hint to
    # give when the student's output equals its output on the failing case); one that does not
    # apply to a case calls `_skip()`
    wrong: tuple[tuple[Callable, str], ...] = ()
    nan_hint: str = ""                      # when the output has nan/inf where the reference's is finite

    def resolve(self) -> Callable:
        """The reference callable (imports a dotted path on first use)."""
        if callable(self.reference):
            return self.reference
        module, _, attr = self.reference.replace(":", ".").rpartition(".")
        return getattr(importlib.import_module(module), attr)

    def forbidden(self) -> tuple[str, ...]:
        if self.library:
            return self.library
        return (self.reference.replace(":", "."),) if isinstance(self.reference, str) else ()


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


class _NotApplicable(Exception):
    """Raised by a wrong version on a case it does not apply to (see `_skip`)."""


def _skip() -> Any:
    """Call in a wrong version on a case it does not apply to (e.g. `eps_high` not given)."""
    raise _NotApplicable()


# --------------------------------------------------------------------------- the reference's side

@dataclass
class Expected:
    """The reference's output on one case and, for `grad_wrt`, its gradients under the fixed
    random weighting of its `n_outputs` differentiable outputs."""
    seed: int
    case: Case
    value: Any
    n_outputs: int = 0
    grads: dict = field(default_factory=dict)


def expectations(gf: GradedFunction, seeds) -> list[Expected]:
    """Every case of `gf` for `seeds`, in order, with the reference's answers."""
    ref = gf.resolve()
    out = []
    for seed in seeds:
        for case in gf.cases(seed):
            exp = Expected(seed, case, ref(*_clone(case.args), **case.kwargs))
            if gf.grad_wrt:
                leaves, args = grad_inputs(case, gf.grad_wrt)
                ref_t = [t for t in _float_tensors(ref(*args, **case.kwargs)) if t.requires_grad]
                exp.n_outputs = len(ref_t)
                if ref_t:
                    backprop_weighted(ref_t, seed)
                exp.grads = leaf_grads(leaves)
            out.append(exp)
    return out


def _arg_names(gf: GradedFunction) -> list[str]:
    try:
        return list(inspect.signature(gf.resolve()).parameters)
    except (TypeError, ValueError):
        return []


# --------------------------------------------------------------------------- the verdict

def _raised(err: dict, when: str = "") -> str:
    at = f" ({err['where']})" if err.get("where") else ""
    return f"raised {err['type']}{when}: {err['message']}{at}"


_NO_OUTPUT = object()    # `fail` called for an error, with no output to diagnose


def verdict(gf: GradedFunction, exp: Expected, res: dict, names: list[str]) -> Optional[str]:
    """None if the student's record `res` (from `student.run_case`) matches the reference on
    this case, else the feedback line (without the function name). Raises `_NotImplemented`."""
    case = exp.case

    def fail(msg: str, got: Any = _NO_OUTPUT, hint: Optional[str] = None) -> str:
        if hint is None and got is not _NO_OUTPUT:
            hint = _diagnosis(gf, case, exp.value, got)
        hint = hint or case.hint or gf.hint
        return f"{_describe(case, names)} {msg}" + (f" — {hint}" if hint else "")

    err = res.get("error")
    if err:
        if err.get("not_implemented"):
            raise _NotImplemented()
        if err["type"] in ("SystemExit", "KeyboardInterrupt"):
            return fail(_raised(err), hint="a graded function must return its result, not stop the program")
        return fail(_raised(err))
    got = res.get("value")
    msg = compare_output(gf, exp.value, got)
    if msg:
        return fail(msg, got)
    after = res.get("args_after") or []
    for i, before in enumerate(case.args):
        if isinstance(before, torch.Tensor) and i < len(after) and isinstance(after[i], torch.Tensor) \
                and not (after[i].shape == before.shape and torch.equal(before, after[i])):
            name = names[i] if i < len(names) else f"argument {i}"
            return fail(f"modified its input `{name}` in place",
                        hint="work on a copy (x = x * mask, not x *= mask or x.masked_fill_)")
    if gf.grad_wrt:
        return _grad_verdict(gf, exp, res.get("grad") or {}, names, fail)
    return None


def _diagnosis(gf: GradedFunction, case: Case, expected: Any, got: Any) -> Optional[str]:
    """The most specific hint for an output that does not match the reference's (None if none):
    a known wrong version, the output's form, the lab's `diagnose`, then `nan_hint`."""
    steps = (lambda: matching_wrong_version(gf, case, got, expected),
             lambda: form_hint(gf, expected, got),
             lambda: gf.diagnose(case, expected, got) if gf.diagnose else None,
             lambda: gf.nan_hint if gf.nan_hint and _nonfinite(gf, expected, got) else None)
    for step in steps:
        try:
            hint = step()
        except Exception:  # noqa: BLE001 - a diagnosis must never hide the real failure
            hint = None
        if hint:
            return hint
    return None


def _grad_verdict(gf, exp: Expected, grad: dict, names, fail) -> Optional[str]:
    if grad.get("error"):
        return fail(_raised(grad["error"], " when its input requires grad"),
                    hint="avoid in-place ops (x *= m, masked_fill_) on tensors autograd needs")
    arg_names = ", ".join(f"`{names[i]}`" if i < len(names) else f"argument {i}" for i in gf.grad_wrt)
    if grad.get("n_diff", 0) < exp.n_outputs or grad.get("leaf"):
        return fail(f"the output is not differentiable w.r.t. {arg_names}",
                    hint="no .detach(), .item(), .tolist() or torch.tensor(...) on the way: the loss must "
                         "backpropagate")
    if not exp.n_outputs:
        return None
    got_grads = grad.get("grads") or {}
    for i in gf.grad_wrt:
        name = names[i] if i < len(names) else f"argument {i}"
        msg = compare_values(exp.grads[i], got_grads.get(str(i)), f"gradient w.r.t. `{name}`")
        if msg:
            return fail(msg, hint="the values match but the gradients do not: a masked or detached term "
                                  "leaks into (or is cut out of) the backward pass")
    return None


def verdict_lines(gf: GradedFunction, expected: list[Expected], results: list[dict], out=None
                  ) -> tuple[list[str], list[str]]:
    """One verdict line per case family (printed to `out`); returns (lines, failure messages).
    Raises `_NotImplemented` if the function is still the stub."""
    names = _arg_names(gf)
    families: dict[str, list[Optional[str]]] = {}
    for exp, res in zip(expected, results):
        families.setdefault(exp.case.family, []).append(verdict(gf, exp, res, names))
    lines, failures = [], []
    for family, verdicts in families.items():
        bad = [v for v in verdicts if v]
        if bad:
            line = f"{gf.name}: {family} ... FAILED ({len(bad)}/{len(verdicts)} cases): {bad[0]}"
            failures.append(f"{gf.name}: {family} {bad[0]}")
        else:
            line = f"{gf.name}: {family} ({len(verdicts)} case{'s' * (len(verdicts) > 1)}) ... ok"
        lines.append(line)
        if out is not None:
            print(line, file=out)
    return lines, failures


def points_of(gf: GradedFunction, failures: list[str], hidden: bool, out=None) -> float:
    """Print the closing line of a function's verdicts; return its points or raise the first failure."""
    if failures:
        print(f"{gf.name}: {len(failures)} case famil{'ies' if len(failures) > 1 else 'y'} failed — "
              f"0/{gf.points:g} points", file=out)
        raise AssertionError(failures[0])
    print(f"{gf.name}: all {'hidden' if hidden else 'visible'} tests passed — {gf.points:g}/{gf.points:g} points",
          file=out)
    return float(gf.points)


def not_implemented(name: str) -> str:
    return f"{name}: {NOT_IMPLEMENTED} (replace `raise NotImplementedError()` with your code)"


def check(name: str, fn: Callable, *, lab: Optional[str] = None, hidden: bool = False) -> float:
    """Compare `fn` with the reference of the graded function `name`; return its points.

    Prints one verdict per case family and raises `AssertionError` with the first failure's
    feedback if any case fails. `hidden=True` runs more random seeds. This is the notebook's
    quick check, run in the notebook's own process; the autograder (`grade_notebook`) runs the
    student's code in a sandbox instead.
    """
    gf = find(name, lab)
    if not callable(fn):
        raise AssertionError(f"{name}: expected a function, got {type(fn).__name__}")
    expected = expectations(gf, HIDDEN_SEEDS if hidden else VISIBLE_SEEDS)
    results = []
    for exp in expected:
        results.append(run_case(fn, exp.case, exp.seed, gf.grad_wrt, exp.n_outputs))
        if (results[-1].get("error") or {}).get("not_implemented"):
            break
    try:
        _, failures = verdict_lines(gf, expected, results, out=sys.stdout)
    except _NotImplemented:
        msg = not_implemented(name)
        print(msg)
        raise AssertionError(msg) from None
    return points_of(gf, failures, hidden, out=sys.stdout)


# --------------------------------------------------------------------------- case helpers

def _rng(seed: int) -> tuple[random.Random, torch.Generator]:
    """A seeded `random.Random` and `torch.Generator`: every case generator starts here."""
    return random.Random(seed), torch.Generator().manual_seed(seed)


def _response_mask(r: random.Random, B: int, T: int, *, min_len: int = 1, first: int = 0) -> torch.Tensor:
    """(B, T) float masks shaped like SFT batches: prompt zeros, response ones, padding zeros; no
    response starts before column `first` (1 for chat examples, which open with a prompt token)."""
    mask = torch.zeros(B, T)
    for b in range(B):
        start = r.randint(first, T - min_len)
        end = r.randint(start + min_len, T)
        mask[b, start:end] = 1.0
    return mask
