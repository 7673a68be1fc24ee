"""Conditional VAE over group ids for group role embeddings, paper §3.2.1, eq. 4.

The encoder q(z | I_g[m]) sees only the one-hot group id; the decoder p(a | z, s) also sees the state
s, which bypasses the encoder, so z carries only what distinguishes group m's policy. -ELBO =
-E_q[log p(a | z, s)] + KL(q(z | m) || N(0, I)); the group embedding z_g[m] is the encoder mean.

The KL term carries a weight beta (Higgins et al. 2017). With beta = 1 (eq. 4 as printed) encoding the
group costs as many nats of KL as it can save in reconstruction (both are bounded by the information
the group id carries about the action), so the optimum is indifferent and training collapses the
posterior onto the prior: every z_g becomes 0 and eq. 13 gives uniform groups. beta < 1 breaks the tie.

Group response (ours, `SharingConfig.group_response_coef`, docs/grouping.md): with `response_dim > 0`
every group also has a model of how the environment answers its agents, p_m(e_{t+1} | s_t, a_t) with
e_{t+1} = (s_{t+1}, r_{t+1}), the VLSTM's target (eq. 7) for a whole group instead of one agent's
history. Agents whose actions act alike (a warehouse robot's colour rotates its actions; a role-game
type changes which action pays) are then explained best by the same group's model, whatever the
policies have learned so far, and `response_log_likelihood` scores every agent under every group for
the selector. Each group has its own network (parameters stacked on a leading [M] axis, the experts of
a mixture of regressions): one network told the groups apart only through z_g in its input, and on
the planted two-kind problem (`experiments/response_probe.py`) it explained its own kind better for
as few as 47 % of the samples, depending on the initialisation; one network per group, for all.
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
    response_dim: int = 0  # size of e_{t+1}; 0: no response models (the paper)

    def setup(self):
        self.encoder = MLP((self.hidden, 2 * self.latent))
        self.decoder = MLP((self.hidden, self.hidden, head_size(self.action_kind, self.num_actions)))
        if self.response_dim:
            experts = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                              in_axes=None, out_axes=0, axis_size=self.num_groups)
            self.responder = experts((self.hidden, self.hidden, 2 * self.response_dim))

    def encode(self, groups: jax.Array) -> tuple[jax.Array, jax.Array]:
        """groups: int32[B] -> (mean, std), each f32[B, latent]."""
        out = self.encoder(jax.nn.one_hot(groups, self.num_groups))
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.exp(jnp.clip(log_std, -5.0, 2.0))

    def decode(self, z: jax.Array, states: jax.Array) -> jax.Array:
        """z: f32[B, latent], states: f32[B, D] -> the action distribution's parameters."""
        return self.decoder(jnp.concatenate([z, states], axis=-1))

    def respond(self, states: jax.Array, actions: jax.Array):
        """states: f32[B, D], actions: f32[B, A] (encoded) -> every group's Gaussian of e_{t+1},
        batch shape [M, B]."""
        out = self.responder(jnp.concatenate([states, actions], axis=-1))
        mean, log_std = jnp.split(out, 2, axis=-1)
        return distrax.MultivariateNormalDiag(mean, jnp.exp(jnp.clip(log_std, -5.0, 2.0)))

    def __call__(self, groups, states, noise, actions=None):
        mean, std = self.encode(groups)
        if actions is not None:
            self.respond(states, actions)  # creates the response models' parameters
        return mean, std, self.decode(mean + std * noise, states)


def init_cvae(model: CVAE, key: jax.Array, state_dim: int):
    actions = jnp.zeros((1, model.num_actions)) if model.response_dim else None
    return model.init(
        key, jnp.zeros((1,), jnp.int32), jnp.zeros((1, state_dim)), jnp.zeros((1, model.latent)),
        actions,
    )


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


def response_nll(
    model: CVAE,
    params,
    responsibilities: jax.Array,
    states: jax.Array,
    actions: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
) -> jax.Array:
    """-sum_m r[b, m] log p_m(e_{t+1} | s_t, a_t) per target dimension, the weighted mean over b.

    The M-step of EM for a mixture of regressions: every group's response model is fitted to every
    sample in proportion to the responsibility r[b, m] of group m for the sample's agent (in training,
    the posterior of its group). A one-hot r trains each sample under one group only.

    Args:
      responsibilities: f32[B, M], rows summing to 1; states: f32[B, D]; actions: f32[B, A]
        (encoded); targets: f32[B, R]; weights: f32[B].
    """
    chex.assert_rank(responsibilities, 2)
    chex.assert_axis_dimension(responsibilities, 1, model.num_groups)
    chex.assert_equal_shape_prefix([responsibilities, weights], 1)
    ll = response_log_likelihood(model, params, states, actions, targets)
    nll = -(responsibilities * ll).sum(axis=-1)
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def response_log_likelihood(
    model: CVAE, params, states: jax.Array, actions: jax.Array, targets: jax.Array
) -> jax.Array:
    """log p_m(e_{t+1} | s_t, a_t) per target dimension under every group m: f32[B, M].

    Args: states: f32[B, D]; actions: f32[B, A] (encoded); targets: f32[B, R].
    """
    dist = cast(distrax.MultivariateNormalDiag,
                model.apply(params, states, actions, method=CVAE.respond))
    return dist.log_prob(targets).T / model.response_dim
