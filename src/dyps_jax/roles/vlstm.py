"""Variational LSTM (Chung et al. 2015) for agent role embeddings, paper §3.2.2, eqs. 5-12.

Per agent and time step t, with LSTM hidden state h_{t-1}:

* prior      [mu_p, sigma_p] = f_p(h_{t-1})                      (eq. 5)
* posterior  [mu_z, sigma_z] = phi_e(s_t, h_{t-1}),  z_t ~ q      (eqs. 10-11, reparameterised)
* decoder    [mu_e, sigma_e] = f_d(z_t, h_{t-1}, u_t) predicts e_{t+1} = (s_{t+1}, r_{t+1})  (eqs. 7-8)
* recurrence h_t = LSTM(h_{t-1}; [z_t, s_t, a_t, r_{t+1}])        (eq. 9)

-ELBO (eq. 12) = sum_t KL(q(z_t) || p(z_t | h_{t-1})) - log N(e_{t+1}; mu_e, sigma_e). The agent's role
embedding is h_T, the hidden state after its whole trajectory. The LSTM runs by `lax.scan` over time
with agents and environments flattened into the batch axis.

`u_t` is empty in the paper's reading (the default): the decoder then predicts s_{t+1} without the action a_t that
produces it, so nothing rewards h for knowing how the agent's actions move it (its role, e.g. a
warehouse robot's colour, which rotates its actions). With `u_t = a_t` (`vlstm_decoder="action"`,
docs/grouping.md) the decoder is an action-conditioned model of the agent's dynamics, and h must carry
whatever about the agent makes its actions act differently.
"""

from __future__ import annotations

from typing import Any, cast

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from dyps_jax.nets import MLP, orthogonal

_LOG_STD_MIN, _LOG_STD_MAX = -5.0, 2.0


def _gaussian(params: jax.Array) -> distrax.MultivariateNormalDiag:
    mean, log_std = jnp.split(params, 2, axis=-1)
    return distrax.MultivariateNormalDiag(mean, jnp.exp(jnp.clip(log_std, _LOG_STD_MIN, _LOG_STD_MAX)))


class VLSTM(nn.Module):
    """One step of the VLSTM; `vlstm_elbo` scans it over a trajectory.

    Sizes from the paper's appendix A.1: LSTM hidden 64, encoder with one 64-unit hidden layer,
    decoder with two; the prior uses one hidden layer.
    """

    target_dim: int
    hidden: int = 64
    latent: int = 16

    def setup(self):
        # The cell's default recurrent initialiser, batched safely (nets.orthogonal).
        self.cell = nn.OptimizedLSTMCell(self.hidden, recurrent_kernel_init=orthogonal())
        self.prior = MLP((self.hidden, 2 * self.latent))
        self.encoder = MLP((self.hidden, 2 * self.latent))
        self.decoder = MLP((self.hidden, self.hidden, 2 * self.target_dim))

    def __call__(self, carry, state, lstm_input, target, noise, decoder_input):
        """Args:
          carry: (c, h), each f32[B, hidden].
          state: f32[B, D], s_t.  lstm_input: f32[B, X], (s_t, a_t, r_{t+1}).
          target: f32[B, target_dim], e_{t+1}.  noise: f32[B, latent], standard normal.
          decoder_input: f32[B, U], u_t (U may be 0).

        Returns:
          new carry, and f32[B] KL and negative log-likelihood terms of eq. 12.
        """
        _, h = carry
        prior = _gaussian(self.prior(h))
        posterior = _gaussian(self.encoder(jnp.concatenate([state, h], axis=-1)))
        z = posterior.loc + posterior.scale_diag * noise
        decoded = _gaussian(self.decoder(jnp.concatenate([z, h, decoder_input], axis=-1)))
        kl = posterior.kl_divergence(prior)
        nll = -decoded.log_prob(target)
        carry, _ = self.cell(carry, jnp.concatenate([z, lstm_input], axis=-1))
        return carry, kl, nll


def init_vlstm(model: VLSTM, key: jax.Array, state_dim: int, input_dim: int,
               decoder_input_dim: int = 0):
    zeros = jnp.zeros((1, model.hidden))
    return model.init(
        key,
        (zeros, zeros),
        jnp.zeros((1, state_dim)),
        jnp.zeros((1, input_dim)),
        jnp.zeros((1, model.target_dim)),
        jnp.zeros((1, model.latent)),
        jnp.zeros((1, decoder_input_dim)),
    )


def vlstm_elbo(
    model: VLSTM,
    params,
    key: jax.Array,
    states: jax.Array,
    lstm_inputs: jax.Array,
    targets: jax.Array,
    valid: jax.Array,
    embedding: str = "final",
    decoder_inputs: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Negative ELBO (eq. 12) averaged over valid steps, and the role embeddings.

    Args:
      states: f32[T, B, D]; lstm_inputs: f32[T, B, X]; targets: f32[T, B, target_dim];
      valid: f32[T, B], 1 while the episode runs (the hidden state freezes after it ends).
      embedding: `"final"`, h_T after the whole trajectory (the paper); `"mean"`, the mean of h_t
        over the valid steps, where what persists through the episode (the agent's role) adds up
        and what changes from step to step (its position, its load) averages out.
      decoder_inputs: f32[T, B, U], u_t, or None for none (the paper).

    Returns:
      (loss f32[], embeddings f32[B, hidden]).
    """
    T, B = valid.shape
    chex.assert_shape(states, (T, B, None))
    chex.assert_shape(targets, (T, B, model.target_dim))
    noise = jax.random.normal(key, (T, B, model.latent))
    if decoder_inputs is None:
        decoder_inputs = jnp.zeros((T, B, 0))
    zeros = jnp.zeros((B, model.hidden))

    def step(carry, xs):
        lstm_carry, h_sum = carry
        state, lstm_input, target, eps, alive, decoder_input = xs
        new_carry, kl, nll = cast(tuple[Any, jax.Array, jax.Array], model.apply(
            params, lstm_carry, state, lstm_input, target, eps, decoder_input))
        keep = alive[:, None] > 0
        lstm_carry = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_carry, lstm_carry)
        return (lstm_carry, h_sum + lstm_carry[1] * alive[:, None]), (kl + nll) * alive

    ((_, h_final), h_sum), losses = jax.lax.scan(
        step, ((zeros, zeros), zeros), (states, lstm_inputs, targets, noise, valid, decoder_inputs)
    )
    steps = jnp.maximum(valid.sum(axis=0), 1.0)[:, None]
    return losses.sum() / jnp.maximum(valid.sum(), 1.0), h_final if embedding == "final" else h_sum / steps
