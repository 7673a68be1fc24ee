"""dyps_jax.envs.orders and dyps_jax.envs.ridehailing: demand, dynamics, masks and replay parity.

Most tests run a 4x4 city (city = "", the paper's generator) over 16 steps; its jitted functions are
built once per module. The replay-parity tests run the packaged presets against an independent
NumPy implementation of the rules (`reference_day`) written from the rules of
docs/scenarios.md.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dyps_jax.envs import core
from dyps_jax.envs import make as make_env
from dyps_jax.envs.hexgrid import HexGrid
from dyps_jax.envs.orders import (
    DURATION_PROBS,
    PRICE_MEAN,
    PRICE_STD,
    PaperDemand,
    ReplayDemand,
    duration_probs,
    sample_prices,
    validate_stream,
)
from dyps_jax.envs.ridehailing import RideHailing
from dyps_jax.rules import get_rule

REPO = Path(__file__).resolve().parents[1]
STREAMS = REPO / "src" / "dyps_jax" / "data" / "ridehailing_order_streams.npz"

# ================================================================= orders: the demand models


def test_duration_probs_truncated_and_renormalised():
    for lmax in range(1, 6):
        probs = duration_probs(lmax)
        head = np.asarray(DURATION_PROBS[:lmax])
        np.testing.assert_allclose(probs, head / head.sum())
        assert probs.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(duration_probs(3), [0.2 / 0.55, 0.2 / 0.55, 0.15 / 0.55])
    np.testing.assert_allclose(duration_probs(1), [1.0])
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match="max_duration"):
            duration_probs(bad)


def test_sample_prices_replaces_non_positive_draws_by_the_mean():
    m = 200_000
    for d in (1, 3, 5):
        mu, sigma = PRICE_MEAN[d - 1], PRICE_STD[d - 1]
        price = np.asarray(sample_prices(jax.random.PRNGKey(d), jnp.full((m,), d, jnp.int32)),
                           np.float64)
        assert np.all(price > 0)
        # P(Normal(mu, sigma) <= 0) of the draws are replaced by mu exactly.
        at_mean = np.mean(price == np.float32(mu))
        want = stats.norm.cdf(-mu / sigma)
        assert abs(at_mean - want) < 5 * math.sqrt(want / m) + 1e-4, (d, at_mean, want)
        # E[price] = mu + sigma * phi(mu / sigma) (clipping at 0 or redrawing would give other
        # means): the replacement is by the mean, not by 0 and not by a new draw.
        want_mean = mu + sigma * stats.norm.pdf(mu / sigma)
        assert abs(price.mean() - want_mean) < 5 * sigma / math.sqrt(m), (d, price.mean())
        ref = np.random.default_rng(d).normal(mu, sigma, 1_000_000)
        ref[ref <= 0] = mu
        assert price.std() == pytest.approx(ref.std(), rel=0.02)
    # Per-element durations index their own (mu, sigma).
    mixed = jnp.asarray(np.repeat(np.arange(1, 6), 20_000), jnp.int32)
    price = np.asarray(sample_prices(jax.random.PRNGKey(9), mixed)).reshape(5, -1)
    np.testing.assert_allclose(price.mean(-1), PRICE_MEAN, rtol=0.05)


DEMAND_GRID = HexGrid(5, 5)
DEMAND_RATES = np.stack([np.zeros(25), np.random.default_rng(0).integers(0, 10, 25),
                         np.full(25, 40.0)]).astype(np.float32)
DEMAND = PaperDemand(DEMAND_GRID, DEMAND_RATES, max_duration=3, max_new=32)
DEMAND_KEYS = 4000


DEMAND_SAMPLE = jax.jit(jax.vmap(DEMAND.sample, in_axes=(0, None)))


def _draws(t: int, seed: int):
    keys = jax.random.split(jax.random.PRNGKey(seed), DEMAND_KEYS)
    return jax.tree.map(np.asarray, DEMAND_SAMPLE(keys, jnp.int32(t)))


@pytest.fixture(scope="module")
def demand_draws():
    """DEMAND_KEYS draws of step 1 (the varied rates), as NumPy arrays."""
    return _draws(1, 0)


def test_paper_demand_counts_are_poisson(demand_draws):
    lam = DEMAND_RATES[1]
    count, generated = demand_draws.count, demand_draws.generated
    assert count.shape == (DEMAND_KEYS, 25)
    np.testing.assert_array_equal(count, generated)  # lambda <= 9 never fills 32 slots
    mean, var = generated.mean(0), generated.var(0)
    tol = 5 * np.sqrt(np.maximum(lam, 0.1) / DEMAND_KEYS)
    assert np.all(np.abs(mean - lam) < tol), (mean, lam)
    assert np.all(generated[:, lam == 0] == 0)
    big = lam >= 2
    np.testing.assert_allclose(var[big], lam[big], rtol=0.15)  # Poisson: variance = mean
    assert np.all(_draws(0, 1).generated == 0)  # lambda = 0 everywhere at step 0


def test_paper_demand_overflow_keeps_k_slots_and_counts_all():
    batch = _draws(2, 1)  # lambda = 40 > 32 slots
    count, generated = batch.count, batch.generated
    np.testing.assert_array_equal(count, np.minimum(generated, 32))
    assert generated.mean() == pytest.approx(40.0, rel=0.01)
    assert generated.max() > 32  # some draws overflow and are still counted as generated
    assert np.all(batch.price[count == 32] > 0)


def test_paper_demand_durations_follow_the_truncated_table(demand_draws):
    valid = np.arange(32) < demand_draws.count[..., None]
    durations = demand_draws.duration[valid]
    assert durations.min() >= 1 and durations.max() <= 3
    observed = np.bincount(durations, minlength=4)[1:]
    expected = duration_probs(3) * observed.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3, (observed, expected)


def test_paper_demand_destinations_uniform_over_rings(demand_draws):
    valid = np.arange(32) < demand_draws.count[..., None]
    origin = np.broadcast_to(np.arange(25)[None, :, None], valid.shape)[valid]
    dest, dur = demand_draws.destination[valid], demand_draws.duration[valid]
    hops = DEMAND_GRID.distance(origin, dest)
    assert np.all(hops >= 1) and np.all(hops <= dur)
    # Pooled chi-square over (origin, duration): every cell within `duration` equally likely.
    chi2, dof = 0.0, 0
    dist = DEMAND_GRID.distance(np.arange(25)[:, None], np.arange(25)[None, :])
    for g in range(25):
        for d in (1, 2, 3):
            sel = (origin == g) & (dur == d)
            if sel.sum() < 50:
                continue
            allowed = np.flatnonzero((dist[g] >= 1) & (dist[g] <= d))
            counts = np.bincount(dest[sel], minlength=25)[allowed]
            expected = sel.sum() / len(allowed)
            chi2 += float(((counts - expected) ** 2 / expected).sum())
            dof += len(allowed) - 1
    assert dof > 500
    assert stats.chi2.sf(chi2, dof) > 1e-3, (chi2, dof)


def test_paper_demand_empty_slots(demand_draws):
    empty = np.arange(32) >= demand_draws.count[..., None]
    assert empty.any()
    assert np.all(demand_draws.price[empty] == 0.0)
    assert np.all(demand_draws.price[~empty] > 0.0)


def test_paper_demand_rejects_bad_rates():
    with pytest.raises(ValueError, match="shape"):
        PaperDemand(DEMAND_GRID, np.ones((3, 24)), max_duration=3)
    with pytest.raises(ValueError, match=">= 0"):
        PaperDemand(DEMAND_GRID, -np.ones((3, 25)), max_duration=3)
    with pytest.raises(ValueError, match="max_duration"):
        PaperDemand(DEMAND_GRID, np.ones((3, 25)), max_duration=6)


GOOD_ROWS = [[0, 1, 2, 1, 10.0], [1, 3, 4, 2, 12.5], [2, 8, 0, 3, 7.0]]


@pytest.mark.parametrize("row,col,value,name,allowed", [
    (1, 0, 5, "t", "0..4"),
    (2, 0, 1.5, "t", "0..4"),
    (0, 1, 9, "origin", "0..8"),
    (1, 1, -1, "origin", "0..8"),
    (2, 2, 12, "destination", "0..8"),
    (0, 3, 0, "duration", "1..3"),
    (1, 3, 4, "duration", "1..3"),
])
def test_validate_stream_names_row_column_value_and_range(row, col, value, name, allowed):
    stream = np.array(GOOD_ROWS, np.float64)
    stream[row, col] = value
    with pytest.raises(ValueError) as err:
        validate_stream(stream, num_cells=9, horizon=5, max_duration=3, source="trips.csv")
    msg = str(err.value)
    for part in ("trips.csv", f"row {row}", name, repr(float(value)), allowed):
        assert part in msg, (part, msg)


def test_validate_stream_prices_and_shape():
    stream = np.array(GOOD_ROWS, np.float64)
    out = validate_stream(stream, 9, 5, 3)
    np.testing.assert_array_equal(out, stream)
    for bad in (-1.0, np.nan, np.inf):
        s = stream.copy()
        s[2, 4] = bad
        with pytest.raises(ValueError, match=r"row 2: price.*finite >= 0"):
            validate_stream(s, 9, 5, 3)
    with pytest.raises(ValueError, match="5 columns"):
        validate_stream(stream[:, :4], 9, 5, 3)


def random_stream(rng, n, horizon, num_cells, max_duration) -> np.ndarray:
    """An unsorted order stream with repeated (t, origin) pairs."""
    t = rng.integers(0, horizon, n)
    origin = rng.integers(0, num_cells, n)
    dest = rng.integers(0, num_cells, n)
    dur = rng.integers(1, max_duration + 1, n)
    price = np.round(rng.uniform(1.0, 50.0, n), 3)
    return np.stack([t, origin, dest, dur, price], -1).astype(np.float64)


def test_replay_tables_reproduce_the_stream():
    rng = np.random.default_rng(5)
    stream = random_stream(rng, 120, horizon=6, num_cells=9, max_duration=3)
    demand = ReplayDemand(stream, num_cells=9, horizon=6, max_duration=3)
    counts = np.zeros((6, 9), int)
    for t in range(6):
        batch = jax.tree.map(np.asarray, demand.sample(jax.random.PRNGKey(t), jnp.int32(t)))
        for cell in range(9):
            rows = stream[(stream[:, 0] == t) & (stream[:, 1] == cell)]  # stream order
            c = len(rows)
            counts[t, cell] = c
            assert batch.count[cell] == c and batch.generated[cell] == c
            np.testing.assert_allclose(batch.price[cell, :c], rows[:, 4], rtol=1e-6)
            np.testing.assert_array_equal(batch.destination[cell, :c], rows[:, 2])
            np.testing.assert_array_equal(batch.duration[cell, :c], rows[:, 3])
            assert np.all(batch.price[cell, c:] == 0)
    assert demand.max_new == counts.max()
    np.testing.assert_array_equal(demand.rates, counts)
    # The key is ignored: every episode replays the same day.
    a = demand.sample(jax.random.PRNGKey(0), jnp.int32(3))
    b = demand.sample(jax.random.PRNGKey(1), jnp.int32(3))
    np.testing.assert_array_equal(a.price, b.price)
    with pytest.raises(ValueError, match="replay rates"):
        ReplayDemand(stream, 9, 6, 3, rate_table=np.ones((6, 8)))
    with pytest.raises(ValueError, match="row"):
        ReplayDemand(stream, 9, 5, 3)  # steps 5 are out of a 5-step day


# ================================================================= the simulator on a small city

SMALL = RideHailing(rows=4, cols=4, city="", horizon=16, max_duration=3, drivers_per_cell=7,
                    max_candidates=8, city_seed=3)
N, K, T = SMALL.num_cells, SMALL.max_candidates, SMALL.horizon
DRIVERS = N * SMALL.drivers_per_cell


GREEDY = get_rule("ridehailing", "greedy").make(SMALL)
EPISODE_BATCH = 4


def _episode(key, greedy):
    """One episode of the small city. greedy False: uniformly random draws over all K + 1 slots
    (invalid, repeated, surplus); True: the Greedy rule."""
    k_reset, k_run = jax.random.split(key)
    state, ts0 = SMALL.reset(k_reset)

    def body(state, k):
        k_act, k_env = jax.random.split(k)
        random_draws = jax.random.randint(k_act, (N, K), 0, K + 1, jnp.int32)
        actions = jnp.where(greedy, GREEDY(k_act, None, state), random_draws)
        new_state, ts = SMALL.step(k_env, state, actions)
        return new_state, (state, actions, ts)

    final, (before, actions, steps) = jax.lax.scan(body, state, jax.random.split(k_run, T))
    return ts0, before, actions, steps, final


# Compiled once: EPISODE_BATCH episodes (vmapped over keys), random or greedy draws.
EPISODES = jax.jit(jax.vmap(_episode, in_axes=(0, None)))
STEP = jax.jit(SMALL.step)


def run_episodes(seed: int, greedy: bool = False):
    """EPISODE_BATCH episodes as NumPy: (reset timestep, states before each step, actions, timesteps,
    states after each step), leaves [E, T, ...]."""
    keys = jax.random.split(jax.random.PRNGKey(seed), EPISODE_BATCH)
    out = jax.tree.map(np.asarray, EPISODES(keys, jnp.asarray(greedy)))
    ts0, before, actions, steps, final = out
    after = jax.tree.map(lambda a, f: np.concatenate([a[:, 1:], f[:, None]], 1), before, final)
    return ts0, before, actions, steps, after


def at(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def expected_served(idle, valid, actions):
    """bool[N, K] from the module docstring: draws past min(idle, K) ignored, slot 0 and empty
    slots serve nothing, a slot drawn twice serves one order."""
    served = np.zeros_like(valid)
    for c in range(valid.shape[0]):
        for slot in actions[c, :min(int(idle[c]), actions.shape[1])]:
            if slot >= 1 and valid[c, slot - 1]:
                served[c, slot - 1] = True
    return served


def check_mask(ts, state, env=SMALL):
    """Action mask = [slot 0 True, slot k holds an order, draw d active iff d < idle]."""
    n, k = env.num_cells, env.max_candidates
    mask = np.asarray(ts.action_mask)
    assert mask.shape == (n, (k + 1) + k)
    assert mask[:, 0].all()
    np.testing.assert_array_equal(mask[:, 1:k + 1], state.orders.valid)
    np.testing.assert_array_equal(mask[:, k + 1:], np.arange(k)[None] < state.idle[:, None])


def check_transition(s, actions, ts, s2, env=SMALL):
    """Checks one step s -(actions)-> s2 against an independent reading of the rules."""
    n, k, lmax = env.num_cells, env.max_candidates, env.max_duration
    orders = s.orders
    served = expected_served(s.idle, orders.valid, actions)
    # Masks: only valid orders, once each, at most one driver per served order and per idle driver.
    assert not (served & ~orders.valid).any()
    dispatched = served.sum(-1)
    assert np.all(dispatched <= s.idle)
    assert np.all(dispatched <= np.minimum(s.idle, k))
    # Reward and GMV.
    value = np.where(served, orders.price, 0.0).sum(-1)
    np.testing.assert_allclose(ts.reward, env.reward_scale * value, rtol=1e-5, atol=1e-6)
    assert float(ts.metrics["gmv"]) == pytest.approx(value.sum(), rel=1e-5, abs=1e-4)
    assert float(ts.metrics["served"]) == served.sum()
    # Drivers: a served order of duration d moves a driver to its destination, idle d steps on.
    arriving = s.arriving.copy()
    for c, slot in zip(*np.nonzero(served)):
        arriving[orders.duration[c, slot] - 1, orders.destination[c, slot]] += 1
    np.testing.assert_array_equal(s2.idle, s.idle - dispatched + arriving[0])
    np.testing.assert_array_equal(s2.arriving, np.concatenate([arriving[1:], np.zeros((1, n))]))
    assert s2.arriving.shape == (lmax, n)
    assert int(s2.t) == int(s.t) + 1
    assert bool(ts.done) == (int(s2.t) == env.horizon)
    assert float(s2.served_total) == float(s.served_total) + served.sum()
    # Orders: the table is [waiting (K/2) | born now (K/2)]; the unserved orders born last step
    # (second half) move, in place, to the first half; served and older ones are gone; the new
    # orders fill the second half from its start.
    o2 = s2.orders
    half = k // 2
    for c in range(n):
        keep = orders.valid[c, half:] & ~served[c, half:]
        np.testing.assert_array_equal(o2.valid[c, :half], keep)
        np.testing.assert_array_equal(o2.age[c, :half], 1)
        np.testing.assert_array_equal(o2.age[c, half:], 0)
        np.testing.assert_array_equal(o2.price[c, :half][keep], orders.price[c, half:][keep])
        np.testing.assert_array_equal(o2.destination[c, :half][keep],
                                      orders.destination[c, half:][keep])
        np.testing.assert_array_equal(o2.duration[c, :half][keep], orders.duration[c, half:][keep])
        nv = int(o2.valid[c, half:].sum())
        assert o2.valid[c, half:half + nv].all() and not o2.valid[c, half + nv:].any()
    durations = o2.duration[o2.valid]
    assert np.all((durations >= 1) & (durations <= lmax))
    check_mask(ts, s2, env)
    return served


@pytest.mark.parametrize("seed", [0, 1])
def test_drivers_are_conserved_under_random_actions(seed):
    ts0, before, actions, steps, after = run_episodes(seed)
    assert after.idle.shape == (EPISODE_BATCH, T, N)
    totals = after.idle.sum(-1) + after.arriving.sum((-1, -2))
    np.testing.assert_array_equal(totals, DRIVERS)
    np.testing.assert_array_equal(before.idle[:, 0], SMALL.drivers_per_cell)
    assert after.idle.min() >= 0 and after.arriving.min() >= 0
    assert np.all(steps.metrics["served"].sum(-1) > 0)  # random draws do serve orders
    # Surplus draws really happen: cells with fewer idle drivers than draws, and cells with more.
    assert (before.idle < K).any() and (before.idle > K).any()
    # Invalid and repeated slots are drawn too.
    slot_valid = np.take_along_axis(
        np.concatenate([np.ones_like(before.orders.valid[..., :1]), before.orders.valid], -1),
        actions, -1)
    assert (~slot_valid).any()
    repeats = np.sort(actions, -1)
    assert ((np.diff(repeats, axis=-1) == 0) & (repeats[..., 1:] > 0)).any()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_episodes_respect_masks_and_rules(seed):
    ts0, before, actions, steps, after = run_episodes(seed)
    for e in range(EPISODE_BATCH):
        check_mask(at(ts0, e), at(at(before, e), 0))
        assert not bool(ts0.done[e]) and np.all(ts0.reward[e] == 0)
        served_any = 0
        for i in range(T):
            pick = lambda tree: at(at(tree, e), i)  # noqa: B023
            served = check_transition(pick(before), actions[e, i], pick(steps), pick(after))
            served_any += served.sum()
        assert served_any == after.served_total[e, -1]


@pytest.fixture(scope="module")
def mid_state():
    _, before, _, _, _ = run_episodes(11)
    return at(at(before, 0), 5)


@settings(max_examples=40, deadline=None)
@given(
    idle=st.lists(st.integers(0, K + 2), min_size=N, max_size=N),
    actions=st.lists(st.integers(0, K), min_size=N * K, max_size=N * K),
)
def test_step_with_arbitrary_draws_and_idle_counts(mid_state, idle, actions):
    state = mid_state.replace(idle=np.asarray(idle, np.int32))
    acts = np.asarray(actions, np.int32).reshape(N, K)
    s2, ts = STEP(jax.random.PRNGKey(0), state, acts)
    s2, ts = jax.tree.map(np.asarray, s2), jax.tree.map(np.asarray, ts)
    state = jax.tree.map(np.asarray, state)
    check_transition(state, acts, ts, s2)
    np.testing.assert_array_equal(np.asarray(SMALL.served_slots(state, acts)),
                                  expected_served(state.idle, state.orders.valid, acts))


def test_reward_gmv_orr_and_episode_length():
    ts0, before, actions, steps, after = run_episodes(7)
    assert steps.done.shape == (EPISODE_BATCH, T)
    assert np.all(steps.done[:, :-1] == False) and np.all(steps.done[:, -1])  # noqa: E712
    assert np.all(after.t[:, -1] == T)
    np.testing.assert_allclose(steps.reward.sum(-1), SMALL.reward_scale * steps.metrics["gmv"],
                               rtol=1e-5, atol=1e-6)
    orr = steps.metrics["orr"]
    assert np.all(orr[:, :-1] == 0)
    served, generated = after.served_total[:, -1], after.generated_total[:, -1]
    np.testing.assert_array_equal(served, steps.metrics["served"].sum(-1))
    assert np.all((orr[:, -1] > 0) & (orr[:, -1] < 1))
    np.testing.assert_allclose(orr[:, -1], served / generated, rtol=1e-6)
    assert np.all(np.diff(after.generated_total, axis=-1) >= 0)
    assert np.all(generated >= served)


def test_stochastic_days_differ_between_keys_and_greedy_fills_drivers():
    ts0, before, actions, steps, after = run_episodes(3, greedy=True)
    gmv = steps.metrics["gmv"].sum(-1)
    orr = steps.metrics["orr"].sum(-1)
    generated = after.generated_total[:, -1]
    assert len(set(generated.tolist())) == EPISODE_BATCH
    assert len(set(gmv.round(3).tolist())) == EPISODE_BATCH
    assert np.all((orr > 0) & (orr < 1))
    np.testing.assert_array_equal(after.idle.sum(-1) + after.arriving.sum((-1, -2)), DRIVERS)
    # Greedy serves min(idle, candidates) orders per cell, the most expensive first.
    valid, price, idle = before.orders.valid, before.orders.price, before.idle
    active = np.arange(K) < np.minimum(idle, K)[..., None]  # [E, T, N, D]
    drawn = (actions[..., None] == np.arange(1, K + 1)) & active[..., None]  # [E, T, N, D, K]
    served = drawn.any(-2) & valid
    np.testing.assert_array_equal(served.sum(-1), np.minimum(idle, valid.sum(-1)))
    lowest_served = np.where(served, price, np.inf).min(-1)
    highest_left = np.where(valid & ~served, price, -np.inf).max(-1)
    assert np.all(lowest_served >= highest_left)
    np.testing.assert_array_equal(served.sum((-1, -2)), steps.metrics["served"])


# ================================================================= order patience (replay stream)

#        t, origin, destination, duration, price
TRIPS = [[0, 0, 4, 2, 10.0],  # A
         [0, 0, 1, 1, 5.0],  # B
         [0, 0, 3, 3, 8.0],  # C
         [1, 0, 1, 1, 6.0],  # D
         [1, 4, 0, 1, 7.0],  # E
         [3, 8, 7, 1, 9.0]]  # F


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("trips") / "tiny.csv"
    path.write_text("t,origin,destination,duration,price\n"
                    + "".join(",".join(f"{v:g}" for v in row) + "\n" for row in TRIPS))
    env = RideHailing(rows=3, cols=3, city="", demand="replay", trips_path=str(path), horizon=6,
                      max_duration=3, drivers_per_cell=3, max_candidates=6)
    return env, jax.jit(env.reset), jax.jit(env.step)


def drive(tiny, plan):
    """Runs the 6 steps; plan: {t: {cell: draws}}; returns the states (t = 0..6) and timesteps."""
    env, reset, step = tiny
    key = jax.random.PRNGKey(0)
    state, ts = reset(key)
    states, steps = [jax.tree.map(np.asarray, state)], [jax.tree.map(np.asarray, ts)]
    for t in range(env.horizon):
        actions = np.zeros((9, 6), np.int32)
        for cell, draws in plan.get(t, {}).items():
            actions[cell, :len(draws)] = draws
        new_state, ts = step(key, state, actions)
        new_state, ts = jax.tree.map(np.asarray, new_state), jax.tree.map(np.asarray, ts)
        check_transition(states[-1], actions, ts, new_state, env=env)
        state = new_state
        states.append(state)
        steps.append(ts)
    return states, steps


def table(state, cell):
    """(price, age) of the valid candidates of `cell`, in slot order."""
    o = state.orders
    return [(float(p), int(a)) for p, a, v in zip(o.price[cell], o.age[cell], o.valid[cell]) if v]


def test_unserved_order_waits_one_step_then_expires(tiny):
    states, steps = drive(tiny, {})
    assert table(states[0], 0) == [(10.0, 0), (5.0, 0), (8.0, 0)]
    # Born at 0, not served: still a candidate at 1 (age 1, before D born at 1), gone at 2.
    assert table(states[1], 0) == [(10.0, 1), (5.0, 1), (8.0, 1), (6.0, 0)]
    assert table(states[2], 0) == [(6.0, 1)]
    assert table(states[3], 0) == []
    assert table(states[1], 4) == [(7.0, 0)] and table(states[3], 4) == []
    assert table(states[3], 8) == [(9.0, 0)] and table(states[5], 8) == []
    np.testing.assert_array_equal(states[-1].idle, 3)  # nobody moved
    assert float(states[-1].generated_total) == len(TRIPS)
    assert [float(ts.metrics["orr"]) for ts in steps] == [0.0] * 7


def test_served_drivers_reappear_at_the_destination_after_the_duration(tiny):
    env = tiny[0]
    states, steps = drive(tiny, {
        # Slots: 1..3 wait from last step (in place), 4..6 are born now.
        0: {0: [4, 6, 6, 4]},  # 3 idle: A and C (C drawn twice, A again by the surplus draw)
        1: {0: [2, 4]},  # 1 idle: B only (waiting in slot 2); the draw of D is past the idle drivers
        2: {0: [1, 1]},  # 0 idle: D (now waiting in slot 1) is not served
        3: {8: [0, 4]},  # "stay" then F
    })
    r = lambda i: steps[i].reward / env.reward_scale
    assert r(1)[0] == pytest.approx(18.0) and r(2)[0] == pytest.approx(5.0)
    assert r(3)[0] == 0.0 and r(4)[8] == pytest.approx(9.0)
    idle = [s.idle for s in states]
    assert idle[1][0] == 1 and idle[2][0] == 0 and idle[3][0] == 0
    assert table(states[1], 0) == [(5.0, 1), (6.0, 0)]  # A and C never come back
    assert table(states[2], 0) == [(6.0, 1)]  # D waits (unserved), B is gone
    assert table(states[3], 0) == []
    # A (duration 2, served at 0) is idle at cell 4 at t = 2, not before.
    assert idle[1][4] == 3 and idle[2][4] == 4
    assert states[1].arriving[0, 4] == 1
    # C (duration 3, served at 0) is idle at cell 3 at t = 3.
    assert idle[2][3] == 3 and idle[3][3] == 4
    assert states[1].arriving[1, 3] == 1 and states[2].arriving[0, 3] == 1
    # B (duration 1, served at age 1 at t = 1) is idle at cell 1 at t = 2.
    assert idle[1][1] == 3 and idle[2][1] == 4
    # F (duration 1, served at 3) is idle at cell 7 at t = 4.
    assert idle[4][7] == 4 and idle[4][8] == 2
    for s in states:
        assert s.idle.sum() + s.arriving.sum() == 27
    # Masks: no draw is active in a cell without idle drivers.
    assert not steps[2].action_mask[0, 7:].any() and steps[2].action_mask[0, 7:].shape == (6,)
    assert steps[-1].done and not steps[-2].done
    assert float(steps[-1].metrics["orr"]) == pytest.approx(4 / 6)
    assert sum(float(ts.metrics["gmv"]) for ts in steps) == pytest.approx(10 + 8 + 5 + 9)


# ================================================================= replay parity with the paper

PARITY = {  # (env, rule): (GMV, ORR) of this simulator; the paper's Table 7 in comments
    ("ridehailing-1", "greedy"): (220_775.79, 0.37034),  # 220,770 / 0.37
    ("ridehailing-1", "nearest"): (160_185.3, 0.37476),
    ("ridehailing-2", "greedy"): (539_449.2, 0.23592),  # 539,450 / 0.23
    ("ridehailing-2", "nearest"): (340_166.7, 0.23834),
}
PAPER = {("ridehailing-1", "greedy"): (220_770, 0.37), ("ridehailing-2", "greedy"): (539_450, 0.23)}
CITY_KEY = {"ridehailing-1": "rh1_36", "ridehailing-2": "rh2_100"}


def reference_day(stream: np.ndarray, num_cells: int, drivers: int, rule: str,
                  max_candidates: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The rule on one replayed day, plain NumPy from docs/scenarios.md; per-step (gmv, served).

    Candidates of a cell at t: its orders born at t - 1 and not served, then those born at t, each
    in stream order; Greedy ranks them by price (descending, stable), Nearest keeps that order; a
    cell serves min(idle, candidates); a driver serving an order of duration d at t is idle at the
    destination at t + d.
    """
    t_col = stream[:, 0].astype(np.int64)
    origin, dest = stream[:, 1].astype(np.int64), stream[:, 2].astype(np.int64)
    duration, price = stream[:, 3].astype(np.int64), stream[:, 4]
    horizon = int(t_col.max()) + 1
    idle = np.full(num_cells, drivers, np.int64)
    arrive = np.zeros((horizon + int(duration.max()) + 1, num_cells), np.int64)
    waiting = np.zeros(0, np.int64)
    gmv, served_count = np.zeros(horizon), np.zeros(horizon, np.int64)
    for t in range(horizon):
        idle += arrive[t]
        new = np.flatnonzero(t_col == t)  # stream order
        cand = np.concatenate([waiting, new])
        cells = origin[cand]
        assert np.bincount(cells, minlength=num_cells).max() <= max_candidates
        position = np.arange(len(cand))
        if rule == "greedy":
            order = np.lexsort((position, -price[cand], cells))
        else:
            order = np.lexsort((position, cells))
        ranked, ranked_cells = cand[order], cells[order]
        first = np.searchsorted(ranked_cells, ranked_cells)  # first index of each cell's block
        take = (np.arange(len(ranked)) - first) < idle[ranked_cells]
        chosen = ranked[take]
        gmv[t], served_count[t] = price[chosen].sum(), len(chosen)
        idle -= np.bincount(origin[chosen], minlength=num_cells)
        np.add.at(arrive, (t + duration[chosen], dest[chosen]), 1)
        is_served = np.zeros(len(stream), bool)
        is_served[chosen] = True
        waiting = new[~is_served[new]]
        assert idle.min() >= 0
    return gmv, served_count


