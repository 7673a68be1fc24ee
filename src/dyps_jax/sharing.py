"""The assignment strategies (docs/architecture.md, "Sharing methods"): every sharing method is an
assignment plus small input changes, so one rollout loop and one PPO update serve them all.

| method | G     | assignment                                   | input          |
|--------|-------|----------------------------------------------|----------------|
| nops   | N     | arange(N), fixed                             | observation    |
| ps     | 1     | zeros, fixed                                 | observation    |
| ps-id  | 1     | zeros, fixed                                 | obs + one-hot id |
| dyps   | M     | sampled per episode by the group selector    | observation    |
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def is_per_agent(method: str) -> bool:
    """NoPS gives every agent its own parameter set, applied as a batched matvec
    (docs/architecture.md, "Grouped parameters")."""
    return method == "nops"


def fixed_assignment(method: str, num_envs: int, num_agents: int) -> jax.Array:
    """int32[E, N] for the methods whose assignment never changes."""
    if method == "nops":
        row = jnp.arange(num_agents, dtype=jnp.int32)
    elif method in ("ps", "ps-id"):
        row = jnp.zeros(num_agents, jnp.int32)
    else:
        raise ValueError(f"method: {method!r} has no fixed assignment")
    return jnp.broadcast_to(row, (num_envs, num_agents))


def feature_dim(method: str, obs_dim: int, num_agents: int) -> int:
    return obs_dim + (num_agents if method == "ps-id" else 0)


def policy_features(method: str, obs: jax.Array) -> jax.Array:
    """The policy input of every agent. obs: f32[..., N, D] -> f32[..., N, feature_dim]."""
    if method != "ps-id":
        return obs
    num_agents = obs.shape[-2]
    ids = jnp.broadcast_to(jnp.eye(num_agents, dtype=obs.dtype), obs.shape[:-1] + (num_agents,))
    return jnp.concatenate([obs, ids], axis=-1)
