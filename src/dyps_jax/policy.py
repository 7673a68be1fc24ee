"""A trained policy as a pure JAX function: `make_policy(config, state, greedy=False)`.

    policy = dyps_jax.make_policy(config, state)
    groups = policy.assign(k_episode)                    # int32[N], once per episode
    actions = policy(k_step, ts.obs, ts.action_mask, groups)

The policy closes over the parameters of `state` (a `TrainState`, e.g. restored from a checkpoint)
and applies the same network, input features and per-group parameter rows as the training rollout
(`train.py`), so `jax.jit`, `jax.vmap` and `lax.scan` take it like any other function.

Groups. The fixed-assignment methods (NoPS, PS, PS-id) always use their assignment. DyPS draws an
agent's group once per episode from the assignment probabilities a_g of eq. 13; the state holds one
row per training environment (each computed from that environment's last episode), so the policy
uses their mean over environments, f32[N, M]. `assign` samples from it, or takes its most likely
group when `greedy` is set.

Role-as-state. Its input carries h_a, the agent's VLSTM embedding. Training feeds each episode the
embedding of the same environment's previous episode, which stays fixed while the episode runs; the
state holds one per training environment, f32[E, N, H]. The policy feeds every episode their mean
over environments, f32[N, H] (`embedding`), as it does with DyPS's probabilities.

Actions. Sampled: a draw from the policy distribution (as in training). Greedy: its mode, i.e. the
most likely action (categorical), the mean (Gaussian), or for the ride-hailing pointer head the most
likely draw sequence (`pointer_mode`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dyps_jax import sharing
from dyps_jax.config import TrainConfig
from dyps_jax.nets import grouped_apply
from dyps_jax.ppo import PointerDraws, action_distribution, descending_order
from dyps_jax.train import group_probabilities, policy_network


def pointer_mode(dist: PointerDraws) -> jax.Array:
    """The most likely draw sequence of a pointer head: int32[..., D].

    Taking an order removes its mass from every later draw's softmax, so the most likely sequence
    is not the draw-by-draw argmax: it takes the k best orders (by descending logit, which makes
    each later denominator as small as possible) and then stays, for the k in 0..min(D, orders)
    whose sequence log-probability is largest (stays between orders would face larger
    denominators, so they all come last).
    """
    stay, orders = dist.logits[..., 0], dist.logits[..., 1:]
    valid = dist.slot_mask[..., 1:]
    num_orders, num_draws = orders.shape[-1], dist.draw_mask.shape[-1]
    order = descending_order(orders, valid)  # entries == num_orders past the valid orders
    ranked = jnp.where(order < num_orders,
                       jnp.take_along_axis(orders, jnp.minimum(order, num_orders - 1), axis=-1),
                       -1e9)
    # log of the order mass from rank j on, j = 0..K (nothing left at K).
    rest = jax.lax.cumlogsumexp(ranked, axis=ranked.ndim - 1, reverse=True)
    rest = jnp.concatenate([rest, jnp.full(rest.shape[:-1] + (1,), -1e9)], axis=-1)
    log_denominator = jnp.logaddexp(stay[..., None], rest)  # [..., K + 1]
    take = jnp.cumsum(ranked - log_denominator[..., :-1], axis=-1)
    take = jnp.concatenate([jnp.zeros(take.shape[:-1] + (1,)), take], axis=-1)
    active = dist.draw_mask.sum(-1, keepdims=True)
    k = jnp.arange(num_orders + 1)
    score = take + (active - k) * (stay[..., None] - log_denominator)
    allowed = (k <= active) & (k <= valid.sum(-1, keepdims=True))
    best = jnp.argmax(jnp.where(allowed, score, -jnp.inf), axis=-1)[..., None]
    if num_draws > num_orders:
        pad = jnp.full(order.shape[:-1] + (num_draws - num_orders,), num_orders, order.dtype)
        order = jnp.concatenate([order, pad], axis=-1)
    first = order[..., :num_draws]
    taken = dist.draw_mask & (jnp.arange(num_draws) < best)
    return jnp.where(taken, first + 1, 0).astype(jnp.int32)


def _mode(kind: str, dist: Any) -> jax.Array:
    if kind == "pointer":
        return pointer_mode(dist)
    if kind == "categorical":
        return jnp.argmax(dist.logits, axis=-1).astype(jnp.int32)
    return dist.mean()


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity, so `jax.jit(policy)` works
class Policy:
    """A trained policy; see the module docstring.

    Attributes:
      assign: key -> int32[N], the groups of one episode.
      act: (key, obs f32[..., N, D], action_mask bool[..., N, A], groups int32[N]) -> actions in the
        environment's format (int32[..., N] categorical, int32[..., N, D] pointer, f32[..., N] for a
        one-dimensional Gaussian).
      probabilities: f32[N, M], the assignment probabilities `assign` draws from.
      greedy: whether `act` and `assign` take modes instead of sampling.
      embedding: f32[N, H], the h_a that role-as-state's input carries; None for other methods.
    """

    assign: Callable[[jax.Array], jax.Array]
    act: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
    probabilities: jax.Array
    greedy: bool
    embedding: jax.Array | None = None

    def __call__(self, key: jax.Array, obs: jax.Array, action_mask: jax.Array,
                 groups: jax.Array | None = None) -> jax.Array:
        """`act`, with the most likely groups when `groups` is None."""
        if groups is None:
            groups = jnp.argmax(self.probabilities, axis=-1).astype(jnp.int32)
        return self.act(key, obs, action_mask, groups)


def make_policy(config: TrainConfig, state: Any, greedy: bool = False) -> Policy:
    """The policy of a `TrainState` of `config` as pure functions (module docstring).

    Raises ValueError when the state's parameters do not have the shapes `config` gives.
    """
    env = config.env.build()
    kind, method, spec = env.action_kind, config.method, config.method_spec
    net = policy_network(config, env)
    # Under MAPPO the network's input ends with the global state, which only its critic reads.
    critic_pad = env.global_state_dim if config.algo == "mappo" else 0
    params = state.policy.params
    num_sets = jax.tree.leaves(params)[0].shape[0]
    if num_sets != config.num_param_sets:
        raise ValueError(f"make_policy: the state has {num_sets} parameter sets, but {method} on "
                         f"{config.env.name} uses {config.num_param_sets}")
    probabilities = group_probabilities(config, state).mean(axis=0)  # [N, M]
    per_agent = spec.assignment == "identity"
    n = env.num_agents
    embedding = state.roles.agent_embedding.mean(axis=0) if spec.role_embedding else None

    def assign(key: jax.Array) -> jax.Array:
        if greedy:
            return jnp.argmax(probabilities, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, jnp.log(probabilities)).astype(jnp.int32)

    def act(key, obs, action_mask, groups):
        batch = obs.shape[:-2]
        flat_obs = obs.reshape((-1,) + obs.shape[-2:])
        h = None if embedding is None else jnp.broadcast_to(
            embedding, flat_obs.shape[:1] + embedding.shape)
        x = sharing.policy_features(spec, flat_obs, h)
        if critic_pad:
            x = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (critic_pad,), x.dtype)], axis=-1)
        g = jnp.broadcast_to(groups, (x.shape[0], n))
        head, _ = grouped_apply(net.apply, params, x, g, per_agent)
        mask = action_mask.reshape((-1,) + action_mask.shape[-2:])
        dist = action_distribution(kind, head, mask)
        actions = _mode(kind, dist) if greedy else dist.sample(seed=key)
        if kind == "categorical":
            actions = actions.astype(jnp.int32)
        actions = actions.reshape(batch + actions.shape[1:])
        # Environments with one real number per agent (medical) take f32[N], not f32[N, 1].
        return actions[..., 0] if kind == "gaussian" and env.num_actions == 1 else actions

    return Policy(assign=assign, act=act, probabilities=probabilities, greedy=greedy,
                  embedding=embedding)