@pytest.fixture(scope="module")
def order_streams():
    with np.load(STREAMS) as data:
        return {k: data[f"{k}_orders"] for k in CITY_KEY.values()}


def test_reference_day_on_a_hand_made_stream():
    # One cell, one driver: greedy takes the 10 at t=0, the driver is back at t=2 (duration 2) and
    # the 7 born at t=1 (age 1) is still there at t=2.
    stream = np.array([[0, 0, 0, 2, 3.0], [0, 0, 0, 2, 10.0], [1, 0, 0, 1, 7.0],
                       [2, 0, 0, 1, 1.0]])
    gmv, served = reference_day(stream, 1, 1, "greedy")
    np.testing.assert_allclose(gmv, [10.0, 0.0, 7.0])
    gmv, served = reference_day(stream, 1, 1, "nearest")
    np.testing.assert_allclose(gmv, [3.0, 0.0, 7.0])


def _rule_day(env, rule):
    policy = get_rule("ridehailing", rule).make(env)

    def run(key):
        state, ts = env.reset(key)

        def body(carry, k):
            state, ts = carry
            state, ts = env.step(k, state, policy(k, ts, state))
            return (state, ts), ts.metrics

        return jax.lax.scan(body, (state, ts), jax.random.split(key, env.max_steps))[1]

    return jax.tree.map(np.asarray, jax.jit(run)(jax.random.PRNGKey(0)))


