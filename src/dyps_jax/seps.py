"""SePS (Christianos et al. 2021): cluster agents by what their ids predict, then share per cluster.

The pre-training phase records transitions (o, a, o', r, id) of the shared network into a fixed-size
buffer (`record`). At the switch, `cluster` trains a VAE whose encoder sees only the agent id and
whose decoder predicts [o', r] from [z, o, a] (SePS eqs. 2-3: summed squared error + 1e-4 KL, Adam
3e-4, batch 128, 10 epochs), then runs k-means++ with restarts on the encoder means of the N ids.
Everything is jitted JAX: the epochs, the k-means++ seeding and Lloyd's iterations are `lax` loops.
"""

from __future__ import annotations

from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from dyps_jax.nets import MLP

LATENT = 10
KL_WEIGHT = 1e-4
LEARNING_RATE = 3e-4
BATCH = 128
EPOCHS = 10
RESTARTS = 10
LLOYD_STEPS = 50


@struct.dataclass
class Buffer:
    """Recorded transitions of the pre-training phase; B rows.

    obs, next_obs: f32[B, D]; action: f32[B, A] (encoded: one-hot, multi-hot slots or real);
    reward: f32[B]; agent: int32[B]; valid: f32[B] (0 for rows never written or past an episode).
    """

    obs: jax.Array
    action: jax.Array
    next_obs: jax.Array
    reward: jax.Array
    agent: jax.Array
    valid: jax.Array

    @classmethod
    def create(cls, size: int, obs_dim: int, action_dim: int) -> Buffer:
        zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
        return cls(zeros(size, obs_dim), zeros(size, action_dim), zeros(size, obs_dim), zeros(size),
                   jnp.zeros(size, jnp.int32), zeros(size))


@struct.dataclass
class SePSState:
    buffer: Buffer
    assignment: jax.Array  # int32[N], the cluster of every agent id (zeros before the switch)


def record(buffer: Buffer, key: jax.Array, start: jax.Array, count: int, obs, action, next_obs,
           reward, valid) -> Buffer:
    """Writes `count` random transitions of an iteration at rows start.. (mod B).

    obs, next_obs: f32[T, E, N, D]; action: f32[T, E, N, A]; reward, valid: f32[T, E, N].
    """
    t, e, n = reward.shape
    flat = jax.random.randint(key, (count,), 0, t * e * n)
    rows = (start + jnp.arange(count)) % buffer.valid.shape[0]
    take = lambda x: x.reshape((t * e * n,) + x.shape[3:])[flat]  # noqa: E731
    new = Buffer(take(obs), take(action), take(next_obs), take(reward),
                 (flat % n).astype(jnp.int32), take(valid))
    return jax.tree.map(lambda old, x: old.at[rows].set(x), buffer, new)


