"""`minimopd grade`: grade a lab notebook in a sandbox and report points and feedback.

    report = grade_notebook("labs/lab01_sft.ipynb")     # a GradeReport
    print(report); report.to_json()
    minimopd grade labs/lab01_sft.ipynb [--json] [-v] [--time-limit 60]
    minimopd grade --lab lab01                           # finds labs/lab01_*.ipynb

The student's cells and functions run in a child process (`sandbox.py`) with time limits; the
reference runs and every comparison happens here (`engine.verdict`).
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Optional

from .engine import (HIDDEN_SEEDS, LABS, NOT_IMPLEMENTED, _NotImplemented, expectations, not_implemented,
                     points_of, verdict_lines)
from .sandbox import FUNCTION_TIME_LIMIT, NOTEBOOK_TIME_LIMIT, run_isolated


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
            elif short.startswith("did not finish"):
                short = "timed out: " + short.split(" while")[0]
            elif short.startswith(("was killed", "ended the process")):
                short = "stopped the grading process"
            elif short.startswith("uses the library"):
                short = "calls the library's own implementation"
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

    def to_json(self) -> dict:
        """The report for a learning-management system: points per function, total, feedback."""
        return {"notebook": self.notebook, "lab": self.lab, "total": self.total, "max": self.max,
                "full_marks": self.full_marks, "functions": [asdict(r) for r in self.results],
                "cell_errors": list(self.cell_errors)}


def lab_of(path: str) -> str:
    """'labs/lab01_sft.ipynb' -> 'lab01'."""
    m = re.match(r"(lab\d+)", os.path.basename(path))
    if not m:
        raise ValueError(f"cannot tell the lab from the file name {path!r}: expected labNN_*.ipynb "
                         "(or pass --lab labNN)")
    return m.group(1)


def grade_notebook(path: str, *, lab: Optional[str] = None, time_limit: float = FUNCTION_TIME_LIMIT,
                   notebook_time_limit: float = NOTEBOOK_TIME_LIMIT) -> GradeReport:
    """Run a lab notebook in a sandbox and grade every function of its lab on the hidden cases.

    `time_limit`: seconds for all the cases of one function; `notebook_time_limit`: seconds for
    the cells that run before the functions are graded."""
    lab = lab or lab_of(path)
    if lab not in LABS:
        raise ValueError(f"no autograder for {lab!r}; known labs: {sorted(LABS)}")
    gfs = LABS[lab]
    expected = {gf.name: expectations(gf, HIDDEN_SEEDS) for gf in gfs}
    outcomes, cell_errors = run_isolated(
        path, lab, [gf.name for gf in gfs], seeds=HIDDEN_SEEDS, lab_functions=gfs,
        n_ref_outputs={name: [e.n_outputs for e in exps] for name, exps in expected.items()},
        time_limit=time_limit, notebook_time_limit=notebook_time_limit)
    results = []
    for gf in gfs:
        outcome = outcomes[gf.name]
        fail = lambda msg, log="": results.append(FunctionGrade(gf.name, 0.0, gf.points, f"{gf.name}: {msg}", log))
        if outcome.failure == "not defined":
            fail(f"not defined — run the cell that defines `{gf.name}` and keep its name and signature")
        elif outcome.failure:
            fail(outcome.failure)
        elif outcome.reference_calls or outcome.origin.startswith("minimopd."):
            fail(f"uses the library's own implementation ({', '.join(gf.forbidden())}) — the lab asks you "
                 "to write it yourself; 0 points")
        else:
            log = io.StringIO()
            try:
                _, failures = verdict_lines(gf, expected[gf.name], outcome.cases, out=log)
                pts = points_of(gf, failures, True, out=log)
                results.append(FunctionGrade(gf.name, pts, gf.points, "ok", log.getvalue()))
            except _NotImplemented:
                fail(not_implemented(gf.name).removeprefix(f"{gf.name}: "))
            except AssertionError as exc:
                results.append(FunctionGrade(gf.name, 0.0, gf.points, str(exc), log.getvalue()))
            except Exception as exc:  # noqa: BLE001 - e.g. a diagnosis that breaks on a strange output
                fail(f"grading error {type(exc).__name__}: {exc}", log.getvalue())
    return GradeReport(notebook=str(path), lab=lab, results=results, cell_errors=cell_errors)


def _find_notebook(lab: str) -> str:
    found = sorted(glob.glob(os.path.join("labs", f"{lab}_*.ipynb")) + glob.glob(f"{lab}_*.ipynb"))
    if not found:
        raise ValueError(f"no notebook for {lab} here (looked for labs/{lab}_*.ipynb and {lab}_*.ipynb); "
                         "pass its path: minimopd grade path/to/{lab}_....ipynb")
    return found[0]


def main(argv: Optional[list[str]] = None) -> int:
    """`minimopd grade [NOTEBOOK] [--lab labNN] [--json] [-v] [--time-limit S]`: print the report;
    0 on full marks, 1 otherwise, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="minimopd grade", description="Grade a lab notebook.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebook", nargs="?", help="path to a lab notebook, e.g. labs/lab01_sft.ipynb "
                        "(default: labs/<lab>_*.ipynb for --lab)")
    parser.add_argument("--lab", help="lab id, e.g. lab01 (default: from the file name, labNN_*.ipynb)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (for an LMS)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case family's verdict")
    parser.add_argument("--time-limit", type=float, default=FUNCTION_TIME_LIMIT,
                        help=f"seconds for all the cases of one function (default {FUNCTION_TIME_LIMIT:g})")
    parser.add_argument("--notebook-time-limit", type=float, default=NOTEBOOK_TIME_LIMIT,
                        help="seconds for the notebook's cells before grading (default "
                             f"{NOTEBOOK_TIME_LIMIT:g})")


def run(args) -> int:
    try:
        if args.notebook is None and not args.lab:
            raise ValueError("give a notebook path (minimopd grade labs/lab01_sft.ipynb) or a lab "
                             "(minimopd grade --lab lab01)")
        path = args.notebook or _find_notebook(args.lab)
        if not os.path.exists(path):
            raise ValueError(f"no such notebook: {path}")
        if args.time_limit <= 0 or args.notebook_time_limit <= 0:
            raise ValueError("time limits must be positive numbers of seconds")
        report = grade_notebook(path, lab=args.lab, time_limit=args.time_limit,
                                notebook_time_limit=args.notebook_time_limit)
    except ValueError as exc:
        print(f"minimopd grade: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0 if report.full_marks else 1
    if args.verbose:
        for r in report.results:
            print(r.log.rstrip() or f"{r.name}: {r.feedback}")
        print()
    print(report)
    return 0 if report.full_marks else 1
