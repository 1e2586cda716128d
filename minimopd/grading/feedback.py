"""What the student hears about a failing case, besides the verdict itself: the comparison of
two outputs as the verdict makes it, which known wrong version an output equals, and the generic
diagnoses of an output of the wrong form. Pure functions of a `GradedFunction` (engine.py) and
plain values; no lab lives here."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch

from .compare import TOLERANCES, _clone, _type_name, compare_values

if TYPE_CHECKING:
    from .engine import Case, GradedFunction


def _named(gf: GradedFunction, expected: Any, got: Any) -> list[tuple[Any, Any, str]]:
    """(expected, got, name) per element of a tuple output with `output_names`, else one triple."""
    if gf.output_names and isinstance(expected, tuple) and isinstance(got, (tuple, list)) \
            and len(got) == len(expected):
        return list(zip(expected, got, gf.output_names))
    return [(expected, got, "")]


def compare_output(gf: GradedFunction, expected: Any, got: Any) -> Optional[str]:
    """None if `got` matches `expected` as `gf` compares outputs (`gf.compare`, default
    `compare_values`; element by element, named, for a tuple with `output_names`), else why not."""
    compare = gf.compare or compare_values
    return next((m for e, g, name in _named(gf, expected, got)
                 if (m := compare(e, g, name) if name else compare(e, g))), None)


def _coarser(a: Any, b: Any) -> tuple[Any, Any]:
    """`a` and `b` with each pair of floating tensors in them cast to the less precise of the two
    dtypes, so that a wrong version computed in float64 can equal a float32 output."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.is_floating_point() and b.is_floating_point() and a.dtype != b.dtype:
            dtype = max((a.dtype, b.dtype), key=lambda d: TOLERANCES.get(d, (0.0,))[0])
            return a.to(dtype), b.to(dtype)
        return a, b
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        pairs = [_coarser(x, y) for x, y in zip(a, b)]
        return type(a)(x for x, _ in pairs), type(b)(y for _, y in pairs)
    if isinstance(a, dict) and isinstance(b, dict):
        pairs = {k: _coarser(a[k], b[k]) for k in a if k in b}
        return {**a, **{k: x for k, (x, _) in pairs.items()}}, {**b, **{k: y for k, (_, y) in pairs.items()}}
    return a, b


def same_output(gf: GradedFunction, a: Any, b: Any) -> bool:
    """Are two outputs of `gf` equal as the verdict compares them, dtype precision aside?"""
    return compare_output(gf, *_coarser(a, b)) is None


def matching_wrong_version(gf: GradedFunction, case: Case, got: Any, expected: Any) -> Optional[str]:
    """The hint of the first known wrong version of `gf` whose output on `case` is `got`.

    A wrong version that raises (`_skip()`: it does not apply to this case) or that gives the
    reference's own output `expected` on this case (it says nothing about the failure) is passed
    over."""
    for make, hint in gf.wrong:
        try:
            wrong = make(*_clone(case.args), **case.kwargs)
            if same_output(gf, wrong, got) and not same_output(gf, wrong, expected):
                return hint
        except Exception:  # noqa: BLE001 - a wrong version may not apply to this case
            continue
    return None


def form_hint(gf: GradedFunction, expected: Any, got: Any) -> Optional[str]:
    """The generic diagnosis of an output of the wrong form: None, not a tuple, a number (or a
    list) where a tensor is due, not a number where a float is due."""
    if got is None and expected is not None:
        return "the function returned None: did you forget the `return`?"
    if gf.output_names and isinstance(expected, tuple) and \
            (not isinstance(got, (tuple, list)) or len(got) != len(expected)):
        return f"return a tuple ({', '.join(gf.output_names)})"
    for e, g, name in _named(gf, expected, got):
        if isinstance(e, torch.Tensor) and not isinstance(g, torch.Tensor):
            return (f"{f'`{name}` must be' if name else 'return'} a torch.Tensor (got {_type_name(g)}): no .item() "
                    "or .tolist()" + (", it must stay differentiable" if gf.grad_wrt else ""))
        if isinstance(e, float) and not isinstance(g, (int, float)):
            return f"return a float (got {_type_name(g)})"
    return None


def _nonfinite(gf: GradedFunction, expected: Any, got: Any) -> bool:
    """Does the output hold nan/inf where the reference's (a float tensor) is all finite?"""
    return any(isinstance(e, torch.Tensor) and isinstance(g, torch.Tensor) and e.is_floating_point()
               and g.is_floating_point() and bool(torch.isfinite(e).all()) and not bool(torch.isfinite(g).all())
               for e, g, _ in _named(gf, expected, got))
