"""PPO pieces shared by every sharing method: GAE, the clipped surrogate, the clipped value loss.

References: Schulman et al. 2016 (GAE, eq. 16), Schulman et al. 2017 (PPO, eq. 7), and for the
IPPO/MAPPO details (value clipping, per-group advantage normalisation) Yu et al. 2022.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

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
    """Width of the policy output: logits (per action or per pointer slot), or a mean and a log-std
    per action dimension."""
    sizes = {"categorical": num_actions, "gaussian": 2 * num_actions, "pointer": num_actions}
    if action_kind not in sizes:
        raise ValueError(f"action_kind: unknown {action_kind!r}; allowed: {', '.join(sizes)}")
    return sizes[action_kind]


def descending_order(priority: jax.Array, valid: jax.Array) -> jax.Array:
    """The valid slots by descending priority (ties: lower slot first), then the sentinel K.

    Args:
      priority: f32[..., K]; valid: bool[..., K].

    Returns:
      int32[..., K]: entry j is the slot of rank j, or K past the number of valid slots. Ranks come
      from K x K pairwise comparisons and one scatter: XLA's CPU sort of many short rows is several
      times slower for K = 50.
    """
    chex.assert_equal_shape([priority, valid])
    k = priority.shape[-1]
    p, v = priority.reshape(-1, k), valid.reshape(-1, k)
    slots = jnp.arange(k)
    p_i, p_j = p[:, :, None], p[:, None, :]
    ahead = (p_j > p_i) | ((p_j == p_i) & (slots[None, :] < slots[:, None]))  # j before i
    rank = (ahead & v[:, None, :]).sum(-1)
    rows = jnp.arange(p.shape[0])[:, None]
    order = jnp.full((p.shape[0], k + 1), k, jnp.int32).at[rows, jnp.where(v, rank, k)].set(slots)
    return order[:, :k].reshape(priority.shape)


def _suffix_logsumexp(x: jax.Array) -> jax.Array:
    """log sum_{j >= i} exp(x_j) along the last axis, by a cumulative sum of exp(x - max).

    `lax.cumlogsumexp` is exact but ~15x slower on CPU; the shift by the row maximum is exact as
    long as the row's spread stays below ~87 nats (float32), which `PointerDraws` guarantees by
    clipping its logits.
    """
    top = jax.lax.stop_gradient(x.max(axis=-1, keepdims=True))
    mass = jnp.flip(jnp.cumsum(jnp.flip(jnp.exp(x - top), -1), axis=-1), -1)
    return jnp.log(jnp.maximum(mass, 1e-37)) + top


class PointerDraws:
    """Sequential draws of a pointer head (docs/algorithms.md, "Policy heads"): slot 0 = stay, slots 1..K = orders.

    Each active draw picks a slot with probability softmax over {stay} and the orders not drawn
    before; an order is drawn at most once (Plackett-Luce without replacement), stay any number of
    times. The log-probability of a draw sequence is the sum of its per-draw log-probabilities.

    Args:
      logits: f32[..., S] over the S = K + 1 slots.
      slot_mask: bool[..., S], the slots that hold an order (slot 0 is always allowed).
      draw_mask: bool[..., D], the draws that happen (one per idle driver, at most D).

    Actions are int32[..., D], the slot of each draw (0 for inactive draws). Logits are clipped to
    +-LOGIT_BOUND, so probabilities down to e^-80 stay representable in the suffix sums.
    """

    LOGIT_BOUND = 40.0

    def __init__(self, logits: jax.Array, slot_mask: jax.Array, draw_mask: jax.Array):
        chex.assert_equal_shape([logits, slot_mask])
        chex.assert_equal_shape_prefix([logits, draw_mask], logits.ndim - 1)
        allowed = slot_mask.at[..., 0].set(True)
        bounded = jnp.clip(logits, -self.LOGIT_BOUND, self.LOGIT_BOUND)
        self.logits = jnp.where(allowed, bounded, _MASKED_LOGIT)
        self.slot_mask = allowed
        self.draw_mask = draw_mask

    def sample(self, seed: jax.Array) -> jax.Array:
        """The sequential process drawn in one pass, without a loop over draws.

        The orders come out in Plackett-Luce order (the Gumbel-top-k trick). Between the j-th and
        the (j+1)-th order, every draw stays with probability q_j = e^{l_0} / (e^{l_0} + R_j),
        R_j the mass of the orders not drawn yet, so the number of stays there is geometric:
        floor(log u / log q_j). The cumulative sums place each order at its draw; orders placed
        past the active draws are not drawn. Requires the active draws to be a prefix (one per idle
        driver, as the environments give).
        """
        k_order, k_stay = jax.random.split(seed)
        stay_logit, order_logits = self.logits[..., 0], self.logits[..., 1:]
        valid = self.slot_mask[..., 1:]
        num_orders, num_draws = order_logits.shape[-1], self.draw_mask.shape[-1]
        gumbel = jax.random.gumbel(k_order, order_logits.shape)
        order = descending_order(order_logits + gumbel, valid)
        ranked = jnp.minimum(order, num_orders - 1)
        ranked_logits = jnp.where(order < num_orders,
                                  jnp.take_along_axis(order_logits, ranked, axis=-1), _MASKED_LOGIT)
        # log R_j for j = 0..K-1: the order mass from rank j on.
        log_rest = _suffix_logsumexp(ranked_logits)
        log_stay = jax.nn.log_sigmoid(stay_logit[..., None] - log_rest)  # log q_j
        u = jax.random.uniform(k_stay, log_rest.shape, minval=1e-12)
        never = float(num_draws + 1)
        stays = jnp.floor(jnp.log(u) / jnp.minimum(log_stay, -1e-12))
        stays = jnp.where(order < num_orders, jnp.minimum(stays, never), never)
        position = jnp.cumsum(stays, axis=-1) + jnp.arange(num_orders)  # draw index of order j
        active = self.draw_mask.sum(-1, keepdims=True)
        position = jnp.where(position < active, position, num_draws).astype(jnp.int32)
        flat = position.reshape(-1, num_orders)
        rows = jnp.arange(flat.shape[0])[:, None]
        draws = jnp.zeros((flat.shape[0], num_draws + 1), jnp.int32)
        draws = draws.at[rows, flat].set((ranked + 1).reshape(flat.shape))
        return draws[:, :num_draws].reshape(self.draw_mask.shape)

    def log_prob(self, actions: jax.Array) -> jax.Array:
        """Sum over active draws of log p(draw d | draws before d). `actions: int32[..., D]`.

        The denominator of draw d is stay + the orders never drawn + the orders drawn at d or later
        (a suffix sum over the draws), so no mass is ever subtracted.
        """
        chex.assert_equal_shape([actions, self.draw_mask])
        num_slots = self.logits.shape[-1]
        picked = self.draw_mask & (actions > 0)
        drawn_logit = jnp.take_along_axis(self.logits, actions, axis=-1)
        later = _suffix_logsumexp(jnp.where(picked, drawn_logit, _MASKED_LOGIT))
        flat = actions.reshape(-1, actions.shape[-1])
        rows = jnp.arange(flat.shape[0])[:, None]
        slot = jnp.where(picked.reshape(flat.shape), flat, 0)  # stays and inactive draws -> 0
        ever = jnp.zeros((flat.shape[0], num_slots), bool).at[rows, slot].set(True)
        never = self.slot_mask & ~ever.reshape(self.slot_mask.shape)
        never = never.at[..., 0].set(False)
        log_never = jax.nn.logsumexp(jnp.where(never, self.logits, _MASKED_LOGIT), axis=-1)
        stay_or_never = jnp.logaddexp(self.logits[..., 0], log_never)
        log_denominator = jnp.logaddexp(stay_or_never[..., None], later)
        per_draw = jnp.where(self.draw_mask, drawn_logit - log_denominator, 0.0)
        return per_draw.sum(-1)

    def entropy(self) -> jax.Array:
        """Entropy of the first draw (the full sequence entropy has no closed form)."""
        return distrax.Categorical(logits=self.logits).entropy()


def action_distribution(
    action_kind: str, head: jax.Array, action_mask: jax.Array
) -> distrax.Distribution | PointerDraws:
    """The policy distribution of an environment's action kind (docs/algorithms.md, "Policy heads").

    Args:
      head: [..., head_size], the policy network's output.
      action_mask: bool[..., A] (categorical); bool[..., S + D] = [slot holds an order, draw is
        active] (pointer, S = head_size slots); unused by the gaussian kind.

    Returns:
      categorical: masked `Categorical`, actions int32[...];
      gaussian: diagonal `MultivariateNormalDiag`, actions f32[..., A];
      pointer: `PointerDraws`, actions int32[..., D].
    """
    if action_kind == "categorical":
        return masked_categorical(head, action_mask)
    if action_kind == "pointer":
        num_slots = head.shape[-1]
        return PointerDraws(head, action_mask[..., :num_slots], action_mask[..., num_slots:])
    if action_kind == "gaussian":
        mean, log_std = jnp.split(head, 2, axis=-1)
        return distrax.MultivariateNormalDiag(mean, jnp.exp(jnp.clip(log_std, -5.0, 2.0)))
    raise ValueError(
        f"action_kind: unknown {action_kind!r}; allowed: categorical, gaussian, pointer"
    )


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
    approx_kl = (ratio - 1.0) - log_ratio
    return PPOTerms(policy_loss, clipped_value_loss(values, old_values, returns, clip_eps),
                    dist.entropy(), approx_kl)


def clipped_value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array,
                       clip_eps: float) -> jax.Array:
    """0.5 max((V - R)^2, (V_clipped - R)^2), V_clipped within clip_eps of the rollout's value."""
    values_clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(values_clipped - returns))


