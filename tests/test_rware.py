"""The coloured warehouse against the reference `rware` 2.0.0, plus the SePS colour rules.

With one colour our environment must reproduce `rware.warehouse.Warehouse` step for step: states are
injected into both, both are stepped with the same actions, and positions, directions, carried
shelves, shelf positions, requests, rewards and observations are compared. Newly drawn requests are
random in both, so requests are compared as sets minus the new draws.

Known deviation (documented in `rware._resolve_moves`): when equally long chains compete for one
cell, the reference picks by Python set order of cell tuples; we pick the lower robot index. The
randomised comparison therefore leaves out states with such ties.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rware.warehouse import Direction, RewardType, Warehouse

from dyps_jax.envs import build, load_preset, make
from dyps_jax.envs.rware import ColouredWarehouse, WarehouseState

H, W = 20, 10
N, R = 8, 4
ENV = ColouredWarehouse(num_agents=N, request_queue_size=R, num_colours=1)
STEP = jax.jit(ENV.step)
HOME = ENV._shelf_home  # int32[80], row-major like the reference's shelf list
UP, DOWN, LEFT, RIGHT = range(4)
NOOP, FWD, TL, TR, TOGGLE = range(5)


def shelf_at(x: int, y: int) -> int:
    """Index of the shelf whose home is (x, y)."""
    return int(np.flatnonzero(HOME == y * W + x)[0])


def make_state(robots, carried=None, moved=None, requests=None, colours=None, n=N, r=R):
    """A WarehouseState from (x, y, dir) per robot; the missing robots park on row 0, facing up.

    carried: {robot: shelf} (the shelf is put on the robot's cell); moved: {shelf: (x, y)};
    requests: shelf indices (default: the last r shelves, far from every scenario).
    """
    robots = list(robots) + [(i, 0, UP) for i in range(len(robots), n)]
    cells = np.array([y * W + x for x, y, _ in robots], np.int32)
    shelf_cell = HOME.copy()
    carry = np.full(n, -1, np.int32)
    for shelf, (x, y) in (moved or {}).items():
        shelf_cell[shelf] = y * W + x
    for robot, shelf in (carried or {}).items():
        carry[robot] = shelf
        shelf_cell[shelf] = cells[robot]
    return WarehouseState(
        agent_cell=jnp.asarray(cells),
        agent_dir=jnp.asarray([d for _, _, d in robots], jnp.int32),
        carried=jnp.asarray(carry),
        shelf_cell=jnp.asarray(shelf_cell),
        shelf_colour=jnp.asarray(np.zeros(80, np.int32) if colours is None else colours, jnp.int32),
        requests=jnp.asarray(list(range(80 - r, 80)) if requests is None else requests, jnp.int32),
        step=jnp.zeros((), jnp.int32),
    )


def reference_from(state) -> Warehouse:
    """The reference warehouse holding the same (single-colour) state."""
    s = jax.tree.map(np.asarray, state)
    ref = Warehouse(
        shelf_columns=3, column_height=8, shelf_rows=2, n_agents=len(s.agent_cell), msg_bits=0,
        sensor_range=1, request_queue_size=len(s.requests), max_inactivity_steps=None,
        max_steps=500, reward_type=RewardType.INDIVIDUAL,
    )  # fmt: skip
    ref.reset(seed=0)
    for agent, cell, d, c in zip(ref.agents, s.agent_cell, s.agent_dir, s.carried):
        agent.x, agent.y, agent.dir = int(cell % W), int(cell // W), Direction(int(d))
        agent.carrying_shelf = ref.shelfs[c] if c >= 0 else None
    for shelf, cell in zip(ref.shelfs, s.shelf_cell):
        shelf.x, shelf.y = int(cell % W), int(cell // W)
    ref.request_queue = [ref.shelfs[i] for i in s.requests]
    ref._recalc_grid()
    return ref


def read_reference(ref: Warehouse) -> dict:
    index = {id(s): i for i, s in enumerate(ref.shelfs)}
    return {
        "agent_cell": np.array([a.y * W + a.x for a in ref.agents]),
        "agent_dir": np.array([a.dir.value for a in ref.agents]),
        "carried": np.array(
            [index[id(a.carrying_shelf)] if a.carrying_shelf else -1 for a in ref.agents]
        ),
        "shelf_cell": np.array([s.y * W + s.x for s in ref.shelfs]),
        "requests": {index[id(s)] for s in ref.request_queue},
    }


def reference_obs_columns(obs: np.ndarray) -> np.ndarray:
    """Our single-colour observation from the reference's flat one: drop neighbour directions."""
    own, cells = obs[:, :8], obs[:, 8:].reshape(len(obs), 9, 7)
    return np.concatenate([own, cells[:, :, [0, 5, 6]].reshape(len(obs), -1)], axis=1)


def assert_same_step(state, actions, seed=0):
    """Steps ours and the reference from `state`; asserts they agree. Returns our result."""
    new, ts = STEP(jax.random.key(seed), state, jnp.asarray(actions, jnp.int32))
    assert_matches_reference(state, actions, new, ts)
    return new, ts


def assert_matches_reference(state, actions, new, ts):
    """Steps the reference from `state` and compares with our result `new, ts`."""
    ref = reference_from(state)
    old_requests = set(np.asarray(state.requests).tolist())
    ref_obs, ref_reward, _, _, _ = ref.step([int(a) for a in actions])
    expect = read_reference(ref)
    for name in ("agent_cell", "agent_dir", "carried", "shelf_cell"):
        np.testing.assert_array_equal(np.asarray(getattr(new, name)), expect[name], err_msg=name)
    ours = set(np.asarray(new.requests).tolist())
    assert len(ours) == len(expect["requests"]) == len(old_requests)
    assert ours & old_requests == expect["requests"] & old_requests  # new draws aside
    np.testing.assert_array_equal(np.asarray(ts.reward), np.asarray(ref_reward, np.float32))
    obs, ref_obs = np.asarray(ts.obs), reference_obs_columns(np.stack(ref_obs))
    if ours != expect["requests"]:  # different random draws: requested flags may differ
        obs, ref_obs = np.delete(obs, np.s_[10::3], 1), np.delete(ref_obs, np.s_[10::3], 1)
    np.testing.assert_array_equal(obs, ref_obs)


def cells_of(state, robots):
    return [(int(c % W), int(c // W)) for c in np.asarray(state.agent_cell)[robots]]


# ------------------------------------------------------------------------- catalogue vs reference
def test_forward_into_free_cell_and_walls():
    state = make_state([(3, 5, DOWN), (9, 5, RIGHT), (0, 19, DOWN), (7, 3, UP), (5, 1, UP)])
    new, _ = assert_same_step(state, [FWD, FWD, FWD, FWD, FWD, 0, 0, 0])
    # robot 4 runs into parked robot 5 at (5, 0)
    assert cells_of(new, range(5)) == [(3, 6), (9, 5), (0, 19), (7, 2), (5, 1)]


def test_turning():
    robots = [(i, 9, i % 4) for i in range(8)]  # every direction, turned left then right
    new, _ = assert_same_step(make_state(robots), [TL] * 4 + [TR] * 4)
    assert np.asarray(new.agent_dir).tolist() == [LEFT, RIGHT, DOWN, UP, RIGHT, LEFT, UP, DOWN]


def test_follow_chain_moves_together():
    state = make_state([(3, 5, DOWN), (3, 4, DOWN), (3, 3, DOWN)])
    new, _ = assert_same_step(state, [FWD, FWD, FWD, 0, 0, 0, 0, 0])
    assert cells_of(new, [0, 1, 2]) == [(3, 6), (3, 5), (3, 4)]


def test_swap_fails_for_its_whole_component():
    state = make_state([(3, 5, DOWN), (3, 6, UP), (3, 4, DOWN), (4, 6, LEFT)])
    new, _ = assert_same_step(state, [FWD] * 4 + [0] * 4)
    assert cells_of(new, [0, 1, 2, 3]) == [(3, 5), (3, 6), (3, 4), (4, 6)]


def test_cycle_rotates_and_its_tail_waits():
    # On a grid every cycle has even length, so a 2x2 square is the smallest rotation.
    square = [(3, 10, RIGHT), (4, 10, DOWN), (4, 11, LEFT), (3, 11, UP)]
    new, _ = assert_same_step(make_state(square + [(2, 10, RIGHT)]), [FWD] * 5 + [0] * 3)
    assert cells_of(new, [0, 1, 2, 3, 4]) == [(4, 10), (4, 11), (3, 11), (3, 10), (2, 10)]


def test_chain_into_standing_robot_is_blocked():
    state = make_state([(3, 5, DOWN), (3, 6, UP), (3, 4, DOWN)])
    new, _ = assert_same_step(state, [FWD, NOOP, FWD] + [0] * 5)
    assert cells_of(new, [0, 1, 2]) == [(3, 5), (3, 6), (3, 4)]


def test_contested_cell_longer_chain_wins():
    state = make_state([(2, 12, RIGHT), (4, 12, LEFT), (5, 12, LEFT)])
    new, _ = assert_same_step(state, [FWD, FWD, FWD] + [0] * 5)
    assert cells_of(new, [0, 1, 2]) == [(2, 12), (3, 12), (4, 12)]


def test_contested_cell_tie_goes_to_lower_index():
    # (4, 12) is a cell where the reference's set order happens to pick the lower index too.
    new, _ = assert_same_step(make_state([(3, 12, RIGHT), (5, 12, LEFT)]), [FWD, FWD] + [0] * 6)
    assert cells_of(new, [0, 1]) == [(4, 12), (5, 12)]
    # Around (3, 12) the reference picks robot 1 (set order); we still pick the lower index.
    new, _ = STEP(jax.random.key(0), make_state([(2, 12, RIGHT), (4, 12, LEFT)]),
                  jnp.asarray([FWD, FWD] + [0] * 6))  # fmt: skip
    assert cells_of(new, [0, 1]) == [(3, 12), (4, 12)]


def test_carrying_robot_and_standing_shelves():
    carried = {0: shelf_at(1, 3), 2: shelf_at(1, 4), 3: shelf_at(2, 4), 4: shelf_at(1, 5),
               5: shelf_at(2, 5)}  # fmt: skip
    robots = [
        (3, 2, RIGHT),  # carrying, into the standing shelf at (4, 2): blocked
        (6, 2, LEFT),  # empty-handed, under the shelf at (5, 2): moves
        (0, 12, DOWN),  # carrying, behind a carrying robot that leaves: follows
        (0, 13, DOWN),
        (9, 12, DOWN),  # carrying, behind a carrying robot that stands: blocked
        (9, 13, DOWN),
    ]
    new, _ = assert_same_step(make_state(robots, carried), [FWD] * 5 + [NOOP, 0, 0])
    assert cells_of(new, range(6)) == [(3, 2), (5, 2), (0, 13), (0, 14), (9, 12), (9, 13)]


def test_load_unload_and_highway_refusal():
    robots = [(1, 1, UP), (0, 5, UP), (2, 2, UP), (0, 6, UP), (4, 18, UP)]
    carried = {2: shelf_at(2, 2), 3: shelf_at(2, 3), 4: shelf_at(1, 10)}
    new, _ = assert_same_step(make_state(robots, carried), [TOGGLE] * 4 + [NOOP] + [0] * 3)
    # loads the shelf under it; nothing to load; unloads off the highway; refused on the highway;
    # noop never drops a shelf
    expected = [shelf_at(1, 1), -1, -1, shelf_at(2, 3), shelf_at(1, 10)]
    assert np.asarray(new.carried)[:5].tolist() == expected


def test_delivery_at_goal():
    wanted, other = shelf_at(1, 10), shelf_at(2, 10)
    robots = [(4, 18, DOWN), (5, 19, UP), (3, 19, RIGHT)]
    carried = {0: wanted, 1: other, 2: shelf_at(7, 10)}
    requests = [wanted, shelf_at(7, 10), 70, 71]
    state = make_state(robots, carried, requests=requests)
    new, ts = assert_same_step(state, [FWD, NOOP, NOOP] + [0] * 5)
    assert np.asarray(ts.reward).tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert float(ts.metrics["deliveries"]) == 1.0
    reqs = set(np.asarray(new.requests).tolist())
    assert wanted not in reqs and {shelf_at(7, 10), 70, 71} <= reqs and len(reqs) == 4
    # A requested shelf already on a goal is delivered without moving.
    state = make_state(robots, carried, requests=[other, 70, 71, 72])
    _, ts = assert_same_step(state, [0] * 8)
    assert np.asarray(ts.reward).tolist() == [0, 1, 0, 0, 0, 0, 0, 0]


# ------------------------------------------------------------------- randomised, vs reference
def random_state(rng, n, r):
    """A dense random state: robots packed in a 6x6 window (often at the goals), some carrying."""
    x0 = rng.integers(0, W - 5)
    y0 = H - 6 if rng.random() < 0.3 else rng.integers(0, H - 5)
    local = rng.choice(36, n, replace=False)
    cells = (y0 + local // 6) * W + x0 + local % 6
    shelf_cell, carried = HOME.copy(), np.full(n, -1)
    for i in rng.permutation(n):
        if rng.random() < 0.5:
            under = np.flatnonzero(shelf_cell == cells[i])
            free = np.setdiff1d(np.flatnonzero(~np.isin(shelf_cell, cells)), carried)
            carried[i] = under[0] if under.size else rng.choice(free)
            shelf_cell[carried[i]] = cells[i]
    held = carried[carried >= 0]
    requests = list(held[rng.random(held.size) < 0.6][:r])
    rest = np.setdiff1d(np.arange(80), requests)
    requests += list(rng.choice(rest, r - len(requests), replace=False))
    state = WarehouseState(
        agent_cell=cells.astype(np.int32), agent_dir=rng.integers(0, 4, n).astype(np.int32),
        carried=carried.astype(np.int32), shelf_cell=shelf_cell.astype(np.int32),
        shelf_colour=np.zeros(80, np.int32), requests=np.array(requests, np.int32),
        step=np.zeros((), np.int32),
    )  # fmt: skip
    actions = rng.choice(5, n, p=[0.1, 0.5, 0.1, 0.1, 0.2]).astype(np.int32)
    return state, actions


def has_tie(state, actions) -> bool:
    """Do equally long chains compete for a cell? (Plain-Python re-reading of the reference.)"""
    cell, n = np.asarray(state.agent_cell), len(state.agent_cell)
    x, y, d = cell % W, cell // W, np.asarray(state.agent_dir)
    fwd = np.asarray(actions) == FWD
    tx = np.where(fwd, np.clip(x + np.array([0, 0, -1, 1])[d], 0, W - 1), x)
    ty = np.where(fwd, np.clip(y + np.array([-1, 1, 0, 0])[d], 0, H - 1), y)
    target = ty * W + tx
    at = {int(c): i for i, c in enumerate(cell)}
    shelves, carried = set(np.asarray(state.shelf_cell).tolist()), np.asarray(state.carried)
    for i in range(n):
        t = int(target[i])
        carrier_there = t in at and carried[at[t]] >= 0
        if carried[i] >= 0 and t != cell[i] and t in shelves and not carrier_there:
            target[i] = cell[i]
    nxt = [i if target[i] == cell[i] else at.get(int(target[i]), -1) for i in range(n)]
    paths = {}
    for i in range(n):
        path, j = [i], nxt[i]
        while j >= 0 and j not in path:
            path.append(j)
            j = nxt[j]
        if j < 0:
            paths[i] = path
    height = {}
    for path in paths.values():
        for m, v in enumerate(path):
            height[v] = max(height.get(v, 0), m)
    groups = {}
    for i in paths:
        groups.setdefault((nxt[i], int(target[i]) if nxt[i] < 0 else -1), []).append(height[i])
    return any(h.count(max(h)) > 1 for h in groups.values())


def test_random_states_match_reference():
    n, r, m = 16, 8, 300
    env = dataclasses.replace(ENV, num_agents=n, request_queue_size=r)
    rng = np.random.default_rng(0)
    samples = [random_state(rng, n, r) for _ in range(m)]
    states = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *[s for s, _ in samples])
    actions = jnp.asarray(np.stack([a for _, a in samples]))
    news, tss = jax.jit(jax.vmap(env.step))(jax.random.split(jax.random.key(1), m), states, actions)
    tie_free = [i for i in range(m) if not has_tie(*samples[i])]
    assert len(tie_free) > m // 2
    moved = stuck = delivered = 0
    for i in tie_free:
        new, ts = jax.tree.map(lambda v, i=i: v[i], (news, tss))
        assert_matches_reference(samples[i][0], samples[i][1], new, ts)
        still = np.asarray(new.agent_cell) == samples[i][0].agent_cell
        moved += int((~still).sum())
        stuck += int((still & (samples[i][1] == FWD)).sum())
        delivered += int(np.asarray(ts.reward).sum())
    # the sample exercised moves, blocked moves and deliveries
    assert moved > 2 * len(tie_free) and stuck > 2 * len(tie_free) and delivered > 5


# ------------------------------------------------------------------------------ colour rules
ENV2 = ColouredWarehouse()  # 8 robots, 2 colours: robots 0-3 colour 0, robots 4-7 colour 1
STEP2 = jax.jit(ENV2.step)
PARKED = [(1, 0, UP), (2, 0, UP), (3, 0, UP)]  # robots 1-3, out of the way


def raw_action(robot: int, effective: int) -> int:
    """The action robot `robot` must send to do `effective` (colour c rotates a to a - c mod 5)."""
    return (effective + int(ENV2.agent_colour[robot])) % 5


def test_robot_colours_are_fixed_blocks():
    assert ENV2.agent_colour.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ColouredWarehouse(num_agents=16).agent_colour.tolist() == [0] * 8 + [1] * 8
    assert ColouredWarehouse(num_colours=3).agent_colour.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_action_rotation_per_colour():
    state = make_state([(3, 5, DOWN)] + PARKED + [(6, 5, DOWN)])
    outcomes = []
    for a in range(5):
        new, _ = STEP2(jax.random.key(0), state, jnp.asarray([a, 0, 0, 0, a, 0, 0, 0]))
        outcomes.append((cells_of(new, [0, 4]), np.asarray(new.agent_dir)[[0, 4]].tolist()))
    # robot 0 (colour 0) does a; robot 4 (colour 1) does a - 1: 1 noop, 2 forward, 3 left, 4 right
    assert [o[0][0] for o in outcomes] == [(3, 5), (3, 6), (3, 5), (3, 5), (3, 5)]
    assert [o[0][1] for o in outcomes] == [(6, 5), (6, 5), (6, 6), (6, 5), (6, 5)]
    assert [o[1][1] for o in outcomes] == [DOWN, DOWN, DOWN, RIGHT, LEFT]
    # raw 0 is toggle-load for colour 1
    on_shelf = make_state([(3, 5, DOWN)] + PARKED + [(2, 2, DOWN)])
    new, _ = STEP2(jax.random.key(0), on_shelf, jnp.zeros(8, jnp.int32))
    assert np.asarray(new.carried)[[0, 4]].tolist() == [-1, shelf_at(2, 2)]


@pytest.mark.parametrize("gate", [False, True])
def test_load_gate(gate):
    env = dataclasses.replace(ENV2, load_gate=gate)
    colours = np.zeros(80, np.int32)
    colours[[shelf_at(1, 1), shelf_at(2, 1)]] = 1
    state = make_state([(1, 1, UP)] + PARKED + [(2, 1, UP)], colours=colours)
    actions = jnp.asarray([raw_action(0, TOGGLE)] + [0] * 3 + [raw_action(4, TOGGLE)] + [0] * 3)
    new, _ = jax.jit(env.step)(jax.random.key(0), state, actions)
    # robot 0 (colour 0) under a colour-1 shelf loads it only without the gate; robot 4 matches
    expected = [-1 if gate else shelf_at(1, 1), shelf_at(2, 1)]
    assert np.asarray(new.carried)[[0, 4]].tolist() == expected


@pytest.mark.parametrize("colour_of_b", [0, 1])
def test_delivery_needs_matching_colour(colour_of_b):
    a, b = shelf_at(1, 10), shelf_at(2, 10)
    colours = np.zeros(80, np.int32)
    colours[b] = colour_of_b
    robots = [(4, 18, DOWN)] + PARKED + [(5, 18, DOWN)]
    state = make_state(robots, {0: a, 4: b}, requests=[a, b, 70, 71], colours=colours)
    actions = jnp.asarray([raw_action(0, FWD)] + [0] * 3 + [raw_action(4, FWD)] + [0] * 3)
    new, ts = STEP2(jax.random.key(0), state, actions)
    assert cells_of(new, [0, 4]) == [(4, 19), (5, 19)]  # both robots stand on the goals
    requests = set(np.asarray(new.requests).tolist())
    assert a not in requests and {70, 71} <= requests and len(requests) == 4
    matched = colour_of_b == 1  # robot 4 has colour 1; robot 0 and shelf a have colour 0
    assert np.asarray(ts.reward).tolist() == [1, 0, 0, 0, float(matched), 0, 0, 0]
    assert float(ts.metrics["deliveries"]) == 1 + matched
    assert (b in requests) == (not matched)  # a mismatch leaves the request in place


def test_new_requests_are_uniform_over_unrequested_shelves():
    a = shelf_at(1, 10)
    state = make_state([(4, 18, DOWN)] + PARKED, {0: a}, requests=[a, 70, 71, 72])
    m = 7600
    step = jax.jit(jax.vmap(ENV2.step, in_axes=(0, None, None)))
    new, _ = step(jax.random.split(jax.random.key(5), m), state, jnp.asarray([FWD] + [0] * 7))
    drawn = np.asarray(new.requests)[:, 0]  # the delivered shelf's slot
    counts = np.bincount(drawn, minlength=80)
    assert counts[[a, 70, 71, 72]].sum() == 0  # never a shelf that was requested
    assert (np.delete(counts, [a, 70, 71, 72]) > 50).all()  # 76 candidates, 100 draws each


def test_reset_draws_shelf_colours_and_observes_them():
    keys = jax.random.split(jax.random.key(3), 16)
    states, ts = jax.jit(jax.vmap(ENV2.reset))(keys)
    colours = np.asarray(states.shelf_colour)
    assert colours.shape == (16, 80) and set(np.unique(colours)) == {0, 1}
    assert len({c.tobytes() for c in colours}) == 16  # a fresh draw at every reset
    assert 0.3 < colours.mean() < 0.7
    np.testing.assert_array_equal(np.asarray(states.shelf_cell), np.broadcast_to(HOME, (16, 80)))
    for i in range(16):
        assert len(set(np.asarray(states.agent_cell[i]).tolist())) == 8
        assert len(set(np.asarray(states.requests[i]).tolist())) == 4
    assert (np.asarray(states.carried) == -1).all()
    # the centre cell of the 3x3 view holds the colour one-hot of the shelf under the robot
    obs = np.asarray(ts.obs)
    cells = np.asarray(states.agent_cell)
    under = (cells[..., None] == HOME).any(-1)
    colour_under = np.take_along_axis(colours, np.argmax(cells[..., None] == HOME, -1), 1)
    centre = obs[..., 8 + 4 * 4 : 8 + 5 * 4]  # [robot, colour 0, colour 1, requested]
    np.testing.assert_array_equal(centre[..., 0], 1.0)
    np.testing.assert_array_equal(centre[..., 1], under & (colour_under == 0))
    np.testing.assert_array_equal(centre[..., 2], under & (colour_under == 1))
    assert ts.obs.shape == (16, 8, ENV2.obs_dim) and ENV2.obs_dim == 44
    assert ts.global_state.shape == (16, ENV2.global_state_dim) and ENV2.global_state_dim == 456
    assert ts.action_mask.shape == (16, 8, 5) and bool(ts.action_mask.all())
    assert not bool(ts.done.any()) and float(np.abs(np.asarray(ts.reward)).sum()) == 0.0


def test_random_policy_episode_lasts_max_steps_and_conserves_shelves():
    def episode(key):
        state, _ = ENV2.reset(key)

        def body(state, k):
            k_act, k_step = jax.random.split(k)
            actions = jax.random.randint(k_act, (8,), 0, 5)
            state, ts = ENV2.step(k_step, state, actions)
            carried = state.carried >= 0
            at_carrier = jnp.where(
                carried, state.shelf_cell[jnp.maximum(state.carried, 0)] == state.agent_cell, True
            )
            standing = ~jnp.zeros(80, bool).at[state.carried].set(True, mode="drop")
            highway = jnp.asarray(ENV2._highway.reshape(-1))[state.shelf_cell]
            ok = jnp.stack([
                jnp.unique(state.shelf_cell, size=80, fill_value=-1).min() >= 0,  # one per cell
                jnp.unique(state.agent_cell, size=8, fill_value=-1).min() >= 0,
                at_carrier.all(),
                ~(standing & highway).any(),  # shelves are never put down on a highway
                jnp.unique(state.requests, size=4, fill_value=-1).min() >= 0,
                ts.reward.sum() == ts.metrics["deliveries"],
            ])  # fmt: skip
            return state, (ts.done, ok, ts.metrics["deliveries"])

        return jax.lax.scan(body, state, jax.random.split(key, 500))[1]

    done, ok, _ = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(7), 4))
    done, ok = np.asarray(done), np.asarray(ok)
    assert not done[:, :499].any() and done[:, 499].all()
    assert ok.all(), np.argwhere(~ok)[:5]


# ------------------------------------------------------------------------ config and presets
@pytest.mark.parametrize(
    "params, field",
    [
        ({"num_agents": 0}, "env.num_agents"),
        ({"num_agents": 201}, "env.num_agents"),
        ({"shelf_columns": 2}, "env.shelf_columns"),
        ({"request_queue_size": 80}, "env.request_queue_size"),
        ({"num_colours": 0}, "env.num_colours"),
        ({"num_colours": 9}, "env.num_colours"),
        ({"max_steps": 0}, "env.max_steps"),
        ({"sensor_range": 0}, "env.sensor_range"),
    ],
)
def test_invalid_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        ColouredWarehouse(**params)


@pytest.mark.parametrize("name, n, r", [("rware-1", 8, 4), ("rware-2", 16, 8)])
def test_presets(name, n, r):
    preset = load_preset(name)
    assert preset["env"]["kind"] == "rware" and preset["train"]["lr"] == 5e-4
    env = make(name)
    assert isinstance(env, ColouredWarehouse) and (env.num_agents, env.request_queue_size) == (n, r)
    assert (env.num_colours, env.max_steps, env.num_shelves) == (2, 500, 80)
    assert env.grid_shape == (20, 10)
    assert env.action_kind == "categorical" and env.num_actions == 5
    assert build("rware", {"num_agents": n}) == dataclasses.replace(ENV2, num_agents=n)
    hash(env)  # static parameters: closable by jax.jit
