"""Trip tables on disk: load a CSV of real or exported trips, write one, draw a day to export.

A trip table is a CSV file with a header row naming the columns `t, origin, destination, duration,
price` (any order, no others) and one trip per row: the step it was requested, its origin and
destination cell ids, its duration in steps and its price. Rows of one step and cell are replayed
in file order (their arrival order). `load_trips_csv` turns it into an order stream f64[M, 5] for
`orders.ReplayDemand`; `sample_day` draws a day from any demand model as such a stream, which
`write_trips_csv` exports.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import jax
import numpy as np

from dyps_jax.checkpoint import write_atomic
from dyps_jax.envs.orders import STREAM_COLUMNS, validate_stream


def load_trips_csv(path: str | os.PathLike, num_cells: int, horizon: int,
                   max_duration: int) -> np.ndarray:
    """Reads and checks a trip table; returns its rows as f64[M, 5] in `STREAM_COLUMNS` order.

    Rows are sorted by step with a stable sort, so trips of one step keep their file order.
    Blank lines are skipped; a header without rows gives an empty stream f64[0, 5].

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: empty file, missing, unknown or repeated columns, a row with the wrong number of
        fields, a non-numeric field (naming line, column and value), or a value out of range
        (`orders.validate_stream`: naming the data row, 0-based, and the allowed range).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trip table not found")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header row naming the columns "
                             f"{','.join(STREAM_COLUMNS)}")
        names = [name.strip() for name in header]
        required = ", ".join(STREAM_COLUMNS)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{path}: header names {', '.join(repeated)} more than once; "
                             f"required columns: {required}")
        extra = [name for name in names if name not in STREAM_COLUMNS]
        if extra:
            raise ValueError(f"{path}: unknown columns {', '.join(map(repr, extra))}; "
                             f"allowed columns: {required}")
        missing = [name for name in STREAM_COLUMNS if name not in names]
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(missing)}; "
                             f"required columns: {required}")
        position = [names.index(name) for name in STREAM_COLUMNS]
        rows = []
        for fields in reader:
            if not fields or all(not field.strip() for field in fields):
                continue
            if len(fields) != len(names):
                raise ValueError(f"{path}: line {reader.line_num}: {len(fields)} fields, "
                                 f"expected {len(names)} ({','.join(names)})")
            row = []
            for name, col in zip(STREAM_COLUMNS, position):
                try:
                    row.append(float(fields[col]))
                except ValueError:
                    raise ValueError(f"{path}: line {reader.line_num}, column {name}: "
                                     f"{fields[col]!r} is not a number") from None
            rows.append(row)
    stream = validate_stream(np.asarray(rows, np.float64).reshape(-1, len(STREAM_COLUMNS)),
                             num_cells, horizon, max_duration, source=f"{path}")
    return stream[np.argsort(stream[:, 0], kind="stable")]


def write_trips_csv(path: str | os.PathLike, stream: np.ndarray) -> None:
    """Writes an order stream (f64[M, 5], `STREAM_COLUMNS` order) as a trip table, atomically.

    The file is written to a temporary file in the same directory and renamed over `path`, so a
    reader never sees a half-written table. Integer columns are written as integers and prices
    with `repr`, which reads back to the same float.
    """
    stream = np.asarray(stream, np.float64)
    if stream.ndim != 2 or stream.shape[1] != len(STREAM_COLUMNS):
        raise ValueError(f"{path}: expected rows of {len(STREAM_COLUMNS)} columns "
                         f"{STREAM_COLUMNS}, got shape {stream.shape}")
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(STREAM_COLUMNS)
    for t, origin, destination, duration, price in stream:
        writer.writerow([int(t), int(origin), int(destination), int(duration), repr(float(price))])
    write_atomic(Path(path), text.getvalue())


def sample_day(demand, key: jax.Array) -> np.ndarray:
    """Draws one day from a demand model as an order stream f64[M, 5].

    Step t uses `demand.sample(jax.random.split(key, demand.horizon)[t], t)`. Rows are sorted by
    step, then origin, then slot (the arrival order); orders beyond `max_new` are dropped, as in the
    simulator. Steps are drawn one at a time with one compiled `sample`, so device memory stays
    O(N * max_new) however long the day.
    """
    keys = jax.random.split(key, demand.horizon)
    step = jax.jit(demand.sample)
    rows = []
    for t in range(demand.horizon):
        batch = jax.device_get(step(keys[t], np.int32(t)))
        kept = np.arange(batch.price.shape[1]) < batch.count[:, None]  # [N, K]
        origin, slot = np.nonzero(kept)  # row-major: by origin, then slot
        rows.append(np.stack([np.full(len(origin), t), origin, batch.destination[origin, slot],
                              batch.duration[origin, slot], batch.price[origin, slot]], axis=-1))
    return np.concatenate(rows).astype(np.float64)
