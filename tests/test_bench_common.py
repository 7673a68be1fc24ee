"""benchmarks/common.py: a results file's git revision is marked dirty by uncommitted code only."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_new_results_files_do_not_mark_the_revision_dirty(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for name in ("src/pkg.py", "benchmarks/bench_x.py", "benchmarks/results/old.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(common, "ROOT", tmp_path)
    clean = common.git_revision(common.CODE_PATHS)
    assert clean and not clean.endswith("-dirty")

    (tmp_path / "benchmarks/results/old.md").write_text("a new table\n")  # a sweep's earlier run
    (tmp_path / "benchmarks/results/new.md").write_text("another\n")
    assert common.git_revision(common.CODE_PATHS) == clean
    assert common.git_revision().endswith("-dirty")  # every tracked file counts without paths

    (tmp_path / "benchmarks/bench_x.py").write_text("x = 2\n")
    assert common.git_revision(common.CODE_PATHS) == clean + "-dirty"
