"""Variational LSTM (Chung et al. 2015) for agent role embeddings, paper §3.2.2, eqs. 5-12.

Per agent and time step t, with LSTM hidden state h_{t-1}:

* prior      [mu_p, sigma_p] = f_p(h_{t-1})                      (eq. 5)
* posterior  [mu_z, sigma_z] = phi_e(s_t, h_{t-1}),  z_t ~ q      (eqs. 10-11, reparameterised)
* decoder    [mu_e, sigma_e] = f_d(z_t, h_{t-1}, u_t) predicts e_{t+1} = (s_{t+1}, r_{t+1})  (eqs. 7-8)
* recurrence h_t = LSTM(h_{t-1}; [z_t, s_t, a_t, r_{t+1}])        (eq. 9)

-ELBO (eq. 12) = sum_t KL(q(z_t) || p(z_t | h_{t-1})) - log N(e_{t+1}; mu_e, sigma_e). The agent's role
embedding is h_T, the hidden state after its whole trajectory. The LSTM runs by `lax.scan` over time
with agents and environments flattened into the batch axis.

With `grad_sequences` = S smaller than the batch B, the ELBO and its gradient come from S sequences
drawn uniformly without replacement, scaled by B / S: an unbiased estimate of the full-batch loss
and gradient, at the cost of S sequences instead of B for the backward pass and its stored
activations. Every sequence's h still comes from a scan over all of them (encoder and LSTM cell
only, without gradient), so the embeddings are exactly those of the full pass (docs/algorithms.md,
"VLSTM gradient on a subset").
With `grad_steps` = W smaller than T, those sequences' loss is also cut to one window of W
consecutive steps, scaled by T / W, and reverse mode runs W steps instead of T (truncated
backpropagation through time); the window starts from the carry the full pass reaches there
(docs/algorithms.md).

`u_t` is empty in the paper's reading (the default): the decoder then predicts s_{t+1} without the action a_t that
produces it, so nothing rewards h for knowing how the agent's actions move it (its role, e.g. a
warehouse robot's colour, which rotates its actions). With `u_t = a_t` (`vlstm_decoder="action"`,
docs/grouping.md) the decoder is an action-conditioned model of the agent's dynamics, and h must carry
whatever about the agent makes its actions act differently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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

    def recur(self, carry, state, lstm_input, noise):
        """Only the recurrence h_{t-1} -> h_t (eqs. 10-11 and 9), without the prior and decoder.

        Returns the new carry, z_t f32[B, latent] and the posterior q(z_t)."""
        _, h = carry
        posterior = _gaussian(self.encoder(jnp.concatenate([state, h], axis=-1)))
        z = posterior.loc + posterior.scale_diag * noise
        carry, _ = self.cell(carry, jnp.concatenate([z, lstm_input], axis=-1))
        return carry, z, posterior

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
        new_carry, z, posterior = self.recur(carry, state, lstm_input, noise)
        decoded = _gaussian(self.decoder(jnp.concatenate([z, h, decoder_input], axis=-1)))
        kl = posterior.kl_divergence(prior)
        nll = -decoded.log_prob(target)
        return new_carry, kl, nll


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
    actions: jax.Array,
    rewards: jax.Array,
    final_states: jax.Array,
    valid: jax.Array,
    embedding: str = "final",
    decode_action: bool = False,
    grad_sequences: int = 0,
    subset: jax.Array | None = None,
    grad_steps: int = 0,
    window_start: jax.Array | None = None,
    remat: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Negative ELBO (eq. 12) averaged over valid steps, and the role embeddings.

    Step t's LSTM input (s_t, a_t, r_{t+1}), target e_{t+1} = (s_{t+1}, r_{t+1}), decoder input
    u_t and noise are built inside the scan from the trajectory's own arrays, so no T x B copy of
    any of them is held (at 10,000 agents those copies were several GB).

    Args:
      states: f32[T, B, D], s_t; actions: f32[T, B, A], a_t (encoded: one-hot, a pointer head's
        counts, or the real action); rewards: f32[T, B], r_{t+1}; final_states: f32[B, D], s_T,
        the state after the last step (the target of step T - 1).
      valid: f32[T, B], 1 while the episode runs (the hidden state freezes after it ends).
      embedding: `"final"`, h_T after the whole trajectory (the paper); `"mean"`, the mean of h_t
        over the valid steps, where what persists through the episode (the agent's role) adds up
        and what changes from step to step (its position, its load) averages out.
      decode_action: u_t = a_t (the decoder is then initialised with `decoder_input_dim` = A);
        False: u_t empty (the paper).
      grad_sequences: S; 0 or S >= B computes the loss on all B sequences. Otherwise the loss is
        (B / S) x the summed loss of S sequences drawn without replacement (with `key`), over the
        valid steps of all B: unbiased for the full loss, and so is its gradient.
      subset: int32[S], the sequences of the loss instead of a random draw (tests: a partition of
        the batch into equal subsets averages to the full gradient exactly).
      grad_steps: W; 0 or W >= T differentiates all T steps. Otherwise the loss is (T / W) x the
        summed loss of one window of W consecutive steps (one of the ceil(T / W) blocks, drawn
        with `key`; the last block ends at T), starting from the sequences' carry at the window's
        start as the whole-episode pass gives it, without gradient: truncated backpropagation
        through time. Reverse mode then runs W steps instead of T. Unbiased for the loss when W
        divides T; the gradient ignores what a step before the window contributes through the
        carry.
      window_start: int32[], the window's first step instead of a random block (tests).
      remat: recompute activations in the backward pass instead of storing them
        (`jax.checkpoint` on the differentiated step, and on blocks of about sqrt(T) steps):
        reverse mode keeps about 2 sqrt(T) carries f32[S, hidden] x 2, not the encoder, prior,
        decoder and cell activations of all T steps. Same loss and gradient (the same operations,
        run again), at two extra forward passes of the step.

    Returns:
      (loss f32[], embeddings f32[B, hidden]); the embeddings are the same for every S (with a
      subset they carry no gradient: the role models never train through h_a).
    """
    T, B = valid.shape
    chex.assert_shape(states, (T, B, None))
    chex.assert_shape(actions, (T, B, None))
    chex.assert_shape(rewards, (T, B))
    chex.assert_shape(final_states, (B, states.shape[-1]))
    chex.assert_equal(model.target_dim, states.shape[-1] + 1)
    noise_key = jax.random.fold_in(key, 0)

    def step_inputs(xs):
        """(s_t, lstm input, target, noise, alive, u_t) of step t, each f32[B, ...]."""
        t, state, action, reward, alive = xs
        following = jax.lax.dynamic_index_in_dim(states, jnp.minimum(t + 1, T - 1), keepdims=False)
        next_state = jnp.where(t + 1 < T, following, final_states)
        reward = reward[:, None]
        noise = jax.random.normal(jax.random.fold_in(noise_key, t), (B, model.latent))
        return (state, jnp.concatenate([state, action, reward], axis=-1),
                jnp.concatenate([next_state, reward], axis=-1), noise, alive,
                action if decode_action else jnp.zeros((B, 0), action.dtype))

    xs = (jnp.arange(T), states, actions, rewards, valid)
    window = grad_steps if 0 < grad_steps < T else T
    if subset is None and 0 < grad_sequences < B:
        subset = jax.random.choice(jax.random.fold_in(key, 1), B, (grad_sequences,), replace=False)
    if subset is None and window < T:
        subset = jnp.arange(B)
    total_valid = jnp.maximum(valid.sum(), 1.0)
    loss_step: Callable[..., Any] = functools.partial(_loss_step, model)
    if remat:
        loss_step = jax.checkpoint(loss_step)
    scan = functools.partial(_blocked_scan, remat=remat)
    zeros = jnp.zeros((B, model.hidden))
    if subset is None:
        def step(carry, x):
            lstm_carry, h_sum = carry
            inputs = step_inputs(x)
            lstm_carry, loss = loss_step(params, lstm_carry, inputs)
            return (lstm_carry, h_sum + lstm_carry[1] * inputs[4][:, None]), loss

        ((_, h_final), h_sum), losses = scan(step, ((zeros, zeros), zeros), xs)
        loss = losses.sum() / total_valid
    else:
        # Window w of ceil(T / W) blocks of W steps (the last one ends at T), drawn uniformly.
        blocks = -(-T // window)
        start = (jnp.minimum(jax.random.randint(jax.random.fold_in(key, 2), (), 0, blocks) * window,
                             T - window) if window_start is None else window_start)
        # Every sequence's recurrence under stop_gradient(params), so reverse mode keeps nothing
        # of it; the subset's carry at the window's start is where its differentiated steps begin.
        frozen = jax.lax.stop_gradient(params)

        def recur(carry, x):
            lstm_carry, h_sum, begin = carry
            t = x[0]
            begin = jax.tree.map(lambda b, c: jnp.where(t == start, c[subset], b), begin,
                                 lstm_carry)
            state, lstm_input, _, eps, alive, _ = step_inputs(x)
            new_carry, _, _ = cast(tuple[Any, jax.Array, Any], model.apply(
                frozen, lstm_carry, state, lstm_input, eps, method=VLSTM.recur))
            lstm_carry = _freeze_ended(alive, new_carry, lstm_carry)
            return (lstm_carry, h_sum + lstm_carry[1] * alive[:, None], begin), None

        sub_zeros = jnp.zeros((subset.shape[0], model.hidden))
        ((_, h_final), h_sum, begin), _ = jax.lax.scan(
            recur, ((zeros, zeros), zeros, (sub_zeros, sub_zeros)), xs)

        def step(carry, x):
            inputs = tuple(v[subset] for v in step_inputs(x))
            return loss_step(params, carry, inputs)

        in_window = jax.tree.map(
            lambda x: jax.lax.dynamic_slice_in_dim(x, start, window, axis=0), xs)
        _, losses = scan(step, begin, in_window)
        # Unbiased for the full loss when W divides T (each step then lies in exactly one block).
        loss = losses.sum() * (B / subset.shape[0]) * (T / window) / total_valid
    steps = jnp.maximum(valid.sum(axis=0), 1.0)[:, None]
    return loss, h_final if embedding == "final" else h_sum / steps


def _freeze_ended(alive: jax.Array, new, old):
    """The carry keeps its last value once the episode has ended (alive f32[B])."""
    keep = alive[:, None] > 0
    return jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, old)


