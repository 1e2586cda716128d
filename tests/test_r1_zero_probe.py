"""experiments/r1_zero_probe.py: the R1-Zero attempts of RESULTS.md (a more tagged base, prompt
selection) run through the recipe's own stages and report both models."""
import json
from pathlib import Path

import pytest

from scripts import load_script

probe = load_script("experiments/r1_zero_probe.py")


def test_probe_with_selection_trains_a_stage_of_its_own(smoke_run, tmp_path, capsys):
    recipe = smoke_run("r1_zero").result
    out = tmp_path / "p.json"
    assert probe.main(["--profile", "smoke", "--n", "2", "--select", "16", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    # the profile's own tagged share: the recipe's base, but a different RL stage (selection is in its key)
    assert got["base"] == Path(recipe.info["base"]["path"]).name
    assert got["r1_zero"] != Path(recipe.info["r1_zero"]["path"]).name
    assert got["selection"]["selection_candidates"] == 16
    assert {r["n"] for r in got["eval_r1_zero"]} == {2}
    assert set(got["curves"]) == {"reward", "accuracy", "format_rate", "length", "entropy"}
    assert "--- r1_zero" in capsys.readouterr().out
    plain = tmp_path / "plain.json"
    assert probe.main(["--profile", "smoke", "--n", "2", "--json", str(plain)]) == 0
    assert json.loads(plain.read_text())["r1_zero"] == Path(recipe.info["r1_zero"]["path"]).name


def test_probe_rejects_a_tagged_share_outside_0_1():
    with pytest.raises(SystemExit, match="tagged-fraction.*got 1.5"):
        probe.main(["--profile", "smoke", "--tagged-fraction", "1.5"])
