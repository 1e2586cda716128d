"""Every lab: labs/ is generated from solutions/, the student version fails, the solution passes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from minimopd import grading, notebooks
from minimopd.grading import LABS, NOT_IMPLEMENTED, grade_notebook

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("lab*.ipynb"))
IDS = [p.stem for p in SOLUTIONS]


def student_path(src: Path) -> Path:
    return ROOT / "labs" / src.name


def _solution_regions(source: str) -> list[str]:
    return re.findall(r"### BEGIN SOLUTION\n(.*?)\n\s*### END SOLUTION", source, flags=re.S)


@pytest.fixture(scope="module")
def reports():
    """Grade each solution and student notebook once (each grading runs the notebook)."""
    cache = {}

    def get(path: Path):
        if path not in cache:
            cache[path] = grade_notebook(str(path))
        return cache[path]
    return get


def test_there_are_labs():
    assert SOLUTIONS, "no solutions/lab*.ipynb found"
    for src in SOLUTIONS:
        assert grading.lab_of(src.name) in LABS, f"{src.name} has no entry in grading.LABS"


def test_labs_are_up_to_date():
    stale = notebooks.build_labs(str(ROOT / "solutions"), str(ROOT / "labs"), check=True)
    assert stale == [], f"stale student labs {stale}: run `minimopd build-labs`"


@pytest.mark.parametrize("src", SOLUTIONS, ids=IDS)
def test_build_is_deterministic(src):
    assert notebooks.render(notebooks.build_lab(str(src))) == notebooks.render(notebooks.build_lab(str(src)))


@pytest.mark.parametrize("src", SOLUTIONS, ids=IDS)
def test_student_version_has_no_solutions_or_hidden_tests(src):
    text = student_path(src).read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "hidden=True"):
        assert marker not in text, f"{marker!r} leaked into {student_path(src).name}"
    source = nbformat.read(str(src), as_version=4)
    student = nbformat.read(str(student_path(src)), as_version=4)
    solution_cells = [c for c in source.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert solution_cells
    for cell in solution_cells:
        regions = _solution_regions(cell.source)
        assert regions, f"solution cell {cell.id} has no ### BEGIN/END SOLUTION region"
        twin = next(c for c in student.cells if c.id == cell.id)
        assert "raise NotImplementedError()" in twin.source
        assert twin.source.split("# YOUR CODE HERE")[0] in cell.source  # signature + docstring kept
        for line in "\n".join(regions).splitlines():
            if len(line.strip()) > 12:
                assert line.strip() not in twin.source, f"solution line leaked: {line.strip()}"
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
               for c in student.cells if c.cell_type == "code")


@pytest.mark.parametrize("src", SOLUTIONS, ids=IDS)
def test_nbgrader_metadata_matches_the_grader(src):
    """One test cell per graded function, worth the same points in nbgrader and in `minimopd grade`."""
    lab = grading.lab_of(src.name)
    nb = json.loads(student_path(src).read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    tests = {c["metadata"]["nbgrader"]["grade_id"]: c for c in nb["cells"]
             if c["metadata"].get("nbgrader", {}).get("grade")}
    for gf in LABS[lab]:
        cell = tests.get(f"test_{gf.name}")
        assert cell is not None, f"no test cell test_{gf.name}"
        assert cell["metadata"]["nbgrader"]["points"] == gf.points
        assert cell["metadata"]["nbgrader"]["locked"] and cell["metadata"]["editable"] is False
        assert f'check("{gf.name}", {gf.name})' in "".join(cell["source"])
    assert sum(c["metadata"]["nbgrader"]["points"] for c in tests.values()) == sum(g.points for g in LABS[lab])


@pytest.mark.parametrize("src", SOLUTIONS, ids=IDS)
def test_solution_gets_full_marks(src, reports):
    report = reports(src)
    assert report.cell_errors == [], report.cell_errors
    assert report.full_marks and report.total == sum(g.points for g in LABS[report.lab]), str(report)


@pytest.mark.parametrize("src", SOLUTIONS, ids=IDS)
def test_student_version_fails_every_function(src, reports):
    report = reports(student_path(src))
    assert report.total == 0 < report.max, str(report)
    for r in report.results:
        assert NOT_IMPLEMENTED in r.feedback, f"{r.name}: {r.feedback}"


def test_grade_cli_exit_codes(capsys):
    src = SOLUTIONS[0]
    assert grading.main([str(src)]) == 0
    assert grading.main([str(student_path(src))]) == 1
    out = capsys.readouterr().out
    assert "total" in out and "not implemented yet" in out
    assert grading.main([str(ROOT / "labs" / "missing.ipynb")]) == 2


def test_build_labs_check_detects_stale_and_missing(tmp_path, capsys):
    src_dir, dst_dir = tmp_path / "solutions", tmp_path / "labs"
    src_dir.mkdir()
    for src in SOLUTIONS:
        shutil.copy(src, src_dir / src.name)
    expected = [str(dst_dir / s.name) for s in SOLUTIONS]
    assert notebooks.build_labs(str(src_dir), str(dst_dir), check=True) == expected  # missing
    assert notebooks.build_labs(str(src_dir), str(dst_dir)) == expected
    assert notebooks.build_labs(str(src_dir), str(dst_dir), check=True) == []
    assert (dst_dir / SOLUTIONS[0].name).read_text() == student_path(SOLUTIONS[0]).read_text()

    nb = nbformat.read(str(src_dir / SOLUTIONS[0].name), as_version=4)
    nb.cells[0].source += "\n\nAn edit to the source."
    nbformat.write(nb, str(src_dir / SOLUTIONS[0].name))
    assert notebooks.build_labs(str(src_dir), str(dst_dir), check=True) == [expected[0]]
    assert notebooks.main(["--check", "--src", str(src_dir), "--dst", str(dst_dir)]) == 1
    assert "run `minimopd build-labs`" in capsys.readouterr().err
    assert notebooks.main(["--src", str(src_dir), "--dst", str(dst_dir)]) == 0
    assert notebooks.main(["--check", "--src", str(src_dir), "--dst", str(dst_dir)]) == 0


def test_unmarked_solution_region_is_rejected(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": notebooks.DEFAULT_KERNELSPEC})
    nb.cells = [nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")]
    path = tmp_path / "lab99_x.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(RuntimeError, match="non-solution cell"):
        notebooks.build_lab(str(path))
