"""Any dyps-jax environment as a jumanji `Environment`: `to_jumanji(env)`.

jumanji's API differs from ours in three ways, which the adapter bridges:

* `step(state, action)` takes no key: the adapter's `State` carries one and splits it every step
  (jumanji's `AutoResetWrapper` also resets from `state.key`).
* A jumanji `TimeStep` has a step type and a discount: FIRST after `reset`, then MID, and LAST with
  discount 0 when our `done` is True. dyps-jax treats every episode end as terminal (the trainer
  never bootstraps past it), and so does the adapter, time limits included.
* The observation is one pytree, `Observation(agents_view, action_mask, global_state, step_count)`
  (the field names of jumanji's multi-agent environments), and the scenario's metrics (GMV,
  deliveries, ...) of the last transition travel in `TimeStep.extras["metrics"]`.

Rewards and discounts are per agent, f32[N]. Actions follow `core.Environment`: int32[N]
(categorical, a `MultiDiscreteArray` spec), f32[N, A] (gaussian, an unbounded `Array` spec; with
A = 1 the environment gets f32[N], as from the trainer) or int32[N, D] pointer draws (a
`MultiDiscreteArray` of A slots per draw).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
from flax import struct
from jumanji import specs
from jumanji.env import Environment as JumanjiEnvironment
from jumanji.types import StepType, TimeStep

from dyps_jax.envs.conformance import action_shape
from dyps_jax.envs.core import Environment
from dyps_jax.envs.core import TimeStep as DypsTimeStep


class Observation(NamedTuple):
    """agents_view: f32[N, obs_dim]; action_mask: bool[N, W] (the environment's mask, W = A, or
    A + D for pointer draws); global_state: f32[global_state_dim]; step_count: int32[]."""

    agents_view: jax.Array
    action_mask: jax.Array
    global_state: jax.Array
    step_count: jax.Array


@struct.dataclass
class State:
    """env_state: the wrapped environment's state; key: the key of the next step or reset;
    step_count: int32[], steps since the last reset."""

    env_state: Any
    key: jax.Array
    step_count: jax.Array


class JumanjiEnv(JumanjiEnvironment[State, specs.Array, Observation]):
    """A dyps-jax environment behind jumanji's `Environment` interface (see the module docstring).

    `env` is the wrapped dyps-jax environment, for its parameters (`num_agents`, ...).
    """

    def __init__(self, env: Environment):
        self.env = env
        _, first = jax.eval_shape(env.reset, jax.random.key(0))
        self._mask_width = int(first.action_mask.shape[-1])
        self._metrics = tuple(sorted(first.metrics))
        super().__init__()

    def __repr__(self) -> str:
        return f"to_jumanji({self.env!r})"

    def reset(self, key: jax.Array) -> tuple[State, TimeStep[Observation]]:
        """key: a PRNG key -> (State, TimeStep with step type FIRST, zero rewards, discount 1)."""
        key, k_reset = jax.random.split(key)
        env_state, ts = self.env.reset(k_reset)
        state = State(env_state=env_state, key=key, step_count=jnp.zeros((), jnp.int32))
        return state, self._timestep(ts, state.step_count, jnp.asarray(StepType.FIRST))

    def step(self, state: State, action: jax.Array) -> tuple[State, TimeStep[Observation]]:
        """action: the layout of `action_spec` -> (State, TimeStep MID, or LAST when done)."""
        key, k_step = jax.random.split(state.key)
        if self.env.action_kind == "gaussian" and self.env.num_actions == 1:
            action = action[..., 0]
        env_state, ts = self.env.step(k_step, state.env_state, action)
        count = state.step_count + 1
        step_type = jnp.where(ts.done, StepType.LAST, StepType.MID).astype(StepType.MID.dtype)
        return State(env_state, key, count), self._timestep(ts, count, step_type)

    def _timestep(self, ts: DypsTimeStep, count: jax.Array, step_type: jax.Array
                  ) -> TimeStep[Observation]:
        discount = jnp.where(step_type == StepType.LAST, 0.0, 1.0)
        return TimeStep(
            step_type=cast(StepType, step_type),  # a traced int8, what jumanji's own envs pass
            reward=ts.reward,
            discount=jnp.full(ts.reward.shape, discount, jnp.float32),
            observation=Observation(ts.obs, ts.action_mask, ts.global_state, count),
            extras={"metrics": {name: ts.metrics[name] for name in self._metrics}},
        )

    @cached_property
    def observation_spec(self) -> specs.Spec[Observation]:
        env, n = self.env, self.env.num_agents
        return specs.Spec(
            Observation,
            "ObservationSpec",
            agents_view=specs.Array((n, env.obs_dim), jnp.float32, "agents_view"),
            action_mask=specs.BoundedArray((n, self._mask_width), bool, False, True, "action_mask"),
            global_state=specs.Array((env.global_state_dim,), jnp.float32, "global_state"),
            step_count=specs.Array((), jnp.int32, "step_count"),
        )

    @cached_property
    def action_spec(self) -> specs.Array:
        env = self.env
        if env.action_kind == "gaussian":
            return specs.Array((env.num_agents, env.num_actions), jnp.float32, "action")
        shape, _ = action_shape(env, self._mask_width)
        return specs.MultiDiscreteArray(jnp.full(shape, env.num_actions, jnp.int32), jnp.int32,
                                        "action")

    @cached_property
    def reward_spec(self) -> specs.Array:
        return specs.Array((self.env.num_agents,), jnp.float32, "reward")

    @cached_property
    def discount_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray((self.env.num_agents,), jnp.float32, 0.0, 1.0, "discount")


def to_jumanji(env: Environment) -> JumanjiEnv:
    """Wraps a dyps-jax environment (e.g. `envs.make("lbf-1")`) as a jumanji `Environment`.

    The result works with jumanji's wrappers (`AutoResetWrapper`, `VmapWrapper`, ...) and with
    libraries built on jumanji's API. Raises ValueError for an object that is not a dyps-jax
    environment.
    """
    if not isinstance(env, Environment):
        raise ValueError(f"to_jumanji: expected a dyps-jax environment (see "
                         f"dyps_jax.envs.Environment), got {type(env).__name__}")
    return JumanjiEnv(env)
