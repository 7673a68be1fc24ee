"""The run folder: where it is made, and the metrics logs appended to it.

    <out>/<scenario>-<method>-s<seed>-<UTC time>[-<n>]/
        config.json      the full resolved configuration (`--config` reruns it)
        metrics.csv      one row per iteration, appended
        metrics.jsonl    the same rows as JSON lines (non-finite values as null)
        summary.json     final figures and `status`: completed, interrupted, diverged or failed
        checkpoints/     verified Orbax checkpoints of the whole TrainState
        tb/              TensorBoard scalars (with `--tensorboard`)

Rows reach the logs only when a checkpoint holding their iterations is saved (every chunk when
checkpoints are off), so the logs never run ahead of the state a resume starts from; a resume
also drops any row past its checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dyps_jax.checkpoint import json_safe, write_atomic


def check_out(out: str | Path) -> Path:
    """The `--out` folder, created if missing; ValueError if it is a file or not writable."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"out: {str(path)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out: cannot create folder {str(path)!r}: {err.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"out: folder {str(path)!r} is not writable")
    return path


def create(out: str | Path, scenario: str, method: str, seed: int, algo: str = "ippo") -> Path:
    """Makes a new run folder `<scenario>-<method>[-<algo>]-s<seed>-<time>` under `out`; a folder of
    the same name (two runs started in the same second) gets a numbered suffix, claimed atomically by
    `mkdir`."""
    base = check_out(out).resolve()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    suffix = "" if algo == "ippo" else f"-{algo}"
    name = f"{scenario}-{method}{suffix}-s{seed}-{stamp}"
    for n in range(1, 10_000):
        path = base / (name if n == 1 else f"{name}-{n}")
        if path.resolve().parent != base:
            raise ValueError(f"name: {scenario!r} would put the run folder outside {str(base)!r}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise ValueError(f"out: cannot create run folder {str(path)!r}: {err.strerror}") from None
    raise ValueError(f"out: too many run folders named {name!r} in {str(base)!r}")


class MetricsLog:
    """Appends iteration rows to metrics.csv and metrics.jsonl (and TensorBoard when asked)."""

    def __init__(self, run_dir: Path, tensorboard: Any = None):
        self.csv_path = run_dir / "metrics.csv"
        self.jsonl_path = run_dir / "metrics.jsonl"
        self.tensorboard = tensorboard
        self.fields: list[str] | None = None
        if self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                self.fields = next(csv.reader(f), None)

    def read(self) -> list[dict[str, Any]]:
        """Every row written so far (from the JSON lines)."""
        if not self.jsonl_path.is_file():
            return []
        rows = []
        for line in self.jsonl_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a hard kill
                break
        return rows

    def truncate(self, iterations: int) -> list[dict[str, Any]]:
        """Drops the rows past iteration `iterations` (a resume from that checkpoint); returns the
        rows kept."""
        rows = [r for r in self.read() if r["iteration"] <= iterations]
        write_atomic(self.jsonl_path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
        if rows:
            self.fields = list(rows[0])
            write_atomic(self.csv_path, self._csv(rows, header=True))
        else:
            self.fields = None
            self.csv_path.unlink(missing_ok=True)
        return rows

    def _csv(self, rows: list[dict[str, Any]], header: bool) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields or [], lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        header = self.fields is None
        if header:
            self.fields = list(rows[0])
        with open(self.csv_path, "a", newline="") as f:
            f.write(self._csv(rows, header))
        with open(self.jsonl_path, "a") as f:
            f.writelines(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in rows)
        if self.tensorboard is not None:
            for row in rows:
                for key, value in row.items():
                    if key not in ("iteration", "env_steps"):
                        self.tensorboard.add_scalar(key, value, row["env_steps"])
            self.tensorboard.flush()
