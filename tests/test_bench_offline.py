"""benchmarks/bench_offline.py --quick: a row per stage and thread setting with plausible numbers."""
from scripts import load_script


def test_quick_table(tmp_path):
    bench = load_script("benchmarks/bench_offline.py")
    out = tmp_path / "BENCH.md"
    table = bench.main(["--quick", "--out", str(out)])
    assert out.read_text().strip() == table.strip()
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == bench.COLUMNS
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    assert [r["stage"] for r in rows] == ["pretrain", "pretrain", "sft", "sft"]
    for r in rows:
        assert float(r["tokens/s"].replace(",", "")) > 0 and float(r["s/step"]) > 0
        assert r["padding"].endswith("%") and float(r["process peak RSS (MB)"]) > 50
    assert rows[0]["padding"] == "0%"                      # pretraining rows are packed
