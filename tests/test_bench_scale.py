"""benchmarks/bench_scale.py: a tiny memory-only sweep through real subprocesses, and the report's
handling of failures (out of memory, skipped larger sizes) and of the DyPS memory breakdown."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_scale  # noqa: E402


def test_tiny_memory_only_sweep_writes_table_and_plot(tmp_path):
    # PS only: one DyPS compile alone takes 40-65 s on the 2-core machine; the DyPS rows' rendering
    # is covered below without compiling.
    out, png = tmp_path / "scale.md", tmp_path / "scale.png"
    argv = ["--sizes-medical", "200", "--pois-per-region", "0.1", "--sizes-ridehailing", "4x4",
            "--methods", "ps", "--memory-only", "--out", str(out), "--plot", str(png)]
    text = bench_scale.main(argv)

    assert out.read_text() == text
    assert text.startswith("# Training scaling with the number of agents\n")
    assert f"- command: `python benchmarks/bench_scale.py {' '.join(argv)}`" in text
    assert "- jax " in text and "git revision" in text
    rows = [line for line in text.splitlines() if line.startswith(("| medical", "| ridehailing"))]
    assert len(rows) == 2
    medical = [c.strip() for c in rows[0].split("|")[1:-1]]
    ride = [c.strip() for c in rows[1].split("|")[1:-1]]
    assert medical[:5] == ["medical", "200", "200 regions, 20 POIs", "ps", "1"]
    assert ride[:5] == ["ridehailing", "16", "4 x 4 cells", "ps", "1"]
    for cells in (medical, ride):
        assert cells[-1] == "ok"
        assert cells[7] == "-"  # s / iteration: not timed with --memory-only
        assert 0 < float(cells[9]) < 1  # XLA peak GB
        assert float(cells[10]) > 0  # peak RSS GB
        assert cells[12] == "1.00"  # memory x PS of PS itself
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_child(spec, timeout):
    """PS fine at every size; DyPS out of memory from 5000 regions on."""
    n = spec["env_params"]["num_cbgs"]
    if spec["method"] == "dyps" and n >= 5000:
        return {"status": "out of memory: JaxRuntimeError: RESOURCE_EXHAUSTED: ...", "rss_gb": 3.0}
    peak = {"ps": 1.0, "dyps": 1.4, "dyps-no-vlstm": 1.2, "dyps-no-cvae": 1.3}[spec["method"]]
    return {"status": "ok", "agents": n, "groups": 1 if spec["method"] == "ps" else 4,
            "setup_s": 1.0, "compile_s": 2.0, "peak_gb": peak * n / 1000,
            "s_per_iter": peak * n / 1000, "agent_sps": 63 * 1000 / peak, "rss_gb": 1.0,
            "device": "fake (cpu)", "jax": "0.0"}


def test_out_of_memory_is_recorded_and_larger_sizes_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_scale, "run_child", _fake_child)
    out, png = tmp_path / "scale.md", tmp_path / "scale.png"
    text = bench_scale.main(["--scenarios", "medical", "--sizes-medical", "10000,1000,5000",
                             "--methods", "ps,dyps,dyps-no-vlstm,dyps-no-cvae",
                             "--out", str(out), "--plot", str(png)])

    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("| medical |")]
    table = {(r[1], r[3]): r for r in rows[:12]}  # the main table; the breakdown follows
    assert [r[1] for r in rows[:12]] == ["1,000"] * 4 + ["5,000"] * 4 + ["10,000"] * 4
    assert table[("1,000", "dyps")][11:14] == ["1.40", "1.40", "ok"]  # time, memory x PS
    assert table[("5,000", "dyps")][-1].startswith("out of memory")
    assert table[("10,000", "dyps")][-1] == "skipped (5,000 regions, 31,949 POIs failed)"
    assert table[("10,000", "ps")][-1] == "ok"
    assert "## Where DyPS's memory goes" in text
    breakdown = rows[12]  # only 1000 regions has DyPS and its ablations
    assert breakdown[1] == "1,000 regions, 6,390 POIs"
    assert [float(x) for x in breakdown[2:]] == pytest.approx([1.0, 1.4, 0.2, 0.1, 0.1])
    assert len(rows) == 13 and png.exists()


def test_sizes_and_out_of_memory_errors():
    assert bench_scale.parse_sizes("ridehailing", "32x32, 10,4x8") == [(4, 8), (10, 10), (32, 32)]
    assert bench_scale.parse_sizes("medical", "2500,1000") == [(1000, 1), (2500, 1)]
    with pytest.raises(ValueError, match="--sizes-medical"):
        bench_scale.parse_sizes("medical", "10x10")
    with pytest.raises(ValueError, match="--sizes-ridehailing"):
        bench_scale.parse_sizes("ridehailing", "0x3")
    assert bench_scale.env_params("medical", (3130, 1), bench_scale.POIS_PER_REGION) == {
        "num_cbgs": 3130, "num_pois": 20000}
    assert bench_scale.out_of_memory(MemoryError())
    assert bench_scale.out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory"))
    assert not bench_scale.out_of_memory(ValueError("num_groups"))
    assert bench_scale.fmt(math.nan, ".1f") == "-"
