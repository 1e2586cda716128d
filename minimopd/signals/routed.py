"""MOPD's signal: each rollout row routed to the teacher of its prompt's domain."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Mapping, Sequence

import torch

from .base import SignalOutput, check_rows
from .outcome import VerifierSignal
from .teacher import TeacherSignal


def route_of(example) -> str:
    """The teacher a row goes to: `example.meta["teacher_id"]` when set (a prompt that names its teacher),
    else the example's domain."""
    return example.meta.get("teacher_id", example.domain)


def route_rows(names: Sequence[str], teachers) -> dict[str, list[int]]:
    """MOPD's router: which rows each teacher scores.

    names:    N teacher names, one per rollout row (`route_of` of its example)
    teachers: the names of the teachers there are (any collection of str)
    Returns:  {teacher: its row indices, increasing} for every teacher with at least one row.
    A row whose teacher is missing is a KeyError naming it, its rows and the teachers there are:
    never a row scored by the wrong teacher or left unscored."""
    teachers = set(teachers)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name not in teachers:
            rows = [j for j, n in enumerate(names) if n == name][:5]
            raise KeyError(f"no teacher for domain {name!r} (rows {rows}); the teachers are "
                           f"{', '.join(sorted(teachers))}. Add a TeacherSignal for it or "
                           "sample only domains that have one.")
        groups.setdefault(name, []).append(i)
    return groups


def _misrouted(groups: Mapping[str, Sequence[int]], names: Sequence[str]) -> str:
    """What is wrong with a router's `groups` for rows named `names`: the first misplaced row."""
    seen: dict[int, str] = {}
    for name, idx in groups.items():
        for i in idx:
            if not 0 <= i < len(names):
                return f"misplaced row {i}: it is not a row of this batch"
            if i in seen:
                return f"misplaced row {i}: it was routed twice ({seen[i]!r} and {name!r})"
            if names[i] != name:
                return f"misplaced row {i}: it belongs to {names[i]!r}, not {name!r}"
            seen[i] = name
    return f"left rows {[i for i in range(len(names)) if i not in seen][:5]} without a teacher"


