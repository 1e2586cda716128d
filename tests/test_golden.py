"""Refactors of the training code leave the numbers unchanged: every recipe's smoke run and five
online runs with real updates reproduce the histories (and final weights) recorded in
tests/data/smoke_histories.json, value for value.

Float results depend on the torch build and the CPU's kernels, so the comparison runs where the
golden file was recorded (same torch version, one thread, same CPU model and vector
instructions: `cpu_fingerprint`) and is skipped elsewhere. Re-record
(`python tests/data/record_smoke_histories.py`) only for a change meant to change the numbers, or
on a new machine from the code as it was before the change under test.
"""
import json
import math
import platform
from pathlib import Path

import pytest
import torch

from scripts import load_script

DATA = Path(__file__).parent / "data"
GOLDEN = json.loads((DATA / "smoke_histories.json").read_text())
recorder = load_script("tests/data/record_smoke_histories.py")

pytestmark = pytest.mark.skipif(
    (torch.__version__, torch.get_num_threads(), platform.machine(), recorder.cpu_fingerprint())
    != (GOLDEN["recorded_with"]["torch"], 1, GOLDEN["recorded_with"]["machine"], GOLDEN["recorded_with"].get("cpu")),
    reason=f"golden histories were recorded with {GOLDEN['recorded_with']} (this CPU: {recorder.cpu_fingerprint()}); "
           "to check a refactor here, record them from the unchanged code first (tests/data/record_smoke_histories.py)")


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_rows_match(golden_rows, rows, where):
    assert len(rows) == len(golden_rows), f"{where}: {len(rows)} steps, golden has {len(golden_rows)}"
    for i, (want, got) in enumerate(zip(golden_rows, rows)):
        for key, value in want.items():   # new keys may be added; recorded ones must not change
            assert key in got, f"{where} step {i}: {key!r} is no longer logged"
            assert same(value, got[key]), f"{where} step {i}: {key} = {got[key]!r}, golden {value!r}"


def test_online_runs_reproduce_the_golden_histories_and_weights():
    runs = recorder.online_runs()
    assert set(runs) == set(GOLDEN["online"])
    for name, want in GOLDEN["online"].items():
        assert_rows_match(want["history"], runs[name]["history"], f"online/{name}")
        assert runs[name]["weights"] == want["weights"], f"online/{name}: final weights differ"


@pytest.mark.parametrize("recipe", sorted(GOLDEN["recipes"]))
def test_recipe_reproduces_its_smoke_history(recipe, smoke_run):
    got = json.loads(json.dumps(recorder.summary(smoke_run(recipe).result)))   # same float round trip
    want = GOLDEN["recipes"][recipe]
    assert set(got["histories"]) == set(want["histories"])
    for stage, rows in want["histories"].items():
        assert_rows_match(rows, got["histories"][stage], f"{recipe}/{stage}")
    assert got["evals"] == want["evals"]
