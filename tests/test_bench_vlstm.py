"""benchmarks/bench_vlstm.py: a tiny run writes its table, and bad sizes stop before compiling."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_vlstm  # noqa: E402


def test_tiny_run_writes_one_row_per_program(tmp_path):
    out = tmp_path / "vlstm.md"
    argv = ["--steps", "6", "--sequences", "3", "--obs-dim", "4", "--actions", "2",
            "--grad-sequences", "2", "--windows", "0,2", "--repeats", "1", "--out", str(out)]
    text = bench_vlstm.main(argv)

    assert out.read_text() == text
    assert f"- command: `python benchmarks/bench_vlstm.py {' '.join(argv)}`" in text
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["forward", "W = all", "W = 2", "W = all, no remat"], rows
    ratios = [float(line.split("|")[3]) for line in text.splitlines()
              if line.startswith("| forward")]
    assert ratios == [1.0]


@pytest.mark.parametrize("argv, match", [(["--steps", "0"], "--steps"),
                                         (["--windows", "4,-1"], "--windows")])
def test_bad_sizes_exit_with_message(argv, match, capsys):
    with pytest.raises(SystemExit):
        bench_vlstm.main(argv)
    assert match in capsys.readouterr().err