def chunk_count(size: int, row_width: int, max_rows: int) -> int:
    """The fewest chunks c that divide `size` samples with (size / c) x row_width <= max_rows.

    A PPO sample holds all N agents (row_width = N), so a minibatch is size x N network rows;
    returns `size` (one sample per chunk) when even one sample is wider than max_rows.
    """
    for chunks in range(1, size + 1):
        if size % chunks == 0 and (size // chunks) * row_width <= max_rows:
            return chunks
    return size


def accumulated_grad(
    loss_fn: Callable[[Any, Any], tuple[jax.Array, Any]], params: Any, batch: Any, num_chunks: int
) -> tuple[Any, Any]:
    """`jax.grad(loss_fn, has_aux=True)(params, batch)` as a sum over equal slices of the batch.

    For a loss (and aux) that is a sum over the batch's leading axis, with any normalising
    denominators fixed outside it, the gradient of the whole is the sum of the slices' gradients:
    the same update with 1 / num_chunks of the activations held at once (gradient accumulation,
    computed in a `lax.scan`). It keeps a 10,000-cell city's minibatch within a machine's memory.

    Args:
      batch: pytree of arrays whose leading axis is divisible by num_chunks.
    """
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if num_chunks == 1:
        return grad_fn(params, batch)
    chunks = jax.tree.map(lambda x: x.reshape((num_chunks, -1) + x.shape[1:]), batch)

    def add(total, chunk):
        return jax.tree.map(jnp.add, total, grad_fn(params, chunk)), None

    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], chunks))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return jax.lax.scan(add, zeros, chunks)[0]
