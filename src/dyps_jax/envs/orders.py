"""Order streams of the ride-hailing scenarios: where orders come from, one step at a time.

A *demand model* is a static object with `num_cells`, `horizon` (steps per day), `max_new` (order
slots per cell and step), `max_duration` (l_max), `rates` (f32[T, N], expected orders per step and
cell, which the agents observe) and a pure `sample(key, t) -> OrderBatch`. Three are provided:

* `PaperDemand`: the paper's synthetic city (docs/scenarios.md, "Ride-hailing"): orders per step and cell
  ~ Poisson(lambda[t, g]), duration d from the truncated, renormalised duration table, price
  ~ Normal(mu_d, sigma_d) (mu_d where the draw is <= 0), destination uniform over rings 1..d.
* `ReplayDemand`: a fixed order stream (the paper's exact streams, or a trip table from CSV), turned
  once into dense per-step tables so that `sample` is an index.
* `dyps_jax.envs.gravity.GravityDemand`: a richer generator (correlated demand, peaks, gravity).

An order stream is an array f64[M, 5] of rows (t, origin, destination, duration, price).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dyps_jax.envs.hexgrid import HexGrid

DURATION_PROBS = (0.2, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05, 0.04, 0.01)
PRICE_MEAN = (10.17, 15.02, 23.22, 32.14, 40.99)
PRICE_STD = (3.34, 6.90, 11.63, 16.20, 20.69)
MAX_DURATION = len(PRICE_MEAN)
STREAM_COLUMNS = ("t", "origin", "destination", "duration", "price")
# Order tables are jax arrays inside `sample`, numpy arrays where `ReplayDemand` builds them once.
Array = jax.Array | np.ndarray


class OrderBatch(NamedTuple):
    """Orders born in one step, per cell, in arrival order; slots `>= count` are empty.

    Attributes:
      price: f32[N, K]; destination, duration: int32[N, K] (duration in 1..l_max steps);
      count: int32[N], orders kept (<= K); generated: int32[N], orders born (>= count: orders
        beyond the K slots are lost to the simulator but still count in the order response rate).
    """

    price: Array
    destination: Array
    duration: Array
    count: Array  # type: ignore[assignment]  # shadows tuple.count, which nothing here calls
    generated: Array


def duration_probs(max_duration: int) -> np.ndarray:
    """f64[l_max], the duration table truncated to 1..l_max and renormalised."""
    if not 1 <= max_duration <= MAX_DURATION:
        raise ValueError(f"max_duration: must be in 1..{MAX_DURATION} (the price table's rows), "
                         f"got {max_duration!r}")
    probs = np.asarray(DURATION_PROBS[:max_duration])
    return probs / probs.sum()


def sample_prices(key: jax.Array, duration: jax.Array) -> jax.Array:
    """Price ~ Normal(mu_d, sigma_d), replaced by mu_d when <= 0. `duration: int32[...]` in 1..5."""
    mean = jnp.asarray(PRICE_MEAN, jnp.float32)[duration - 1]
    std = jnp.asarray(PRICE_STD, jnp.float32)[duration - 1]
    price = mean + std * jax.random.normal(key, duration.shape)
    return jnp.where(price <= 0.0, mean, price)


def paper_rates(grid: HexGrid, base_low: int, base_high: int, horizon: int, seed: int) -> np.ndarray:
    """The paper's lambda table, int32[T, N]: base b_g ~ U{low..high}, lambda = max(0, b_g + U{-2..2})."""
    if not 0 <= base_low <= base_high:
        raise ValueError(f"demand base rates: need 0 <= base_low <= base_high, got "
                         f"{base_low!r}, {base_high!r}")
    rng = np.random.default_rng(seed)
    base = rng.integers(base_low, base_high + 1, grid.num_cells)
    noise = rng.integers(-2, 3, (horizon, grid.num_cells))
    return np.maximum(0, base + noise).astype(np.int32)


def slot_mask(count: Array, slots: int) -> jax.Array:
    """bool[..., slots]: slot k holds an order when k < count."""
    return jnp.arange(slots) < count[..., None]


