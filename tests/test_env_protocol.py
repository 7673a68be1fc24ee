"""Every registered environment against the environment protocol (`envs.conformance`)."""

import dataclasses

import pytest

from dyps_jax import envs
from dyps_jax.envs.conformance import ProtocolError, check_environment
from dyps_jax.envs.lbf import LevelBasedForaging
from dyps_jax.envs.rolegame import RoleGame

# Small parameters of every registered kind, so that a whole episode compiles and runs in seconds.
TINY = {
    "lbf": dict(field_size=5, num_agents=3, num_food=2, sight=2, max_steps=6),
    "rware": dict(shelf_columns=3, shelf_rows=1, column_height=2, num_agents=2,
                  request_queue_size=2, max_steps=6),
    "ridehailing": dict(rows=2, cols=3, city="", horizon=6, max_duration=2, drivers_per_cell=2,
                        max_candidates=4),
    "medical": dict(num_cbgs=6, num_pois=12, num_days=3, prevented_metric=False),
    "rolegame": dict(num_agents=4, num_types=2, num_cues=2, max_steps=3),
}


def tiny_env(kind: str):
    return envs.build(kind, TINY[kind])


def test_every_registered_kind_has_tiny_parameters():
    assert set(envs.env_kinds()) == set(TINY)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_environment_conforms(kind):
    env = tiny_env(kind)
    assert isinstance(env, envs.Environment)
    check_environment(env)


@dataclasses.dataclass(frozen=True)
class _WrongObsDim(LevelBasedForaging):
    @property
    def obs_dim(self) -> int:
        return 3 * self.num_food + 3 * self.num_agents + 1


@dataclasses.dataclass(frozen=True)
class _NeverDone(RoleGame):
    def step(self, key, state, actions):
        state, ts = super().step(key, state, actions)
        return state, ts.replace(done=ts.done & False)


@dataclasses.dataclass(frozen=True)
class _BadPointerLayout(RoleGame):
    pointer_layout = (1, 2, 3)


@pytest.mark.parametrize("broken, message", [
    (_WrongObsDim(**TINY["lbf"]), r"TimeStep.obs is float32\[3, 15\], expected float32\[3, 16\]"),
    (_NeverDone(**TINY["rolegame"]), "not done after max_steps = 3"),
    (_BadPointerLayout(**TINY["rolegame"]), "pointer_layout must be None"),
])
def test_check_environment_reports_the_broken_rule(broken, message):
    with pytest.raises(ProtocolError, match=message):
        check_environment(broken)
