"""benchmarks/bench_sharding.py: layouts parsed and checked, and a run on 4 forced CPU devices
writes its table with the sharded layouts' metrics equal to one device's."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_sharding  # noqa: E402


def test_layouts_are_parsed_and_bad_ones_named():
    assert bench_sharding.parse_layout("2x4") == (2, 4)
    with pytest.raises(argparse.ArgumentTypeError, match="layout '2by4': expected"):
        bench_sharding.parse_layout("2by4")
    with pytest.raises(argparse.ArgumentTypeError, match="layout '0x2': both counts"):
        bench_sharding.parse_layout("0x2")


def test_largest_difference_names_the_metric():
    worst, name = bench_sharding.largest_difference({"a": 1.0, "b": 2.2}, {"a": 1.0, "b": 2.0})
    assert name == "b" and worst == pytest.approx(0.1)


def test_forced_devices_run_writes_the_table(tmp_path):
    out = tmp_path / "sharding.md"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_sharding.py"), "--env", "rolegame",
         "--methods", "dyps-no-repr", "--layouts", "1x1,2x2", "--num-envs", "4",
         "--repeats", "1", "--force-cpu-devices", "4", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| dyps-no-repr")]
    assert [r.split("|")[2].strip() for r in rows] == ["1x1", "2x2"]
    assert "4 CPU devices forced" in out.read_text()
    worst = float(rows[1].split("|")[8].split()[0])
    assert worst < 1e-3, rows[1]