def pack_orders(price: jax.Array, destination: jax.Array, duration: jax.Array, count: jax.Array,
                generated: jax.Array) -> OrderBatch:
    """An OrderBatch whose slots `>= count` are empty (price 0, destination 0, duration 1)."""
    valid = slot_mask(count, price.shape[-1])
    return OrderBatch(
        price=jnp.where(valid, price, 0.0),
        destination=jnp.where(valid, destination, 0),
        duration=jnp.where(valid, duration, 1),
        count=count,
        generated=generated,
    )


def poisson_counts(key: jax.Array, rate: jax.Array, max_rate: float) -> jax.Array:
    """int32 Poisson(rate) draws by inverting the CDF over 0..M with one uniform each.

    `jax.random.poisson` runs a rejection loop that dominates a simulator step on CPU; for the small
    rates of order streams the CDF up to M = max_rate + 10 sqrt(max_rate) + 10 is exact to well
    below float32 resolution (the tail beyond M has probability < 1e-20).
    """
    m = int(np.ceil(max_rate + 10.0 * np.sqrt(max_rate) + 10.0))
    k = jnp.arange(m, dtype=jnp.float32)
    rate = jnp.asarray(rate, jnp.float32)[..., None]
    log_pmf = k * jnp.log(jnp.maximum(rate, 1e-30)) - rate - jax.scipy.special.gammaln(k + 1.0)
    cdf = jnp.cumsum(jnp.exp(log_pmf), axis=-1)
    u = jax.random.uniform(key, rate.shape)
    return jnp.where(rate[..., 0] > 0, (u > cdf).sum(-1), 0).astype(jnp.int32)


def fit_slots(batch: OrderBatch, slots: int) -> OrderBatch:
    """The batch with exactly `slots` order slots per cell (padding empty slots, or dropping the
    orders beyond `slots`; `generated` still counts them)."""
    width = batch.price.shape[-1]
    if width >= slots:
        cut = lambda x: x[..., :slots]  # noqa: E731
        return OrderBatch(cut(batch.price), cut(batch.destination), cut(batch.duration),
                          jnp.minimum(batch.count, slots), batch.generated)
    pad = [(0, 0)] * (batch.price.ndim - 1) + [(0, slots - width)]
    return OrderBatch(jnp.pad(batch.price, pad), jnp.pad(batch.destination, pad),
                      jnp.pad(batch.duration, pad, constant_values=1), batch.count,
                      batch.generated)


@dataclasses.dataclass(frozen=True, eq=False)
class PaperDemand:
    """Poisson orders from a lambda table with ring destinations (the paper's simulator)."""

    grid: HexGrid
    rate_table: np.ndarray  # [T, N]
    max_duration: int
    max_new: int = 32

    def __post_init__(self):
        rates = np.asarray(self.rate_table)
        if rates.ndim != 2 or rates.shape[1] != self.grid.num_cells:
            raise ValueError(f"demand rates: shape must be [T, {self.grid.num_cells}], "
                             f"got {rates.shape}")
        if not np.all(np.isfinite(rates)) or rates.min() < 0:
            raise ValueError("demand rates: must be finite and >= 0")
        duration_probs(self.max_duration)

    @property
    def num_cells(self) -> int:
        return self.grid.num_cells

    @property
    def horizon(self) -> int:
        return int(np.shape(self.rate_table)[0])

    @property
    def rates(self) -> np.ndarray:
        return np.asarray(self.rate_table, np.float32)

    @functools.cached_property
    def _rings(self) -> tuple[np.ndarray, np.ndarray]:
        return self.grid.ring_table(self.max_duration)

    def sample(self, key: jax.Array, t: jax.Array) -> OrderBatch:
        k_count, k_dur, k_price, k_dest = jax.random.split(key, 4)
        n, k = self.num_cells, self.max_new
        lam = jnp.asarray(self.rates)[t]
        generated = poisson_counts(k_count, lam, float(self.rates.max()))
        count = jnp.minimum(generated, k)
        # Inverse CDF: one uniform per order (a categorical draw spends one Gumbel per duration).
        cdf = jnp.asarray(np.cumsum(duration_probs(self.max_duration))[:-1], jnp.float32)
        u = jax.random.uniform(k_dur, (n, k, 1))
        duration = 1 + (u > cdf).sum(-1).astype(jnp.int32)
        price = sample_prices(k_price, duration)
        cells, within = (jnp.asarray(a) for a in self._rings)
        reachable = jnp.take_along_axis(within, duration - 1, axis=1)  # [N, K]
        pick = jnp.floor(jax.random.uniform(k_dest, (n, k)) * reachable).astype(jnp.int32)
        # A 1-cell grid has no ring 1: the order stays in its cell (pad value = the cell itself).
        destination = jnp.take_along_axis(cells, jnp.minimum(pick, cells.shape[1] - 1), axis=1)
        return pack_orders(price, destination, duration, count, generated)


