"""The instructor's flow: nbgrader generate_assignment + autograde give the points minimopd grade gives.

A temporary nbgrader course holds each lab's solution as its source; the released (student)
version and the solution are submitted by two students, `nbgrader autograde` runs them in a
kernel (smoke profile), and the points per graded function must equal `minimopd grade`'s on
the same two notebooks.

Both submissions end at their last graded cell: `minimopd grade` never runs the experiments
after it (tests/test_grading.py), nbval already runs them for the solutions, and in nbgrader's
kernel they would only double this test's time."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minimopd.grading import grade_notebook

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted(p.stem for p in (ROOT / "solutions").glob("lab*.ipynb"))
CONFIG = """c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "minimopd"
c.ExecutePreprocessor.timeout = 600
"""


def _graded_part(src: Path, dest: Path) -> None:
    """`src` up to its last graded cell (nbgrader's `grade` metadata), written to `dest`."""
    import nbformat
    nb = nbformat.read(src, as_version=4)
    last = max(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade"))
    nb.cells = nb.cells[:last + 1]
    nbformat.write(nb, dest)


def _nbgrader(course: Path, *args: str) -> None:
    env = dict(os.environ, MINIMOPD_PROFILE="smoke", MINIMOPD_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """One nbgrader course with every lab: generate_assignment, two students' submissions of each
    (the released version and the solution), autograde; nbgrader starts once per step, not once
    per lab."""
    course = tmp_path_factory.mktemp("nbgrader") / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course)))
    for stem in LABS:
        lab = stem.split("_")[0]
        (course / "source" / lab).mkdir(parents=True)
        _graded_part(ROOT / "solutions" / f"{stem}.ipynb", course / "source" / lab / f"{stem}.ipynb")
    _nbgrader(course, "generate_assignment", "*", "--force")
    (course / "students.csv").write_text("id\nstudent_version\nsolution\n")
    _nbgrader(course, "db", "student", "import", str(course / "students.csv"))
    for stem in LABS:
        lab = stem.split("_")[0]
        for student, path in _submissions(course, stem).items():
            (course / "submitted" / student / lab).mkdir(parents=True)
            shutil.copy(path, course / "submitted" / student / lab / f"{stem}.ipynb")
    _nbgrader(course, "autograde", "*", "--force")
    return course


def _submissions(course: Path, stem: str) -> dict[str, Path]:
    lab = stem.split("_")[0]
    return {"student_version": course / "release" / lab / f"{stem}.ipynb",
            "solution": course / "source" / lab / f"{stem}.ipynb"}


@pytest.mark.parametrize("stem", LABS)
def test_nbgrader_autograde_agrees_with_minimopd_grade(stem, course):
    from nbgrader.api import Gradebook

    lab = stem.split("_")[0]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, path in _submissions(course, stem).items():
            sub = gb.find_submission(lab, student)
            nbgrader_points = {g.name.removeprefix("test_"): g.score for nb in sub.notebooks
                               for g in nb.grades if g.max_score}
            ours = grade_notebook(str(path)).points
            assert nbgrader_points == ours, (student, nbgrader_points, ours)
    assert sum(ours.values()) > 0  # the solution scored; the student version scored 0 (above)
