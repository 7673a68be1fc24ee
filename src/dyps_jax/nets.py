"""Actor and critic MLPs, and how agents apply their group's row of stacked parameters.

Parameters of G groups are one pytree whose leaves carry a leading axis `[G, ...]`
(docs/architecture.md, "Grouped parameters"). `grouped_apply` is the single place that decides how
agents reach their group's weights:

* G small (DyPS, PS): run every group's network on all agents, then each agent keeps the row of its
  own group (`take_along_axis`). Dense matmuls, G x the FLOPs, no weight copies.
* G = N with the identity assignment (NoPS): vmap over the agent axis of both parameters and inputs,
  which XLA lowers to a batched matrix-vector product (`einsum('bnd,ndh->bnh')`), again without ever
  building an `[N, ...]` copy of weights indexed by group.
* Many rows and 2 <= G < N (`blocked_apply`): rows sorted by group into blocks of one group each, each
  block applies its group's weights (a batched matmul over blocks); about 1 x the FLOPs of one
  network instead of G x, and one weight copy per block, not per agent. Chosen by `use_blocks`, a rule
  from the measurements in benchmarks/results/grouped_params.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def orthogonal(scale: float = 1.0) -> Callable[..., jax.Array]:
    """Flax's orthogonal initialiser (a QR factorisation of a Gaussian matrix), except that under
    `vmap` it draws its matrices one after another (`lax.map`), never as one batched QR.

    Why: jaxlib 0.10.0-0.10.2 split a batched LAPACK QR over XLA's CPU thread pool from inside
    that pool, and two such factorisations running at once deadlock it (docs/jax-versions.md).
    Stacked parameter sets (`init_stacked`) and `vmap(train)` over seeds batch every initialiser.
    The numbers are the same: each matrix is factorised on its own either way.
    """
    base = nn.initializers.orthogonal(scale)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        @jax.custom_batching.custom_vmap
        def draw(k):
            return base(k, shape, dtype)

        @draw.def_vmap
        def one_at_a_time(axis_size, in_batched, k):
            return jax.lax.map(draw, k), True

        return draw(key)

    return init


class MLP(nn.Module):
    """`features[:-1]` tanh hidden layers then a linear output of `features[-1]` units."""

    features: Sequence[int]
    final_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.features[:-1]:
            x = nn.tanh(nn.Dense(width, kernel_init=orthogonal(np.sqrt(2)))(x))
        out = nn.Dense(self.features[-1], kernel_init=orthogonal(self.final_scale))
        return out(x)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs with two hidden layers (docs/algorithms.md, "Policy heads").

    The actor outputs `head_size` numbers that `ppo.action_distribution` turns into the policy
    (logits, or Gaussian mean and log-std); the critic outputs V(x). With `actor_dim` set the actor
    sees only `x[..., :actor_dim]` and the critic all of x (MAPPO appends the global state).
    """

    head_size: int
    hidden_size: int = 64
    actor_dim: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.hidden_size
        head = MLP((h, h, self.head_size), final_scale=0.01, name="actor")(
            x[..., : self.actor_dim])
        value = MLP((h, h, 1), final_scale=1.0, name="critic")(x)
        return head, value[..., 0]


