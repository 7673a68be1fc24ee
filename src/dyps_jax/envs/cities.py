"""Cities for the Medical scenario: a seeded synthetic Atlanta and a loader for real data.

Real SafeGraph mobility cannot be had offline, so `generate_city` builds a synthetic metropolis with
the statistics of docs/scenarios.md ("Medical"); `load_city` reads the same arrays from an `.npz` file, so a
user with real data (CBG populations and age shares, POI areas and dwell times, visit probabilities)
runs the real city. Everything here is host-side numpy: a city is built once and closed over by the
environment as constants.

Synthetic city (distances in km, POI areas in square feet as in Chang et al., dwell in minutes):

* CBG centroids from a polycentric mixture: a centre (weight 0.40, sd 5 km), 5 sub-centres on a ring
  of radius 10-20 km (0.09 each, sd 2.5 km) and a wide suburban background (0.15, sd 16 km).
* Population LogNormal(ln 2100, 0.45) clipped to [300, 8000], rescaled to `total_population` and
  rounded to whole people (7.19M x num_cbgs / 3130 by default; rescaling keeps the clip only approximately; the sum is exact).
* Age shares over 5 groups (0-17, 18-44, 45-64, 65-74, 75+): Dirichlet around the US shares, so the
  age-weighted infection fatality ratio varies between CBGs.
* POIs from the same mixture, more concentrated (sd x 0.8, downtown has more shops); area
  LogNormal(ln 2500, 1.0) clipped to [200, 500000]; dwell LogNormal(ln 30, 0.7) clipped to [5, 480];
  attractiveness sqrt(area) x LogNormal(0, 0.8) (heavy-tailed: a few POIs draw most visits).
* Each CBG links to `links_per_cbg` POIs drawn without replacement with weights
  attractiveness x exp(-distance / 4 km) (Gumbel top-k), and P_ij is that weight normalised over the
  chosen POIs, so every row of the visit matrix sums to 1.
* Hourly profile h(hour), summing to 1 over the day (so v0 is visits per resident per day): quiet at
  night, peaks at lunch and early evening.
* Daily mobility m(day): 1.0 at day 0, falling linearly to 0.45 at day 14 (the March 2020 lockdown),
  then recovering linearly to 0.6 at day 62 (held afterwards).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Infection fatality ratio per age group (0-17, 18-44, 45-64, 65-74, 75+), after Levin et al. 2020.
IFR_BY_AGE = np.array([2e-5, 3e-4, 4e-3, 2.5e-2, 8e-2], np.float32)
# US population shares of the same age groups: the Dirichlet mean of the CBG age shares.
US_AGE_SHARES = np.array([0.22, 0.37, 0.25, 0.09, 0.07], np.float64)
ATLANTA_POPULATION = 7.19e6
ATLANTA_CBGS = 3130
ATLANTA_POIS = 20000


class City(NamedTuple):
    """A city of C census block groups, P points of interest and E CBG->POI edges.

    Attributes:
      cbg_xy: f32[C, 2], CBG centroids in km (zeros when unknown).
      population: f32[C], residents N_i (> 0).
      age_shares: f32[C, A], share of residents in each age group (rows sum to 1).
      ifr_by_age: f32[A], infection fatality ratio of each age group (in [0, 1]).
      poi_xy: f32[P, 2], POI locations in km (zeros when unknown).
      poi_area: f32[P], floor area (> 0; square feet in the synthetic city).
      poi_dwell: f32[P], mean dwell time in minutes (> 0).
      edge_cbg: int32[E], CBG index of each edge, sorted ascending.
      edge_poi: int32[E], POI index of each edge.
      edge_prob: f32[E], P_ij, the probability that a visit from CBG i goes to POI j (rows sum <= 1).
      hourly: f32[24], hourly visit profile h(hour) (>= 0).
      mobility: f32[D], daily mobility factor m(day) (>= 0); days past D-1 use m(D-1).
    """

    cbg_xy: np.ndarray
    population: np.ndarray
    age_shares: np.ndarray
    ifr_by_age: np.ndarray
    poi_xy: np.ndarray
    poi_area: np.ndarray
    poi_dwell: np.ndarray
    edge_cbg: np.ndarray
    edge_poi: np.ndarray
    edge_prob: np.ndarray
    hourly: np.ndarray
    mobility: np.ndarray

    @property
    def num_cbgs(self) -> int:
        return int(self.population.shape[0])

    @property
    def num_pois(self) -> int:
        return int(self.poi_area.shape[0])

    @property
    def ifr(self) -> np.ndarray:
        """f32[C]: age-weighted infection fatality ratio of each CBG."""
        return (self.age_shares @ self.ifr_by_age).astype(np.float32)


def hourly_profile() -> np.ndarray:
    """f32[24]: h(hour), sums to 1; night trough, lunch and early-evening peaks."""
    hours = np.arange(24, dtype=np.float64)
    shape = (0.08 + np.exp(-0.5 * ((hours - 12.5) / 2.5) ** 2)
             + 0.9 * np.exp(-0.5 * ((hours - 18.0) / 2.0) ** 2))
    return (shape / shape.sum()).astype(np.float32)


def mobility_profile(num_days: int = 63) -> np.ndarray:
    """f32[num_days]: m(day), 1.0 -> 0.45 over the first 14 days, then back up to 0.6 at day 62."""
    days = np.arange(num_days, dtype=np.float64)
    drop = 1.0 - (1.0 - 0.45) * np.clip(days / 14.0, 0.0, 1.0)
    recover = 0.45 + (0.6 - 0.45) * np.clip((days - 14.0) / 48.0, 0.0, 1.0)
    return np.where(days <= 14, drop, recover).astype(np.float32)


def _polycentric(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """f64[n, 2]: points from the centre + 5 sub-centres + background mixture (km)."""
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(5) / 5
    radii = rng.uniform(10.0, 20.0, 5)
    centres = np.concatenate(
        [[[0.0, 0.0]], np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1), [[0.0, 0.0]]]
    )
    sds = np.array([5.0] + [2.5] * 5 + [16.0]) * spread
    weights = np.array([0.40] + [0.09] * 5 + [0.15])
    comp = rng.choice(len(weights), size=n, p=weights)
    return centres[comp] + rng.normal(size=(n, 2)) * sds[comp, None]


def generate_city(
    num_cbgs: int = ATLANTA_CBGS,
    num_pois: int = ATLANTA_POIS,
    seed: int = 0,
    total_population: float | None = None,
    links_per_cbg: int = 60,
    distance_scale_km: float = 4.0,
    num_days: int = 63,
) -> City:
    """Builds the synthetic city described in the module docstring; same seed, same city.

    `total_population=None` scales Atlanta's 7.19M with the number of CBGs (7.19M x C / 3130), so
    CBGs keep their size in smaller and larger cities. `links_per_cbg` is capped at `num_pois`. The CBG x POI weight matrix is processed in row chunks
    (about 2M entries at a time), so even 20,000 CBGs need little memory.
    """
    for name, value in (("num_cbgs", num_cbgs), ("num_pois", num_pois),
                        ("links_per_cbg", links_per_cbg), ("num_days", num_days)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"city.{name}: must be a positive integer, got {value!r}")
    if total_population is None:
        total_population = ATLANTA_POPULATION * num_cbgs / ATLANTA_CBGS
    for name, amount in (("total_population", total_population),
                         ("distance_scale_km", distance_scale_km)):
        if not amount > 0:
            raise ValueError(f"city.{name}: must be > 0, got {amount!r}")
    # Independent streams per component: changing the POI count does not move the CBGs.
    rng_cbg, rng_pop, rng_age, rng_poi, rng_link = (
        np.random.default_rng([seed, k]) for k in range(5)
    )
    cbg_xy = _polycentric(rng_cbg, num_cbgs, 1.0)
    pop = np.clip(rng_pop.lognormal(np.log(2100.0), 0.45, num_cbgs), 300.0, 8000.0)
    # Whole people (the stochastic mode draws binomials over them), summing exactly to the total.
    pop = np.round(pop * (total_population / pop.sum()))
    pop[np.argmax(pop)] += round(total_population) - pop.sum()
    age = rng_age.dirichlet(US_AGE_SHARES * 40.0, size=num_cbgs)

    poi_xy = _polycentric(rng_poi, num_pois, 0.8)
    area = np.clip(rng_poi.lognormal(np.log(2500.0), 1.0, num_pois), 200.0, 500000.0)
    dwell = np.clip(rng_poi.lognormal(np.log(30.0), 0.7, num_pois), 5.0, 480.0)
    log_attr = 0.5 * np.log(area) + rng_poi.normal(0.0, 0.8, num_pois)

    k = min(links_per_cbg, num_pois)
    edge_poi = np.empty((num_cbgs, k), np.int64)
    edge_w = np.empty((num_cbgs, k), np.float64)
    chunk = max(1, 2_000_000 // num_pois)  # ~16 MB per temporary: peak memory stays small
    for start in range(0, num_cbgs, chunk):
        xy = cbg_xy[start:start + chunk]
        dist = np.sqrt(((xy[:, None, :] - poi_xy[None, :, :]) ** 2).sum(-1))
        logw = log_attr[None, :] - dist / distance_scale_km
        # Gumbel top-k = k draws without replacement with probabilities proportional to exp(logw).
        keys = logw + rng_link.gumbel(size=logw.shape)
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < num_pois else np.tile(
            np.arange(num_pois), (len(xy), 1))
        top.sort(axis=1)
        chosen = np.take_along_axis(logw, top, axis=1)
        w = np.exp(chosen - chosen.max(axis=1, keepdims=True))
        edge_poi[start:start + chunk] = top
        edge_w[start:start + chunk] = w / w.sum(axis=1, keepdims=True)

    return City(
        cbg_xy=cbg_xy.astype(np.float32),
        population=pop.astype(np.float32),
        age_shares=age.astype(np.float32),
        ifr_by_age=IFR_BY_AGE.copy(),
        poi_xy=poi_xy.astype(np.float32),
        poi_area=area.astype(np.float32),
        poi_dwell=dwell.astype(np.float32),
        edge_cbg=np.repeat(np.arange(num_cbgs, dtype=np.int32), k),
        edge_poi=edge_poi.reshape(-1).astype(np.int32),
        edge_prob=edge_w.reshape(-1).astype(np.float32),
        hourly=hourly_profile(),
        mobility=mobility_profile(num_days),
    )


def save_city(city: City, path: str | Path) -> None:
    """Writes a city as an `.npz` with one array per `City` field (the format `load_city` reads)."""
    np.savez(path, **city._asdict())


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"city file: array {name!r} {message}")


def load_city(path: str | Path) -> City:
    """Reads a city from an `.npz` with the `City` field names and validates it.

    Required arrays: population, age_shares, poi_area, poi_dwell, edge_cbg, edge_poi, edge_prob,
    hourly, mobility. Optional: cbg_xy, poi_xy (zeros when absent) and ifr_by_age (defaults to
    `IFR_BY_AGE`, which needs 5 age groups). Edges are sorted by CBG on load.

    Raises ValueError naming the array for a missing array, a wrong shape or an out-of-range value.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"city file: {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"city file: {str(path)!r} is not a readable .npz archive "
                         f"({type(err).__name__}: {err})") from None
    required = ("population", "age_shares", "poi_area", "poi_dwell", "edge_cbg", "edge_poi",
                "edge_prob", "hourly", "mobility")
    for name in required:
        _require(name in arrays, name, f"is missing from {path} (has: {sorted(arrays)})")
    pop = arrays["population"].astype(np.float64)
    _require(pop.ndim == 1 and pop.size > 0, "population", f"must be f32[C], got {pop.shape}")
    c = pop.size
    _require(bool(np.all(np.isfinite(pop) & (pop > 0))), "population", "must be finite and > 0")
    age = arrays["age_shares"].astype(np.float64)
    _require(age.ndim == 2 and age.shape[0] == c, "age_shares",
             f"must be f32[C={c}, A], got {age.shape}")
    _require(bool(np.all(age >= 0)) and np.allclose(age.sum(1), 1.0, atol=1e-3), "age_shares",
             "must be >= 0 with rows summing to 1")
    ifr = arrays.get("ifr_by_age", IFR_BY_AGE if age.shape[1] == len(IFR_BY_AGE) else None)
    _require(ifr is not None, "ifr_by_age",
             f"is required when age_shares has {age.shape[1]} groups (the default has 5)")
    ifr = np.asarray(ifr, np.float64)
    _require(ifr.shape == (age.shape[1],) and bool(np.all((ifr >= 0) & (ifr <= 1))),
             "ifr_by_age", f"must be f32[A={age.shape[1]}] in [0, 1], got shape {ifr.shape}")
    area, dwell = arrays["poi_area"].astype(np.float64), arrays["poi_dwell"].astype(np.float64)
    _require(area.ndim == 1 and area.size > 0, "poi_area", f"must be f32[P], got {area.shape}")
    p = area.size
    _require(bool(np.all(np.isfinite(area) & (area > 0))), "poi_area", "must be finite and > 0")
    _require(dwell.shape == (p,), "poi_dwell", f"must be f32[P={p}], got {dwell.shape}")
    _require(bool(np.all(np.isfinite(dwell) & (dwell > 0))), "poi_dwell", "must be finite and > 0")
    ec, ep, prob = arrays["edge_cbg"], arrays["edge_poi"], arrays["edge_prob"].astype(np.float64)
    _require(ec.ndim == 1 and np.issubdtype(ec.dtype, np.integer), "edge_cbg",
             f"must be int[E], got {ec.dtype}{list(ec.shape)}")
    e = ec.size
    _require(ep.shape == (e,) and np.issubdtype(ep.dtype, np.integer), "edge_poi",
             f"must be int[E={e}], got {ep.dtype}{list(ep.shape)}")
    _require(prob.shape == (e,), "edge_prob", f"must be f32[E={e}], got {prob.shape}")
    _require(bool(np.all((ec >= 0) & (ec < c))), "edge_cbg", f"must lie in [0, {c})")
    _require(bool(np.all((ep >= 0) & (ep < p))), "edge_poi", f"must lie in [0, {p})")
    _require(bool(np.all(np.isfinite(prob) & (prob >= 0))), "edge_prob", "must be finite and >= 0")
    _require(bool(np.all(np.bincount(ec, prob, minlength=c) <= 1 + 1e-3)), "edge_prob",
             "must sum to at most 1 over the edges of each CBG")
    hourly, mob = arrays["hourly"].astype(np.float64), arrays["mobility"].astype(np.float64)
    _require(hourly.shape == (24,) and bool(np.all(hourly >= 0)), "hourly",
             f"must be f32[24] and >= 0, got shape {hourly.shape}")
    _require(mob.ndim == 1 and mob.size > 0 and bool(np.all(mob >= 0)), "mobility",
             f"must be f32[D] with D >= 1 and >= 0, got shape {mob.shape}")
    xy = {}
    for name, n in (("cbg_xy", c), ("poi_xy", p)):
        xy[name] = arrays.get(name, np.zeros((n, 2)))
        _require(xy[name].shape == (n, 2), name, f"must be f32[{n}, 2], got {xy[name].shape}")
    order = np.argsort(ec, kind="stable")
    return City(
        cbg_xy=xy["cbg_xy"].astype(np.float32),
        population=pop.astype(np.float32),
        age_shares=age.astype(np.float32),
        ifr_by_age=ifr.astype(np.float32),
        poi_xy=xy["poi_xy"].astype(np.float32),
        poi_area=area.astype(np.float32),
        poi_dwell=dwell.astype(np.float32),
        edge_cbg=ec[order].astype(np.int32),
        edge_poi=ep[order].astype(np.int32),
        edge_prob=prob[order].astype(np.float32),
        hourly=hourly.astype(np.float32),
        mobility=mob.astype(np.float32),
    )
