"""`envs.to_jumanji`: every environment behind jumanji's API, checked with jumanji's own tools."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jumanji import specs
from jumanji.testing.env_not_smoke import check_env_does_not_smoke, check_env_specs_does_not_smoke
from jumanji.types import StepType
from jumanji.wrappers import AutoResetWrapper, VmapWrapper
from test_env_protocol import TINY, tiny_env

from dyps_jax import envs
from dyps_jax.envs.conformance import random_actions
from dyps_jax.envs.jumanji_adapter import JumanjiEnv


def _jumanji_action(env, action):
    # The action spec of the gaussian kind is f32[N, A] even when the environment takes f32[N].
    return action.reshape(env.num_agents, -1) if env.action_kind == "gaussian" else action


def _side_by_side(env, wrapped, key):
    """One episode of the adapter and of the bare environment with the same keys and actions."""
    key_next, k_reset = jax.random.split(key)
    state, ts = wrapped.reset(key)
    env_state, env_ts = env.reset(k_reset)

    def body(carry, k_act):
        state, ts, env_state, env_ts, key_next = carry
        action = random_actions(env, k_act, env_ts.action_mask)
        state, ts = wrapped.step(state, _jumanji_action(env, action))
        key_next, k_step = jax.random.split(key_next)
        env_state, env_ts = env.step(k_step, env_state, action)
        return (state, ts, env_state, env_ts, key_next), (ts, env_ts)

    carry = (state, ts, env_state, env_ts, key_next)
    _, steps = jax.lax.scan(body, carry, jax.random.split(jax.random.key(7), env.max_steps))
    return (ts, env_ts), steps


def _same(actual, desired):
    """Equal; floats to 1e-6 relative: the two sides are compiled into one program, and XLA may
    fuse the same arithmetic differently for each (jaxlib 0.10.2 differs in the last bit)."""
    if np.issubdtype(np.asarray(desired).dtype, np.floating):
        np.testing.assert_allclose(actual, desired, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(actual, desired)


@pytest.mark.parametrize("name", sorted(TINY))
def test_adapter_replays_the_environment(name):
    """Same keys and actions: the adapter's observations, rewards and metrics are the env's; step
    types FIRST, MID ..., LAST at the env's done, with discount 0 there; specs hold throughout."""
    env = tiny_env(name)
    wrapped = envs.to_jumanji(env)
    assert isinstance(wrapped, JumanjiEnv)
    check_env_specs_does_not_smoke(wrapped)
    assert wrapped.reward_spec.shape == wrapped.discount_spec.shape == (env.num_agents,)
    (first, env_first), (traj, env_traj) = jax.jit(_side_by_side, static_argnums=(0, 1))(
        env, wrapped, jax.random.key(3))
    np.testing.assert_array_equal(first.observation.agents_view, env_first.obs)
    assert first.step_type == StepType.FIRST and first.observation.step_count == 0
    wrapped.observation_spec.validate(first.observation)
    for field, env_field in (("agents_view", "obs"), ("action_mask", "action_mask"),
                             ("global_state", "global_state")):
        _same(getattr(traj.observation, field), getattr(env_traj, env_field))
    _same(traj.reward, env_traj.reward)
    for metric, values in env_traj.metrics.items():
        _same(traj.extras["metrics"][metric], values)
    done = np.asarray(env_traj.done)
    assert done.any(), "the episode ends within max_steps"
    np.testing.assert_array_equal(np.asarray(traj.step_type),
                                  np.where(done, StepType.LAST, StepType.MID))
    np.testing.assert_array_equal(np.asarray(traj.discount), np.where(done, 0.0, 1.0)[:, None]
                                  * np.ones(env.num_agents))
    np.testing.assert_array_equal(traj.observation.step_count, np.arange(1, env.max_steps + 1))
    for t in (0, env.max_steps - 1):
        wrapped.observation_spec.validate(jax.tree.map(lambda x, t=t: x[t], traj.observation))


@pytest.mark.parametrize("name", sorted(TINY))
def test_vmap_and_auto_reset_wrappers(name):
    """VmapWrapper(AutoResetWrapper(...)) over 3 environments for two episodes' worth of steps:
    at every episode end the observation is a fresh reset's (step count 0) while the reward and the
    discount 0 come from the final transition, and extras keep the terminal observation."""
    env = tiny_env(name)
    adapter = envs.to_jumanji(env)
    wrapped = VmapWrapper(AutoResetWrapper(adapter, next_obs_in_extras=True))

    def rollout(key):
        state, ts = wrapped.reset(jax.random.split(key, 3))

        def body(carry, key):
            state, ts = carry
            keys = jax.random.split(key, 3)
            action = jax.vmap(lambda k, m: _jumanji_action(env, random_actions(env, k, m)))(
                keys, ts.observation.action_mask)
            state, ts = wrapped.step(state, action)
            return (state, ts), (ts, action)

        return jax.lax.scan(body, (state, ts), jax.random.split(key, 2 * env.max_steps))[1]

    traj, actions = jax.jit(rollout)(jax.random.key(0))
    assert traj.observation.agents_view.shape == (2 * env.max_steps, 3, env.num_agents,
                                                  env.obs_dim)
    adapter.action_spec.validate(actions[0, 0])
    last = np.asarray(traj.step_type == StepType.LAST)  # [T, 3]
    assert last.sum(axis=0).min() >= 2, "every environment finishes two episodes"
    np.testing.assert_array_equal(np.asarray(traj.observation.step_count)[last], 0)
    terminal = np.asarray(traj.extras["next_obs"].step_count)[last]
    assert (terminal >= 1).all() and (terminal <= env.max_steps).all()
    np.testing.assert_array_equal(np.asarray(traj.discount)[last], 0.0)
    np.testing.assert_array_equal(np.asarray(traj.discount)[~last], 1.0)


def test_jumanji_random_episode():
    """jumanji's own smoke test: its random actions from the action spec, every action and
    observation validated against the specs, a jitted step."""
    check_env_does_not_smoke(envs.to_jumanji(tiny_env("rolegame")))


def test_action_specs_follow_the_protocol():
    lbf = envs.to_jumanji(tiny_env("lbf"))
    assert isinstance(lbf.action_spec, specs.MultiDiscreteArray)
    assert lbf.action_spec.shape == (3,) and int(lbf.action_spec.maximum.max()) == 5
    ride = envs.to_jumanji(tiny_env("ridehailing"))
    assert ride.action_spec.shape == (6, 4)  # 6 cells x 4 draws over 5 slots
    assert int(ride.action_spec.num_values.max()) == 5
    assert ride.observation_spec.action_mask.shape == (6, 5 + 4)
    medical = envs.to_jumanji(tiny_env("medical"))
    assert medical.action_spec.shape == (6, 1) and medical.action_spec.dtype == jnp.float32


def test_to_jumanji_rejects_what_is_not_an_environment():
    with pytest.raises(ValueError, match="expected a dyps-jax environment .* got dict"):
        envs.to_jumanji({"num_agents": 3})
