"""How well a grouping of agents matches their true types: adjusted Rand index and purity.

Both are computed in JAX from a contingency table, so the training loop logs them every iteration
inside the compiled step (no host round trip).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def _pairs(x: jax.Array) -> jax.Array:
    return x * (x - 1.0) / 2.0


def contingency(groups: jax.Array, types: jax.Array, num_groups: int, num_types: int) -> jax.Array:
    """f32[..., M, K]: how many agents of group m have type k.

    Args:
      groups: int32[..., N] in [0, M); types: int32[N] or int32[..., N] in [0, K).
    """
    types = jnp.broadcast_to(types, groups.shape)
    return jnp.einsum(
        "...nm,...nk->...mk", jax.nn.one_hot(groups, num_groups), jax.nn.one_hot(types, num_types)
    )


def adjusted_rand_index(
    groups: jax.Array, types: jax.Array, num_groups: int, num_types: int
) -> jax.Array:
    """Adjusted Rand index (Hubert & Arabie 1985) between two labelings of the same N agents.

    ARI = (sum_mk C(n_mk, 2) - E) / (0.5 (sum_m C(a_m, 2) + sum_k C(b_k, 2)) - E), with
    E = sum_m C(a_m, 2) sum_k C(b_k, 2) / C(N, 2); a, b are the row and column sums of the
    contingency table. 1 for identical partitions (up to relabelling), about 0 for independent
    ones. When the denominator is 0 (both labelings put every agent in one cluster, or every agent
    alone) the partitions are identical and the index is 1, as in scikit-learn.

    Args:
      groups: int32[..., N]; types: int32[N] or int32[..., N].

    Returns:
      f32[...].
    """
    chex.assert_rank(types, {1, groups.ndim})
    table = contingency(groups, types, num_groups, num_types)
    n = jnp.asarray(groups.shape[-1], jnp.float32)
    index = _pairs(table).sum(axis=(-2, -1))
    rows = _pairs(table.sum(-1)).sum(-1)
    cols = _pairs(table.sum(-2)).sum(-1)
    expected = rows * cols / jnp.maximum(_pairs(n), 1.0)
    denominator = 0.5 * (rows + cols) - expected
    safe = jnp.where(denominator == 0, 1.0, denominator)
    return jnp.where(denominator == 0, 1.0, (index - expected) / safe)


def purity(groups: jax.Array, types: jax.Array, num_groups: int, num_types: int) -> jax.Array:
    """Share of agents whose group's majority type is their own type. f32[...]; 1 = pure groups.

    Unlike the ARI it does not penalise splitting one type over several groups, so with more
    groups than types it says whether every group holds one type.
    """
    table = contingency(groups, types, num_groups, num_types)
    return table.max(-1).sum(-1) / groups.shape[-1]


def separation(embeddings: jax.Array, types: jax.Array, num_types: int) -> jax.Array:
    """Fisher's ratio of the agents' role embeddings by true type: between-type over within-type
    variance (summed over dimensions). 0 when the embeddings say nothing about the type; large when
    agents of one type sit close together and apart from the others.

    Args:
      embeddings: f32[..., N, H]; types: int32[N].

    Returns:
      f32[...].
    """
    onehot = jax.nn.one_hot(types, num_types)  # [N, K]
    counts = jnp.maximum(onehot.sum(0), 1.0)
    centroids = jnp.einsum("nk,...nh->...kh", onehot, embeddings) / counts[:, None]
    mean = embeddings.mean(axis=-2, keepdims=True)
    own = jnp.einsum("nk,...kh->...nh", onehot, centroids)
    between = jnp.square(own - mean).sum(axis=(-2, -1))
    within = jnp.square(embeddings - own).sum(axis=(-2, -1))
    return between / jnp.maximum(within, 1e-8)
