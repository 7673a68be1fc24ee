"""Every sharing method under every base algorithm, trained from the command line on every preset.

Each cell of the matrix is one `python -m dyps_jax.train --env ENV --method M --algo A` process with a
tiny budget (`--iterations` PPO iterations of `--num-envs` episodes): it checks that the combination
is accepted, compiles, trains without diverging and writes its run folder, or that it is refused
before compiling with a clear message (e.g. MAPPO on a scenario without a global state). Results go
to `experiments/results/cli_matrix.{json,md}` after every cell, so an interrupted sweep resumes.

    python experiments/cli_matrix.py                       # all presets, methods and algorithms
    python experiments/cli_matrix.py --envs lbf-1 --algos ippo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import jax

import dyps_jax
from dyps_jax.checkpoint import write_atomic

RESULTS = Path(__file__).parent / "results"
PRESETS = ("lbf-1", "lbf-2", "rware-1", "rware-2", "rolegame", "ridehailing-1", "ridehailing-2",
           "medical")


def run_cell(env: str, method: str, algo: str, iterations: int, num_envs: int, out: Path,
             timeout: float) -> dict:
    """One CLI training run; returns its outcome, exit code, wall seconds and final return."""
    steps = num_envs * dyps_jax.envs.make(env).max_steps * iterations
    cmd = [sys.executable, "-m", "dyps_jax.train", "--env", env, "--method", method, "--algo", algo,
           "--num-envs", str(num_envs), "--total-steps", str(steps), "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "exit": None, "seconds": round(timeout, 1), "message": ""}
    seconds = round(time.perf_counter() - t0, 1)
    last = (proc.stderr.strip().splitlines() or [""])[-1][:200]
    if proc.returncode == 2 and "error:" in proc.stderr:
        return {"outcome": "refused", "exit": 2, "seconds": seconds, "message": last}
    if proc.returncode != 0:
        return {"outcome": "failed", "exit": proc.returncode, "seconds": seconds, "message": last}
    summaries = sorted(out.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(summaries[-1].read_text()) if summaries else {}
    return {"outcome": "trained" if summary.get("status") == "completed" else "no summary",
            "exit": 0, "seconds": seconds, "message": "",
            "final_return": summary.get("final_return"), "iterations": summary.get("iterations")}


def write_tables(stem: Path, cells: dict, command: str, rev: str) -> None:
    write_atomic(stem.with_suffix(".json"), json.dumps(
        {"command": command, "git": rev, "jax": jax.__version__, "cells": cells}, indent=1))
    counts: dict[str, int] = {}
    for cell in cells.values():
        counts[cell["outcome"]] = counts.get(cell["outcome"], 0) + 1
    lines = [
        "# Every method under every algorithm, from the command line, on every preset", "",
        f"Command: `{command}`  ",
        f"Last cell {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, device "
        f"{jax.devices()[0].device_kind}, jax {jax.__version__}, git {rev} (each cell's own in "
        f"the .json). Each cell is one "
        "`python -m dyps_jax.train --env ENV --method METHOD --algo ALGO --num-envs N "
        "--total-steps S --quiet` process (S = the given number of iterations); seconds include "
        "start-up and compilation. refused = stopped before compiling with the message shown.", "",
        "Outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), "",
        "| preset | algo | method | outcome | seconds | final return | message |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for key, cell in cells.items():
        env, algo, method = key.split("|")
        ret = cell.get("final_return")
        lines.append(f"| {env} | {algo} | {method} | {cell['outcome']} | {cell['seconds']} | "
                     f"{'' if ret is None else f'{ret:.4g}'} | "
                     f"{cell['message'].replace('|', '/')} |")
    write_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default=",".join(PRESETS))
    parser.add_argument("--methods", default=",".join(dyps_jax.METHODS))
    parser.add_argument("--algos", default=",".join(dyps_jax.ALGOS))
    parser.add_argument("--iterations", type=int, default=3,
                        help="PPO iterations per run (SePS needs one after pre-training)")
    parser.add_argument("--num-envs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--name", default="cli_matrix")
    args = parser.parse_args()
    if args.iterations < 2:
        parser.error(f"--iterations: SePS needs at least 2, got {args.iterations}")

    stem = RESULTS / args.name
    previous = stem.with_suffix(".json")
    cells = json.loads(previous.read_text())["cells"] if previous.exists() else {}
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    command = "python experiments/cli_matrix.py " + " ".join(sys.argv[1:])
    # Algorithm outermost: an interrupted sweep has covered every preset under the first ones.
    todo = [(e, a, m) for a in args.algos.split(",") for e in args.envs.split(",")
            for m in args.methods.split(",") if f"{e}|{a}|{m}" not in cells]
    print(f"{len(todo)} runs to do, {len(cells)} cached", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (env, algo, method) in enumerate(todo):
            cell = run_cell(env, method, algo, args.iterations, args.num_envs,
                            Path(tmp) / f"{env}-{algo}-{method}", args.timeout)
            cells[f"{env}|{algo}|{method}"] = cell | {"git": rev}
            print(f"[{i + 1}/{len(todo)}] {env} {algo} {method}: {cell}", flush=True)
            write_tables(stem, cells, command, rev)


if __name__ == "__main__":
    main()
