"""Coloured multi-robot warehouse (RWARE with the SePS colour rules), pure JAX.

Dynamics follow `rware` 2.0.0 (`rware/warehouse.py`, the reference the tests compare against) with
the colour rules of SePS (docs/scenarios.md, "Coloured warehouse"):

* Layout: `shelf_rows` bands of `column_height` shelf rows and `shelf_columns` columns of 2-wide
  shelf blocks, separated by highways; the grid is `H = (column_height + 1) * shelf_rows + 2`
  rows by `W = 3 * shelf_columns + 1` columns; the two goals are the middle cells of the bottom
  row and the middle column above them is kept free as a queue. Defaults: 20 x 10 cells, 80
  shelves.
* Cells are flat indices `y * W + x` (x = column, y = row, y grows downwards). Directions are
  0 up, 1 down, 2 left, 3 right (the reference's `Direction`).
* Actions 0 noop, 1 forward, 2 turn left, 3 turn right, 4 toggle load. Robot colour c first maps the
  action a to `(a - c) mod 5` (SePS per-colour action rotation). Unloading is refused on highways.
* Moves are resolved simultaneously as in the reference's move graph: cycles of 3+ robots rotate
  (on a grid that means 4, 6, ...), 2-cycles (swaps) fail together with everything feeding into
  them, chains into a standing robot fail, and where several chains meet the longest commits (equal
  lengths: the lower robot index; the reference breaks such ties by Python set order, see
  `_resolve_moves`). A carrying robot never enters a cell holding a standing shelf.
* Colours: robot n has the fixed colour `n * num_colours // num_agents` (blocks); shelf colours
  are drawn uniformly at every reset. A requested shelf at a goal is delivered (reward +1 to the
  robot at the goal, request replaced by a uniform draw among the shelves not requested) only if its
  colour matches that robot's colour. With `load_gate=True` a robot can only load shelves of its
  colour.
* The episode ends after `max_steps` steps; collisions never end it.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dyps_jax.envs.core import TimeStep, register
from dyps_jax.envs.params import param

NOOP, FORWARD, TURN_LEFT, TURN_RIGHT, TOGGLE_LOAD = range(5)
UP, DOWN, LEFT, RIGHT = range(4)
_DX = np.array([0, 0, -1, 1], np.int32)  # per direction
_DY = np.array([-1, 1, 0, 0], np.int32)
# Clockwise order is up, right, down, left; turning right steps clockwise, left anticlockwise.
_AFTER_RIGHT = np.array([RIGHT, LEFT, UP, DOWN], np.int32)
_AFTER_LEFT = np.array([LEFT, RIGHT, DOWN, UP], np.int32)


@struct.dataclass
class WarehouseState:
    """Dynamic state of one warehouse (N robots, S shelves, R requests).

    Attributes:
      agent_cell: int32[N], flat cell `y * W + x` of each robot.
      agent_dir: int32[N], 0 up, 1 down, 2 left, 3 right.
      carried: int32[N], index of the shelf a robot carries, -1 if none.
      shelf_cell: int32[S], flat cell of each shelf (a carried shelf is at its robot's cell).
      shelf_colour: int32[S], colour of each shelf in [0, num_colours).
      requests: int32[R], indices of the requested shelves (distinct).
      step: int32[], steps taken in this episode.
    """

    agent_cell: jax.Array
    agent_dir: jax.Array
    carried: jax.Array
    shelf_cell: jax.Array
    shelf_colour: jax.Array
    requests: jax.Array
    step: jax.Array


@register("rware")
@dataclasses.dataclass(frozen=True)
class ColouredWarehouse:
    """Coloured multi-robot warehouse; static parameters, pure `reset`/`step` (`core.Environment`).

    Observation of robot n, f32[obs_dim] with `obs_dim = 8 + K * (num_colours + 2)` and
    `K = (2 * sensor_range + 1) ** 2`: x, y, carrying, direction one-hot (4), on-highway, then for
    each of the K cells around it (row-major, rows top to bottom; zeros outside the grid):
    has-robot, shelf-colour one-hot (num_colours; all zero without a shelf), shelf-requested.
    Robot colours are not observed; neighbours' directions (in the reference's observation) are not
    either.

    Global state, f32[global_state_dim] with `global_state_dim = 7 N + (3 + num_colours) S`: per
    robot (x, y, direction one-hot (4), carrying), then per shelf (x, y, colour one-hot, requested).
    Coordinates are raw cell coordinates, as in the reference's observations.
    """

    shelf_columns: int = param(3, ge=1)
    shelf_rows: int = param(2, ge=1)
    column_height: int = param(8, ge=1)
    num_agents: int = param(8, ge=1)
    request_queue_size: int = param(4, ge=1)
    max_steps: int = param(500, ge=1)
    num_colours: int = param(2, ge=1)
    load_gate: bool = False
    sensor_range: int = param(1, ge=1)

    action_kind = "categorical"
    num_actions = 5
    pointer_layout = None

    def __post_init__(self):
        if self.shelf_columns % 2 != 1:
            raise ValueError(
                f"env.shelf_columns: must be odd (the goal queue is the middle column), "
                f"got {self.shelf_columns!r}"
            )
        h, w = self.grid_shape
        if self.num_agents > h * w:
            raise ValueError(
                f"env.num_agents: {self.num_agents!r} robots do not fit on the {h}x{w} grid; "
                f"allowed: 1..{h * w}"
            )
        if self.request_queue_size >= self.num_shelves:
            raise ValueError(
                f"env.request_queue_size: must be < the number of shelves ({self.num_shelves}), "
                f"got {self.request_queue_size!r}"
            )
        if self.num_colours > self.num_agents:
            raise ValueError(
                f"env.num_colours: every colour needs a robot, so at most num_agents "
                f"({self.num_agents}), got {self.num_colours!r}"
            )

    # ----------------------------------------------------------------------------- static layout
    @property
    def grid_shape(self) -> tuple[int, int]:
        return (self.column_height + 1) * self.shelf_rows + 2, 3 * self.shelf_columns + 1

    @cached_property
    def _highway(self) -> np.ndarray:
        """bool[H, W]: corridors, the bottom row and the queue column above the goals."""
        h, w = self.grid_shape
        y, x = np.indices((h, w))
        queue = (y > h - (self.column_height + 3)) & ((x == w // 2 - 1) | (x == w // 2))
        return (x % 3 == 0) | (y % (self.column_height + 1) == 0) | (y == h - 1) | queue

    @cached_property
    def _shelf_home(self) -> np.ndarray:
        """int32[S]: initial shelf cells, row-major (the reference's shelf order)."""
        return np.flatnonzero(~self._highway.reshape(-1)).astype(np.int32)

    @cached_property
    def _goals(self) -> tuple[int, ...]:
        h, w = self.grid_shape
        return ((h - 1) * w + w // 2 - 1, (h - 1) * w + w // 2)

    @cached_property
    def agent_colour(self) -> np.ndarray:
        """int32[N]: fixed robot colours in blocks (8 robots, 2 colours -> 0,0,0,0,1,1,1,1)."""
        return (np.arange(self.num_agents) * self.num_colours // self.num_agents).astype(np.int32)

    @property
    def num_shelves(self) -> int:
        return int(self._shelf_home.size)

    @property
    def agent_types(self) -> np.ndarray:
        """int32[N]: the robot colours, the agents' hidden types."""
        return self.agent_colour

    @property
    def obs_dim(self) -> int:
        return 8 + (2 * self.sensor_range + 1) ** 2 * (self.num_colours + 2)

    @property
    def global_state_dim(self) -> int:
        return 7 * self.num_agents + (3 + self.num_colours) * self.num_shelves

    # ----------------------------------------------------------------------------------- API
    def reset(self, key: jax.Array) -> tuple[WarehouseState, TimeStep]:
        """Robots on distinct uniform cells (shelf cells included) with uniform directions, shelves
        at home with uniform colours, `request_queue_size` distinct uniform requests."""
        h, w = self.grid_shape
        k_cell, k_dir, k_colour, k_req = jax.random.split(key, 4)
        state = WarehouseState(
            agent_cell=jax.random.choice(k_cell, h * w, (self.num_agents,), replace=False).astype(
                jnp.int32
            ),
            agent_dir=jax.random.randint(k_dir, (self.num_agents,), 0, 4, jnp.int32),
            carried=jnp.full((self.num_agents,), -1, jnp.int32),
            shelf_cell=jnp.asarray(self._shelf_home),
            shelf_colour=jax.random.randint(
                k_colour, (self.num_shelves,), 0, self.num_colours, jnp.int32
            ),
            requests=jax.random.choice(
                k_req, self.num_shelves, (self.request_queue_size,), replace=False
            ).astype(jnp.int32),
            step=jnp.zeros((), jnp.int32),
        )
        zero = jnp.zeros((self.num_agents,), jnp.float32)
        return state, self._timestep(state, zero, jnp.zeros((), jnp.float32))

    def step(
        self, key: jax.Array, state: WarehouseState, actions: jax.Array
    ) -> tuple[WarehouseState, TimeStep]:
        """One simultaneous move of all robots.

        Args:
          key: PRNG key (only used to draw replacement requests).
          state: the current `WarehouseState`.
          actions: int32[N] in [0, 5), before the per-colour rotation.
        """
        chex.assert_shape(actions, (self.num_agents,))
        h, w = self.grid_shape
        n, s = self.num_agents, self.num_shelves
        colour = jnp.asarray(self.agent_colour)
        action = (actions.astype(jnp.int32) - colour) % 5
        cell, direction, carried = state.agent_cell, state.agent_dir, state.carried
        idx = jnp.arange(n, dtype=jnp.int32)
        carrying = carried >= 0
        x, y = cell % w, cell // w

        # Requested cell: forward moves are clipped at the border (a robot facing a wall stays).
        fwd = action == FORWARD
        tx = jnp.where(fwd, jnp.clip(x + jnp.asarray(_DX)[direction], 0, w - 1), x)
        ty = jnp.where(fwd, jnp.clip(y + jnp.asarray(_DY)[direction], 0, h - 1), y)
        target = ty * w + tx

        # Occupancy before the move; a carried shelf stands on its robot's cell.
        agent_at = jnp.full((h * w,), -1, jnp.int32).at[cell].set(idx)
        shelf_at = jnp.full((h * w,), -1, jnp.int32).at[state.shelf_cell].set(
            jnp.arange(s, dtype=jnp.int32)
        )
        occupant = agent_at[target]
        carrier_there = (occupant >= 0) & carrying[jnp.maximum(occupant, 0)]
        # A loaded robot cannot enter a cell with a standing shelf; a shelf carried by the robot in
        # the target cell may leave with it, so that move is left to the chain rules.
        blocked = carrying & (target != cell) & (shelf_at[target] >= 0) & ~carrier_there
        target = jnp.where(blocked, cell, target)
        moved = _resolve_moves(cell, target, agent_at[target])
        new_cell = jnp.where(moved, target, cell)

        new_dir = jnp.where(
            action == TURN_LEFT,
            jnp.asarray(_AFTER_LEFT)[direction],
            jnp.where(action == TURN_RIGHT, jnp.asarray(_AFTER_RIGHT)[direction], direction),
        )
        # Toggling robots did not move, so the pre-move shelf grid is the one under them.
        toggle = action == TOGGLE_LOAD
        under = shelf_at[cell]
        loadable = under >= 0
        if self.load_gate:
            loadable &= state.shelf_colour[jnp.maximum(under, 0)] == colour
        load = toggle & ~carrying & loadable
        unload = toggle & carrying & ~jnp.asarray(self._highway.reshape(-1))[cell]
        new_carried = jnp.where(load, under, jnp.where(unload, -1, carried))
        # Shelves carried during the move travel with their robot (index s = dropped update).
        shelf_cell = state.shelf_cell.at[jnp.where(carrying, carried, s)].set(new_cell, mode="drop")

        # Deliveries, goal by goal as the reference does (a new request may sit on the next goal).
        agent_at = jnp.full((h * w,), -1, jnp.int32).at[new_cell].set(idx)
        requests, reward = state.requests, jnp.zeros((n,), jnp.float32)
        for goal, k in zip(self._goals, jax.random.split(key, len(self._goals))):
            on_goal = shelf_cell == goal
            shelf = jnp.argmax(on_goal)
            robot = agent_at[goal]
            requested = jnp.zeros((s,), bool).at[requests].set(True)
            ok = (
                on_goal.any()
                & requested[shelf]
                & (robot >= 0)
                & (state.shelf_colour[shelf] == colour[jnp.maximum(robot, 0)])
            )
            new_request = jax.random.categorical(k, jnp.where(requested, -jnp.inf, 0.0))
            requests = jnp.where(ok & (requests == shelf), new_request.astype(jnp.int32), requests)
            reward = reward.at[jnp.maximum(robot, 0)].add(ok.astype(jnp.float32))

        new_state = WarehouseState(
            agent_cell=new_cell,
            agent_dir=new_dir,
            carried=new_carried,
            shelf_cell=shelf_cell,
            shelf_colour=state.shelf_colour,
            requests=requests,
            step=state.step + 1,
        )
        return new_state, self._timestep(new_state, reward, reward.sum())

    # ------------------------------------------------------------------------- observations
    def _timestep(self, state: WarehouseState, reward: jax.Array, deliveries: jax.Array):
        return TimeStep(
            obs=self._observe(state),
            reward=reward,
            done=state.step >= self.max_steps,
            action_mask=jnp.ones((self.num_agents, self.num_actions), bool),
            global_state=self._global_state(state),
            metrics={"deliveries": deliveries},
        )

    def _observe(self, state: WarehouseState) -> jax.Array:
        """f32[N, obs_dim]; layout in the class docstring."""
        h, w = self.grid_shape
        r, c = self.sensor_range, self.num_colours
        x, y = state.agent_cell % w, state.agent_cell // w
        requested = jnp.zeros((self.num_shelves,), jnp.float32).at[state.requests].set(1.0)
        shelf_feat = jnp.concatenate(
            [jax.nn.one_hot(state.shelf_colour, c), requested[:, None]], axis=1
        )
        cells = jnp.zeros((h * w, c + 2), jnp.float32)
        cells = cells.at[state.shelf_cell, 1:].set(shelf_feat)
        cells = cells.at[state.agent_cell, 0].set(1.0)
        # Zero padding makes the cells outside the grid read as empty, like the reference.
        padded = jnp.pad(cells.reshape(h, w, c + 2), ((r, r), (r, r), (0, 0)))
        oy, ox = np.divmod(np.arange((2 * r + 1) ** 2), 2 * r + 1)
        view = padded[y[:, None] + oy[None, :], x[:, None] + ox[None, :]]  # [N, K, C + 2]
        own = jnp.concatenate(
            [
                jnp.stack([x, y, state.carried >= 0], axis=1).astype(jnp.float32),
                jax.nn.one_hot(state.agent_dir, 4),
                jnp.asarray(self._highway.reshape(-1), jnp.float32)[state.agent_cell][:, None],
            ],
            axis=1,
        )
        return jnp.concatenate([own, view.reshape(self.num_agents, -1)], axis=1)

    def _global_state(self, state: WarehouseState) -> jax.Array:
        """f32[global_state_dim]; layout in the class docstring."""
        w = self.grid_shape[1]
        robots = jnp.concatenate(
            [
                jnp.stack([state.agent_cell % w, state.agent_cell // w], 1).astype(jnp.float32),
                jax.nn.one_hot(state.agent_dir, 4),
                (state.carried >= 0).astype(jnp.float32)[:, None],
            ],
            axis=1,
        )
        requested = jnp.zeros((self.num_shelves,), jnp.float32).at[state.requests].set(1.0)
        shelves = jnp.concatenate(
            [
                jnp.stack([state.shelf_cell % w, state.shelf_cell // w], 1).astype(jnp.float32),
                jax.nn.one_hot(state.shelf_colour, self.num_colours),
                requested[:, None],
            ],
            axis=1,
        )
        return jnp.concatenate([robots.reshape(-1), shelves.reshape(-1)])


def _resolve_moves(cell: jax.Array, target: jax.Array, occupant: jax.Array) -> jax.Array:
    """Which robots move, resolving all requested moves at once.

    The reference builds a graph with an edge start cell -> target cell per robot (a self-loop for a
    robot that stays). Each cell has at most one outgoing edge, so every weakly connected component
    ends either in one cycle or in one empty cell. Cycle components move the cycle's robots unless
    it is a swap (2-cycle); a self-loop is a standing robot. Empty-cell components move the robots
    on the longest path into the empty cell. Here the same is computed on the robots' successor map
    `nxt` (the robot in the target cell, itself when standing, or N for an empty target cell) by
    doubling: `path[j, m]` is the robot m steps after j, for m < L with L >= N + 1 a power of two,
    in log2(L) gathers. Cost O(N^2) memory, no loop over robots.

    Ties between equally long chains meeting in one cell go to the lower robot index at every merge
    point. The reference takes the first maximum in networkx's predecessor order, which follows the
    iteration order of Python sets of cell tuples (hash order): not reproducible, so not reproduced.

    Args:
      cell: int32[N], current cells; target: int32[N], requested cells (== cell when standing);
      occupant: int32[N], robot currently in each target cell, -1 when empty.
    Returns:
      bool[N], True for robots that move to their target (standing robots: False).
    """
    n = cell.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    moving = target != cell
    nxt = jnp.where(moving, jnp.where(occupant >= 0, occupant, n), idx)
    # path[:, :k] holds the first k successors; extend it with the successors of the k-th one.
    path = jnp.arange(n + 1, dtype=jnp.int32)[:, None]
    jump = jnp.append(nxt, n)  # the k-th successor, k = path.shape[1]; N (empty cell) is absorbing
    while path.shape[1] < n + 1:
        path = jnp.concatenate([path, path[jump]], axis=1)
        jump = jump[jump]
    path = path[:n]
    length = path.shape[1]

    returns = path[:, 1:] == idx[:, None]
    in_cycle = returns.any(axis=1)
    cycle_len = jnp.argmax(returns, axis=1) + 1
    to_empty = path[:, -1] == n  # reaches an empty cell within N steps, so no cycle ahead
    # height[v]: longest chain of robots ending at v (networkx's longest-path distance).
    steps = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), path.shape)
    height = (
        jnp.zeros((n + 1,), jnp.int32)
        .at[path.reshape(-1)]
        .max(jnp.where(to_empty[:, None], steps, 0).reshape(-1))[:n]
    )
    # Robots competing for the same cell: same successor robot, or the same empty target cell.
    slot = jnp.where(nxt < n, nxt, n + target)
    rival = (slot[:, None] == slot[None, :]) & to_empty[None, :] & (idx[:, None] != idx[None, :])
    beats = (height[None, :] > height[:, None]) | (
        (height[None, :] == height[:, None]) & (idx[None, :] < idx[:, None])
    )
    chosen = jnp.append(~(rival & beats).any(axis=1), True)
    on_chosen_path = chosen[path].all(axis=1)
    return (to_empty & on_chosen_path) | (in_cycle & (cycle_len >= 3))
