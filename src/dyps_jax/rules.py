"""Rule-based baseline policies (Table 7), a registry by scenario kind.

A rule is a `Rule(make, env_overrides)`: `make(env)` returns a pure JAX policy

    policy(key, timestep, state) -> actions

(for the Medical scenario, f32[N] logits that the environment turns into doses with a softmax), and
`env_overrides` are environment parameters the rule needs (the no-vaccine rule runs the environment
with `vaccinate=False`, so "no doses" is not encoded as -inf logits).

Ride-hailing rules return the pointer head's draws, int32[N, K]: the slots of the orders to serve in
order, as many as the cell has idle drivers (the environment ignores draws past that). Greedy takes
the highest prices first; Nearest takes orders in arrival order within the cell (the candidate
table keeps it: yesterday's step first, then the stream order); Random serves as many orders as
Greedy but picks them uniformly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dyps_jax.ppo import descending_order

Policy = Callable[[jax.Array, Any, Any], jax.Array]

# Added to last day's new confirmed cases so that CBGs without cases still get a few doses and the
# first day (no cases anywhere yet) allocates uniformly per CBG.
CASES_EPSILON = 1e-3


class Rule(NamedTuple):
    """make: env -> policy(key, timestep, state) -> actions; env_overrides: parameters to apply."""

    make: Callable[[Any], Policy]
    env_overrides: dict[str, Any]


def _medical_none(env) -> Policy:
    def policy(key, timestep, state):
        del key, timestep, state
        return jnp.zeros(env.num_agents, jnp.float32)  # ignored: the env runs with vaccinate=False

    return policy


def _medical_random(env) -> Policy:
    def policy(key, timestep, state):
        del timestep, state
        # Doses proportional to iid uniform weights, redrawn every day.
        u = jax.random.uniform(key, (env.num_agents,), minval=1e-6, maxval=1.0)
        return jnp.log(u)

    return policy


def _medical_population(env) -> Policy:
    log_pop = jnp.log(jnp.asarray(env.population, jnp.float32))

    def policy(key, timestep, state):
        del key, timestep, state
        return log_pop  # softmax(log N) = N / sum(N)

    return policy


def _medical_cases(env) -> Policy:
    def policy(key, timestep, state):
        del key, timestep
        return jnp.log(state.last_confirmed + CASES_EPSILON)

    return policy


def _dispatch_in_order(priority: jax.Array, valid: jax.Array) -> jax.Array:
    """Draws serving valid orders by descending `priority: f32[N, K]` (ties: lower slot first):
    int32[N, K], the slots in serving order, then 0 (stay) once the orders run out."""
    order = descending_order(priority, valid)
    return jnp.where(order < priority.shape[-1], order + 1, 0).astype(jnp.int32)


def _ride_greedy(env) -> Policy:
    def policy(key, timestep, state):
        del key, timestep
        return _dispatch_in_order(state.orders.price, state.orders.valid)

    return policy


def _ride_nearest(env) -> Policy:
    def policy(key, timestep, state):
        del key, timestep
        arrival = -jnp.arange(env.max_candidates, dtype=jnp.float32)
        return _dispatch_in_order(jnp.broadcast_to(arrival, state.orders.valid.shape),
                                  state.orders.valid)

    return policy


def _ride_random(env) -> Policy:
    def policy(key, timestep, state):
        del timestep
        return _dispatch_in_order(jax.random.uniform(key, state.orders.valid.shape),
                                  state.orders.valid)

    return policy


RULES: dict[str, dict[str, Rule]] = {
    "ridehailing": {
        "greedy": Rule(_ride_greedy, {}),
        "nearest": Rule(_ride_nearest, {}),
        "random": Rule(_ride_random, {}),
    },
    "medical": {
        "none": Rule(_medical_none, {"vaccinate": False}),
        "random": Rule(_medical_random, {}),
        "population": Rule(_medical_population, {}),
        "cases": Rule(_medical_cases, {}),
    },
}


def get_rule(kind: str, name: str) -> Rule:
    """The rule `name` of environment kind `kind`; ValueError naming the allowed values."""
    if kind not in RULES:
        raise ValueError(f"env: no rule policies for environment kind {kind!r}; "
                         f"allowed: {sorted(RULES)}")
    if name not in RULES[kind]:
        raise ValueError(f"policy: unknown rule {name!r} for {kind!r}; "
                         f"allowed: {', '.join(RULES[kind])}")
    return RULES[kind][name]