@pytest.mark.parametrize("name,rule", sorted(PARITY))
def test_replay_parity_with_table_7_and_the_reference(name, rule, order_streams):
    env = make_env(name, demand="replay")
    assert env.demand == "replay" and env.horizon == 144
    metrics = _rule_day(env, rule)
    gmv, orr = float(metrics["gmv"].sum()), float(metrics["orr"].sum())
    want_gmv, want_orr = PARITY[name, rule]
    assert abs(gmv - want_gmv) <= 1.0, gmv
    assert abs(orr - want_orr) <= 1e-4, orr
    if (name, rule) in PAPER:
        paper_gmv, paper_orr = PAPER[name, rule]
        assert abs(gmv - paper_gmv) / paper_gmv < 1e-4
        assert abs(orr - paper_orr) < 0.01
    stream = order_streams[CITY_KEY[name]]
    ref_gmv, ref_served = reference_day(stream, env.num_cells, env.drivers_per_cell, rule)
    np.testing.assert_array_equal(metrics["served"], ref_served)
    np.testing.assert_allclose(metrics["gmv"], ref_gmv, rtol=1e-5, atol=1e-2)
    assert gmv == pytest.approx(ref_gmv.sum(), abs=1.0)
    assert orr == pytest.approx(ref_served.sum() / len(stream), abs=1e-6)