class IdVAE(nn.Module):
    """Encoder q(z | id) (one embedding row per id: a linear layer on the one-hot id) and decoder
    p([o', r] | z, o, a).

    The means start near 0 and the variances at e^-2: the k-means reads the means, which must
    reflect what the ids predict rather than their random initialisation.
    """

    num_agents: int
    out_dim: int
    hidden: int = 64

    def setup(self):
        self.mean = nn.Embed(self.num_agents, LATENT, embedding_init=nn.initializers.normal(0.01))
        self.log_var = nn.Embed(self.num_agents, LATENT,
                                embedding_init=nn.initializers.constant(-2.0))
        self.decoder = MLP((self.hidden, self.hidden, self.out_dim))

    def encode(self, agent: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.mean(agent), jnp.clip(self.log_var(agent), -10.0, 5.0)

    def __call__(self, key, agent, obs, action):
        mean, log_var = self.encode(agent)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        return self.decoder(jnp.concatenate([z, obs, action], axis=-1)), mean, log_var


def vae_loss(model: IdVAE, params: Any, key: jax.Array, batch: Buffer) -> jax.Array:
    """Summed squared error of [o', r] plus KL_WEIGHT x KL(q(z | id) || N(0, I)), mean over rows."""
    pred, mean, log_var = cast(tuple[jax.Array, jax.Array, jax.Array],
                               model.apply(params, key, batch.agent, batch.obs, batch.action))
    target = jnp.concatenate([batch.next_obs, batch.reward[:, None]], axis=-1)
    sse = jnp.square(pred - target).sum(-1)
    kl = 0.5 * (jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var).sum(-1)
    return ((sse + KL_WEIGHT * kl) * batch.valid).sum() / jnp.maximum(batch.valid.sum(), 1.0)


def train_vae(key: jax.Array, buffer: Buffer, num_agents: int) -> jax.Array:
    """Fits the VAE to the buffer; returns the encoder means of every id, f32[N, LATENT]."""
    size = buffer.valid.shape[0]
    model = IdVAE(num_agents, buffer.obs.shape[-1] + 1)
    k_init, k_epochs = jax.random.split(key)
    params = model.init(k_init, k_init, buffer.agent[:1], buffer.obs[:1], buffer.action[:1])
    tx = optax.adam(LEARNING_RATE)
    batch = min(BATCH, size)
    steps = size // batch

    def step(carry, xs):
        params, opt_state = carry
        rows, k = xs
        grads = jax.grad(lambda p: vae_loss(model, p, k, jax.tree.map(lambda x: x[rows], buffer)))(
            params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def epoch(carry, key):
        k_perm, k_steps = jax.random.split(key)
        rows = jax.random.permutation(k_perm, size)[: steps * batch].reshape(steps, batch)
        return jax.lax.scan(step, carry, (rows, jax.random.split(k_steps, steps)))[0], None

    (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)),
                                  jax.random.split(k_epochs, EPOCHS))
    mean, _ = model.apply(params, jnp.arange(num_agents), method=IdVAE.encode)
    return mean


def _kmeans_once(key: jax.Array, points: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) then Lloyd's steps; (labels, inertia)."""
    n = points.shape[0]
    sq = lambda c: jnp.square(points[:, None] - c[None]).sum(-1)  # noqa: E731  [N, k]
    k_first, k_rest = jax.random.split(key)
    centres = jnp.zeros((k, points.shape[1])).at[0].set(points[jax.random.randint(k_first, (), 0, n)])

    def seed(i, centres):
        # Distance to the nearest centre chosen so far; the others are masked out by their index.
        d = jnp.where(jnp.arange(k)[None] < i, sq(centres), jnp.inf).min(-1)
        p = jnp.where(jnp.sum(d) > 0, d / jnp.maximum(jnp.sum(d), 1e-30), 1.0 / n)
        pick = jax.random.choice(jax.random.fold_in(k_rest, i), n, p=p)
        return centres.at[i].set(points[pick])

    centres = jax.lax.fori_loop(1, k, seed, centres)

    def lloyd(_, centres):
        onehot = jax.nn.one_hot(sq(centres).argmin(-1), k)  # [N, k]
        count = onehot.sum(0)
        moved = (onehot.T @ points) / jnp.maximum(count, 1.0)[:, None]
        return jnp.where(count[:, None] > 0, moved, centres)  # an empty cluster keeps its centre

    centres = jax.lax.fori_loop(0, LLOYD_STEPS, lloyd, centres)
    dist = sq(centres)
    return dist.argmin(-1).astype(jnp.int32), dist.min(-1).sum()


def kmeans(key: jax.Array, points: jax.Array, k: int, restarts: int = RESTARTS) -> jax.Array:
    """Labels int32[N] in [0, k) of the restart with the lowest inertia. points: f32[N, Z]."""
    labels, inertia = jax.vmap(lambda kk: _kmeans_once(kk, points, k))(
        jax.random.split(key, restarts))
    return labels[jnp.argmin(inertia)]


def cluster(key: jax.Array, buffer: Buffer, num_agents: int, k: int) -> jax.Array:
    """SePS's clustering of agent ids from the recorded transitions: int32[N] in [0, k)."""
    k_vae, k_means = jax.random.split(key)
    return kmeans(k_means, train_vae(k_vae, buffer, num_agents), k)
