"""benchmarks/bench_online_vs_trl.py --quick: both trainers ran, timed, and generated tokens."""

import pytest

from scripts import load_script

pytest.importorskip("trl")


def load_bench():
    return load_script("benchmarks/bench_online_vs_trl.py")


@pytest.mark.parametrize("method,samples", [("grpo", 2), ("opd", 1)])
def test_quick_table(tmp_path, method, samples):
    bench = load_bench()
    out = tmp_path / "BENCH.md"
    try:
        table = bench.main(["--quick", "--method", method, "--threads", "1", "--out", str(out)])
    except bench.TrlUnavailable as exc:
        pytest.skip(f"trl's GRPOTrainer cannot be built here (offline?): {exc}")
    assert out.read_text().strip() == table.strip()             # --out appends the same table
    for key in ("command:", "machine:", "trl 1.", "load average"):
        assert key in table

    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == bench.COLUMNS
    assert len(lines) == 3                                      # header, rule, one row
    row = dict(zip(header, (c.strip() for c in lines[2].strip("|").split("|"))))
    assert row["model (params)"].startswith("tiny") and row["prompts x samples"] == f"2 x {samples}"
    assert ("GRPOTrainer" if method == "grpo" else "DistillationTrainer") in table
    assert row["max new tokens"] == "8"
    ours_tok, trl_tok = (int(x) for x in row["tokens/step ours / trl"].split("/"))
    assert 0 < ours_tok <= 2 * samples * 8 and 0 < trl_tok <= 2 * samples * 8
    for col in ("ours s/step (median / mean)", "trl s/step (median / mean)"):
        median, mean = (float(x) for x in row[col].split("/"))
        assert median > 0 and mean > 0
    assert float(row["ours tok/s"].replace(",", "")) > 0
    assert float(row["trl tok/s"].replace(",", "")) > 0
    assert row["ratio trl/ours"].endswith("x") and float(row["ratio trl/ours"][:-1]) > 0
    assert all(float(x) >= 0 for x in row["peak RSS ours / trl (MB)"].split("/"))
