"""benchmarks/bench_sampler.py --quick: the table has its columns and both samplers made N tokens."""
from scripts import load_script


def load_bench():
    return load_script("benchmarks/bench_sampler.py")


def test_quick_grid_table(tmp_path):
    bench = load_bench()
    out = tmp_path / "BENCH.md"
    table = bench.main(["--quick", "--device", "cpu", "--out", str(out)])
    assert out.read_text().strip() == table.strip()            # --out appends the same table
    assert "machine:" in table and "command:" in table

    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == bench.COLUMNS
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    assert [(r["model (params)"].split()[0], r["prompts x samples"], r["new tokens"]) for r in rows] == [
        ("tiny", "1 x 1", "4"), ("tiny", "2 x 2", "4")]
    for r in rows:
        ours, hf = (int(x) for x in r["tokens ours / HF"].split("/"))
        prompts, samples = (int(x) for x in r["prompts x samples"].split("x"))
        assert ours == hf == prompts * samples * int(r["new tokens"])   # every row ran the full N
        assert float(r["ours tok/s"].replace(",", "")) > 0
        assert float(r["transformers tok/s"].replace(",", "")) > 0
        assert r["speed-up (ours/HF)"].endswith("x") and int(r["threads"]) >= 1
        assert r["peak mem ours / HF (MB)"] == "-"                    # only with --memory


def test_peak_memory_of_a_sampler_in_a_child_process():
    import torch
    bench = load_bench()
    mb = bench.child_peak_memory("ours", "tiny", 4, 4, 16, torch.device("cpu"), 1)
    assert 0.0 <= mb < 500.0
