"""dyps_jax.envs.trips: the CSV trip-table loader and writer, and drawing a day to export."""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import pytest

from dyps_jax.envs.gravity import GravityDemand
from dyps_jax.envs.hexgrid import HexGrid
from dyps_jax.envs.orders import PaperDemand, ReplayDemand, paper_rates
from dyps_jax.envs.trips import load_trips_csv, sample_day, write_trips_csv

COLUMNS = ("price", "destination", "t", "duration", "origin")  # shuffled on purpose


def trips_3x3() -> np.ndarray:
    """20 trips on a 3x3 grid (l_max 2), f64[20, 5] in stream order, steps deliberately unsorted."""
    rng = np.random.default_rng(0)
    grid = HexGrid(3, 3)
    t = rng.integers(0, 6, 20)
    origin = rng.integers(0, 9, 20)
    cells, within = grid.ring_table(2)
    pick = rng.integers(0, within[origin, -1])
    destination = cells[origin, pick]
    duration = grid.distance(origin, destination)
    price = np.round(rng.uniform(5.0, 40.0, 20), 2)
    return np.stack([t, origin, destination, duration, price], axis=-1).astype(np.float64)


def write_csv(path, header, rows) -> str:
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return str(path)


def shuffled_rows(stream: np.ndarray) -> list[list[str]]:
    index = {"t": 0, "origin": 1, "destination": 2, "duration": 3, "price": 4}
    return [[f"{row[index[name]]:g}" for name in COLUMNS] for row in stream]


def test_load_reorders_columns_and_sorts_by_step_stably(tmp_path):
    stream = trips_3x3()
    path = write_csv(tmp_path / "trips.csv", COLUMNS, shuffled_rows(stream))
    loaded = load_trips_csv(path, num_cells=9, horizon=6, max_duration=2)
    assert loaded.dtype == np.float64 and loaded.shape == (20, 5)
    # Stable by step: within a step, the file order (the arrival order) is kept.
    expected = np.concatenate([stream[stream[:, 0] == t] for t in range(6)])
    np.testing.assert_array_equal(loaded, expected)
    ReplayDemand(loaded, num_cells=9, horizon=6, max_duration=2)


def test_blank_lines_and_header_only(tmp_path):
    path = tmp_path / "trips.csv"
    path.write_text("t,origin,destination,duration,price\n\n0,1,2,1,9.5\n\n")
    np.testing.assert_array_equal(load_trips_csv(path, 9, 6, 2), [[0, 1, 2, 1, 9.5]])
    path.write_text(" t , origin,destination,duration,price\n")
    assert load_trips_csv(path, 9, 6, 2).shape == (0, 5)


def test_missing_column(tmp_path):
    path = write_csv(tmp_path / "trips.csv", ("t", "origin", "destination", "price"),
                     [[0, 1, 2, 9.5]])
    with pytest.raises(ValueError, match=r"missing columns duration; required columns: t, origin, "
                                         r"destination, duration, price"):
        load_trips_csv(path, 9, 6, 2)


def test_extra_column(tmp_path):
    path = write_csv(tmp_path / "trips.csv", COLUMNS + ("driver",), [[9.5, 2, 0, 1, 1, 7]])
    with pytest.raises(ValueError, match=r"unknown columns 'driver'; allowed columns"):
        load_trips_csv(path, 9, 6, 2)


def test_repeated_column(tmp_path):
    path = write_csv(tmp_path / "trips.csv", COLUMNS + ("t",), [[9.5, 2, 0, 1, 1, 0]])
    with pytest.raises(ValueError, match=r"header names t more than once"):
        load_trips_csv(path, 9, 6, 2)


def test_non_numeric_field_names_the_line(tmp_path):
    rows = shuffled_rows(trips_3x3())
    rows[3][0] = "cheap"  # price of data row 3 = line 5
    path = write_csv(tmp_path / "trips.csv", COLUMNS, rows)
    with pytest.raises(ValueError, match=r"line 5, column price: 'cheap' is not a number"):
        load_trips_csv(path, 9, 6, 2)


def test_wrong_field_count_names_the_line(tmp_path):
    rows = shuffled_rows(trips_3x3())
    rows[1] = rows[1][:4]
    path = write_csv(tmp_path / "trips.csv", COLUMNS, rows)
    with pytest.raises(ValueError, match=r"line 3: 4 fields, expected 5"):
        load_trips_csv(path, 9, 6, 2)


def test_out_of_range_origin_names_row_and_range(tmp_path):
    stream = trips_3x3()
    stream[7, 1] = 9
    path = write_csv(tmp_path / "trips.csv", COLUMNS, shuffled_rows(stream))
    message = rf"{re.escape(path)}: row 7: origin = .*9\.0.*; allowed: integers in 0\.\.8"
    with pytest.raises(ValueError, match=message):
        load_trips_csv(path, 9, 6, 2)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty file; expected a header row"):
        load_trips_csv(empty, 9, 6, 2)
    with pytest.raises(FileNotFoundError, match=r"nope\.csv: trip table not found"):
        load_trips_csv(tmp_path / "nope.csv", 9, 6, 2)


def test_write_round_trip_is_exact_and_atomic(tmp_path):
    stream = trips_3x3()
    stream = stream[np.argsort(stream[:, 0], kind="stable")]
    stream[:, 4] += 1e-9  # prices that need all their digits
    path = tmp_path / "out.csv"
    path.write_text("old content")
    write_trips_csv(path, stream)
    np.testing.assert_array_equal(load_trips_csv(path, 9, 6, 2), stream)
    assert os.listdir(tmp_path) == ["out.csv"]  # no temporary file left behind
    assert path.read_text().splitlines()[0] == "t,origin,destination,duration,price"
    with pytest.raises(ValueError, match=r"expected rows of 5 columns"):
        write_trips_csv(tmp_path / "bad.csv", stream[:, :4])
    assert sorted(os.listdir(tmp_path)) == ["out.csv"]


@pytest.mark.parametrize("kind", ["paper", "gravity"])
def test_sample_day_replays_the_draws(kind, tmp_path):
    grid, horizon = HexGrid(3, 3), 12
    if kind == "paper":
        demand = PaperDemand(grid, paper_rates(grid, 0, 9, horizon, seed=1), max_duration=3)
    else:
        demand = GravityDemand(grid, max_duration=3, horizon=horizon, seed=1, max_new=8)
    key = jax.random.key(4)
    stream = sample_day(demand, key)
    assert stream.dtype == np.float64 and stream.shape[1] == 5
    assert np.all(np.diff(stream[:, 0]) >= 0)
    path = tmp_path / "day.csv"
    write_trips_csv(path, stream)
    replay = ReplayDemand(load_trips_csv(path, 9, horizon, 3), 9, horizon, 3)
    keys = jax.random.split(key, horizon)
    step = jax.jit(demand.sample)  # as sample_day draws: eager prices can differ in the last bit
    for t in range(horizon):
        drawn = jax.device_get(step(keys[t], t))
        again = jax.device_get(replay.sample(None, t))
        np.testing.assert_array_equal(again.count, drawn.count)
        k = min(replay.max_new, demand.max_new)
        assert np.all(drawn.count <= k)
        for name in ("price", "destination", "duration"):
            np.testing.assert_array_equal(getattr(again, name)[:, :k], getattr(drawn, name)[:, :k])
    np.testing.assert_array_equal(replay.rates.sum(), len(stream))
