"""dyps_jax.envs.medical, dyps_jax.rules and dyps_jax.evaluate on small cities.

Small cities (50 CBGs, 200 POIs, a few days) keep the file fast on 2 CPU cores; jitted functions
are built once per module and reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyps_jax.envs import core
from dyps_jax.envs.cities import IFR_BY_AGE
from dyps_jax.envs.medical import VaccineAllocation, allocate_doses
from dyps_jax.evaluate import evaluate_rule
from dyps_jax.rules import RULES, get_rule

C, P, DAYS = 50, 200, 6
SMALL = dict(num_cbgs=C, num_pois=P, num_days=DAYS, city_seed=1, prevented_metric=False)


def make_env(**kw) -> VaccineAllocation:
    return VaccineAllocation(**{**SMALL, **kw})


def episode_fn(env):
    """jit: (key, logits f32[DAYS, C]) -> (states stacked per day, metrics per day, rewards)."""

    def run(key, logits):
        state, _ = env.reset(key)

        def body(s, inp):
            k, a = inp
            s, ts = env.step(k, s, a)
            return s, (s, ts.metrics, ts.reward)

        return jax.lax.scan(body, state, (jax.random.split(key, env.num_days), logits))[1]

    return jax.jit(run)


ENV = make_env()
VAX_EPISODE = episode_fn(ENV)
NOVAX_EPISODE = episode_fn(make_env(vaccinate=False))


# ---------------------------------------------------------------- dose allocation

ALLOC = jax.jit(allocate_doses)


@settings(max_examples=40, deadline=None)
@given(
    logits=st.lists(st.floats(-30, 30), min_size=8, max_size=8),
    caps=st.lists(st.floats(0, 1000), min_size=8, max_size=8),
    budget=st.floats(0, 5000),
)
def test_doses_respect_budget_and_capacity(logits, caps, budget):
    logits, caps = np.array(logits, np.float32), np.array(caps, np.float32)
    doses = np.asarray(ALLOC(logits, np.float32(budget), caps), np.float64)
    assert np.all(doses >= 0) and np.all(doses <= caps * (1 + 1e-6) + 1e-4)
    want = min(budget, caps.sum())
    assert doses.sum() <= budget * (1 + 1e-5) + 1e-3
    # Overflow redistributed: the whole budget is used unless everyone is vaccinated.
    assert doses.sum() == pytest.approx(want, rel=1e-4, abs=1e-2)
    # Water-filling: uncapped CBGs receive doses in proportion to softmax(logits).
    p = np.exp(logits - logits.max())
    p /= p.sum()
    free = (doses < caps - 1e-3) & (p > 1e-6)
    if free.sum() >= 2 and want == pytest.approx(budget):
        # float32 rounding left-overs are spread over spare capacity, so compare doses with an
        # absolute tolerance of a hundredth of a dose rather than ratios of tiny allocations
        ref = np.argmax(np.where(free, p, 0.0))
        np.testing.assert_allclose(doses[free], doses[ref] / p[ref] * p[free], rtol=1e-3, atol=1e-2)


@settings(max_examples=40, deadline=None)
@given(
    logits=st.lists(st.floats(-120, 120), min_size=12, max_size=12),
    caps=st.lists(st.sampled_from([0.0, 1e-3, 1.0, 50.0, 2000.0]), min_size=12, max_size=12),
    budget=st.floats(0, 30000),
)
def test_doses_with_saturation_and_underflow(logits, caps, budget):
    # Extreme logits underflow softmax entries to 0; many CBGs are full: no NaN, budget still used.
    logits, caps = np.array(logits, np.float32), np.array(caps, np.float32)
    doses = np.asarray(ALLOC(logits, np.float32(budget), caps), np.float64)
    assert np.all(np.isfinite(doses)) and np.all(doses >= 0)
    assert np.all(doses <= caps * (1 + 1e-6) + 1e-6)
    assert doses.sum() == pytest.approx(min(budget, caps.sum()), rel=1e-4, abs=1e-2)


def test_doses_proportional_when_nothing_caps():
    logits = np.log(np.array([1.0, 2.0, 7.0], np.float32))
    doses = ALLOC(logits, np.float32(100.0), np.full(3, 1e6, np.float32))
    np.testing.assert_allclose(doses, [10.0, 20.0, 70.0], rtol=1e-5)


def test_overflow_goes_to_the_others():
    # CBG 2 wants 70 but has 5 unvaccinated people: its 65 are shared 1:2 by the other two.
    doses = ALLOC(jnp.log(jnp.array([1.0, 2.0, 7.0])), jnp.float32(100.0), jnp.array([1e6, 1e6, 5.0]))
    np.testing.assert_allclose(doses, [95 / 3, 190 / 3, 5.0], rtol=1e-5)


# ---------------------------------------------------------------- environment episodes


def test_protocol_shapes_and_done():
    env = ENV
    assert isinstance(env, core.Environment)
    assert env.num_agents == C and env.num_actions == 1 and env.max_steps == DAYS
    assert VaccineAllocation.action_kind == "gaussian"
    state, ts = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert ts.obs.shape == (C, env.obs_dim) and ts.action_mask.shape == (C, 1)
    assert bool(ts.action_mask.all()) and ts.global_state.shape == (env.global_state_dim,)
    assert set(ts.metrics) == {"new_infections", "new_confirmed", "deaths", "doses",
                               "prevented_infections"}
    states, metrics, rewards = VAX_EPISODE(jax.random.PRNGKey(0), jnp.zeros((DAYS, C)))
    assert rewards.shape == (DAYS, C)
    assert np.all(np.asarray(rewards) <= 0) and np.all(np.asarray(rewards) >= -0.4)
    assert np.asarray(states.day).tolist() == list(range(1, DAYS + 1))
    # vmap over environments works and done fires on the last day.
    step = jax.jit(jax.vmap(env.step))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    s, _ = jax.vmap(env.reset)(keys)
    for _ in range(DAYS):
        s, ts = step(keys, s, jnp.zeros((3, C)))
    assert bool(ts.done.all()) and np.all(np.isfinite(np.asarray(ts.obs)))


@pytest.mark.parametrize("stochastic", [False, True])
def test_people_and_doses_conserved(stochastic):
    env = make_env(stochastic=stochastic)
    run = VAX_EPISODE if not stochastic else episode_fn(env)
    logits = jax.random.normal(jax.random.PRNGKey(2), (DAYS, C)) * 3
    states, metrics, _ = run(jax.random.PRNGKey(3), logits)
    pop = env.population.astype(np.float64)
    l, i, r, v = (np.asarray(x, np.float64) for x in
                  (states.exposed, states.infectious, states.removed, states.vaccinated))
    for x in (l, i, r, v, np.asarray(states.to_confirm), np.asarray(states.to_die)):
        assert np.all(x >= -1e-3)
    s = pop - l - i - r
    assert np.all(s >= -1e-2 * (1 + 0 * pop))  # S + L + I + R = N with S >= 0
    assert np.all(v <= pop * (1 + 1e-6))
    budget = 0.01 * pop.sum()
    doses = np.asarray(metrics["doses"], np.float64)
    np.testing.assert_allclose(doses, budget, rtol=1e-5)
    np.testing.assert_allclose(v.sum(1), np.cumsum(doses), rtol=1e-5)
    if stochastic:  # whole people in the stochastic mode
        np.testing.assert_array_equal(l, np.round(l))
        np.testing.assert_array_equal(i, np.round(i))


@pytest.mark.parametrize("stochastic", [False, True])
def test_everyone_vaccinated_under_case_targeting(stochastic):
    # A large budget and concentrated logits fill CBGs up: caps bind, nothing becomes NaN (a NaN
    # probability would also hang the binomial sampler of the stochastic mode).
    env = make_env(stochastic=stochastic, daily_budget=0.3)
    pol = get_rule("medical", "cases").make(env)
    step = jax.jit(env.step)
    state, ts = env.reset(jax.random.PRNGKey(0))
    pop = env.population.astype(np.float64)
    for day in range(DAYS):
        k = jax.random.PRNGKey(day + 1)
        state, ts = step(k, state, pol(k, ts, state))
        v = np.asarray(state.vaccinated, np.float64)
        assert np.all(np.isfinite(np.asarray(ts.obs)))
        assert np.all(v <= pop * (1 + 1e-6))
        assert v.sum() == pytest.approx(min((day + 1) * 0.3, 1.0) * pop.sum(), rel=1e-4)


def test_hourly_conservation():
    env = ENV
    pop = env.population
    comps = (pop * 0.01, pop * 0.02, pop * 0.05, pop * 0.001, pop * 0.0001)
    comps = tuple(jnp.asarray(x, jnp.float32) for x in comps)
    factor = jnp.asarray(np.linspace(0.2, 1.0, C), jnp.float32)
    hour = jax.jit(env.hour_step)
    for t in range(24):
        new, flows = hour(jax.random.PRNGKey(t), comps, factor, jnp.float32(0.215 * env.city.hourly[t]))
        l0, i0, r0 = comps[:3]
        l1, i1, r1 = new[:3]
        # People only move between compartments: L + I + R grows by exactly the new exposures.
        np.testing.assert_allclose(l1 + i1 + r1, l0 + i0 + r0 + flows[0], rtol=1e-5)
        assert np.all(np.asarray(pop - l1 - i1 - r1) >= -1e-2)
        comps = new


def test_vaccinated_cbg_exposures_at_full_coverage():
    env = ENV
    pop = jnp.asarray(env.population)
    comps = (pop * 0.01, pop * 0.02, pop * 0.0, pop * 0.0, pop * 0.0)
    _, flows = env.hour_step(jax.random.PRNGKey(0), comps, jnp.zeros(C), jnp.float32(0.02))
    np.testing.assert_allclose(flows[0], 0.0, atol=1e-6)  # a = 0: nobody can be infected


def write_tiny_city(path: Path) -> None:
    """2 CBGs, 1 POI: CBG 0 sends all its visits there, CBG 1 half of them."""
    np.savez(
        path,
        population=np.array([1000.0, 2000.0], np.float32),
        age_shares=np.array([[0.2, 0.4, 0.2, 0.1, 0.1], [0.3, 0.4, 0.2, 0.05, 0.05]], np.float32),
        poi_area=np.array([1500.0], np.float32),
        poi_dwell=np.array([45.0], np.float32),
        edge_cbg=np.array([0, 1], np.int32),
        edge_poi=np.array([0, 0], np.int32),
        edge_prob=np.array([1.0, 0.5], np.float32),
        hourly=np.full(24, 1 / 24, np.float32),
        mobility=np.array([1.0, 0.5], np.float32),
    )


def test_hand_checked_hour(tmp_path):
    path = tmp_path / "tiny.npz"
    write_tiny_city(path)
    env = VaccineAllocation(num_cbgs=2, num_pois=1, city_path=str(path), num_days=2, v0=2.0,
                            prevented_metric=False)
    n = np.array([1000.0, 2000.0])
    l, i, r = np.array([10.0, 4.0]), np.array([20.0, 6.0]), np.array([5.0, 0.0])
    tc, td = np.array([3.0, 1.0]), np.array([0.5, 0.2])
    a = np.array([0.9, 0.5])
    scale = 2.0 / 24  # v0 h m with m = 1
    # By hand, one POI: infectious visitors X = scale (1 x 20 + 0.5 x 6) = scale x 23.
    lam = min(1.0, 2388.0 * (45 / 105) ** 2 / 1500 * scale * 23.0)
    s = n - l - i - r
    poi = a * s * scale * np.array([1.0, 0.5]) * lam
    home = np.minimum(1.0, 0.0037 * a * i / n)
    new_l = np.minimum(s, s * home + poi)
    ifr = np.array([[0.2, 0.4, 0.2, 0.1, 0.1], [0.3, 0.4, 0.2, 0.05, 0.05]]) @ IFR_BY_AGE
    want = (l + new_l - l / 96, i + l / 96 - i / 84, r + i / 84,
            tc + 0.1 * l / 96 - tc / 168, td + ifr * l / 96 - td / 432)
    comps = tuple(jnp.asarray(x, jnp.float32) for x in (l, i, r, tc, td))
    out, flows = env.hour_step(jax.random.PRNGKey(0), comps, jnp.asarray(a, jnp.float32),
                               jnp.float32(scale))
    for got, exp in zip(out, want):
        np.testing.assert_allclose(got, exp, rtol=1e-5)
    np.testing.assert_allclose(flows[0], new_l, rtol=1e-5)
    np.testing.assert_allclose(flows[1], tc / 168, rtol=1e-5)
    np.testing.assert_allclose(flows[2], td / 432, rtol=1e-5)


def test_city_path_size_mismatch(tmp_path):
    path = tmp_path / "tiny.npz"
    write_tiny_city(path)
    with pytest.raises(ValueError, match="num_cbgs"):  # the file is read on construction
        VaccineAllocation(num_cbgs=3, num_pois=1, city_path=str(path))


def test_segment_sums_equal_dense_reference():
    env = ENV
    city = env.city
    dense = np.zeros((C, P))
    np.add.at(dense, (city.edge_cbg, city.edge_poi), city.edge_prob)
    rng = np.random.default_rng(0)
    pop = city.population.astype(np.float64)
    l, i, r = pop * rng.uniform(0, 0.01, C), pop * rng.uniform(0, 0.05, C), pop * 0.1
    a, scale = rng.uniform(0.3, 1.0, C), 0.5 * 0.215 * city.hourly[12]
    coef = 2388.0 * (city.poi_dwell / (city.poi_dwell + 60.0)) ** 2 / city.poi_area
    lam = np.minimum(1.0, coef * scale * (dense.T @ i))  # w_ij I_i / N_i summed over i
    s = pop - l - i - r
    poi = a * s * scale * (dense @ lam)
    new_l = np.minimum(s, s * np.minimum(1.0, 0.0037 * a * i / pop) + poi)
    comps = tuple(jnp.asarray(x, jnp.float32) for x in (l, i, r, 0 * l, 0 * l))
    _, flows = env.hour_step(jax.random.PRNGKey(0), comps, jnp.asarray(a, jnp.float32),
                             jnp.float32(scale))
    np.testing.assert_allclose(flows[0], new_l, rtol=2e-4)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(0.0, 10.0))
def test_vaccination_never_increases_infections(seed, spread):
    logits = jax.random.normal(jax.random.PRNGKey(seed), (DAYS, C)) * spread
    key = jax.random.PRNGKey(0)
    _, with_vax, _ = VAX_EPISODE(key, logits)
    _, without, _ = NOVAX_EPISODE(key, logits)
    got, base = np.asarray(with_vax["new_infections"]), np.asarray(without["new_infections"])
    assert np.all(got <= base * (1 + 1e-5) + 1e-3)
    assert got.sum() < base.sum()


def test_prevented_metric_matches_counterfactual():
    env = make_env(prevented_metric=True)
    run = episode_fn(env)
    logits = jnp.zeros((DAYS, C))
    _, metrics, _ = run(jax.random.PRNGKey(0), logits)
    _, base, _ = NOVAX_EPISODE(jax.random.PRNGKey(0), logits)
    np.testing.assert_allclose(
        metrics["prevented_infections"], base["new_infections"] - metrics["new_infections"],
        rtol=1e-4, atol=1e-2)


def test_stochastic_mode_is_seeded():
    run = episode_fn(make_env(stochastic=True))
    logits = jnp.zeros((DAYS, C))
    a = run(jax.random.PRNGKey(5), logits)[1]["new_infections"]
    b = run(jax.random.PRNGKey(5), logits)[1]["new_infections"]
    c = run(jax.random.PRNGKey(6), logits)[1]["new_infections"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "field, value",
    [("num_cbgs", 0), ("num_days", -1), ("daily_budget", -0.1), ("daily_budget", 2.0),
     ("v0", 0.0), ("stochastic", "yes"), ("num_pois", 1.5), ("beta_base", -1.0),
     ("city_path", 3)],
)
def test_bad_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"env.{field}"):
        VaccineAllocation(**{**SMALL, field: value})


# ---------------------------------------------------------------- rules and evaluate


def test_rules_registry():
    assert set(RULES["medical"]) == {"none", "random", "population", "cases"}
    with pytest.raises(ValueError, match="allowed: none, random, population, cases"):
        get_rule("medical", "greedy")
    env = ENV
    state, ts = env.reset(jax.random.PRNGKey(0))
    pol = get_rule("medical", "population").make(env)
    doses = allocate_doses(pol(jax.random.PRNGKey(0), ts, state), 1000.0, env.population)
    np.testing.assert_allclose(doses, 1000.0 * env.population / env.population.sum(), rtol=1e-4)
    for name in RULES["medical"]:
        out = get_rule("medical", name).make(env)(jax.random.PRNGKey(1), ts, state)
        assert out.shape == (C,) and bool(jnp.all(jnp.isfinite(out)))


def write_toml(tmp_path: Path) -> Path:
    path = tmp_path / "small-medical.toml"
    path.write_text(
        'name = "small-medical"\n[env]\nkind = "medical"\n'
        f"num_cbgs = {C}\nnum_pois = {P}\nnum_days = {DAYS}\ncity_seed = 1\n"
    )
    return path


def test_evaluate_rule_orders(tmp_path):
    toml = str(write_toml(tmp_path))
    none = evaluate_rule(toml, "none")
    pop = evaluate_rule(toml, "population")
    assert none["doses_used"] == 0 and none["prevented_infections"] == 0
    assert pop["doses_used"] == pytest.approx(0.01 * DAYS * ENV.population.sum(), rel=1e-4)
    assert pop["infections"] < none["infections"]
    assert pop["prevented_infections"] == pytest.approx(none["infections"] - pop["infections"],
                                                        rel=1e-4)


def test_evaluate_cli_prints_one_json_line(tmp_path):
    toml = write_toml(tmp_path)
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "JAX_PLATFORMS": "cpu",
           "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "dyps_jax.evaluate", "--env", str(toml)]
    out = subprocess.run(cmd + ["--policy", "cases", "--episodes", "2", "--seed", "4"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["policy"] == "cases" and result["seed"] == 4 and result["episodes"] == 2
    for key in ("infections", "prevented_infections", "doses_used", "confirmed", "deaths"):
        assert np.isfinite(result[key])
    bad = subprocess.run(cmd + ["--policy", "greedy"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2 and "greedy" in bad.stderr and "population" in bad.stderr
