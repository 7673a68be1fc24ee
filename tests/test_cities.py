"""dyps_jax.envs.cities: the synthetic generator and the real-data loader."""

from __future__ import annotations

import numpy as np
import pytest

from dyps_jax.envs.cities import (
    City,
    generate_city,
    hourly_profile,
    load_city,
    mobility_profile,
    save_city,
)


@pytest.fixture(scope="module")
def small() -> City:
    return generate_city(num_cbgs=40, num_pois=150, seed=3)


def test_generator_is_deterministic_per_seed(small):
    again = generate_city(num_cbgs=40, num_pois=150, seed=3)
    other = generate_city(num_cbgs=40, num_pois=150, seed=4)
    for a, b in zip(small, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(small.population, other.population)
    assert not np.array_equal(small.edge_poi, other.edge_poi)


def test_generated_arrays_follow_the_spec(small):
    c, p = 40, 150
    assert small.num_cbgs == c and small.num_pois == p
    assert small.population.sum() == pytest.approx(7.19e6 * c / 3130, abs=0.5)
    np.testing.assert_array_equal(small.population, np.round(small.population))
    np.testing.assert_allclose(small.age_shares.sum(1), 1.0, atol=1e-5)
    assert small.ifr.shape == (c,) and np.all((small.ifr > 0) & (small.ifr < 0.1))
    # 60 distinct POIs per CBG, edges sorted by CBG, visit probabilities summing to 1 per CBG.
    assert small.edge_cbg.shape == (c * 60,) and small.edge_cbg.dtype == np.int32
    np.testing.assert_array_equal(small.edge_cbg, np.repeat(np.arange(c), 60))
    for i in range(c):
        assert len(set(small.edge_poi[i * 60:(i + 1) * 60])) == 60
    np.testing.assert_allclose(np.bincount(small.edge_cbg, small.edge_prob), 1.0, atol=1e-5)
    assert np.all(small.poi_area >= 200) and np.all((small.poi_dwell >= 5) & (small.poi_dwell <= 480))
    np.testing.assert_allclose(small.hourly.sum(), 1.0, rtol=1e-6)
    assert small.hourly[3] < small.hourly[12] and small.hourly[3] < small.hourly[18]
    m = mobility_profile(63)
    assert m[0] == pytest.approx(1.0) and m[14] == pytest.approx(0.45)
    assert m[62] == pytest.approx(0.6) and np.all(np.diff(m[:15]) < 0)


def test_full_size_population_statistics():
    city = generate_city(num_cbgs=3130, num_pois=500, seed=0)  # few POIs: fast
    assert city.population.sum() == pytest.approx(7.19e6, abs=0.5)
    assert 1500 < np.median(city.population) < 3000
    assert city.population.min() > 250 and city.population.max() < 9000


def test_loader_round_trips(small, tmp_path):
    path = tmp_path / "city.npz"
    save_city(small, path)
    loaded = load_city(path)
    for name, a, b in zip(City._fields, small, loaded):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_loader_sorts_edges_and_fills_optional_arrays(small, tmp_path):
    arrays = small._asdict()
    del arrays["cbg_xy"], arrays["poi_xy"], arrays["ifr_by_age"]
    order = np.random.default_rng(0).permutation(len(small.edge_cbg))
    for name in ("edge_cbg", "edge_poi", "edge_prob"):
        arrays[name] = arrays[name][order]
    np.savez(tmp_path / "c.npz", **arrays)
    loaded = load_city(tmp_path / "c.npz")
    assert np.all(np.diff(loaded.edge_cbg) >= 0)
    np.testing.assert_allclose(np.bincount(loaded.edge_cbg, loaded.edge_prob), 1.0, atol=1e-5)
    assert loaded.cbg_xy.shape == (40, 2) and not loaded.cbg_xy.any()


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("population", lambda a: -a, "population"),
        ("age_shares", lambda a: a[:, :3], "age_shares"),
        ("edge_poi", lambda a: a + 1000, "edge_poi"),
        ("edge_prob", lambda a: a * 3, "edge_prob"),
        ("poi_dwell", lambda a: a[:-1], "poi_dwell"),
        ("hourly", lambda a: a[:12], "hourly"),
        ("edge_cbg", lambda a: a.astype(np.float32), "edge_cbg"),
        ("mobility", None, "mobility"),
    ],
)
def test_loader_rejects_malformed_files(small, tmp_path, name, bad, match):
    arrays = small._asdict()
    if bad is None:
        del arrays[name]
    else:
        arrays[name] = bad(arrays[name])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        load_city(tmp_path / "bad.npz")


def test_loader_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_city(tmp_path / "nope.npz")


def test_generator_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_cbgs"):
        generate_city(num_cbgs=0)
    with pytest.raises(ValueError, match="total_population"):
        generate_city(num_cbgs=5, num_pois=10, total_population=-1.0)


def test_profiles():
    assert hourly_profile().shape == (24,)
    assert mobility_profile(100)[99] == pytest.approx(0.6)
