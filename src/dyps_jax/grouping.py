"""The Group Selection Module of DyPS (paper §3.3, eq. 13) and its actor-critic update.

For agent n and group m the score is the bilinear form `[I_a[n], h_a[n]] W z_g[m]`, and the
assignment probabilities are its softmax over m (eq. 13). With a one-hot identity I_a, the product
`I_a[n] W_id` is row n of `W_id`, so the one-hot vector is never built: that keeps the selector
cheap with thousands of agents.

The decision is a one-step MDP per episode whose reward is the sum of all agents' episode returns.
A critic V(s_g) on the mean agent embedding is the baseline; rewards are standardised by running
statistics so the step size does not depend on the scenario's reward units (ALGORITHMS.md §4).
"""

from __future__ import annotations

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from dyps_jax.nets import MLP


class GroupSelector(nn.Module):
    """Eq. 13 logits and the selector's critic."""

    num_agents: int
    hidden: int = 64

    @nn.compact
    def __call__(self, embeddings: jax.Array, group_embeddings: jax.Array):
        """Args:
          embeddings: f32[E, N, H], agent role embeddings h_a.
          group_embeddings: f32[M, Z], group role embeddings z_g.

        Returns:
          (logits f32[E, N, M], value f32[E]).
        """
        chex.assert_rank(embeddings, 3)
        z_dim = group_embeddings.shape[-1]
        init = nn.initializers.lecun_normal()
        w_id = self.param("w_id", init, (self.num_agents, z_dim))
        w_h = self.param("w_h", init, (embeddings.shape[-1], z_dim))
        agent_keys = w_id[None] + embeddings @ w_h  # [I_a, h_a] W, shape [E, N, Z]
        logits = agent_keys @ group_embeddings.T
        value = MLP((self.hidden, 1), name="critic")(embeddings.mean(axis=1))[..., 0]
        return logits, value


@struct.dataclass
class RunningStats:
    """Mean and variance of a scalar stream (Chan et al.'s parallel update)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls) -> RunningStats:
        return cls(jnp.zeros(()), jnp.ones(()), jnp.asarray(1e-4))

    def update(self, x: jax.Array) -> RunningStats:
        batch_mean, batch_var, n = x.mean(), x.var(), x.size
        delta = batch_mean - self.mean
        total = self.count + n
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + jnp.square(delta) * self.count * n / total
        return RunningStats(mean, m2 / total, total)

    def standardise(self, x: jax.Array) -> jax.Array:
        return (x - self.mean) / jnp.sqrt(self.var + 1e-8)


def sample_groups(key: jax.Array, logits: jax.Array) -> jax.Array:
    """g[e, n] ~ softmax_m(logits[e, n, :]) (Algorithm 1, line 5). Returns int32[E, N]."""
    return distrax.Categorical(logits=logits).sample(seed=key).astype(jnp.int32)


def selector_loss(
    model: GroupSelector,
    params,
    embeddings: jax.Array,
    group_embeddings: jax.Array,
    groups: jax.Array,
    target: jax.Array,
    ent_coef: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Actor-critic loss of the one-step group-selection MDP.

    Args:
      embeddings: f32[E, N, H]; group_embeddings: f32[M, Z] (both held constant: their gradients
        come from their own ELBOs).
      groups: int32[E, N], the sampled assignment.
      target: f32[E], the standardised team episode return r_g.

    Returns:
      scalar loss -sum_n log a_g[g_n, n] (r_g - V) + (V - r_g)^2 / 2 - ent_coef * H, mean over envs.
    """
    logits, value = model.apply(
        params, jax.lax.stop_gradient(embeddings), jax.lax.stop_gradient(group_embeddings)
    )
    dist = distrax.Categorical(logits=logits)
    log_prob = dist.log_prob(groups).sum(axis=-1)
    advantage = jax.lax.stop_gradient(target - value)
    entropy = dist.entropy().mean(axis=-1)
    actor = -(log_prob * advantage).mean()
    critic = 0.5 * jnp.square(value - target).mean()
    loss = actor + critic - ent_coef * entropy.mean()
    return loss, {"selector_loss": actor, "selector_value_loss": critic,
                  "selector_entropy": entropy.mean()}
