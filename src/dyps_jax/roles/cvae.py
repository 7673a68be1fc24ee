"""Conditional VAE over group ids for group role embeddings, paper §3.2.1, eq. 4.

The encoder q(z | I_g[m]) sees only the one-hot group id; the decoder p(a | z, s) also sees the state
s, which bypasses the encoder, so z carries only what distinguishes group m's policy. -ELBO =
-E_q[log p(a | z, s)] + KL(q(z | m) || N(0, I)); the group embedding z_g[m] is the encoder mean.

The KL term carries a weight beta (Higgins et al. 2017). With beta = 1 (eq. 4 as printed) encoding the
group costs as many nats of KL as it can save in reconstruction (both are bounded by the information
the group id carries about the action), so the optimum is indifferent and training collapses the
posterior onto the prior: every z_g becomes 0 and eq. 13 gives uniform groups. beta < 1 breaks the tie.

The groups' response models (ours, docs/grouping.md) are in `roles/response.py`.
"""

from __future__ import annotations

from typing import cast

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from dyps_jax.nets import MLP
from dyps_jax.ppo import action_distribution, head_size


class CVAE(nn.Module):
    """Encoder: one 64-unit hidden layer; decoder: two (paper appendix A.1); latent 16."""

    num_groups: int
    num_actions: int
    latent: int = 16
    hidden: int = 64
    action_kind: str = "categorical"

    def setup(self):
        self.encoder = MLP((self.hidden, 2 * self.latent))
        self.decoder = MLP((self.hidden, self.hidden, head_size(self.action_kind, self.num_actions)))

    def encode(self, groups: jax.Array) -> tuple[jax.Array, jax.Array]:
        """groups: int32[B] -> (mean, std), each f32[B, latent]."""
        out = self.encoder(jax.nn.one_hot(groups, self.num_groups))
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.exp(jnp.clip(log_std, -5.0, 2.0))

    def decode(self, z: jax.Array, states: jax.Array) -> jax.Array:
        """z: f32[B, latent], states: f32[B, D] -> the action distribution's parameters."""
        return self.decoder(jnp.concatenate([z, states], axis=-1))

    def __call__(self, groups, states, noise):
        mean, std = self.encode(groups)
        return mean, std, self.decode(mean + std * noise, states)


def init_cvae(model: CVAE, key: jax.Array, state_dim: int):
    return model.init(
        key, jnp.zeros((1,), jnp.int32), jnp.zeros((1, state_dim)), jnp.zeros((1, model.latent)))


def cvae_elbo(
    model: CVAE,
    params,
    key: jax.Array,
    groups: jax.Array,
    states: jax.Array,
    actions: jax.Array,
    weights: jax.Array,
    beta: float = 1.0,
    action_mask: jax.Array | None = None,
) -> jax.Array:
    """Negative ELBO of eq. 4 (KL weighted by beta), the weighted mean over (s, a, group) triples.

    Args:
      groups: int32[B]; states: f32[B, D]; weights: f32[B];
      actions: int32[B] (categorical), f32[B, A] (gaussian) or int32[B, D] (pointer draws).
      action_mask: the environment's mask of each sample (`ppo.action_distribution`); None allows
        every action (required for the pointer kind, whose mask also says which draws happen).
    """
    chex.assert_equal_shape([groups, weights])
    noise = jax.random.normal(key, groups.shape + (model.latent,))
    mean, std, head = cast(tuple[jax.Array, jax.Array, jax.Array],
                           model.apply(params, groups, states, noise))
    if action_mask is None:
        action_mask = jnp.ones(head.shape[:-1] + (model.num_actions,), bool)
    nll = -action_distribution(model.action_kind, head, action_mask).log_prob(actions)
    posterior = distrax.MultivariateNormalDiag(mean, std)
    prior = distrax.MultivariateNormalDiag(jnp.zeros_like(mean), jnp.ones_like(std))
    loss = nll + beta * posterior.kl_divergence(prior)
    return (loss * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def group_embeddings(model: CVAE, params) -> jax.Array:
    """z_g: f32[M, latent], the encoder mean of every group."""
    mean, _ = model.apply(params, jnp.arange(model.num_groups), method=CVAE.encode)
    return mean