class PointerActorCritic(nn.Module):
    """Pointer actor (docs/algorithms.md, "Policy heads") and MLP critic for observations of the layout
    `[cell features (cell_dim), slot features (num_slots x slot_dim), extra features]`.

    logit_k = <W emb(s), emb(o_k)> / sqrt(embed): emb(s) is a two-hidden-layer MLP of the cell
    features and any extra features (e.g. PS-id's agent one-hot), W its last linear layer, emb(o_k)
    a linear embedding of slot k's features. The critic V(x) sees the whole input; with `actor_dim`
    set the actor sees only `x[..., :actor_dim]` (MAPPO appends the global state for the critic).
    """

    cell_dim: int
    num_slots: int
    slot_dim: int
    hidden_size: int = 64
    embed_size: int = 32
    actor_dim: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h, e = self.hidden_size, self.embed_size
        end = self.cell_dim + self.num_slots * self.slot_dim
        a = x[..., : self.actor_dim]
        cell = jnp.concatenate([a[..., : self.cell_dim], a[..., end:]], axis=-1)
        slots = a[..., self.cell_dim : end].reshape(a.shape[:-1] + (self.num_slots, self.slot_dim))
        query = MLP((h, h, e), final_scale=0.01, name="actor")(cell)
        keys = nn.Dense(e, name="slot_embedding")(slots)
        logits = jnp.einsum("...e,...ke->...k", query, keys) / np.sqrt(e)
        value = MLP((h, h, 1), final_scale=1.0, name="critic")(x)
        return logits, value[..., 0]


def init_stacked(module: nn.Module, key: jax.Array, num_sets: int, example: jax.Array) -> Any:
    """Independently initialised parameter sets stacked on a leading axis: leaves `[G, ...]`."""
    keys = jax.random.split(key, num_sets)
    return jax.vmap(lambda k: module.init(k, example))(keys)


def apply_all_groups(apply_fn: Callable[..., Any], params: Any, x: jax.Array) -> Any:
    """Every group's network on every agent: leaves `[G, B, N, *out]` for `x: f32[B, N, D]`.

    DyPS needs all of them anyway (each agent's action is scored under every group's policy to
    value a change of group), and for small G this is also how agents reach their own group.
    """
    chex.assert_rank(x, 3)
    return jax.vmap(apply_fn, in_axes=(0, None))(params, x)


def select_group(out: Any, groups: jax.Array) -> Any:
    """Each agent's row of `apply_all_groups`'s output: leaves `[G, B, N, ...]` -> `[B, N, ...]`."""

    def select(y: jax.Array) -> jax.Array:
        index = groups.reshape((1,) + groups.shape + (1,) * (y.ndim - 3))
        return jnp.take_along_axis(y, index, axis=0)[0]

    return jax.tree.map(select, out)


