"""Ride-hailing order dispatch (the paper's Ride-Hailing(1) and (2)) as a count-based pure-JAX simulator.

docs/scenarios.md ("Ride-hailing") has the rules; in short, one step is ten minutes of a 144-step day:

* every cell of a hexagonal grid (`hexgrid.py`) is an agent; its drivers are counts, `idle[g]`, plus
  `arriving[k, g]` drivers that become idle there k+1 steps from now;
* orders come from a demand model (`orders.py`: Poisson from a lambda table, a replayed stream, or
  `gravity.py`); an order can be served in the step it is born or the next one, then expires;
* each cell sees at most K = `max_candidates` orders in two fixed halves: slots 1..K/2 hold the
  orders born last step that are still waiting, slots K/2+1..K the orders born now, each half in
  arrival order (so slot order is arrival order, and no step sorts anything); orders beyond K/2 in
  one step and cell are lost (they still count as generated);
* a cell makes one draw per idle driver (at most K draws) over K + 1 slots, slot 0 = "stay"; a real
  order can be drawn once (the pointer head, docs/algorithms.md); a driver serving an order of
  duration d at t is idle at its destination at t + d; drivers never move otherwise;
* reward of a cell: `reward_scale` x the price of the orders it served; metrics per step: `gmv`
  (raw price units), `served`, and at the last step `orr` = served / generated over the day, so the
  episode sums are the paper's GMV and ORR.

Actions: int32[N, K], the slot of each draw (0 = stay); draws past `min(idle, K)` are ignored, as
are slots that hold no order and repeated slots, so no order is served twice and no cell dispatches
more drivers than it has. Action mask: bool[N, (K + 1) + K] = [slot holds an order (slot 0 always),
draw d is active]. Observation of a cell: `cell_features` (7 + l_max) numbers, then `SLOT_FEATURES` for
each of the K + 1 slots (see `_observe`).
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dyps_jax.envs.core import TimeStep, register
from dyps_jax.envs.hexgrid import HexGrid
from dyps_jax.envs.orders import (
    OrderBatch,
    PaperDemand,
    ReplayDemand,
    fit_slots,
    paper_rates,
    slot_mask,
)
from dyps_jax.envs.params import param

CITIES = ("rh1_36", "rh2_100")
DEMANDS = ("poisson", "replay", "gravity")
SLOT_FEATURES = 7
# Observation scales: about ten drivers per cell, prices of tens of units, a few orders per step.
DRIVER_SCALE = 10.0
RATE_SCALE = 10.0
PRICE_SCALE = 20.0


@functools.lru_cache(maxsize=4)
def paper_city(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The paper's order stream f64[M, 5] and lambda table int[T, N] of city `name` (packaged)."""
    if name not in CITIES:
        raise ValueError(f"env.city: unknown city {name!r}; allowed: {', '.join(CITIES)} or ''")
    path = resources.files("dyps_jax") / "data" / "ridehailing_order_streams.npz"
    with resources.as_file(path) as file, np.load(file) as data:
        return data[f"{name}_orders"], data[f"{name}_lambda"]