def _loss_step(model: VLSTM, params, carry, xs):
    """One VLSTM step of eq. 12 on a batch: new carry and f32[B] (KL + NLL) x alive."""
    state, lstm_input, target, eps, alive, decoder_input = xs
    new_carry, kl, nll = cast(tuple[Any, jax.Array, jax.Array], model.apply(
        params, carry, state, lstm_input, target, eps, decoder_input))
    return _freeze_ended(alive, new_carry, carry), (kl + nll) * alive


def _blocked_scan(step, init, xs, remat: bool):
    """`lax.scan(step, init, xs)`; with `remat`, checkpointed in blocks of K steps (K the divisor
    of T nearest sqrt(T)): reverse mode stores the carry at the T / K block starts, and while it
    differentiates one block, that block's K per-step carries (`step` itself is checkpointed),
    instead of all T. Each block's forward runs once more in the backward pass; the values are
    the same."""
    if not remat:
        return jax.lax.scan(step, init, xs)
    T = jax.tree.leaves(xs)[0].shape[0]
    block = min((d for d in range(1, T + 1) if T % d == 0), key=lambda d: abs(d * d - T))
    if block in (1, T):
        return jax.lax.scan(step, init, xs)
    blocked = jax.tree.map(lambda x: x.reshape((T // block, block) + x.shape[1:]), xs)
    carry, ys = jax.lax.scan(jax.checkpoint(lambda c, x: jax.lax.scan(step, c, x)), init, blocked)
    return carry, jax.tree.map(lambda y: y.reshape((T,) + y.shape[2:]), ys)