def block_size(rows: int, num_groups: int) -> int:
    """Rows per block of `blocked_apply`: a power of two near rows / (8 G), in [16, 1024], so the
    padding (at most one partly filled block per group) stays under about 1/8 of the rows."""
    target = max(rows // (8 * num_groups), 1)
    return int(min(max(2 ** int(np.floor(np.log2(target))), 16), 1024))


def use_blocks(rows: int, num_groups: int) -> bool:
    """The strategy rule of `grouped_apply` for a shared (not per-agent) assignment: blocks when
    G >= 2 and there are enough rows to fill blocks (benchmarks/results/grouped_params.md, and
    grouped_params_small.md for the small presets' 16-256 rows per rollout step).

    Blocks cost about R + 16 G rows of one network (at most one padded block of 16 rows per
    group) plus the scatter and gather; select costs G x R. With G >= 4, blocks won from R = 96
    rows on (G = 4: 28 against select's 55 ms at 96 rows, 44 against 90 at 128; select won at
    64); with G = 2 they held level with select up to R = 128.
    """
    return num_groups >= 2 and rows >= (96 if num_groups >= 4 else 64 * num_groups)


def blocked_apply(apply_fn: Callable[..., Any], params: Any, x: jax.Array, groups: jax.Array,
                  block: int | None = None) -> Any:
    """Each row through its group's network, rows sorted into blocks that hold one group each.

    Args:
      apply_fn, params: as in `grouped_apply` (leaves `[G, ...]`).
      x: f32[B, N, D]; groups: int32[B, N] in [0, G).
      block: rows per block (default `block_size`).

    Returns:
      leaves `[B, N, *out]`, equal to the all-groups-then-select result.

    Row r of group g goes to position start_g + (its rank among group g's rows), where group g's
    segment is padded to a whole number of blocks; the static capacity R + G x block holds every
    assignment. Each block gathers its group's weights once; the unused tail blocks see zeros.
    """
    chex.assert_rank(x, 3)
    chex.assert_shape(groups, x.shape[:2])
    num_groups = jax.tree.leaves(params)[0].shape[0]
    batch, agents, dim = x.shape
    rows = batch * agents
    block = block or block_size(rows, num_groups)
    n_blocks = -(-rows // block) + num_groups
    flat_groups = groups.reshape(rows)
    onehot = jax.nn.one_hot(flat_groups, num_groups, dtype=jnp.int32)  # [R, G]
    rank = jnp.take_along_axis(jnp.cumsum(onehot, axis=0) - onehot, flat_groups[:, None], 1)[:, 0]
    padded = -(-onehot.sum(axis=0) // block) * block  # [G]
    ends = jnp.cumsum(padded)
    position = (ends - padded)[flat_groups] + rank  # [R], distinct
    inputs = jnp.zeros((n_blocks * block, dim), x.dtype).at[position].set(
        x.reshape(rows, dim), unique_indices=True)
    block_group = jnp.minimum(
        jnp.searchsorted(ends, jnp.arange(n_blocks) * block, side="right"), num_groups - 1)
    block_params = jax.tree.map(lambda p: p[block_group], params)
    out = jax.vmap(apply_fn)(block_params, inputs.reshape(n_blocks, block, dim))
    return jax.tree.map(
        lambda y: y.reshape((n_blocks * block,) + y.shape[2:])[position].reshape(
            (batch, agents) + y.shape[2:]), out)


def grouped_apply(
    apply_fn: Callable[..., Any],
    params: Any,
    x: jax.Array,
    groups: jax.Array,
    per_agent: bool,
    strategy: str = "auto",
) -> Any:
    """Applies each agent's group parameters to its input.

    Args:
      apply_fn: `apply_fn(params_of_one_group, x[..., D]) -> pytree of [..., *out]`.
      params: stacked parameters, leaves `[G, ...]`.
      x: f32[B, N, D], inputs of N agents in B samples.
      groups: int32[B, N], the group of each agent in each sample (values in [0, G)).
      per_agent: True when G = N and `groups[b] == arange(N)` (NoPS); selects the batched
        matrix-vector path.
      strategy: for per_agent False, "select" (every group on every row, then each row's own),
        "blocks" (`blocked_apply`) or "auto" (`use_blocks` decides from the shape).

    Returns:
      The outputs of `apply_fn`, leaves `[B, N, *out]`.
    """
    chex.assert_rank(x, 3)
    chex.assert_shape(groups, x.shape[:2])
    if per_agent:
        out = jax.vmap(apply_fn, in_axes=(0, 1))(params, x)  # leaves [N, B, ...]
        return jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), out)
    num_groups = jax.tree.leaves(params)[0].shape[0]
    if strategy not in ("auto", "select", "blocks"):
        raise ValueError(f"strategy: unknown {strategy!r}; allowed: auto, select, blocks")
    if strategy == "blocks" or (strategy == "auto" and use_blocks(x.shape[0] * x.shape[1],
                                                                  num_groups)):
        return blocked_apply(apply_fn, params, x, groups)
    return select_group(apply_all_groups(apply_fn, params, x), groups)


def segment_mean(
    values: jax.Array, groups: jax.Array, weights: jax.Array, num_segments: int
) -> jax.Array:
    """Weighted mean of `values` per group; empty groups give 0, not NaN.

    Args:
      values, groups, weights: arrays of one shape (`groups` int32 in [0, num_segments)).

    Returns:
      f32[num_segments].
    """
    chex.assert_equal_shape([values, groups, weights])
    total = jax.ops.segment_sum((values * weights).ravel(), groups.ravel(), num_segments)
    count = jax.ops.segment_sum(weights.ravel(), groups.ravel(), num_segments)
    return total / jnp.maximum(count, 1.0)
