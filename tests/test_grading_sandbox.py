"""The autograder against a hostile student: exits, hangs, crashes, patches, the reference itself.

Each notebook here is a real lab (lab01) with some cells replaced, graded by `grade_notebook`,
which runs the student's code in a child process (minimopd/grading/sandbox.py)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from minimopd import grading
from minimopd.grading import grade_notebook

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "lab01_sft.ipynb"
STUDENT = ROOT / "labs" / "lab01_sft.ipynb"


def _notebook(tmp_path: Path, source: Path, replace: dict[str, str], extra_cells: list[tuple[int, str]] = ()):
    """`source` with the graded cells named in `replace` (grade_id -> new source) swapped, and
    plain code cells inserted, in the order given, at the given indices of the original."""
    nb = nbformat.read(str(source), as_version=4)
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in replace:
            cell.source = replace.pop(gid)
    assert not replace, f"no graded cell {sorted(replace)}"
    for k, (index, src) in enumerate(extra_cells):
        nb.cells.insert(index + k, nbformat.v4.new_code_cell(src))
    path = tmp_path / source.name
    nbformat.write(nb, str(path))
    return path


def test_exits_hangs_interrupts_and_the_reference_cost_only_their_function(tmp_path):
    path = _notebook(tmp_path, SOLUTION, {
        "build_sft_example": "import sys\n\ndef build_sft_example(tokenizer, prompt, response):\n    sys.exit(0)",
        "collate": "import os\n\ndef collate(examples, pad_id):\n    os._exit(0)",
        "token_logprobs": "from minimopd.losses import token_logprobs",
        "masked_mean": "def masked_mean(values, mask, dim=None):\n    while True:\n        pass",
        "sft_loss": "def sft_loss(logprobs, mask):\n    raise KeyboardInterrupt",
    })
    report = grade_notebook(str(path), time_limit=8)
    assert report.total == 0 and not report.full_marks, str(report)
    fb = report.feedback
    assert "raised SystemExit" in fb["build_sft_example"] and "not stop the program" in fb["build_sft_example"]
    assert "ended the process" in fb["collate"]
    assert "library's own implementation (minimopd.losses.token_logprobs)" in fb["token_logprobs"]
    assert "did not finish within 8 s" in fb["masked_mean"]
    assert "raised KeyboardInterrupt" in fb["sft_loss"] and "cell 18 (sft_loss), line 2" in fb["sft_loss"]
    text = str(report)
    assert "timed out" in text and "stopped the grading process" in text


def test_patching_the_grader_or_torch_gives_no_points(tmp_path):
    """Two lines that made an untouched notebook score 10/10 before grading ran in a sandbox."""
    patch = ("import torch, minimopd.grading.engine as engine\n"
             "engine.check = lambda *a, **k: 10.0\n"
             "torch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True")
    path = _notebook(tmp_path, STUDENT, {}, [(3, patch)])
    report = grade_notebook(str(path))
    assert report.total == 0 < report.max, str(report)
    assert all(grading.NOT_IMPLEMENTED in r.feedback for r in report.results)


def test_cells_that_hang_or_exit_are_skipped_and_the_rest_is_graded(tmp_path):
    crash = ("def masked_mean(values, mask, dim=None):\n"
             "    total = (values * mask).sum(dim=dim)\n"
             "    return total / undefined_count")
    path = _notebook(tmp_path, SOLUTION, {"masked_mean": crash},
                     [(3, "import os\nos._exit(3)"), (3, "raise KeyboardInterrupt"), (3, "while True:\n    pass")])
    report = grade_notebook(str(path), notebook_time_limit=20)
    # sft_loss calls the student's masked_mean, so it fails with it
    assert report.points == {"build_sft_example": 2, "collate": 1, "token_logprobs": 3, "masked_mean": 0,
                             "sft_loss": 0}, str(report)
    assert "(cell 18 (masked_mean), line 3: `return total / undefined_count`)" in report.feedback["masked_mean"]
    assert report.cell_errors == [
        "cell 3: ended the process (exit code 3: sys.exit, os._exit or a fatal error); the grader skipped it",
        "cell 4: KeyboardInterrupt (line 1: `raise KeyboardInterrupt`)",
        "cell 5: did not finish within 20 s; the grader skipped it"]


def test_a_function_assigned_from_the_library_gets_no_points(tmp_path):
    path = _notebook(tmp_path, SOLUTION, {
        "collate": "import minimopd.data\ncollate = minimopd.data.collate",
        "sft_loss": ("import minimopd.losses as L\n\n"
                     "def sft_loss(logprobs, mask):\n    return L.sft_loss(logprobs, mask)"),
    })
    report = grade_notebook(str(path))
    assert report.points["collate"] == 0 and report.points["sft_loss"] == 0
    assert report.points["masked_mean"] == 2
    assert "library's own implementation" in report.feedback["collate"]
    assert "library's own implementation" in report.feedback["sft_loss"]


def test_grade_by_lab_id_and_json_for_an_lms(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert grading.main(["--lab", "lab01", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["lab"] == "lab01" and doc["total"] == 0 and doc["max"] == 10
    assert {f["name"] for f in doc["functions"]} == {"build_sft_example", "collate", "token_logprobs",
                                                     "masked_mean", "sft_loss"}
    assert grading.main(["--lab", "lab42"]) == 2
    assert "no notebook for lab42" in capsys.readouterr().err
    assert grading.main([]) == 2 and "minimopd grade --lab lab01" in capsys.readouterr().err
    assert grading.main([str(STUDENT), "--time-limit", "0"]) == 2


def test_minimopd_grade_command_accepts_the_options(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minimopd.cli", "grade", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--lab" in proc.stdout and "--json" in proc.stdout \
        and "--time-limit" in proc.stdout


@pytest.mark.parametrize("name", ["token_logprobs", "masked_mean", "sft_loss", "collate"])
def test_functions_wrong_only_at_training_sizes_fail(name, capsys):
    """Part 2 trains with these functions at the real vocabulary, long rows and a full batch:
    a function that is right only on small inputs must not pass."""
    import torch
    from minimopd import losses
    from minimopd.data import collate

    def token_logprobs(logits, input_ids):
        out = losses.token_logprobs(logits, input_ids)
        return out if logits.shape[-1] <= 12 else out.clone().index_fill_(1, torch.tensor([1]), 0.0)

    def masked_mean(values, mask, dim=None):
        return losses.masked_mean(values if values.shape[-1] <= 12 else values[..., :12], mask[..., :12], dim)

    def sft_loss(logprobs, mask):
        out = losses.sft_loss(logprobs, mask)
        return out if logprobs.shape[0] <= 32 else out * 0.5

    def collate_(examples, pad_id):
        return collate(examples[:32], pad_id) if len(examples) > 32 else collate(examples, pad_id)

    fn = {"token_logprobs": token_logprobs, "masked_mean": masked_mean, "sft_loss": sft_loss,
          "collate": collate_}[name]
    with pytest.raises(AssertionError):
        grading.check(name, fn, hidden=True)
    out = capsys.readouterr().out
    assert re.search(rf"{name}: a (full )?training [^\n]*FAILED", out), out
    assert "FAILED" not in "".join(line for line in out.splitlines(True) if "training" not in line), out