def score_groups(teachers: Mapping[str, TeacherSignal], groups: Mapping[str, Sequence[int]],
                 input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                 prompt_index: torch.Tensor | None = None, topk_ids: torch.Tensor | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Each teacher scores its own rows once (`TeacherSignal.score`, on `groups` = {teacher:
    rows}, e.g. `route_rows`) and the parts are scattered back into batch-sized tensors.
    Returns ({key: (B, ...)} with the keys the teachers' mode gives, rows of no group 0;
    {teacher: tokens it read}). Shared by `RoutedTeacherSignal` and the scale path's trainer."""
    merged: dict[str, torch.Tensor] = {}
    read: dict[str, int] = {}
    for name in sorted(groups):
        idx = torch.tensor(groups[name], device=input_ids.device)
        part = teachers[name].score(input_ids[idx], attention_mask[idx], prompt_length,
                                    None if prompt_index is None else prompt_index[idx],
                                    None if topk_ids is None else topk_ids[idx])
        for key, value in part.items():
            if key not in merged:
                merged[key] = value.new_zeros((len(input_ids),) + tuple(value.shape[1:]))
            merged[key][idx] = value
        read[name] = int(attention_mask[idx].sum())
    return merged, read


class RoutedTeacherSignal:
    """MOPD: every row is scored by the teacher of its prompt's domain (or `teacher_id`).

    Rows are grouped by teacher (`router`, default `route_rows`), each teacher runs once on its
    own rows, and the results are scattered back into one `SignalOutput`; compute is counted with
    each teacher's own parameter count. All teachers share one mode (and k / support for "topk").

    `weights` ({teacher: w >= 0}, 1 for a teacher not named): each row's teacher term is scaled
    by its teacher's weight (`SignalOutput.row_weights`): the sampled-token advantage in the
    `teacher_token` estimator, the divergence in the `reverse_kl` and `jsd` objectives. A domain
    the student already masters can be given less weight, one it lags on more."""

    def __init__(self, teachers: Mapping[str, TeacherSignal], *, weights: Mapping[str, float] | None = None,
                 outcome: Callable | None = None, router: Callable | None = None):
        if not teachers:
            raise ValueError("RoutedTeacherSignal needs at least one teacher: {domain: TeacherSignal}")
        bad = [name for name, t in teachers.items() if not isinstance(t, TeacherSignal)]
        if bad:
            raise TypeError(f"teachers {bad} are not TeacherSignal objects; wrap each model as "
                            "TeacherSignal(model, mode=...)")
        shapes = {(t.mode, t.k if t.mode == "topk" else 0, t.support if t.mode == "topk" else "")
                  for t in teachers.values()}
        if len(shapes) > 1:
            raise ValueError(f"routed teachers must share one mode (and k, support for 'topk'); got {sorted(shapes)}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(teachers))
        if unknown:
            raise ValueError(f"weights name {unknown}, which have no teacher; the teachers are "
                             f"{', '.join(sorted(teachers))}")
        wrong = {k: w for k, w in weights.items() if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)}
        if wrong:
            raise ValueError(f"per-domain weights must be finite numbers >= 0, got {wrong}")
        self.teachers = dict(teachers)
        self.weights = {k: float(w) for k, w in weights.items() if float(w) != 1.0}
        self.mode = next(iter(self.teachers.values())).mode
        self.verifier = VerifierSignal(outcome)
        self.router = router or route_rows

    @property
    def rollout_topk(self) -> int:
        return max(t.rollout_topk for t in self.teachers.values())

    def spec(self) -> dict:
        spec = {"kind": "routed_teachers", "outcome": self.verifier.name,
                "teachers": {name: t.spec() for name, t in sorted(self.teachers.items())}}
        if self.weights:     # (the router is not part of it: `routes` admits only the one grouping)
            spec["weights"] = dict(sorted(self.weights.items()))
        return spec

    def setup(self, model, tokenizer, device) -> None:
        for t in self.teachers.values():
            t.setup(model, tokenizer, device)

    def routes(self, examples: Sequence) -> dict[str, list[int]]:
        """{teacher: its rows} for these examples (`route_rows`: a clear error for a row whose
        teacher is missing). A custom router must return the same grouping, rows in any order;
        otherwise the error names the first row it misplaced."""
        names = [route_of(ex) for ex in examples]
        groups = route_rows(names, self.teachers)
        if self.router is not route_rows:
            got = self.router(names, tuple(self.teachers))
            if {name: sorted(idx) for name, idx in got.items() if idx} != groups:
                router = getattr(self.router, "__name__", type(self.router).__name__)
                raise ValueError(f"the router {router!r} {_misrouted(got, names)}. A router returns "
                                 "{teacher: [rows]} with every row exactly once, under its own domain's teacher")
        return groups

    def __call__(self, rollout, examples: Sequence) -> SignalOutput:
        check_rows(rollout, examples)
        groups = self.routes(examples)
        out = self.verifier(rollout, examples)
        device = rollout.input_ids.device
        merged, read = score_groups(self.teachers, groups, rollout.input_ids, rollout.attention_mask,
                                    rollout.prompt_length, rollout.prompt_index, rollout.topk_ids)
        names = [""] * len(rollout)
        for name, rows in groups.items():
            for i in rows:
                names[i] = name
        tokens = sum(read.values())
        flops = sum(2.0 * self.teachers[name].n_params * n for name, n in read.items())
        metrics = {f"rows/{name}": len(groups[name]) for name in sorted(groups)}
        row_weights = None
        if self.weights:
            row_weights = torch.tensor([self.weights.get(n, 1.0) for n in names], device=device,
                                       dtype=out.rewards.dtype)
        return replace(out, kind="teacher", teacher_ids=names, forward_tokens=tokens, flops=flops,
                       row_weights=row_weights, metrics={**out.metrics, **metrics}, **merged)
