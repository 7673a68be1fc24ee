"""benchmarks/bench_grouped_params.py: a tiny run times every strategy and one set beside them,
and the floor column is the fastest strategy's time over one set's."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_grouped_params  # noqa: E402


def test_tiny_run_reports_the_fastest_strategy_over_one_set(tmp_path):
    out = tmp_path / "grouped.md"
    argv = ["--agents", "24", "--groups", "3", "--steps", "4", "--dim", "5", "--hidden", "16",
            "--outputs", "2", "--repeats", "1", "--out", str(out)]
    text = bench_grouped_params.main(argv)

    assert out.read_text() == text
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    row = dict(zip(header, (c.strip() for c in lines[1].split("|")[1:-1]), strict=True))
    assert (row["N"], row["G"]) == ("24", "3")
    strategies = {s: float(row[f"{s} ms"]) for s in bench_grouped_params.STRATEGIES}
    assert strategies[row["fastest"]] == min(strategies.values())  # ties only in the rounding
    one = float(row["one set ms"])
    assert one > 0
    # Both times are printed to 0.1 ms, the ratio from the unrounded seconds.
    assert float(row["fastest x one set"]) == pytest.approx(
        strategies[row["fastest"]] / one, abs=0.05 / one + 0.01)
    assert float(row["max rel. error"]) < 1e-4


def test_unknown_strategy_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: select, ragged, gather, matvec, blocks"):
        bench_grouped_params.apply("dense", [], None, None)
