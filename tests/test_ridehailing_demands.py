"""The simulator with every demand model: CSV trip tables, the gravity city, the paper's lambda."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dyps_jax import envs
from dyps_jax.envs.ridehailing import paper_city
from dyps_jax.envs.trips import write_trips_csv
from dyps_jax.rules import RULES


def _day(env, rule="greedy", seed=0):
    """Totals of one day under a rule, and the drivers present at every step."""
    policy = RULES["ridehailing"][rule].make(env)

    def run(key):
        state, ts = env.reset(key)

        def body(carry, k):
            state, ts = carry
            k_pol, k_env = jax.random.split(k)
            state, ts = env.step(k_env, state, policy(k_pol, ts, state))
            drivers = state.idle.sum() + state.arriving.sum()
            return (state, ts), (ts.metrics, drivers, state.idle.min())

        _, out = jax.lax.scan(body, (state, ts), jax.random.split(key, env.max_steps))
        return out

    metrics, drivers, idle_min = jax.jit(run)(jax.random.key(seed))
    return {k: float(v.sum()) for k, v in metrics.items()}, np.asarray(drivers), int(idle_min.min())


def test_csv_of_the_paper_stream_replays_table_7(tmp_path):
    stream, _ = paper_city("rh1_36")
    path = tmp_path / "rh1.csv"
    write_trips_csv(path, stream)
    env = envs.make("ridehailing-1", demand="replay", trips_path=str(path))
    totals, drivers, _ = _day(env)
    # The same day as the packaged stream: Greedy of the paper's Table 7 (220,770 / 0.37).
    assert totals["gmv"] == pytest.approx(220775.79, abs=1.0)
    assert totals["orr"] == pytest.approx(0.370340, abs=1e-5)
    assert np.all(drivers == 360)


def test_small_csv_city_replays_exactly(tmp_path):
    path = tmp_path / "trips.csv"
    path.write_text("price,t,origin,destination,duration\n"
                    "12.5,0,0,1,1\n"    # served at t=0: the driver is idle in cell 1 at t=1
                    "30.0,0,0,3,2\n"
                    "7.0,1,1,0,1\n"
                    "99.0,3,2,2,1\n")
    env = envs.make("ridehailing-1", rows=2, cols=2, city="", demand="replay",
                    trips_path=str(path), horizon=5, drivers_per_cell=1, max_candidates=4)
    totals, drivers, _ = _day(env)
    # Cell 0 has one driver: Greedy serves the 30.0 order at t=0, the 12.5 one expires at t=2.
    # Cell 1's driver takes the 7.0 order at t=1; cell 2 serves the 99.0 order at t=3.
    assert totals["gmv"] == pytest.approx(30.0 + 7.0 + 99.0)
    assert totals["served"] == 3
    assert totals["orr"] == pytest.approx(3 / 4)
    assert np.all(drivers == 4)


def test_gravity_city_runs_and_conserves_drivers():
    env = envs.make("ridehailing-1", rows=8, cols=8, city="", demand="gravity", max_duration=4,
                    gravity_mean_rate=4.0)
    for rule in ("greedy", "random"):
        totals, drivers, idle_min = _day(env, rule)
        assert np.all(drivers == 640) and idle_min >= 0
        assert totals["gmv"] > 0 and 0 < totals["orr"] <= 1
    greedy, _, _ = _day(env, "greedy")
    nearest, _, _ = _day(env, "nearest")
    assert greedy["gmv"] > nearest["gmv"]


def test_synthetic_lambda_city_from_seed():
    a = envs.make("ridehailing-1", city="", city_seed=1)
    b = envs.make("ridehailing-1", city="", city_seed=2)
    rates_a, rates_b = a.demand_model.rates, b.demand_model.rates
    assert rates_a.shape == (144, 36) and not np.array_equal(rates_a, rates_b)
    # The paper's generator: base in 2..9 plus noise in -2..2, floored at 0.
    assert rates_a.min() >= 0 and rates_a.max() <= 11
    totals, drivers, _ = _day(a)
    assert np.all(drivers == 360) and totals["gmv"] > 0


@pytest.mark.parametrize("params, match", [
    ({"demand": "replay", "trips_path": "/no/such/file.csv", "city": ""}, "file.csv"),
    ({"demand": "uber"}, "allowed: poisson, replay, gravity"),
    ({"rows": 10}, "rh1_36"),
    ({"max_candidates": 0}, "max_candidates"),
])
def test_bad_parameters_name_the_value(params, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        env = envs.make("ridehailing-1", **params)
        env.demand_model  # noqa: B018  (the trip table is read when the model is first built)
