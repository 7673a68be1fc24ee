"""dyps_jax.envs.gravity: the correlated, peaked city with gravity destinations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyps_jax.envs.gravity import GravityDemand, smooth_field
from dyps_jax.envs.hexgrid import HexGrid


@pytest.fixture(scope="module")
def city() -> GravityDemand:
    return GravityDemand(HexGrid(8, 10), max_duration=3, seed=7)


def pair_correlation(grid: HexGrid, values: np.ndarray, distances: range) -> float:
    """Pearson correlation of `values` over all ordered cell pairs at a hex distance in `distances`."""
    ids = np.arange(grid.num_cells)
    dist = grid.distance(ids[:, None], ids[None, :])
    a, b = np.nonzero((dist >= distances.start) & (dist < distances.stop))
    return float(np.corrcoef(values[a], values[b])[0, 1])


def test_rates_shape_positive_and_mean(city):
    rates = city.rates
    assert rates.shape == (144, 80) and rates.dtype == np.float32
    assert np.all(rates > 0)
    assert rates.mean() == pytest.approx(5.0, rel=1e-4)
    # A cell's day-mean rate is its intensity (mean 1) times mean_rate: the gravity mass.
    np.testing.assert_allclose(rates.mean(0), 5.0 * city.city.intensity, rtol=1e-4)
    assert city.num_cells == 80 and city.horizon == 144 and city.max_new == 32


def test_morning_and_evening_peaks_exceed_the_night(city):
    profile = city.rates.mean(1)
    hour = lambda h: profile[int(h * 6)]  # 10-minute steps from midnight
    night = hour(3)
    assert hour(8) > 3 * night and hour(18) > 3 * night
    assert hour(8) > hour(12) and hour(18) > hour(13)
    assert profile.argmin() < 6 * 6  # the trough falls in the small hours
    # Land use: residential cells peak in the morning, business cells in the evening.
    business = city.city.business
    res, bus = np.argmin(business), np.argmax(business)
    ratio = city.rates[8 * 6] / city.rates[18 * 6]
    assert ratio[res] > ratio[bus]


def test_no_peaks_when_peak_strength_is_zero():
    flat = GravityDemand(HexGrid(3, 3), max_duration=2, peak_strength=0.0).rates.mean(1)
    assert flat[8 * 6] < flat[13 * 6] and flat[18 * 6] < flat[13 * 6]


def test_demand_is_spatially_correlated():
    grid = HexGrid(12, 12)
    near, far = [], []
    for seed in range(4):
        intensity = GravityDemand(grid, max_duration=2, seed=seed).city.intensity
        near.append(pair_correlation(grid, intensity, range(1, 2)))
        far.append(pair_correlation(grid, intensity, range(4, 100)))
    assert np.mean(near) > 0.3
    assert np.mean(near) > np.mean(far) + 0.3


def test_smoothing_is_the_normalised_exponential_kernel():
    grid, length = HexGrid(6, 6), 1.5
    ids = np.arange(grid.num_cells)
    kernel = np.exp(-grid.distance(ids[:, None], ids[None, :]) / length)  # radius 8 covers 6x6
    expected = kernel / np.sqrt((kernel**2).sum(1, keepdims=True))
    field = np.random.default_rng(0).standard_normal((3, grid.num_cells))
    np.testing.assert_allclose(smooth_field(grid, field, length), field @ expected.T, rtol=1e-10)


def test_determinism_per_seed():
    grid = HexGrid(6, 6)
    a = GravityDemand(grid, max_duration=3, seed=1)
    b = GravityDemand(grid, max_duration=3, seed=1)
    c = GravityDemand(grid, max_duration=3, seed=2)
    np.testing.assert_array_equal(a.rates, b.rates)
    np.testing.assert_array_equal(a.destinations.probs, b.destinations.probs)
    assert not np.allclose(a.rates, c.rates)
    key = jax.random.key(3)
    for x, y in zip(a.sample(key, 50), b.sample(key, 50)):
        np.testing.assert_array_equal(x, y)


def test_gravity_table(city):
    grid, table = city.grid, city.destinations
    cells, probs, dist = table.cells, table.probs, table.distance
    assert cells.shape == probs.shape == dist.shape == (80, 36)
    ids = np.arange(80)[:, None]
    candidate = probs > 0
    np.testing.assert_array_equal(dist[candidate], grid.distance(ids, cells)[candidate])
    assert np.all((dist >= 1) & (dist <= 3))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    # Padded columns hold the origin itself and get probability 0.
    assert np.all(probs[cells == ids] == 0)
    # P(j | i) proportional to mass_j exp(-dist / decay).
    mass = city.rates.mean(0).astype(np.float64)
    expected = np.where(candidate, mass[cells] * np.exp(-dist / city.decay), 0.0)
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(table.cdf[:, -1], 1.0)


def test_sampled_orders_are_valid(city):
    batches = jax.jit(jax.vmap(city.sample, in_axes=(0, None)))(
        jax.random.split(jax.random.key(0), 64), jnp.int32(50))
    batches = jax.device_get(batches)
    n, k = city.num_cells, city.max_new
    assert batches.price.shape == (64, n, k) and batches.count.shape == (64, n)
    assert batches.destination.dtype == np.int32 and batches.duration.dtype == np.int32
    valid = np.arange(k) < batches.count[..., None]
    origin = np.broadcast_to(np.arange(n)[:, None], valid.shape)
    dest, dur = batches.destination[valid], batches.duration[valid]
    assert np.all((dest >= 0) & (dest < n))
    np.testing.assert_array_equal(city.grid.distance(origin[valid], dest), dur)
    assert np.all((dur >= 1) & (dur <= 3)) and np.all(batches.price[valid] > 0)
    # Empty slots exactly as PaperDemand leaves them.
    assert np.all(batches.price[~valid] == 0) and np.all(batches.destination[~valid] == 0)
    assert np.all(batches.duration[~valid] == 1)
    np.testing.assert_array_equal(batches.count, np.minimum(batches.generated, k))


def test_counts_are_poisson_around_the_rates(city):
    t = 48
    draws = jax.jit(jax.vmap(city.sample, in_axes=(0, None)))(
        jax.random.split(jax.random.key(1), 400), t).generated
    mean = np.asarray(draws).mean(0)
    lam = city.rates[t]
    # 4 standard errors of the mean of 400 Poisson draws per cell.
    assert np.all(np.abs(mean - lam) < 4 * np.sqrt(lam / 400) + 1e-3)
    assert np.asarray(draws).var(0).mean() == pytest.approx(lam.mean(), rel=0.1)


def test_destination_frequencies_match_gravity():
    demand = GravityDemand(HexGrid(6, 6), max_duration=2, seed=5, mean_rate=20.0, max_new=64)
    origin = 14  # interior: all 18 candidates of rings 1..2 exist
    draws = jax.jit(jax.vmap(demand.sample, in_axes=(0, None)))(
        jax.random.split(jax.random.key(2), 300), 48)
    count = np.asarray(draws.count[:, origin])
    dest = np.asarray(draws.destination[:, origin])
    valid = np.arange(64) < count[:, None]
    observed = np.bincount(dest[valid], minlength=36)
    table = demand.destinations
    expected = np.zeros(36)
    np.add.at(expected, table.cells[origin], table.probs[origin])
    expected *= valid.sum()
    assert valid.sum() > 5000
    assert observed[expected == 0].sum() == 0
    support = expected > 0
    chi2 = ((observed[support] - expected[support]) ** 2 / expected[support]).sum()
    # 17 degrees of freedom: the 0.999 quantile of chi-square is 40.8.
    assert chi2 < 40.8


def test_one_cell_grid_keeps_orders_in_the_cell():
    demand = GravityDemand(HexGrid(1, 1), max_duration=3, seed=0)
    batch = jax.jit(demand.sample)(jax.random.key(0), jnp.int32(60))
    assert int(batch.count[0]) > 0
    valid = np.arange(demand.max_new) < int(batch.count[0])
    assert np.all(np.asarray(batch.destination)[0] == 0)
    assert np.all(np.asarray(batch.duration)[0][valid] == 1)
    assert np.all(np.isfinite(np.asarray(batch.price)))


def test_large_grid_builds_and_samples():
    demand = GravityDemand(HexGrid(100, 100), max_duration=5, seed=0)
    assert demand.rates.shape == (144, 10_000)
    assert demand.destinations.cells.shape == (10_000, 90)
    batch = jax.jit(demand.sample)(jax.random.key(0), jnp.int32(48))
    assert batch.price.shape == (10_000, 32)
    assert int(batch.generated.sum()) > 0


@pytest.mark.parametrize("field, value, allowed", [
    ("decay", -1.0, "> 0"),
    ("decay", 0.0, "> 0"),
    ("mean_rate", float("nan"), "> 0"),
    ("correlation_length", 0, "> 0"),
    ("peak_strength", -0.5, ">= 0"),
    ("spread", float("inf"), ">= 0"),
    ("max_duration", 6, "1..5"),
    ("max_duration", 0, "1..5"),
    ("horizon", 0, ">= 1"),
    ("max_new", 2.5, ">= 1"),
    ("seed", -3, ">= 0"),
])
def test_bad_parameters_name_the_field(field, value, allowed):
    params = {"grid": HexGrid(3, 3), "max_duration": 2, field: value}
    with pytest.raises(ValueError, match=rf"gravity\.{field}: .*{allowed}.*got {value!r}"):
        GravityDemand(**params)


def test_grid_must_be_a_hexgrid():
    with pytest.raises(ValueError, match="gravity.grid"):
        GravityDemand((3, 3), max_duration=2)
