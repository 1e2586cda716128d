"""benchmarks/bench_sampler.py --quick: the table has its columns and both samplers made N tokens."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sampler.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_sampler", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_grid_table(tmp_path):
    bench = load_bench()
    out = tmp_path / "BENCH.md"
    table = bench.main(["--quick", "--device", "cpu", "--out", str(out)])
    assert out.read_text().strip() == table.strip()            # --out appends the same table
    assert "machine:" in table and "command:" in table

    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == bench.COLUMNS
    for col in ("device", "batch", "new tokens", "ours tok/s", "transformers tok/s"):
        assert col in header
    assert any(c.startswith("model") for c in header) and any(c.startswith("speed-up") for c in header)

    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    assert [(r["model (params)"].split()[0], r["batch"], r["new tokens"]) for r in rows] == [
        ("tiny", "1", "4"), ("tiny", "4", "4")]
    for r in rows:
        ours, hf = (int(x) for x in r["tokens ours / HF"].split("/"))
        assert ours == hf == int(r["batch"]) * int(r["new tokens"])   # every row ran the full N
        assert float(r["ours tok/s"].replace(",", "")) > 0
        assert float(r["transformers tok/s"].replace(",", "")) > 0
        assert r["speed-up (ours/HF)"].endswith("x")
