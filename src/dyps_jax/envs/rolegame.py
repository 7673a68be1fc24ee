"""Role game: the smallest scenario in which agents of different hidden types need different policies.

Every step each agent sees a cue, one of A symbols drawn uniformly and independently per agent, and
picks one of A actions. Agent n has the hidden type `k = n * K // N` (K types in equal blocks, like
the warehouse's robot colours) and is rewarded 1 when `(action + k) mod A == cue`: its type rotates
the meaning of its actions, as the warehouse rotates a robot's actions by its colour. Types are not
observed, so a policy shared by all agents (PS without ids) is right for one type per (cue, action)
pair: with A = K no shared policy beats the uniform policy's 1/A. A policy per type is right every
time. Types show in the rewards, so a role model of (observation, action, reward) sequences can
recover them.

Observation f32[A]: the cue, one-hot. Reward f32[N], per agent. Metric `correct`: share of agents
rewarded this step. Global state f32[N * A]: all cues.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dyps_jax.envs.core import TimeStep, register
from dyps_jax.envs.params import param


@struct.dataclass
class RoleGameState:
    cue: jax.Array  # int32[N]
    step: jax.Array  # int32[]


@register("rolegame")
@dataclasses.dataclass(frozen=True)
class RoleGame:
    num_agents: int = param(8, ge=1)
    num_types: int = param(4, ge=1)
    num_cues: int = param(4, ge=1)
    max_steps: int = param(8, ge=1)

    action_kind = "categorical"
    pointer_layout = None

    def __post_init__(self) -> None:
        if self.num_types > self.num_agents:
            raise ValueError(
                f"env.num_types: every type needs an agent, so at most num_agents "
                f"({self.num_agents}), got {self.num_types}"
            )

    @property
    def num_actions(self) -> int:
        return self.num_cues

    @property
    def obs_dim(self) -> int:
        return self.num_cues

    @property
    def global_state_dim(self) -> int:
        return self.num_agents * self.num_cues

    @property
    def agent_types(self) -> np.ndarray:
        """int32[N]: the hidden type of every agent, in blocks (8 agents, 4 types -> 0,0,1,1,...)."""
        return (np.arange(self.num_agents) * self.num_types // self.num_agents).astype(np.int32)

    def _timestep(self, state: RoleGameState, reward: jax.Array, correct: jax.Array) -> TimeStep:
        obs = jax.nn.one_hot(state.cue, self.num_cues)
        return TimeStep(
            obs=obs,
            reward=reward,
            done=state.step >= self.max_steps,
            action_mask=jnp.ones((self.num_agents, self.num_actions), bool),
            global_state=obs.reshape(-1),
            metrics={"correct": correct},
        )

    def _draw(self, key: jax.Array) -> jax.Array:
        return jax.random.randint(key, (self.num_agents,), 0, self.num_cues, jnp.int32)

    def reset(self, key: jax.Array) -> tuple[RoleGameState, TimeStep]:
        state = RoleGameState(self._draw(key), jnp.zeros((), jnp.int32))
        return state, self._timestep(state, jnp.zeros(self.num_agents), jnp.zeros(()))

    def step(
        self, key: jax.Array, state: RoleGameState, actions: jax.Array
    ) -> tuple[RoleGameState, TimeStep]:
        """actions: int32[N] in [0, A)."""
        types = jnp.asarray(self.agent_types)
        hit = ((actions.astype(jnp.int32) + types) % self.num_cues == state.cue).astype(jnp.float32)
        new = RoleGameState(self._draw(key), state.step + 1)
        return new, self._timestep(new, hit, hit.mean())
