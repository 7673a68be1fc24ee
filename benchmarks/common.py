"""Helpers shared by the benchmark scripts: results-file header, atomic writing, timing loops.

The scripts run as `python benchmarks/<name>.py` put their own folder on `sys.path` and
`import common`. Importing this module also puts the repository's `src/` on `sys.path` (so
`dyps_jax` is found without an install) and does not import JAX: `bench_medical_train.py`'s parent
process must stay free of it, so JAX and `dyps_jax` are imported inside the functions that need
them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


# ----------------------------------------------------------------------------- memory


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB: VmHWM (reset by exec, unlike ru_maxrss, which
    Linux carries over from the parent across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- results header


# What a benchmark's figures depend on: a results file's revision is marked "-dirty" when one of
# these has uncommitted changes, not when earlier results files of the same sweep are new.
CODE_PATHS = ("src", "envs", "benchmarks/*.py", "pyproject.toml")


def git_revision(paths: Sequence[str | Path] | None = None, dirty_suffix: str = "-dirty") -> str:
    """Short HEAD commit, plus `dirty_suffix` when the working tree has uncommitted changes.

    Without `paths`, any change to a tracked file counts; with `paths`, only changes (untracked
    files included) to those paths. "unknown" when git is missing or this is not a checkout.
    """
    status = ["git", "status", "--porcelain"]
    status += ["--", *map(str, paths)] if paths else ["--untracked-files=no"]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(status, cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + (dirty_suffix if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """`python benchmarks/<script> <args>` as run (`argv` None: this process's own arguments)."""
    args = argv if argv is not None else sys.argv[1:]
    return f"python benchmarks/{script} {' '.join(args)}"


def utc_now() -> str:
    return f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}"


def host(processor: bool = True) -> str:
    """'<n> CPU cores visible, <cpu>' (<cpu>: the processor name if known, else the machine)."""
    cpu = (platform.processor() if processor else "") or platform.machine()
    return f"{os.cpu_count()} CPU cores visible, {cpu}"


def load_average() -> str:
    """'1/5/15 min' load averages, e.g. '1.02/0.87/0.60'."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def load_line(load_start: str, seconds: float, note: str = "") -> str:
    """The results bullet with the load averages at the start (`load_average()` then) and now, the
    run's wall seconds, and an optional free-text note."""
    return (f"- load average (1/5/15 min) at start {load_start}, at end {load_average()}; "
            f"whole run {seconds:.0f}s" + (f". {note}" if note else ""))


def header_lines(
    title: str, command: str, device: str, jax_version: str | None = None
) -> list[str]:
    """Title and the command / date / device / jax + git bullets of a results file.

    `device` is the text after "- device: " (e.g. f"{kind} ({platform}), {host()}");
    `jax_version` defaults to this process's jax.
    """
    if jax_version is None:
        import jax

        jax_version = jax.__version__
    return [
        f"# {title}",
        "",
        f"- command: `{command}`",
        f"- date: {utc_now()}",
        f"- device: {device}",
        f"- jax {jax_version}, git revision {git_revision(CODE_PATHS)}",
    ]


def run_header(title: str, script: str, argv: Sequence[str] | None, load_start: str,
               seconds: float, note: str = "") -> list[str]:
    """`header_lines` for this process's first jax device, then `load_line`: the head of a results
    file of a run on one machine."""
    import jax

    device = jax.devices()[0]
    return [*header_lines(title, command_line(script, argv),
                          f"{device.device_kind} ({device.platform}), {host()}"),
            load_line(load_start, seconds, note)]


def add_out_argument(parser: argparse.ArgumentParser, default: Path, what: str = "the table"):
    """`--out [PATH]`: bare `--out` writes to `default` (under benchmarks/results/)."""
    parser.add_argument(
        "--out",
        nargs="?",
        const=str(default),
        default=None,
        help=f"write {what} to this file (default {default.relative_to(ROOT)})",
    )


def write_result(path: str | Path, text: str) -> Path:
    """Writes `text` to `path` atomically (temporary file + rename), creating its folder."""
    from dyps_jax.checkpoint import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path


def print_and_write(text: str, out: str | Path | None) -> None:
    """Prints a blank line and `text`; with `out`, also writes it there and says so."""
    print()
    print(text)
    if out:
        print(f"wrote {write_result(out, text)}")


# ----------------------------------------------------------------------------- timing


def time_calls(fn: Callable, *args: Any, repeats: int) -> float:
    """Median wall seconds of `fn(*args)` (already compiled, so compile time is excluded) over
    `repeats` calls after one warm-up call; each call ends with `jax.block_until_ready`."""
    import jax

    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_carried(fn: Callable, carry: Any, repeats: int, *, keyed: bool = False):
    """Like `time_calls` for `carry, out = fn(carry)`, the carry passed on from call to call.

    keyed: call `fn(carry, key)` instead, with `jax.random.key(2)` for the warm-up call and
    `jax.random.key(3 + i)` for timed call i. Returns (median seconds, last carry, last out).
    """
    import jax

    def call(carry, i):
        return fn(carry, jax.random.key(3 + i)) if keyed else fn(carry)

    carry, out = call(carry, -1)  # warm-up
    jax.block_until_ready((carry, out))
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        carry, out = call(carry, i)
        jax.block_until_ready((carry, out))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), carry, out
