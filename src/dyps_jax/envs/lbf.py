"""Level-Based Foraging in pure JAX: the rules of `lbforaging` 2.0.0 with the SePS changes.

Agents on a `field_size x field_size` grid pick up food by standing next to it and loading; a food
is collected when the levels of the agents loading it add up to at least its level. SePS variant
(docs/scenarios.md, "Level-Based Foraging"): agent `i` has the fixed level `min_player_level + i mod (number of levels)`,
i.e. `(i mod 3) + 1` by default, and levels are not observed (their observation slot is 0).

The rules follow `lbforaging/foraging/environment.py`; the tests compare both step by step:

* reset: agents on distinct cells drawn uniformly; then each food, one after another, on a cell
  drawn uniformly among the free interior cells (not on the border) with no food in its 3x3
  neighbourhood and none within 2 cells in the same row or column. The reference draws interior
  cells until one is valid, 1000 draws at most for all foods together: the draws each food costs
  are geometric, so we draw their number and stop placing food once the total passes 1000 (same
  law; crowded fields such as lbf-2 then get fewer foods, as in the reference). Food level: uniform
  integer in `[min_food_level, max_food_level]`, where `max_food_level=None` means the sum of the 3
  lowest agent levels; `force_coop` gives every food that maximum.
* actions: 0 noop, 1 north (row - 1), 2 south, 3 west (col - 1), 4 east, 5 load. An invalid action
  (off the grid, onto food, load with no adjacent food) is a noop. Every agent targets a cell (its
  own for noop/load) and moves there iff no other agent targets the same cell: following an agent
  that leaves and swapping succeed, two agents into one cell both stay (and an agent following one
  that is blocked ends on its cell, as in the reference).
* loading: a loading agent picks its first adjacent food in the order north, south, west, east. A
  food is collected when the summed level of the agents that picked it is >= its level; each of
  them gets `level_i * food_level / (sum of their levels * sum of all food levels at reset)`.
* done when no food is left or after `max_steps` steps.

Deviations from the reference, none reachable from a state the reference generates itself: food on
the border (never spawned) is found by loading agents, while the reference's food finder skips row
and column 0 (and crashes); an agent adjacent to two foods (impossible under the spawn rule) counts
only for the food it picked, while the reference's grouping then depends on Python set order.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dyps_jax.envs.core import TimeStep, register
from dyps_jax.envs.params import param

# Row/column offset of each action: noop, north, south, west, east, load.
_MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]], dtype=np.int32)
_NOOP, _LOAD = 0, 5
# The four neighbours, in the order the reference searches them for food to load.
_NEIGHBOURS = _MOVES[1:5]
# The reference gives up placing food after this many random cell draws in total.
_FOOD_SPAWN_ATTEMPTS = 1000


@struct.dataclass
class LBFState:
    """State of one LBF episode (N agents, F foods).

    Attributes:
      agent_pos: int32[N, 2], (row, col) of each agent.
      agent_level: int32[N], level of each agent.
      food_pos: int32[F, 2], (row, col) of each food (meaningless where `food_level` is 0).
      food_level: int32[F], level of each food; 0 = eaten or never placed.
      food_spawned: int32[], sum of all food levels at reset (the reward normaliser).
      step_count: int32[], steps taken in this episode.
    """

    agent_pos: jax.Array
    agent_level: jax.Array
    food_pos: jax.Array
    food_level: jax.Array
    food_spawned: jax.Array
    step_count: jax.Array


@register("lbf")
@dataclasses.dataclass(frozen=True)
class LevelBasedForaging:
    """Level-Based Foraging (SePS variant); static parameters, pure `reset`/`step`.

    Observation of agent i, f32[3F + 3N] (the reference's vector observation): F food triples
    (row, col, level) of the visible foods in row-major order, then N player triples
    (row, col, level) with the agent itself first and the other visible agents in index order;
    coordinates are relative to the corner of the agent's view window (absolute when
    `sight >= field_size - 1`); unused slots are (-1, -1, 0); the level slot is 0 unless
    `observe_levels`.

    Global state, f32[2N + 3F + 1]: agent (row, col) pairs, food (row, col, level) triples with
    eaten foods as (-1, -1, 0), and the fraction of the episode elapsed (`step_count / max_steps`).
    """

    field_size: int = param(10, ge=3)  # food is placed off the border
    num_agents: int = param(6, ge=1)
    num_food: int = param(4, ge=1)
    sight: int = param(10, ge=1)
    max_steps: int = param(50, ge=1)
    min_player_level: int = param(1, ge=1)
    max_player_level: int = param(3, ge=1)
    min_food_level: int = param(1, ge=1)
    # None: sum of the 3 lowest agent levels, as the reference
    max_food_level: int | None = param(None, ge=1)
    force_coop: bool = False
    fixed_levels: bool = True
    observe_levels: bool = False
    normalize_reward: bool = True
    penalty: float = 0.0

    num_actions = 6
    action_kind = "categorical"
    pointer_layout = None

    def __post_init__(self) -> None:
        if self.min_player_level > self.max_player_level:
            raise ValueError(
                f"env.min_player_level: must be <= max_player_level ({self.max_player_level}), "
                f"got {self.min_player_level}"
            )
        if self.max_food_level is not None and self.max_food_level < self.min_food_level:
            raise ValueError(
                f"env.max_food_level: must be None or an integer >= min_food_level "
                f"({self.min_food_level}), got {self.max_food_level!r}"
            )
        if self.num_food > (self.field_size - 2) ** 2:
            raise ValueError(
                f"env.num_food: at most (field_size - 2)^2 = {(self.field_size - 2) ** 2} foods "
                f"fit off the border of a {self.field_size}x{self.field_size} field, "
                f"got {self.num_food}"
            )
        if self.num_agents + self.num_food > self.field_size**2:
            raise ValueError(
                f"env.num_agents: num_agents + num_food must fit on the {self.field_size**2} "
                f"cells of the field, got {self.num_agents} + {self.num_food}"
            )

    @property
    def obs_dim(self) -> int:
        return 3 * self.num_food + 3 * self.num_agents

    @property
    def global_state_dim(self) -> int:
        return 2 * self.num_agents + 3 * self.num_food + 1

    @property
    def agent_types(self) -> np.ndarray | None:
        """int32[N]: each agent's fixed hidden level minus the lowest level (`i mod levels`), or None
        when levels are drawn per episode (no fixed types)."""
        if not self.fixed_levels:
            return None
        span = self.max_player_level - self.min_player_level + 1
        return (np.arange(self.num_agents) % span).astype(np.int32)

    # ------------------------------------------------------------------ reset

    def reset(self, key: jax.Array) -> tuple[LBFState, TimeStep]:
        """Draws a new episode. Returns (state, TimeStep with zero reward and done=False)."""
        n, size = self.num_agents, self.field_size
        k_agents, k_levels, k_food = jax.random.split(key, 3)
        # Distinct cells uniformly (the law of the reference's one-by-one rejection sampling): the
        # cells holding the n largest of iid uniforms, in order. Cheaper than a permutation.
        cells = jax.lax.top_k(jax.random.uniform(k_agents, (size * size,)), n)[1]
        agent_pos = jnp.stack([cells // size, cells % size], axis=-1).astype(jnp.int32)
        types = self.agent_types
        if types is not None:  # fixed levels
            levels = jnp.asarray(self.min_player_level + types, jnp.int32)
        else:
            levels = jax.random.randint(
                k_levels, (n,), self.min_player_level, self.max_player_level + 1, jnp.int32
            )
        food_pos, food_level = self._spawn_food(k_food, agent_pos, levels)
        state = LBFState(
            agent_pos=agent_pos,
            agent_level=levels,
            food_pos=food_pos,
            food_level=food_level,
            food_spawned=food_level.sum(),
            step_count=jnp.int32(0),
        )
        timestep = self._timestep(
            state, jnp.zeros(n, jnp.float32), jnp.bool_(False), jnp.float32(0.0)
        )
        return state, timestep

    def _spawn_food(
        self, key: jax.Array, agent_pos: jax.Array, levels: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Places foods one by one, each uniformly among the cells valid at that moment.

        Returns food_pos int32[F, 2] and food_level int32[F] (0 where the food was not placed).
        """
        inner = self.field_size - 2
        # Candidate cells: the interior (the reference never puts food on the border).
        rows = 1 + jnp.arange(inner * inner, dtype=jnp.int32) // inner
        cols = 1 + jnp.arange(inner * inner, dtype=jnp.int32) % inner
        has_agent = jnp.any(
            (rows[:, None] == agent_pos[None, :, 0]) & (cols[:, None] == agent_pos[None, :, 1]),
            axis=1,
        )
        # One uniform per food for the cell, one for the reference's number of draws, one for the
        # level: cheaper than a categorical over all cells (random bits dominate on CPU).
        uniforms = jax.random.uniform(key, (self.num_food, 3))

        def place(carry, u):
            blocked, attempts = carry  # bool[inner^2] cells where no food may go; draws so far
            ok = ~blocked
            count = ok.sum()
            k = jnp.minimum(jnp.floor(u[0] * count), count - 1)  # the k-th valid cell, uniform
            cell = jnp.argmax(jnp.cumsum(ok) > k)
            # Draws the reference spends on this food: geometric with success p = valid/interior.
            p_valid = count / (inner * inner)
            tries = jnp.floor(jnp.log1p(-u[1]) / jnp.log1p(-p_valid)) + 1.0
            attempts = attempts + jnp.where(count > 0, tries, jnp.inf)  # none valid: gives up
            placed = attempts <= _FOOD_SPAWN_ATTEMPTS
            # The reference rejects a cell with food in its 3x3 or within 2 cells in its row/column.
            dr, dc = jnp.abs(rows - rows[cell]), jnp.abs(cols - cols[cell])
            near = ((dr <= 1) & (dc <= 1)) | ((dr == 0) & (dc <= 2)) | ((dc == 0) & (dr <= 2))
            return (blocked | (near & placed), attempts), (cell, placed)

        _, (cells, placed) = jax.lax.scan(place, (has_agent, jnp.float32(0.0)), uniforms)
        food_pos = jnp.stack([rows[cells], cols[cells]], axis=-1)
        if self.max_food_level is None:
            high = jnp.sort(levels)[:3].sum()
        else:
            high = jnp.int32(self.max_food_level)
        low = high if self.force_coop else jnp.int32(self.min_food_level)
        food_level = low + jnp.floor(uniforms[:, 2] * (high - low + 1)).astype(jnp.int32)
        return food_pos, jnp.where(placed, jnp.minimum(food_level, high), 0)

    # ------------------------------------------------------------------- step

    def step(
        self, key: jax.Array, state: LBFState, actions: jax.Array
    ) -> tuple[LBFState, TimeStep]:
        """Advances all agents one step; `actions`: int32[N] in 0..5. Deterministic (`key` unused).

        Returns the new state and a TimeStep with reward f32[N], done bool[] and
        metrics {"food_collected": f32[]} (foods eaten in this step).
        """
        del key
        chex.assert_shape(actions, (self.num_agents,))
        n = self.num_agents
        actions = actions.astype(jnp.int32)
        mask = self._action_mask(state)
        in_range = (actions >= 0) & (actions < 6)
        actions = jnp.where(in_range, actions, _NOOP)
        actions = jnp.where(mask[jnp.arange(n), actions], actions, _NOOP)

        # Moves: an agent reaches its target iff no other agent targets the same cell.
        target = state.agent_pos + jnp.asarray(_MOVES)[actions]
        same = jnp.all(target[:, None, :] == target[None, :, :], axis=-1)
        alone = same.sum(axis=1) == 1
        pos = jnp.where(alone[:, None], target, state.agent_pos)

        # Loading: each loading agent picks its first adjacent food (north, south, west, east).
        food_alive = state.food_level > 0
        around = pos[:, None, :] + jnp.asarray(_NEIGHBOURS)[None, :, :]  # [N, 4, 2]
        hit = jnp.all(around[:, :, None, :] == state.food_pos[None, None, :, :], axis=-1)
        hit = hit & food_alive[None, None, :]  # [N, 4, F]
        first_dir = jnp.argmax(hit.any(axis=2), axis=1)
        picked = hit[jnp.arange(n), first_dir]  # [N, F], at most one True per row
        picked = picked & (actions == _LOAD)[:, None]
        group_level = (picked * state.agent_level[:, None]).sum(axis=0)  # [F]
        eaten = picked.any(axis=0) & (group_level >= state.food_level)

        level_f = state.agent_level.astype(jnp.float32)
        food_f = state.food_level.astype(jnp.float32)
        share = level_f[:, None] * food_f[None, :]
        if self.normalize_reward:
            share = share / (
                jnp.maximum(group_level, 1).astype(jnp.float32)[None, :]
                * jnp.maximum(state.food_spawned, 1).astype(jnp.float32)
            )
        reward = jnp.where(picked & eaten[None, :], share, 0.0).sum(axis=1)
        reward = reward - self.penalty * (picked & ~eaten[None, :]).any(axis=1)

        food_level = jnp.where(eaten, 0, state.food_level)
        step_count = state.step_count + 1
        done = jnp.all(food_level == 0) | (step_count >= self.max_steps)
        new_state = dataclasses.replace(state, agent_pos=pos, food_level=food_level,
                                        step_count=step_count)
        timestep = self._timestep(
            new_state, reward.astype(jnp.float32), done, eaten.sum().astype(jnp.float32)
        )
        return new_state, timestep

    # ------------------------------------------------------------ observation

    def _action_mask(self, state: LBFState) -> jax.Array:
        """bool[N, 6]: the reference's valid actions (moves blocked by food or the border only)."""
        target = state.agent_pos[:, None, :] + jnp.asarray(_NEIGHBOURS)[None, :, :]  # [N, 4, 2]
        inside = jnp.all((target >= 0) & (target < self.field_size), axis=-1)
        on_food = jnp.all(target[:, :, None, :] == state.food_pos[None, None, :, :], axis=-1)
        on_food = jnp.any(on_food & (state.food_level > 0)[None, None, :], axis=-1)  # [N, 4]
        moves = inside & ~on_food
        can_load = jnp.any(on_food, axis=1)
        noop = jnp.ones((self.num_agents, 1), bool)
        return jnp.concatenate([noop, moves, can_load[:, None]], axis=1)

    def _observations(self, state: LBFState) -> jax.Array:
        """f32[N, obs_dim]: the reference's vector observation (see the class docstring)."""
        n, f, s, size = self.num_agents, self.num_food, self.sight, self.field_size
        origin = jnp.maximum(state.agent_pos - s, 0)  # [N, 2], corner of each agent's view window

        # Foods: visible within `sight` in both coordinates, listed in row-major order.
        delta = jnp.abs(state.food_pos[None, :, :] - state.agent_pos[:, None, :])  # [N, F, 2]
        seen = jnp.all(delta <= s, axis=-1) & (state.food_level > 0)[None, :]  # [N, F]
        order = state.food_pos[:, 0] * size + state.food_pos[:, 1]
        before = (order[None, :] < order[:, None])[None, :, :] & seen[:, None, :]  # [N, F, F]
        food_rel = state.food_pos[None, :, :] - origin[:, None, :]
        food_feat = jnp.concatenate(
            [food_rel, jnp.broadcast_to(state.food_level[None, :, None], (n, f, 1))], axis=-1
        )
        food_obs = _compact(food_feat, seen, before.sum(axis=-1), f)

        # Players: self first, then the others in index order.
        shown = state.agent_level if self.observe_levels else jnp.zeros_like(state.agent_level)
        player = jnp.concatenate([state.agent_pos, shown[:, None]], axis=-1)  # [N, 3]
        if s >= size - 1:
            # Full view: everyone is seen at absolute coordinates, so the order is static.
            others = np.array([[i] + [j for j in range(n) if j != i] for i in range(n)])
            player_obs = player[others].astype(jnp.float32)
        else:
            # The reference's window test: 0 <= coordinate relative to the corner <= 2 * sight.
            rel = state.agent_pos[None, :, :] - origin[:, None, :]  # [N, N, 2]
            visible = jnp.all((rel >= 0) & (rel <= 2 * s), axis=-1)
            eye = jnp.eye(n, dtype=bool)
            earlier = jnp.tril(jnp.ones((n, n), jnp.int32), -1).T  # earlier[k, j] = k < j
            rank = jnp.where(eye, 0, 1 + (visible & ~eye).astype(jnp.int32) @ earlier)
            feat = jnp.concatenate([rel, jnp.broadcast_to(shown[None, :, None], (n, n, 1))], -1)
            player_obs = _compact(feat, visible, rank, n)
        return jnp.concatenate([food_obs.reshape(n, 3 * f), player_obs.reshape(n, 3 * n)], axis=1)

    def _global_state(self, state: LBFState) -> jax.Array:
        """f32[2N + 3F + 1]: agent positions, food (row, col, level) or (-1, -1, 0), time used."""
        alive = (state.food_level > 0)[:, None]
        food = jnp.concatenate([state.food_pos, state.food_level[:, None]], axis=1)
        food = jnp.where(alive, food, jnp.array([-1, -1, 0]))
        return jnp.concatenate([
            state.agent_pos.reshape(-1).astype(jnp.float32),
            food.reshape(-1).astype(jnp.float32),
            (state.step_count / self.max_steps)[None].astype(jnp.float32),
        ])

    def _timestep(
        self, state: LBFState, reward: jax.Array, done: jax.Array, collected: jax.Array
    ) -> TimeStep:
        return TimeStep(
            obs=self._observations(state),
            reward=reward,
            done=done,
            action_mask=self._action_mask(state),
            global_state=self._global_state(state),
            metrics={"food_collected": collected},
        )


def _compact(feat: jax.Array, keep: jax.Array, slot: jax.Array, num_slots: int) -> jax.Array:
    """Writes the kept items of each row into their slots; empty slots read (-1, -1, 0).

    feat: int32[N, K, 3], keep: bool[N, K], slot: int32[N, K] (distinct among kept items).
    Returns f32[N, num_slots, 3]. (A scatter measured faster than a one-hot contraction on CPU.)
    """
    n = feat.shape[0]
    out = jnp.tile(jnp.array([-1.0, -1.0, 0.0]), (n, num_slots, 1))
    index = jnp.where(keep, slot, num_slots)  # out of range: dropped
    return out.at[jnp.arange(n)[:, None], index].set(feat.astype(jnp.float32), mode="drop")
