"""How the grader compares a student's output with the reference's, and describes a case.

Pure functions of values, run in the grading process (never in the process that runs student
code): `compare_values(expected, got)` returns None or the reason they differ, with a tolerance
that depends on the dtype and the magnitude of what is computed.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

# (rtol, atol) per floating dtype; other dtypes are compared exactly.
TOLERANCES = {torch.float64: (1e-7, 1e-9), torch.float32: (1e-4, 1e-5),
              torch.float16: (1e-2, 1e-3), torch.bfloat16: (2e-2, 1e-2)}


def _type_name(x: Any) -> str:
    """A value's type as the student wrote it (an `Opaque` stands for a value that could not
    travel back from the student's process, e.g. a numpy array)."""
    return getattr(x, "type_name", None) or type(x).__name__


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
            return f"{where}expected a torch.Tensor of shape {_shape(expected)}, got {_type_name(got)}"
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
            return f"{where}expected a dict with keys {sorted(expected)}, got {_type_name(got)}"
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
            return f"{where}expected a {type(expected).__name__} of {len(expected)} items, got {_type_name(got)}"
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


def _describe(case, names: list[str]) -> str:
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
