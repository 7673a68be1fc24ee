"""PPO pieces shared by every sharing method: GAE, the clipped surrogate, the clipped value loss.

References: Schulman et al. 2016 (GAE, eq. 16), Schulman et al. 2017 (PPO, eq. 7), and for the
IPPO/MAPPO details (value clipping, per-group advantage normalisation) Yu et al. 2022.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import distrax
import jax
import jax.numpy as jnp

from dyps_jax.nets import segment_mean

_MASKED_LOGIT = -1e9


def masked_categorical(logits: jax.Array, action_mask: jax.Array) -> distrax.Categorical:
    """Categorical over the allowed actions only. `logits, action_mask: [..., A]`."""
    chex.assert_equal_shape([logits, action_mask])
    return distrax.Categorical(logits=jnp.where(action_mask, logits, _MASKED_LOGIT))


def head_size(action_kind: str, num_actions: int) -> int:
    """Width of the policy output: logits, or a mean and a log-std per action dimension."""
    return {"categorical": num_actions, "gaussian": 2 * num_actions}[action_kind]


def action_distribution(
    action_kind: str, head: jax.Array, action_mask: jax.Array
) -> distrax.Distribution:
    """The policy distribution of an environment's action kind (ALGORITHMS.md §5).

    Args:
      head: [..., head_size], the policy network's output.
      action_mask: bool[..., A]; used by the categorical kind only.

    Returns:
      categorical: masked `Categorical`, actions int32[...];
      gaussian: diagonal `MultivariateNormalDiag`, actions f32[..., A].
    """
    if action_kind == "categorical":
        return masked_categorical(head, action_mask)
    if action_kind == "gaussian":
        mean, log_std = jnp.split(head, 2, axis=-1)
        return distrax.MultivariateNormalDiag(mean, jnp.exp(jnp.clip(log_std, -5.0, 2.0)))
    raise ValueError(f"action_kind: unknown {action_kind!r}; allowed: categorical, gaussian")


def gae(
    rewards: jax.Array,
    values: jax.Array,
    dones: jax.Array,
    last_value: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation by a reverse `lax.scan` (Schulman et al. 2016, eq. 16).

    Args:
      rewards: f32[T, ...], reward of the transition at step t.
      values: f32[T, ...], V(s_t).
      dones: bool[T, ...] broadcastable to `rewards`, the episode ended with the transition at t.
      last_value: f32[...], V(s_T) for bootstrapping an unfinished episode.

    Returns:
      (advantages, returns), both f32[T, ...]; returns = advantages + values.
    """
    chex.assert_equal_shape([rewards, values])
    dones = jnp.broadcast_to(dones, rewards.shape).astype(rewards.dtype)
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)

    def backward(carry, xs):
        reward, value, next_value, done = xs
        delta = reward + gamma * next_value * (1.0 - done) - value
        carry = delta + gamma * lam * (1.0 - done) * carry
        return carry, carry

    _, advantages = jax.lax.scan(
        backward,
        jnp.zeros_like(last_value),
        (rewards, values, next_values, dones),
        reverse=True,
    )
    return advantages, advantages + values


def normalize_per_group(
    advantages: jax.Array, groups: jax.Array, weights: jax.Array, num_groups: int
) -> jax.Array:
    """Standardises advantages within each group, over the samples with weight 1."""
    mean = segment_mean(advantages, groups, weights, num_groups)[groups]
    var = segment_mean(jnp.square(advantages - mean), groups, weights, num_groups)[groups]
    return (advantages - mean) / (jnp.sqrt(var) + 1e-8)


class PPOTerms(NamedTuple):
    """Per-sample PPO terms, each f32 of the batch shape."""

    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array


def ppo_terms(
    dist: distrax.Distribution,
    values: jax.Array,
    actions: jax.Array,
    old_log_prob: jax.Array,
    old_values: jax.Array,
    advantages: jax.Array,
    returns: jax.Array,
    clip_eps: float,
) -> PPOTerms:
    """Clipped surrogate (PPO eq. 7) and clipped value loss for a batch of samples.

    Args:
      dist: the current policy over a batch `[...]`; the other arguments have the batch shape
        (`actions` plus the event shape).
    """
    log_prob = dist.log_prob(actions)
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    policy_loss = -jnp.minimum(ratio * advantages, clipped * advantages)
    values_clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    value_loss = 0.5 * jnp.maximum(
        jnp.square(values - returns), jnp.square(values_clipped - returns)
    )
    approx_kl = (ratio - 1.0) - log_ratio
    return PPOTerms(policy_loss, value_loss, dist.entropy(), approx_kl)
