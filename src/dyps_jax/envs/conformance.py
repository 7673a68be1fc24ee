"""One check of any environment against the protocol of `core.Environment`, and random valid actions.

`check_environment(env)` is what the tests run over every registered environment kind; a user adding
an environment runs it on theirs. It raises `ProtocolError` naming the first broken rule:
attribute types, `reset`/`step` shapes and dtypes under `jax.jit` and `jax.vmap`, masks, a state
whose structure survives a step (so `lax.scan` can carry it), randomness drawn only from the key,
and every episode ending within `max_steps`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dyps_jax.envs.core import ACTION_KINDS, Environment, TimeStep, env_kinds


class ProtocolError(AssertionError):
    """An environment breaks the protocol of `core.Environment`."""


def _require(ok: Any, env: Any, message: str) -> None:
    if not bool(ok):
        raise ProtocolError(f"{type(env).__name__}: {message}")


def mask_width(env: Environment) -> int:
    """Width of `TimeStep.action_mask`: A, or A + D for the pointer kind (from a traced reset)."""
    _, timestep = jax.eval_shape(env.reset, jax.random.key(0))
    return int(timestep.action_mask.shape[-1])


def action_shape(env: Environment, width: int | None = None) -> tuple[tuple[int, ...], Any]:
    """(shape, dtype) of the actions of one environment (layouts in `core.Environment`)."""
    n, a = env.num_agents, env.num_actions
    if env.action_kind == "categorical":
        return (n,), jnp.int32
    if env.action_kind == "gaussian":
        return ((n,) if a == 1 else (n, a)), jnp.float32
    width = mask_width(env) if width is None else width
    return (n, width - a), jnp.int32


def random_actions(env: Environment, key: jax.Array, action_mask: jax.Array) -> jax.Array:
    """Uniformly random actions that respect `action_mask` (bool[N, W], one environment).

    Categorical: uniform over the allowed actions. Gaussian: standard normal. Pointer: each active
    draw picks a uniform allowed slot (repeats are allowed: the environment serves a slot once),
    inactive draws pick slot 0.
    """
    a = env.num_actions
    if env.action_kind == "categorical":
        return jax.random.categorical(key, jnp.where(action_mask, 0.0, -jnp.inf)).astype(jnp.int32)
    if env.action_kind == "gaussian":
        shape, _ = action_shape(env, action_mask.shape[-1])
        return jax.random.normal(key, shape)
    slots, draws = action_mask[:, :a].at[:, 0].set(True), action_mask[:, a:]
    logits = jnp.where(slots, 0.0, -jnp.inf)[:, None, :]
    picked = jax.random.categorical(key, jnp.broadcast_to(logits, draws.shape + (a,)))
    return jnp.where(draws, picked, 0).astype(jnp.int32)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_attributes(env: Any) -> None:
    _require(isinstance(env, Environment), env, "lacks members of dyps_jax.envs.Environment: "
             + ", ".join(name for name in ("kind", "num_agents", "obs_dim", "num_actions",
                                           "global_state_dim", "max_steps", "action_kind",
                                           "pointer_layout", "agent_types", "reset", "step")
                         if not hasattr(env, name)))
    _require(env.kind in env_kinds(), env, f"kind {env.kind!r} is not registered")
    for name in ("num_agents", "obs_dim", "num_actions", "global_state_dim", "max_steps"):
        value = getattr(env, name)
        _require(_is_int(value) and value > 0, env, f"{name} must be a positive int, got {value!r}")
    _require(env.action_kind in ACTION_KINDS, env,
             f"action_kind {env.action_kind!r} is not one of {ACTION_KINDS}")
    hash(env)  # jit closes over the environment: it must be hashable (a frozen dataclass)
    layout = env.pointer_layout
    if env.action_kind == "pointer":
        _require(isinstance(layout, tuple) and len(layout) == 3 and all(map(_is_int, layout)),
                 env, f"pointer_layout must be (cell_dim, num_slots, slot_dim), got {layout!r}")
        cell_dim, num_slots, slot_dim = layout
        _require(num_slots == env.num_actions, env,
                 f"pointer_layout slots {num_slots} != num_actions {env.num_actions}")
        _require(cell_dim + num_slots * slot_dim <= env.obs_dim, env,
                 f"pointer_layout {layout} needs more than obs_dim {env.obs_dim} features")
    else:
        _require(layout is None, env, f"pointer_layout must be None for {env.action_kind!r}")
    types = env.agent_types
    if types is not None:
        types = np.asarray(types)
        _require(types.shape == (env.num_agents,) and np.issubdtype(types.dtype, np.integer)
                 and (types >= 0).all(), env,
                 f"agent_types must be None or int[{env.num_agents}] >= 0, got {types!r}")


def _check_timestep(env: Any, ts: TimeStep, width: int, metrics: set[str], batch: tuple) -> None:
    """Shapes and dtypes of a TimeStep (leading `batch` axes from vmap)."""
    n = env.num_agents
    expected = {
        "obs": (batch + (n, env.obs_dim), jnp.float32),
        "reward": (batch + (n,), jnp.float32),
        "done": (batch, jnp.bool_),
        "action_mask": (batch + (n, width), jnp.bool_),
        "global_state": (batch + (env.global_state_dim,), jnp.float32),
    }
    for name, (shape, dtype) in expected.items():
        value = getattr(ts, name)
        _require(value.shape == shape and value.dtype == dtype, env,
                 f"TimeStep.{name} is {value.dtype}{list(value.shape)}, expected "
                 f"{np.dtype(dtype)}{list(shape)}")
    _require(isinstance(ts.metrics, dict) and set(ts.metrics) == metrics, env,
             f"TimeStep.metrics keys {sorted(ts.metrics)} differ from reset's {sorted(metrics)}")
    for name, value in ts.metrics.items():
        _require(value.shape == batch and value.dtype == jnp.float32, env,
                 f"metric {name!r} is {value.dtype}{list(value.shape)}, expected f32{list(batch)}")
    leaves = [ts.obs, ts.reward, ts.global_state, *ts.metrics.values()]
    _require(all(bool(jnp.isfinite(x).all()) for x in leaves), env, "non-finite values")


def check_environment(env: Any, seed: int = 0, num_envs: int = 2) -> None:
    """Checks `env` against the protocol of `core.Environment`; raises `ProtocolError`.

    Runs `num_envs` whole episodes of `max_steps` random valid actions (`random_actions`) as one
    jitted, vmapped `lax.scan`, so use small parameters. Checks: the attributes and their types;
    `reset` and `step` give TimeSteps of the declared shapes and dtypes, the same metric names and a
    state of unchanged structure; `reset` gives zero rewards, done False and at least one allowed
    action (or draw slot) per agent; the same key gives the same result twice; every episode is
    done by step `max_steps`.
    """
    _check_attributes(env)
    key = jax.random.key(seed)
    reset = jax.jit(env.reset)
    state, first = reset(key)
    width = int(first.action_mask.shape[-1])
    if env.action_kind == "pointer":
        _require(width > env.num_actions, env, f"pointer action_mask width {width} leaves no "
                 f"draws after the {env.num_actions} slots")
    else:
        _require(width == env.num_actions, env,
                 f"action_mask width {width} != num_actions {env.num_actions}")
    metrics = set(first.metrics)
    _check_timestep(env, first, width, metrics, ())
    _require(not bool(first.done) and not bool(first.reward.any()), env,
             "reset must give done False and zero rewards")
    allowed = first.action_mask[:, : env.num_actions]
    _require(env.action_kind == "pointer" or bool(allowed.any(axis=-1).all()), env,
             "an agent has no allowed action after reset")
    _check_draws_prefix(env, first.action_mask)
    again = reset(key)
    _require(_equal((state, first), again), env, "reset with the same key differs")

    actions = random_actions(env, jax.random.key(seed + 1), first.action_mask)
    shape, dtype = action_shape(env, width)
    _require(actions.shape == shape and actions.dtype == dtype, env, "random_actions layout")
    step = jax.jit(env.step)
    k_step = jax.random.key(seed + 2)
    new_state, ts = step(k_step, state, actions)
    _check_timestep(env, ts, width, metrics, ())
    _require(_same_structure(state, new_state), env,
             "step changes the state's tree structure, shapes or dtypes (lax.scan cannot carry it)")
    _require(_equal((new_state, ts), step(k_step, state, actions)), env,
             "step with the same key, state and actions differs")

    def episode(key: jax.Array) -> tuple[TimeStep, jax.Array]:
        k_reset, k_run = jax.random.split(key)
        state, ts = env.reset(k_reset)

        def body(carry, k):
            state, ts, ended = carry
            k_act, k_env = jax.random.split(k)
            state, ts = env.step(k_env, state, random_actions(env, k_act, ts.action_mask))
            return (state, ts, ended | ts.done), ts

        (_, _, ended), steps = jax.lax.scan(
            body, (state, ts, jnp.zeros((), bool)), jax.random.split(k_run, env.max_steps))
        return steps, ended

    steps, ended = jax.jit(jax.vmap(episode))(jax.random.split(key, num_envs))
    _check_timestep(env, jax.tree.map(lambda x: x[:, -1], steps), width, metrics, (num_envs,))
    _require(bool(ended.all()), env, f"an episode is not done after max_steps = {env.max_steps}")
    _check_draws_prefix(env, steps.action_mask)


def _check_draws_prefix(env: Any, action_mask: jax.Array) -> None:
    """Pointer kind: the draws that happen are the first ones (`PointerDraws` relies on it)."""
    draws = action_mask[..., env.num_actions:]
    _require(bool((draws[..., 1:] <= draws[..., :-1]).all()), env,
             "the active pointer draws of an agent are not a prefix of its draws")


def _leaf_specs(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(jnp.shape(x), jnp.result_type(x)) for x in leaves]


def _same_structure(a: Any, b: Any) -> bool:
    return _leaf_specs(a) == _leaf_specs(b)


def _equal(a: Any, b: Any) -> bool:
    if not _same_structure(a, b):
        return False
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
