"""The labs' autograder: compare a student's function with the library's reference.

    from minimopd.grading import check
    check("masked_mean", masked_mean)            # in a lab: visible cases, one verdict per family
    minimopd grade labs/lab01_sft.ipynb          # the autograder: hidden cases, points per function
    python -m minimopd.grading labs/lab05_grpo.ipynb

Layout: `engine.py` is the machinery (`GradedFunction`, `Case`, `check`, the verdict and its
feedback), `compare.py` the value comparison, `student.py` what runs next to student code
(calling a function on a case, running a notebook's cells), `sandbox.py` the child process that
runs it under time limits, `codec.py` how values cross between the two without pickle,
`report.py` `grade_notebook` and the command line; each `labNN.py` holds one lab's case
generators and known wrong versions and registers its functions in `LABS["labNN"]`.

Adding a lab (the registry is the extension point)
--------------------------------------------------
Write a case generator `seed -> list[Case]` (use `_rng(seed)` for a seeded `random.Random` and
`torch.Generator`, and give every edge case its own family name so feedback names it), then, in
a new `minimopd/grading/labNN.py` imported at the bottom of this file:

    LABS["lab04"] = [
        GradedFunction("dpo_loss", "minimopd.losses.dpo_loss", cases=_dpo_cases, points=4,
                       grad_wrt=(0, 1), hint="...",
                       wrong=((lambda *a, **k: -ref_dpo_loss(*a, **k), "minimise -log sigmoid(...)"),)),
    ]

`wrong` lists the known wrong versions: functions with the reference's signature, each with the
hint to give when the student's output equals its output on a failing case (the engine runs and
compares them).
`reference` may be a callable or a dotted path resolved only when the function is checked, so
registering a lab never imports torch-heavy modules. A student whose function calls the
library's own implementation gets no points: by default that is the reference (when a dotted
path); a lab whose reference is an adapter names the library function in `library=(...)`.
`diagnose(case, expected, got)` is optional: it recognises classic bugs (unshifted log-probs, a missing mask, ...) and returns a
targeted hint; otherwise the case's own hint, then the function's hint, is shown. `compare`
replaces the default value comparison (e.g. to grade a loss but not its stats dict). A lab
notebook `solutions/labNN_*.ipynb` whose graded cells define functions with these names is then
graded by `grade_notebook` with no further code. Function names must be unique across labs
(`check(name, fn)` finds a function in any lab). A lab registered outside this package works
the same way as long as its registry lives in a module file: `grade_notebook` imports that file
in the sandboxed child too (the file of the case generators).
"""
from __future__ import annotations

from .compare import TOLERANCES, compare_values
from .engine import HIDDEN_SEEDS, LABS, NOT_IMPLEMENTED, VISIBLE_SEEDS, Case, GradedFunction, check, find
from .report import FunctionGrade, GradeReport, grade_notebook, lab_of, main
from .student import execute_notebook
from . import lab01, lab02, lab03, lab04, lab05, lab06, lab07, lab08, lab09  # noqa: E402,F401  (each registers its lab in LABS)

__all__ = ["HIDDEN_SEEDS", "LABS", "NOT_IMPLEMENTED", "TOLERANCES", "VISIBLE_SEEDS", "Case",
           "FunctionGrade", "GradedFunction", "GradeReport", "check", "compare_values",
           "execute_notebook", "find", "grade_notebook", "lab_of", "main"]
