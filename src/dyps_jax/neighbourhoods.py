"""CoPO's neighbourhoods, one choice per scenario (docs/methods.md).

CoPO (Peng et al. 2021, eq. 6) rewards each agent's neighbourhood: r^N_n is the mean reward of the
agents in agent n's neighbourhood, agent n included (so it is defined when no one is near). Each
environment kind says who is near as `(index int32[N, K], weight f32[N, K])`: the K candidate
neighbours of every agent and whether each counts (1) or not (0), computed from the environment
state where neighbourhoods move:

* lbf: agents within Chebyshev distance 2 (two agents next to the same food can be that far apart);
* rware: robots within Chebyshev distance 2 on the grid;
* ridehailing: the cell and its (up to 6) adjacent hexagonal cells, fixed;
* medical: each CBG and its 8 nearest CBGs by centroid, fixed (needs the city's CBG centroids);
* rolegame: the whole team (the game has no space).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LBF_RADIUS = 2
RWARE_RADIUS = 2
MEDICAL_NEAREST = 8

Neighbourhood = Callable[[Any], tuple[jax.Array, jax.Array]]


def _within(rows: jax.Array, cols: jax.Array, radius: int) -> tuple[jax.Array, jax.Array]:
    """Every agent a candidate, weight 1 within Chebyshev `radius`. rows, cols: int32[N]."""
    n = rows.shape[0]
    distance = jnp.maximum(jnp.abs(rows[:, None] - rows[None]), jnp.abs(cols[:, None] - cols[None]))
    index = jnp.broadcast_to(jnp.arange(n), (n, n))
    return index, (distance <= radius).astype(jnp.float32)


def _fixed(index: np.ndarray, weight: np.ndarray) -> Neighbourhood:
    fixed = jnp.asarray(index, jnp.int32), jnp.asarray(weight, jnp.float32)
    return lambda _state: fixed


def _lbf(env) -> Neighbourhood:
    return lambda state: _within(state.agent_pos[:, 0], state.agent_pos[:, 1], LBF_RADIUS)


def _rware(env) -> Neighbourhood:
    width = env.grid_shape[1]
    return lambda state: _within(state.agent_cell // width, state.agent_cell % width, RWARE_RADIUS)


def _ridehailing(env) -> Neighbourhood:
    nbrs = np.asarray(env.grid.neighbours)
    cells = np.arange(nbrs.shape[0])[:, None]
    index = np.concatenate([cells, np.where(nbrs >= 0, nbrs, cells)], axis=1)
    weight = np.concatenate([np.ones_like(cells), nbrs >= 0], axis=1)
    return _fixed(index, weight)


def _medical(env) -> Neighbourhood:
    xy = np.asarray(env.city.cbg_xy, np.float64)
    if not np.any(xy):
        raise ValueError("algo: copo needs CBG centroids for the medical neighbourhoods, but the "
                         "city's cbg_xy are all zero; use the synthetic city or data with centroids")
    k = min(MEDICAL_NEAREST + 1, xy.shape[0])
    # Row by row in chunks: a full C x C distance matrix of 3130 CBGs is 78 MB in float64.
    index = np.concatenate([
        np.argsort(((xy[i:i + 512, None] - xy[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :k]
        for i in range(0, xy.shape[0], 512)
    ])
    return _fixed(index, np.ones_like(index))


def _rolegame(env) -> Neighbourhood:
    n = env.num_agents
    return _fixed(np.broadcast_to(np.arange(n), (n, n)), np.ones((n, n)))


_KINDS: dict[str, Callable[[Any], Neighbourhood]] = {
    "lbf": _lbf, "rware": _rware, "ridehailing": _ridehailing, "medical": _medical,
    "rolegame": _rolegame,
}


def neighbourhood(env) -> Neighbourhood:
    """`state -> (index int32[N, K], weight f32[N, K])` for an environment; ValueError if its kind
    has no neighbourhood."""
    kind = getattr(env, "kind", type(env).__name__)
    if kind not in _KINDS:
        raise ValueError(f"algo: copo needs neighbourhoods, defined for {', '.join(_KINDS)}; "
                         f"environment kind {kind!r} has none")
    return _KINDS[kind](env)


def neighbour_reward(index: jax.Array, weight: jax.Array, reward: jax.Array) -> jax.Array:
    """r^N: the weighted mean reward over each agent's neighbourhood. reward: f32[N] -> f32[N]."""
    return (weight * reward[index]).sum(-1) / jnp.maximum(weight.sum(-1), 1.0)
