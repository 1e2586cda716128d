"""The instructor's flow: nbgrader generate_assignment + autograde give the points minimopd grade gives.

A temporary nbgrader course holds each lab's solution as its source; the released (student)
version and the solution are submitted by two students, `nbgrader autograde` runs them in a
kernel (smoke profile), and the points per graded function must equal `minimopd grade`'s on
the same two notebooks."""
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


def _nbgrader(course: Path, *args: str) -> None:
    env = dict(os.environ, MINIMOPD_PROFILE="smoke", MINIMOPD_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("stem", LABS)
def test_nbgrader_autograde_agrees_with_minimopd_grade(stem, tmp_path):
    from nbgrader.api import Gradebook

    course, lab = tmp_path / "course", stem.split("_")[0]
    (course / "source" / lab).mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course)))
    shutil.copy(ROOT / "solutions" / f"{stem}.ipynb", course / "source" / lab)
    _nbgrader(course, "generate_assignment", lab, "--force")
    released = course / "release" / lab / f"{stem}.ipynb"
    submissions = {"student_version": released, "solution": ROOT / "solutions" / f"{stem}.ipynb"}
    for student, path in submissions.items():
        (course / "submitted" / student / lab).mkdir(parents=True)
        shutil.copy(path, course / "submitted" / student / lab / f"{stem}.ipynb")
        _nbgrader(course, "db", "student", "add", student)
    _nbgrader(course, "autograde", lab, "--force")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, path in submissions.items():
            sub = gb.find_submission(lab, student)
            nbgrader_points = {g.name.removeprefix("test_"): g.score for nb in sub.notebooks
                               for g in nb.grades if g.max_score}
            ours = grade_notebook(str(path)).points
            assert nbgrader_points == ours, (student, nbgrader_points, ours)
    assert sum(ours.values()) > 0  # the solution scored; the student version scored 0 (above)
