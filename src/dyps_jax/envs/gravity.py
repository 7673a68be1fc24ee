"""A richer synthetic city for the ride-hailing scenarios: correlated demand, peaks, gravity trips.

`GravityDemand` is a demand model with the interface of `orders.PaperDemand` (`num_cells`,
`horizon`, `max_duration`, `max_new`, `rates`, a pure `sample(key, t) -> OrderBatch`). Its city
is drawn once with numpy from `seed`:

* Demand intensity: a white Gaussian field on the cells is smoothed with the kernel
  `exp(-dist / correlation_length)` over hex distance (truncated at 5 correlation lengths, where
  less than 5% of the kernel's mass lies), rescaled to unit variance in every cell (boundary cells
  have fewer terms) and mapped to lognormal intensities `exp(spread * field)`, normalised to mean 1.
* Land use: a second smoothed field gives every cell a business share `b` in (0, 1). Residential
  cells (small `b`) originate most trips in the morning peak (~8:00, people leave home), business
  cells in the evening peak (~18:00, people leave work).
* Time profile: `horizon` steps cover one day from midnight. A cell's profile is a daytime bump
  with a night trough (~3:00) plus `peak_strength` times the two peaks (Gaussians in time, tilted
  by land use), normalised to mean 1 over the day, so `rates[:, g].mean()` is the cell's
  intensity times `mean_rate` and `rates.mean()` is `mean_rate`.
* Destinations (gravity model): an order from cell i goes to cell j at hex distance 1..l_max with
  probability proportional to `mass_j * exp(-dist(i, j) / decay)`, where `mass_j` is j's day-mean
  rate. Its duration is that distance (one step per hex) and its price is drawn as in the paper
  (`orders.sample_prices`).

Everything is stored per cell and per ring-table column (at most 90 candidates for l_max = 5), so
memory is O(N * ring width) and cities of 10,000 cells build in about a second.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dyps_jax.envs.hexgrid import HexGrid
from dyps_jax.envs.orders import (
    MAX_DURATION,
    OrderBatch,
    pack_orders,
    poisson_counts,
    sample_prices,
)

MORNING_PEAK_HOUR, MORNING_PEAK_WIDTH = 8.0, 1.25
EVENING_PEAK_HOUR, EVENING_PEAK_WIDTH = 18.0, 1.75
# The daytime bump centred mid-afternoon leaves a night trough around 3:00 at NIGHT_LEVEL.
DAYTIME_HOUR, DAYTIME_WIDTH, NIGHT_LEVEL = 13.5, 5.0, 0.15
# How far land use shifts a cell's peaks: a purely residential cell has a (1 + LAND_USE_TILT)
# morning and a (1 - LAND_USE_TILT) evening peak; a purely business cell the reverse.
LAND_USE_TILT = 0.5
# Offsets of the smoothing kernel handled per numpy call: bounds the [N, block] temporaries.
_SMOOTH_BLOCK = 64


class Destinations(NamedTuple):
    """Gravity destination tables over the ring-table columns of every origin.

    Attributes:
      cells: int32[N, W], candidate destinations (W = 3 l_max (l_max + 1)), nearest first,
        padded with the origin itself;
      probs: f64[N, W], P(destination = cells[i, k] | origin i); 0 on padding (a 1-cell grid has
        no candidate: its row is all 0 and its orders stay in the cell);
      distance: int32[N, W], hex distance origin -> cells[i, k] (1 on padding), the duration;
      cdf: f32[N, W], cumulative probabilities for inverse-CDF sampling, exactly 1 from the last
        candidate on so that a uniform draw in [0, 1) never selects padding.
    """

    cells: np.ndarray
    probs: np.ndarray
    distance: np.ndarray
    cdf: np.ndarray


def smooth_field(grid: HexGrid, field: np.ndarray, length: float) -> np.ndarray:
    """Convolves `field` (f64[..., N]) with `exp(-dist / length)` over hex distance on the grid.

    The kernel is truncated at radius `ceil(5 length)` (or the grid's extent) and each cell's sum is
    divided by the root of its summed squared weights, so white unit-variance input gives unit
    variance output everywhere, boundary cells included. Cost O(N r^2) time, O(N) memory per offset.

    Returns:
      f64[..., N].
    """
    radius = min(math.ceil(5.0 * length), grid.rows + grid.cols)
    grid_q, grid_r = np.meshgrid(np.arange(-radius, radius + 1), np.arange(-radius, radius + 1),
                                 indexing="ij")
    dq, dr = grid_q.ravel(), grid_r.ravel()
    dist = (np.abs(dq) + np.abs(dr) + np.abs(dq + dr)) // 2
    dq, dr, dist = dq[dist <= radius], dr[dist <= radius], dist[dist <= radius]
    weight = np.exp(-dist / length)
    q, r = grid.axial().T
    total = np.zeros(np.shape(field))
    norm = np.zeros(grid.num_cells)
    for start in range(0, len(dq), _SMOOTH_BLOCK):
        block = slice(start, start + _SMOOTH_BLOCK)
        # Axial -> offset coordinates: column j = q, row i = r + (j + 1) // 2.
        j = q[:, None] + dq[block]
        i = r[:, None] + dr[block] + (j + 1) // 2
        inside = (i >= 0) & (i < grid.rows) & (j >= 0) & (j < grid.cols)
        w = np.where(inside, weight[block], 0.0)  # [N, block]
        other = np.where(inside, i * grid.cols + j, 0)
        total += (w * field[..., other]).sum(-1)
        norm += (w**2).sum(-1)
    return total / np.sqrt(norm)


def _bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Gaussian bump in time of day, wrapping around midnight."""
    delta = (hours - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (delta / width) ** 2)


class City(NamedTuple):
    """The static structure of a generated city.

    Attributes:
      intensity: f64[N], relative demand of every cell (lognormal, mean 1);
      business: f64[N], business share of every cell in (0, 1) (0 = residential);
      rates: f32[T, N], expected orders per step and cell.
    """

    intensity: np.ndarray
    business: np.ndarray
    rates: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class GravityDemand:
    """Poisson orders from a correlated, peaked city with gravity destinations (module docstring).

    Fields:
      grid: the hex grid; horizon: steps per day (144 ten-minute steps in the paper);
      max_duration: l_max in 1..5, the farthest destination ring (= longest trip in steps);
      seed: city seed (all structure is drawn from it once); mean_rate: mean orders per step and
      cell over the day; correlation_length: of the demand field, in hex cells; peak_strength:
      height of the morning/evening peaks relative to the daytime level (0 = no peaks);
      decay: gravity distance scale in hex cells (small = short trips); spread: standard deviation
      of the log intensities (0 = uniform city); max_new: order slots per cell and step.
    """

    grid: HexGrid
    max_duration: int
    seed: int = 0
    horizon: int = 144
    mean_rate: float = 5.0
    correlation_length: float = 2.0
    peak_strength: float = 1.5
    decay: float = 2.0
    spread: float = 0.6
    max_new: int = 32

    def __post_init__(self):
        if not isinstance(self.grid, HexGrid):
            raise ValueError(f"gravity.grid: must be a HexGrid, got {type(self.grid).__name__}")
        integers = {"horizon": (1, None), "max_duration": (1, MAX_DURATION), "seed": (0, None),
                    "max_new": (1, None)}
        for name, (low, high) in integers.items():
            value = getattr(self, name)
            if (not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low
                    or (high is not None and value > high)):
                allowed = f"in {low}..{high}" if high is not None else f">= {low}"
                raise ValueError(f"gravity.{name}: must be an integer {allowed}, got {value!r}")
        reals = {"mean_rate": False, "correlation_length": False, "decay": False,
                 "peak_strength": True, "spread": True}
        for name, zero_ok in reals.items():
            value = getattr(self, name)
            if (not isinstance(value, int | float | np.integer | np.floating)
                    or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok)):
                raise ValueError(f"gravity.{name}: must be finite and {'>=' if zero_ok else '>'} "
                                 f"0, got {value!r}")

    @property
    def num_cells(self) -> int:
        return self.grid.num_cells

    @functools.cached_property
    def city(self) -> City:
        """The city drawn from `seed` (see `City`)."""
        rng = np.random.default_rng(self.seed)
        demand_field, land_field = smooth_field(
            self.grid, rng.standard_normal((2, self.num_cells)), self.correlation_length)
        intensity = np.exp(self.spread * demand_field)
        intensity /= intensity.mean()
        business = 1.0 / (1.0 + np.exp(-2.0 * land_field))

        hours = 24.0 * (np.arange(self.horizon) + 0.5) / self.horizon
        daytime = NIGHT_LEVEL + (1.0 - NIGHT_LEVEL) * _bump(hours, DAYTIME_HOUR, DAYTIME_WIDTH)
        morning = _bump(hours, MORNING_PEAK_HOUR, MORNING_PEAK_WIDTH)
        evening = _bump(hours, EVENING_PEAK_HOUR, EVENING_PEAK_WIDTH)
        tilt = LAND_USE_TILT * (1.0 - 2.0 * business)  # [N], > 0 for residential cells
        profile = daytime[:, None] + self.peak_strength * (
            (1.0 + tilt) * morning[:, None] + (1.0 - tilt) * evening[:, None])  # [T, N]
        profile /= profile.mean(0)
        rates = self.mean_rate * intensity * profile
        return City(intensity, business, rates.astype(np.float32))

    @property
    def rates(self) -> np.ndarray:
        """f32[T, N], expected orders per step and cell."""
        return self.city.rates

    @functools.cached_property
    def destinations(self) -> Destinations:
        """Gravity destination tables (see `Destinations`), O(N * W) memory."""
        cells, within = self.grid.ring_table(self.max_duration)
        column = np.arange(cells.shape[1])
        # Columns are sorted nearest first: the ring of column k is 1 + the rings ending before k.
        distance = 1 + (column[None, :, None] >= within[:, None, :-1]).sum(-1)
        candidate = column < within[:, -1:]  # [N, W]
        distance = np.where(candidate, distance, 1).astype(np.int32)
        # Log space: with a small decay exp(-dist / decay) underflows before normalisation.
        logw = np.log(self.city.intensity)[cells] - distance / self.decay
        logw = np.where(candidate, logw, -np.inf)
        peak = logw.max(1, keepdims=True)
        weight = np.exp(logw - np.where(np.isfinite(peak), peak, 0.0))  # padding -> exp(-inf) = 0
        total = weight.sum(1, keepdims=True)
        probs = weight / np.where(total > 0, total, 1.0)
        cdf = np.where(column >= within[:, -1:] - 1, 1.0, np.cumsum(probs, axis=1))
        return Destinations(cells, probs, distance, cdf.astype(np.float32))

    def sample(self, key: jax.Array, t: jax.Array) -> OrderBatch:
        """Orders born at step `t` (int32 scalar, may be traced); arrays [N, max_new] and [N]."""
        k_count, k_dest, k_price = jax.random.split(key, 3)
        n, k = self.num_cells, self.max_new
        generated = poisson_counts(k_count, jnp.asarray(self.rates)[t], float(self.rates.max()))
        count = jnp.minimum(generated, k)
        table = self.destinations
        u = jax.random.uniform(k_dest, (n, k))
        column = jax.vmap(functools.partial(jnp.searchsorted, side="right"))(
            jnp.asarray(table.cdf), u).astype(jnp.int32)
        destination = jnp.take_along_axis(jnp.asarray(table.cells), column, axis=1)
        duration = jnp.take_along_axis(jnp.asarray(table.distance), column, axis=1)
        price = sample_prices(k_price, duration)
        return pack_orders(price, destination, duration, count, generated)