def validate_stream(stream: np.ndarray, num_cells: int, horizon: int, max_duration: int,
                    source: str = "order stream") -> np.ndarray:
    """Checks rows (t, origin, destination, duration, price); returns them as f64[M, 5].

    Raises ValueError naming the first bad row, its column, value and the allowed range.
    """
    stream = np.asarray(stream, np.float64)
    if stream.ndim != 2 or stream.shape[1] != 5:
        raise ValueError(f"{source}: expected rows of 5 columns {STREAM_COLUMNS}, "
                         f"got shape {stream.shape}")
    bounds = {"t": (0, horizon - 1), "origin": (0, num_cells - 1),
              "destination": (0, num_cells - 1), "duration": (1, max_duration)}
    for col, name in enumerate(STREAM_COLUMNS[:4]):
        low, high = bounds[name]
        values = stream[:, col]
        bad = (values != np.round(values)) | (values < low) | (values > high)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{source}: row {row}: {name} = {float(values[row])!r}; "
                             f"allowed: integers in {low}..{high}")
    bad = ~np.isfinite(stream[:, 4]) | (stream[:, 4] < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{source}: row {row}: price = {float(stream[row, 4])!r}; "
                         "allowed: finite >= 0")
    return stream


@dataclasses.dataclass(frozen=True, eq=False)
class ReplayDemand:
    """Replays one fixed day of orders; every episode sees the same stream.

    Orders of one step and cell keep their order in the stream (their arrival order). `rates`
    defaults to the realised counts per step and cell.
    """

    stream: np.ndarray  # f64[M, 5]
    num_cells: int
    horizon: int
    max_duration: int
    rate_table: np.ndarray | None = None

    def __post_init__(self):
        stream = validate_stream(self.stream, self.num_cells, self.horizon, self.max_duration)
        object.__setattr__(self, "stream", stream)
        if self.rate_table is not None:
            shape = np.shape(self.rate_table)
            if shape != (self.horizon, self.num_cells):
                raise ValueError(f"replay rates: shape must be [{self.horizon}, {self.num_cells}],"
                                 f" got {shape}")

    @functools.cached_property
    def _tables(self) -> OrderBatch:
        """Dense per-step tables: leaves [T, N, K] and [T, N] (K = most orders in a step and cell)."""
        t, origin = self.stream[:, 0].astype(np.int64), self.stream[:, 1].astype(np.int64)
        cell_step = t * self.num_cells + origin
        order = np.argsort(cell_step, kind="stable")
        counts = np.bincount(cell_step, minlength=self.horizon * self.num_cells)
        k = max(int(counts.max(initial=0)), 1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sorted_cs = cell_step[order]
        slot = np.arange(len(order)) - starts[sorted_cs]
        shape = (self.horizon * self.num_cells, k)
        price = np.zeros(shape, np.float32)
        destination = np.zeros(shape, np.int32)
        duration = np.ones(shape, np.int32)
        rows = self.stream[order]
        price[sorted_cs, slot] = rows[:, 4]
        destination[sorted_cs, slot] = rows[:, 2]
        duration[sorted_cs, slot] = rows[:, 3]
        grid_shape = (self.horizon, self.num_cells)
        count = counts.reshape(grid_shape).astype(np.int32)
        return OrderBatch(price.reshape(grid_shape + (k,)), destination.reshape(grid_shape + (k,)),
                          duration.reshape(grid_shape + (k,)), count, count)

    @property
    def max_new(self) -> int:
        return self._tables.price.shape[-1]

    @property
    def rates(self) -> np.ndarray:
        if self.rate_table is not None:
            return np.asarray(self.rate_table, np.float32)
        return np.asarray(self._tables.count, np.float32)

    def sample(self, key: jax.Array, t: jax.Array) -> OrderBatch:
        del key
        return jax.tree.map(lambda table: jnp.asarray(table)[t], self._tables)
