"""benchmarks/bench_dyps_cost.py: the breakdown table's arithmetic and its argument checks (the
timed configurations compile DyPS, which the CI machine cannot afford here; `bench_train`'s tests
and the training tests cover compiling them)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_dyps_cost  # noqa: E402


def _stage(cpu: float, peak: float, groups: int) -> dict:
    return {"wall": 2 * cpu, "cpu": cpu, "peak_gb": peak, "groups": groups, "agents": 8,
            "num_envs": 16}


def test_rows_add_one_piece_each_and_shares_sum_to_dyps_extra_time():
    stages = [_stage(0.010, 0.001, 1), _stage(0.011, 0.001, 1), _stage(0.015, 0.002, 4),
              _stage(0.016, 0.002, 4), _stage(0.020, 0.003, 4), _stage(0.030, 0.004, 4)]
    rows = bench_dyps_cost.table_rows("rolegame", stages)
    assert len(rows) == len(bench_dyps_cost.STAGES) == 6
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert [c[3] for c in cells] == [label for label, _, _ in bench_dyps_cost.STAGES]
    assert [c[6] for c in cells] == ["10.0", "11.0", "15.0", "16.0", "20.0", "30.0"]  # CPU ms
    assert [c[7] for c in cells] == ["1.00", "1.10", "1.50", "1.60", "2.00", "3.00"]  # x PS
    assert [c[8] for c in cells] == ["+10.0", "+1.0", "+4.0", "+1.0", "+4.0", "+10.0"]  # added
    assert [c[9] for c in cells] == ["-", "5%", "20%", "5%", "20%", "50%"]  # of 20 ms over PS
    assert cells[-1][11] == "4.00"  # memory x PS


def test_too_few_iterations_is_refused_before_compiling(capsys):
    with pytest.raises(SystemExit):
        bench_dyps_cost.main(["--envs", "rolegame", "--iterations", "1"])
    assert "--iterations 1" in capsys.readouterr().err
