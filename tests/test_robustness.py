"""Catalogue of bad inputs and unclean stops (issue 12): each must end in a clear error naming the
value, or be handled as documented, never a traceback or a silently wrong run.

`BAD_INPUTS` lists command lines that must exit 2 with one `dyps-jax: error:` line;
`python tests/test_robustness.py` runs them all and counts clear errors, tracebacks and silent runs.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

import dyps_jax
from dyps_jax import envs
from dyps_jax.config import ConfigAdjusted, config_from_dict

# ---------------------------------------------------------------------------- typed env parameters


@pytest.mark.parametrize("preset, name, raw, want", [
    ("lbf-1", "force_coop", "False", False),
    ("lbf-1", "normalize_reward", "no", False),
    ("lbf-1", "observe_levels", "yes", True),
    ("rware-1", "load_gate", "False", False),
    ("lbf-1", "num_agents", "3", 3),
    ("lbf-1", "penalty", 1, 1.0),
])
def test_string_values_parse_to_the_declared_type(preset, name, raw, want):
    env = envs.make(preset, **{name: raw})
    assert getattr(env, name) == want and type(getattr(env, name)) is type(want)


def test_config_records_parsed_env_params():
    config = dyps_jax.make_config("lbf-1", env_params={"force_coop": "False"})
    assert config.env.params["force_coop"] is False
    assert config.env.build().force_coop is False


@pytest.mark.parametrize("preset, params, match", [
    ("lbf-1", {"force_coop": "maybe"}, r"env.force_coop: must be true or false, got 'maybe'"),
    ("lbf-1", {"num_agents": 2.5}, r"env.num_agents: must be an integer, got 2.5"),
    ("lbf-1", {"field_size": 2}, r"env.field_size: must be >= 3, got 2"),
    ("lbf-1", {"penalty": float("nan")}, r"env.penalty: must be a number \(finite\)"),
    ("lbf-1", {"max_food_level": 0}, r"env.max_food_level: must be >= 1"),
    ("rware-1", {"sensor_range": 0}, r"env.sensor_range: must be >= 1, got 0"),
    ("rware-1", {"load_gate": 1.5}, r"env.load_gate: must be true or false"),
    ("rolegame", {"num_cues": "many"}, r"env.num_cues: must be an integer, got 'many'"),
    ("medical", {"daily_budget": 2.0}, r"env.daily_budget: must be <= 1.0, got 2.0"),
    ("medical", {"stochastic": "sometimes"}, r"env.stochastic: must be true or false"),
    ("ridehailing-1", {"demand": "bogus"}, r"env.demand: unknown 'bogus'; allowed: poisson, replay"),
    ("ridehailing-1", {"reward_scale": -1.0}, r"env.reward_scale: must be > 0.0, got -1.0"),
    ("ridehailing-1", {"base_low": 9, "base_high": 2}, r"env.base_low: must be <= base_high"),
])
def test_every_environment_rejects_bad_parameters(preset, params, match):
    with pytest.raises(ValueError, match=match):
        envs.make(preset, **params)


def test_direct_construction_is_checked_by_the_same_mechanism():
    from dyps_jax.envs.lbf import LevelBasedForaging
    from dyps_jax.envs.rware import ColouredWarehouse

    with pytest.raises(ValueError, match="env.force_coop: must be true or false, got 'False'"):
        LevelBasedForaging(force_coop="False")
    with pytest.raises(ValueError, match="env.num_agents: must be >= 1, got 0"):
        ColouredWarehouse(num_agents=0)


def test_every_registered_parameter_declares_a_type():
    from dyps_jax.envs.core import _REGISTRY
    from dyps_jax.envs.params import _declared

    for kind, cls in _REGISTRY.items():
        for name, (allowed, _) in _declared(cls).items():
            assert set(allowed) <= {int, float, bool, str, type(None)}, (kind, name, allowed)


# ---------------------------------------------------------------------------- ignored settings


def test_toml_train_method_takes_effect(tmp_path, tiny_lbf):
    text = open(tiny_lbf).read().replace("[train]\n", '[train]\nmethod = "nops"\n')
    path = tmp_path / "nops.toml"
    path.write_text(text)
    assert dyps_jax.make_config(str(path)).method == "nops"
    assert dyps_jax.make_config(str(path), method="ps").method == "ps"  # the argument wins


def test_trips_path_without_replay_is_an_error(tmp_path):
    trips = tmp_path / "t.csv"
    trips.write_text("t,origin,destination,duration,price\n0,0,1,1,5.0\n")
    with pytest.raises(ValueError, match="env.trips_path: .*only replayed with demand = 'replay'"):
        dyps_jax.make_config("ridehailing-1", env_params={"trips_path": str(trips)})


def test_batch_size_above_one_iteration(tiny_lbf):
    # an explicit request is refused ...
    with pytest.raises(ValueError, match=r"batch_size: 64 is more than .* = 20\); allowed: 1..20"):
        dyps_jax.make_config(tiny_lbf, num_envs=2, batch_size=64, total_steps=200)
    # ... a preset's value is lowered, and the configuration says so
    with pytest.warns(ConfigAdjusted, match="batch_size"):
        config = dyps_jax.make_config(tiny_lbf, num_envs=1, total_steps=100)
    assert config.ppo.batch_size == 10


def test_total_steps_rounded_down_and_recorded(tiny_lbf):
    with pytest.warns(ConfigAdjusted, match="running 2 iterations = 80 steps"):
        config = dyps_jax.make_config(tiny_lbf, num_envs=4, total_steps=100)
    assert config.total_steps == 80 and config.num_iterations == 2
    assert config.to_dict()["total_steps"] == 80
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dyps_jax.make_config(tiny_lbf, num_envs=4, total_steps=80).total_steps == 80


@pytest.mark.parametrize("kwargs, match", [
    ({"clip_eps": float("inf")}, "clip_eps: must be a finite number, got inf"),
    ({"lr": float("nan")}, "lr: must be a finite number"),
    ({"seed": 2**64}, r"seed: must be in 0..9223372036854775807"),
    ({"seed": -1}, r"seed: must be in 0.."),
])
def test_non_finite_and_out_of_range_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dyps_jax.make_config("lbf-1", **kwargs)


def test_config_roundtrips_through_its_dict(tiny_lbf):
    config = dyps_jax.make_config(tiny_lbf, method="ps-id", num_envs=2, total_steps=200,
                                  env_params={"force_coop": True})
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert dataclasses.replace(config, seed=5) == config_from_dict(config.to_dict(), seed=5)
    with pytest.raises(ValueError, match="not a saved dyps-jax configuration"):
        config_from_dict({"env": {}})


# ---------------------------------------------------------------------------- file inputs


def test_truncated_city_npz_is_a_clear_error(tmp_path):
    from dyps_jax.envs.cities import generate_city

    city = generate_city(5, 7, seed=0, num_days=3)
    path = tmp_path / "city.npz"
    np.savez(path, **city._asdict())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"city file: .*city.npz' is not a readable .npz"):
        dyps_jax.make_config("medical", env_params={"city_path": str(path), "num_cbgs": 5,
                                                    "num_pois": 7})


def test_bad_trips_csv_fails_before_compiling(tmp_path):
    path = tmp_path / "trips.csv"
    path.write_text("t,origin,destination,when,price\n0,0,1,1,5.0\n")
    with pytest.raises(ValueError, match="unknown columns 'when'"):
        dyps_jax.make_config("ridehailing-1", env_params={"trips_path": str(path),
                                                          "demand": "replay"})
    with pytest.raises(ValueError, match="trip table .*missing.csv' does not exist"):
        dyps_jax.make_config("ridehailing-1", env_params={"trips_path": str(tmp_path / "missing.csv"),
                                                          "demand": "replay"})