def test_replay_preset_builds_through_core():
    spec = core.load_preset("ridehailing-2")["env"]
    kind = spec.pop("kind")
    env = core.build(kind, {**spec, "demand": "replay"})
    assert (env.num_cells, env.max_duration, env.max_candidates) == (100, 5, 50)
    assert env.demand_model.max_new <= env.max_candidates


# ================================================================= the evaluate CLI

def _cli(*args):
    env = {"PYTHONPATH": str(REPO / "src"), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "dyps_jax.evaluate", *args], capture_output=True,
                          text=True, env=env, timeout=180)


def test_evaluate_cli_replay_greedy():
    out = _cli("--env", "ridehailing-1", "--policy", "greedy", "--replay")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["demand"] == "replay" and result["policy"] == "greedy"
    assert abs(result["gmv"] - 220_775.79) <= 1.0
    assert abs(result["orr"] - 0.37034) <= 1e-4


def test_evaluate_cli_unknown_policy():
    out = _cli("--env", "ridehailing-1", "--policy", "cases", "--replay")
    assert out.returncode == 2
    for name in ("cases", "greedy", "nearest", "random"):
        assert name in out.stderr, out.stderr


# ================================================================= parameter validation

@pytest.mark.parametrize("params,field,allowed", [
    ({"demand": "uber"}, "env.demand", "poisson, replay, gravity"),
    ({"city": "nyc"}, "env.city", "rh1_36, rh2_100"),
    ({"city": "rh2_100"}, "env.city", "100 cells"),
    ({"city": "rh1_36", "rows": 10, "cols": 10}, "env.city", "36 cells"),
    ({"city": "rh1_36", "horizon": 100}, "env.city", "144 steps"),
    ({"city": "", "demand": "replay"}, "env.demand", "env.city or env.trips_path"),
    ({"rows": 6.0}, "env.rows", "integer"),
    ({"cols": "6"}, "env.cols", "integer"),
    ({"max_candidates": 0}, "env.max_candidates", ">= 2"),
    ({"drivers_per_cell": -1}, "env.drivers_per_cell", ">= 0"),
])
def test_bad_parameters_name_the_field(params, field, allowed):
    with pytest.raises(ValueError) as err:
        RideHailing(**params)
    assert field in str(err.value) and allowed in str(err.value), str(err.value)


def test_unknown_parameter_through_core():
    with pytest.raises(ValueError, match="unknown parameter"):
        make_env("ridehailing-1", num_drivers=3)
