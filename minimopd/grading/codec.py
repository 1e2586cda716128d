"""How values travel between the grader and the process that runs student code, without pickle.

The grader never unpickles anything the student's process wrote (unpickling runs code). A value
is written as JSON for its structure plus one safetensors file for its tensors:

    tensors: dict[str, Tensor] = {}
    doc = encode(value, tensors)           # JSON-able; tensors replaced by {"__tensor__": key}
    value = decode(doc, tensors)           # the same structure back: tuples stay tuples

Anything else a student might return (a numpy array, a generator, an object of their own) comes
back as an `Opaque` carrying its type name and a short repr, so feedback can say what it was.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import torch

MAX_ELEMENTS = 20_000_000     # per value: a runaway student tensor is reported, not shipped


class Opaque:
    """A value that could not be sent back: `type_name` and `text` (its repr, cut short)."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other) -> bool:
        return False

    __hash__ = None


def _opaque(x: Any, why: str = "") -> dict:
    try:
        text = repr(x)
    except Exception:  # noqa: BLE001 - a student object whose __repr__ raises
        text = "<unprintable>"
    name = type(x).__module__ + "." + type(x).__qualname__ if type(x).__module__ not in ("builtins", "__main__") \
        else type(x).__qualname__
    return {"__opaque__": name, "text": (why or text)[:200]}


def encode(x: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`x` as JSON-able data; every tensor is moved into `tensors` (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        if x.numel() > MAX_ELEMENTS:
            return _opaque(x, f"a tensor of shape {tuple(x.shape)} (too large to grade)")
        try:
            t = x.detach().to("cpu").contiguous().clone()
        except Exception:  # noqa: BLE001 - meta tensors, odd subclasses
            return _opaque(x)
        key = f"t{len(tensors)}"
        tensors[key] = t
        return {"__tensor__": key}
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return {"__float__": repr(x)} if not math.isfinite(x) else x
    if isinstance(x, tuple):
        return {"__tuple__": [encode(v, tensors) for v in x]}
    if isinstance(x, list):
        return [encode(v, tensors) for v in x]
    if isinstance(x, dict):
        return {"__dict__": [[encode(k, tensors), encode(v, tensors)] for k, v in x.items()]}
    return _opaque(x)


def decode(x: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `encode`."""
    if isinstance(x, list):
        return [decode(v, tensors) for v in x]
    if not isinstance(x, dict):
        return x
    if "__tensor__" in x:
        return tensors[x["__tensor__"]]
    if "__float__" in x:
        return float(x["__float__"])
    if "__tuple__" in x:
        return tuple(decode(v, tensors) for v in x["__tuple__"])
    if "__dict__" in x:
        out = {}
        for k, v in x["__dict__"]:
            k = decode(k, tensors)
            out[k if isinstance(k, (str, int, float, bool, type(None), tuple)) else repr(k)] = decode(v, tensors)
        return out
    if "__opaque__" in x:
        return Opaque(x["__opaque__"], x.get("text", ""))
    raise ValueError(f"unexpected encoded value {sorted(x)[:4]}")


def write(path: str, value: Any) -> None:
    """Write `value` to `path.json` + `path.safetensors`, atomically (the JSON is renamed last)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    doc = encode(value, tensors)
    save_file(tensors, path + ".safetensors.tmp")
    os.replace(path + ".safetensors.tmp", path + ".safetensors")
    with open(path + ".json.tmp", "w") as f:
        json.dump(doc, f)
    os.replace(path + ".json.tmp", path + ".json")


def read(path: str) -> Any:
    """Read what `write(path, value)` wrote."""
    from safetensors.torch import load_file

    with open(path + ".json") as f:
        doc = json.load(f)
    return decode(doc, load_file(path + ".safetensors"))
