"""The role game: rewards follow the type rotation; no shared policy beats chance, a policy per type
is always right."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyps_jax import envs


def test_types_in_blocks_and_reward_rule():
    env = envs.make("rolegame")
    np.testing.assert_array_equal(env.agent_types, [0, 0, 1, 1, 2, 2, 3, 3])
    state, ts = env.reset(jax.random.key(0))
    assert ts.obs.shape == (8, 4) and not bool(ts.done)
    cue = np.asarray(state.cue)
    right = (cue - env.agent_types) % 4  # the action each agent must take
    _, ts = env.step(jax.random.key(1), state, jnp.asarray(right))
    np.testing.assert_array_equal(ts.reward, np.ones(8))
    _, ts = env.step(jax.random.key(1), state, jnp.asarray((right + 1) % 4))
    np.testing.assert_array_equal(ts.reward, np.zeros(8))
    assert float(ts.metrics["correct"]) == 0.0


def test_episode_ends_at_max_steps():
    env = envs.make("rolegame", max_steps=3)
    state, ts = env.reset(jax.random.key(0))
    for t in range(3):
        assert not bool(ts.done)
        state, ts = env.step(jax.random.key(t), state, jnp.zeros(8, jnp.int32))
    assert bool(ts.done)


def test_no_shared_policy_beats_chance():
    """Every deterministic map cue -> action, used by all agents, is right for exactly 1/K of them."""
    env = envs.make("rolegame")
    types = env.agent_types
    for policy in itertools.product(range(4), repeat=4):
        hits = [(policy[c] + types) % 4 == c for c in range(4)]
        assert np.mean(hits) == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [{"num_types": 9}, {"num_cues": 0}, {"max_steps": 1.5}])
def test_bad_parameters(bad):
    with pytest.raises(ValueError, match="env\\."):
        envs.make("rolegame", **bad)