def _trips(path: str, num_cells: int, horizon: int, max_duration: int) -> np.ndarray:
    """The checked order stream f64[M, 5] of a trip table, read once per file version."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"env.trips_path: trip table {path!r} does not exist")
    stat = file.stat()
    return _trips_cached(str(file.resolve()), stat.st_mtime_ns, stat.st_size, num_cells, horizon,
                         max_duration)


@functools.lru_cache(maxsize=4)
def _trips_cached(path: str, _mtime: int, _size: int, num_cells: int, horizon: int,
                  max_duration: int) -> np.ndarray:
    from dyps_jax.envs.trips import load_trips_csv

    try:
        return load_trips_csv(path, num_cells, horizon, max_duration)
    except UnicodeDecodeError as err:
        raise ValueError(f"env.trips_path: {path!r} is not a text CSV file ({err})") from None


@struct.dataclass
class Orders:
    """The candidate table of every cell: K slots, [waiting from last step | born now], each half in
    arrival order.

    Attributes: price f32[N, K]; destination, duration, age int32[N, K] (age 1 = born last step,
    the first K/2 slots); valid bool[N, K].
    """

    price: jax.Array
    destination: jax.Array
    duration: jax.Array
    age: jax.Array
    valid: jax.Array


@struct.dataclass
class RideState:
    """t: int32[]; idle: int32[N]; arriving: int32[l_max, N] (idle at t + 1 + k); orders: Orders;
    served_total, generated_total: f32[], orders served and born so far today."""

    t: jax.Array
    idle: jax.Array
    arriving: jax.Array
    orders: Orders
    served_total: jax.Array
    generated_total: jax.Array


@register("ridehailing")
@dataclasses.dataclass(frozen=True)
class RideHailing:
    """Parameters of a ride-hailing city (static; see the module docstring for the dynamics).

    city: "rh1_36" / "rh2_100" take the paper's lambda table (and stream, when `demand = "replay"`);
    "" draws a lambda table from `city_seed`, `base_low`, `base_high` (the paper's generator).
    demand: "poisson" (fresh days from the lambda table), "replay" (the city's exact stream, or
    `trips_path`), "gravity" (`gravity.GravityDemand`, a richer generator).
    """

    rows: int = param(6, ge=1)
    cols: int = param(6, ge=1)
    city: str = param("rh1_36", choices=(*CITIES, ""))
    demand: str = param("poisson", choices=DEMANDS)
    trips_path: str = ""  # a trip table (trips.py) replayed when demand = "replay"
    city_seed: int = param(0, ge=0)
    base_low: int = param(2, ge=0)
    base_high: int = param(9, ge=0)
    max_duration: int = param(3, ge=1)
    horizon: int = param(144, ge=1)
    drivers_per_cell: int = param(10, ge=0)
    max_candidates: int = param(50, ge=2)  # even: two steps of K/2 orders
    reward_scale: float = param(0.02, gt=0.0)
    gravity_mean_rate: float = param(5.0, gt=0.0)
    gravity_correlation_length: float = param(2.0, gt=0.0)
    gravity_peak_strength: float = param(1.5, ge=0.0)
    gravity_decay: float = param(2.0, ge=0.0)

    action_kind = "pointer"
    agent_types = None  # cells have no hidden type

    def __post_init__(self) -> None:
        if self.max_candidates % 2:
            raise ValueError(f"env.max_candidates: must be even (two steps of K/2 orders), "
                             f"got {self.max_candidates}")
        if self.base_low > self.base_high:
            raise ValueError(f"env.base_low: must be <= base_high ({self.base_high}), "
                             f"got {self.base_low}")
        if self.demand == "replay" and not (self.city or self.trips_path):
            raise ValueError("env.demand: 'replay' needs env.city or env.trips_path")
        if self.trips_path:
            if self.demand != "replay":
                raise ValueError(f"env.trips_path: a trip table is only replayed with "
                                 f"demand = 'replay', got demand = {self.demand!r}")
            # Read and checked now, so a bad file fails before anything is compiled.
            _trips(self.trips_path, self.num_cells, self.horizon, self.max_duration)
        if self.city and not self.trips_path and self.demand != "gravity":
            _, rates = paper_city(self.city)
            if rates.shape != (self.horizon, self.num_cells):
                raise ValueError(f"env.city: {self.city!r} has {rates.shape[1]} cells and "
                                 f"{rates.shape[0]} steps, but rows x cols = {self.num_cells} "
                                 f"and horizon = {self.horizon}")

    # ------------------------------------------------------------------ static structure

    @property
    def grid(self) -> HexGrid:
        return HexGrid(self.rows, self.cols)

    @property
    def num_cells(self) -> int:
        return self.rows * self.cols

    @property
    def num_agents(self) -> int:
        return self.num_cells

    @property
    def max_steps(self) -> int:
        return self.horizon

    @property
    def num_actions(self) -> int:
        """Slots of the pointer head: stay + K candidate orders."""
        return self.max_candidates + 1

    @property
    def num_draws(self) -> int:
        return self.max_candidates

    @property
    def new_slots(self) -> int:
        """Orders a cell can receive in one step: K/2."""
        return self.max_candidates // 2

    @property
    def cell_features(self) -> int:
        return 7 + self.max_duration

    @property
    def pointer_layout(self) -> tuple[int, int, int]:
        """(cell features, slots, features per slot): how the pointer head splits an observation."""
        return self.cell_features, self.num_actions, SLOT_FEATURES

    @property
    def obs_dim(self) -> int:
        return self.cell_features + self.num_actions * SLOT_FEATURES

    @property
    def global_state_dim(self) -> int:
        return 2 * self.num_cells

    @property
    def demand_model(self):
        return _demand_model(self)

    # ------------------------------------------------------------------ dynamics

    def reset(self, key: jax.Array) -> tuple[RideState, TimeStep]:
        n, half = self.num_cells, self.new_slots
        batch = self.demand_model.sample(key, jnp.zeros((), jnp.int32))
        empty = Orders(
            price=jnp.zeros((n, half)), destination=jnp.zeros((n, half), jnp.int32),
            duration=jnp.ones((n, half), jnp.int32), age=jnp.ones((n, half), jnp.int32),
            valid=jnp.zeros((n, half), bool),
        )
        state = RideState(
            t=jnp.zeros((), jnp.int32),
            idle=jnp.full((n,), self.drivers_per_cell, jnp.int32),
            arriving=jnp.zeros((self.max_duration, n), jnp.int32),
            orders=self._merge(empty, batch),
            served_total=jnp.zeros(()),
            generated_total=batch.generated.sum().astype(jnp.float32),
        )
        zeros = jnp.zeros(())
        metrics = {"gmv": zeros, "served": zeros, "orr": zeros}
        return state, self._timestep(state, jnp.zeros(n), jnp.zeros((), bool), metrics)

    def step(self, key: jax.Array, state: RideState, actions: jax.Array
             ) -> tuple[RideState, TimeStep]:
        """Dispatches the drawn orders, moves time on by one step and brings the next orders."""
        n, lmax = self.num_cells, self.max_duration
        chex.assert_shape(actions, (n, self.num_draws))
        served = self.served_slots(state, actions)
        orders = state.orders
        value = jnp.where(served, orders.price, 0.0).sum(-1)  # [N]
        dispatched = served.sum(-1).astype(jnp.int32)
        # Served drivers become idle at the destination d steps later: slot (d - 1) of `arriving`.
        target = (orders.duration - 1) * n + orders.destination
        arrivals = jax.ops.segment_sum(served.ravel().astype(jnp.int32), target.ravel(), lmax * n)
        arriving = state.arriving + arrivals.reshape(lmax, n)
        t = state.t + 1
        idle = state.idle - dispatched + arriving[0]
        arriving = jnp.concatenate([arriving[1:], jnp.zeros((1, n), jnp.int32)])
        # Orders born this step wait one more step in the first half; older ones expire.
        half = self.new_slots
        born_now = lambda x: x[:, half:]  # noqa: E731
        waiting = Orders(price=born_now(orders.price), destination=born_now(orders.destination),
                         duration=born_now(orders.duration), age=born_now(orders.age) + 1,
                         valid=born_now(orders.valid & ~served))
        done = t >= self.horizon
        batch = self.demand_model.sample(key, jnp.minimum(t, self.horizon - 1))
        generated = state.generated_total + jnp.where(done, 0, batch.generated.sum())
        served_total = state.served_total + dispatched.sum()
        new_state = RideState(
            t=t, idle=idle, arriving=arriving, orders=self._merge(waiting, batch),
            served_total=served_total, generated_total=generated,
        )
        gmv = value.sum()
        metrics = {
            "gmv": gmv,
            "served": dispatched.sum().astype(jnp.float32),
            "orr": jnp.where(done, served_total / jnp.maximum(generated, 1.0), 0.0),
        }
        return new_state, self._timestep(new_state, value * self.reward_scale, done, metrics)

    def served_slots(self, state: RideState, actions: jax.Array) -> jax.Array:
        """bool[N, K]: the orders the draws `actions: int32[N, K]` serve (masks enforced here)."""
        n = self.num_cells
        active = jnp.arange(self.num_draws) < state.idle[:, None]  # [N, D]
        # Inactive draws and out-of-range slots land in slot 0 (stay), which serves nothing.
        slot = jnp.where(active & (actions > 0) & (actions <= self.max_candidates), actions, 0)
        drawn = jnp.zeros((n, self.num_actions), bool).at[jnp.arange(n)[:, None], slot].set(True)
        return drawn[:, 1:] & state.orders.valid

    def _merge(self, waiting: Orders, batch: OrderBatch) -> Orders:
        """The table [waiting (K/2) | born now (K/2)]; no sorting, slot order = arrival order."""
        batch = fit_slots(batch, self.new_slots)
        cat = lambda a, b: jnp.concatenate([a, b], axis=-1)  # noqa: E731
        return Orders(
            price=cat(waiting.price, batch.price),
            destination=cat(waiting.destination, batch.destination),
            duration=cat(waiting.duration, batch.duration),
            age=cat(waiting.age, jnp.zeros_like(batch.duration)),
            valid=cat(waiting.valid, slot_mask(batch.count, self.new_slots)),
        )

    # ------------------------------------------------------------------ observations

    def _timestep(self, state: RideState, reward, done, metrics) -> TimeStep:
        orders = state.orders
        draws = jnp.arange(self.num_draws) < state.idle[:, None]
        slots = jnp.concatenate([jnp.ones((self.num_cells, 1), bool), orders.valid], axis=-1)
        rates = jnp.asarray(self.demand_model.rates)
        now = rates[jnp.minimum(state.t, self.horizon - 1)]
        global_state = jnp.concatenate([state.idle / DRIVER_SCALE, now / RATE_SCALE])
        return TimeStep(
            obs=self._observe(state),
            reward=reward.astype(jnp.float32),
            done=done,
            action_mask=jnp.concatenate([slots, draws], axis=-1),
            global_state=global_state.astype(jnp.float32),
            metrics=metrics,
        )

    def _observe(self, state: RideState) -> jax.Array:
        """f32[N, obs_dim]: cell features, then the K + 1 slots' features.

        Cell: idle drivers, candidate orders, time of day, demand rate now and next step, drivers
        arriving in 1..l_max steps, neighbours' mean idle drivers and next-step demand rate.
        Slot (0 = stay, evaluated at the own cell one step ahead): stay flag, price, duration, age,
        and at the destination: idle drivers, demand rate when the driver arrives, drivers arriving
        then. Empty slots are zeros.
        """
        n, horizon = self.num_cells, self.horizon
        orders = state.orders
        rates = jnp.asarray(self.demand_model.rates) / RATE_SCALE
        rate_at = lambda t: rates[jnp.clip(t, 0, horizon - 1)]  # noqa: E731
        now, nxt = rate_at(state.t), rate_at(state.t + 1)
        nbrs = jnp.asarray(self.grid.neighbours)
        has = nbrs >= 0
        nb_mean = lambda x: jnp.where(has, x[nbrs], 0.0).sum(-1) / jnp.maximum(has.sum(-1), 1)  # noqa: E731
        idle = state.idle / DRIVER_SCALE
        arriving = state.arriving / DRIVER_SCALE  # [L, N]
        cell = jnp.concatenate([
            jnp.stack([idle, orders.valid.sum(-1) / RATE_SCALE,
                       jnp.broadcast_to(state.t / horizon, (n,)), now, nxt], -1),
            arriving.T,
            jnp.stack([nb_mean(idle), nb_mean(nxt)], -1),
        ], axis=-1)
        dest, dur = orders.destination, orders.duration
        arrive_rate = rates[jnp.clip(state.t + dur, 0, horizon - 1), dest]
        order_feats = jnp.stack([
            jnp.zeros_like(orders.price), orders.price / PRICE_SCALE,
            dur / self.max_duration, orders.age.astype(jnp.float32),
            idle[dest], arrive_rate, arriving[dur - 1, dest],
        ], -1) * orders.valid[..., None]
        stay = jnp.stack([jnp.ones(n), jnp.zeros(n), jnp.zeros(n), jnp.zeros(n),
                          idle, nxt, arriving[0]], -1)
        slots = jnp.concatenate([stay[:, None], order_feats], axis=1)
        return jnp.concatenate([cell, slots.reshape(n, -1)], axis=-1).astype(jnp.float32)


@functools.lru_cache(maxsize=16)
def _demand_model(env: RideHailing):
    grid = env.grid
    if env.demand == "gravity":
        from dyps_jax.envs.gravity import GravityDemand

        return GravityDemand(
            grid=grid, horizon=env.horizon, max_duration=env.max_duration, seed=env.city_seed,
            mean_rate=env.gravity_mean_rate, correlation_length=env.gravity_correlation_length,
            peak_strength=env.gravity_peak_strength, decay=env.gravity_decay,
            max_new=env.new_slots,
        )
    if env.demand == "replay":
        if env.trips_path:
            stream = _trips(env.trips_path, env.num_cells, env.horizon, env.max_duration)
            return ReplayDemand(stream, env.num_cells, env.horizon, env.max_duration)
        stream, rates = paper_city(env.city)
        return ReplayDemand(stream, env.num_cells, env.horizon, env.max_duration, rates)
    if env.city:
        rates = paper_city(env.city)[1]
    else:
        rates = paper_rates(grid, env.base_low, env.base_high, env.horizon, env.city_seed)
    return PaperDemand(grid, rates, env.max_duration, env.new_slots)
