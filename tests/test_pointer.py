"""The pointer head of ride-hailing (docs/algorithms.md, "Policy heads"): draws, log-probabilities, the network."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyps_jax.nets import PointerActorCritic
from dyps_jax.ppo import PointerDraws, action_distribution


def sequential_log_prob(logits, slot_mask, draw_mask, actions):
    """The definition, draw by draw: softmax over stay + the orders not drawn yet; None if the
    sequence is impossible (an order drawn twice or a masked slot)."""
    total, taken = 0.0, set()
    for slot, active in zip(actions, draw_mask):
        if not active:
            if slot != 0:
                return None
            continue
        allowed = [0] + [k for k in range(1, len(logits)) if slot_mask[k] and k not in taken]
        if slot not in allowed:
            return None
        log_z = np.log(np.sum(np.exp([logits[k] for k in allowed])))
        total += logits[slot] - log_z
        if slot > 0:
            taken.add(slot)
    return total


def _case(seed, slots=6, draws=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, slots).astype(np.float32)
    slot_mask = rng.random(slots) < 0.7
    slot_mask[0] = True
    draw_mask = np.arange(draws) < rng.integers(0, draws + 1)
    return logits, slot_mask, draw_mask


def _sequences(logits, slot_mask, draw_mask):
    """Every possible draw sequence with its probability from the sequential definition."""
    out = []
    for seq in itertools.product(range(len(logits)), repeat=len(draw_mask)):
        lp = sequential_log_prob(logits, slot_mask, draw_mask, seq)
        if lp is not None:
            out.append((seq, lp))
    return out


class LogProbTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_log_prob_is_the_sum_of_per_draw_log_probs(self):
        for seed in range(12):
            logits, slot_mask, draw_mask = _case(seed)
            seqs = _sequences(logits, slot_mask, draw_mask)
            actions = jnp.asarray([s for s, _ in seqs], jnp.int32)
            want = np.array([lp for _, lp in seqs])

            def log_prob(actions, logits=logits, slot_mask=slot_mask, draw_mask=draw_mask):
                n = actions.shape[0]
                dist = PointerDraws(jnp.broadcast_to(logits, (n, logits.size)),
                                    jnp.broadcast_to(slot_mask, (n, slot_mask.size)),
                                    jnp.broadcast_to(draw_mask, (n, draw_mask.size)))
                return dist.log_prob(actions)

            got = self.variant(log_prob)(actions)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            # The possible sequences are the whole sample space.
            np.testing.assert_allclose(np.exp(want).sum(), 1.0, rtol=1e-5)


def test_samples_follow_the_sequential_process():
    logits, slot_mask, draw_mask = _case(3, slots=5, draws=3)
    draw_mask = np.array([True, True, True])
    seqs = dict(_sequences(logits, slot_mask, draw_mask))
    dist = PointerDraws(jnp.asarray(logits), jnp.asarray(slot_mask), jnp.asarray(draw_mask))
    n = 100_000
    samples = np.asarray(jax.jit(jax.vmap(dist.sample))(jax.random.split(jax.random.key(0), n)))
    counts: dict[tuple, int] = {}
    for row in map(tuple, samples):
        counts[row] = counts.get(row, 0) + 1
    assert set(counts) <= set(seqs), "a sampled sequence is impossible"
    for seq, lp in seqs.items():
        p = np.exp(lp)
        # 5 binomial standard deviations: fails on a wrong process, not on the draw.
        assert abs(counts.get(seq, 0) / n - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-4, seq


def test_samples_respect_the_masks():
    rng = np.random.default_rng(1)
    n, slots, draws = 512, 9, 8
    logits = jnp.asarray(rng.normal(0, 3, (n, slots)), jnp.float32)
    slot_mask = jnp.asarray(rng.random((n, slots)) < 0.5)
    idle = rng.integers(0, draws + 1, n)
    draw_mask = jnp.asarray(np.arange(draws) < idle[:, None])
    actions = np.asarray(PointerDraws(logits, slot_mask, draw_mask).sample(jax.random.key(2)))
    mask = np.asarray(slot_mask)
    for row, m, k in zip(actions, mask, idle):
        assert np.all(row[k:] == 0), "inactive draws must be stays"
        orders = row[row > 0]
        assert len(set(orders)) == len(orders), "an order drawn twice"
        assert np.all(m[orders]), "a masked slot drawn"


def test_a_greedy_enough_policy_dispatches_every_order():
    """Stay with a very low logit: every active draw takes an order until none is left."""
    logits = jnp.array([-30.0, 1.0, 2.0, 0.0, 0.5])
    slot_mask = jnp.array([True, True, False, True, True])
    draw_mask = jnp.array([True, True, True, True, True])
    actions = np.asarray(PointerDraws(logits, slot_mask, draw_mask).sample(jax.random.key(0)))
    assert sorted(actions[:3]) == [1, 3, 4] and actions[3:].tolist() == [0, 0]


def test_log_prob_gradient_is_finite_with_masked_slots_and_forced_stays():
    logits = jnp.array([0.1, 0.3, -0.2, 0.4])
    slot_mask = jnp.array([True, True, False, False])
    draw_mask = jnp.array([True, True, True])
    actions = jnp.array([1, 0, 0])  # the second and third draws have nothing left but stay

    def f(logits):
        return PointerDraws(logits, slot_mask, draw_mask).log_prob(actions)

    grad = jax.grad(f)(logits)
    assert np.all(np.isfinite(grad))
    want = 0.3 - np.log(np.exp(0.1) + np.exp(0.3))  # forced stays contribute log 1 = 0
    np.testing.assert_allclose(f(logits), want, rtol=1e-6)


def test_action_distribution_splits_the_pointer_mask():
    head = jnp.zeros((2, 4))
    mask = jnp.array([[True, True, False, True, True, False],
                      [True, False, False, False, False, False]])
    dist = action_distribution("pointer", head, mask)
    np.testing.assert_array_equal(dist.slot_mask, mask[:, :4])
    np.testing.assert_array_equal(dist.draw_mask, mask[:, 4:])
    # No active draw: the empty sequence has probability 1.
    np.testing.assert_allclose(dist.log_prob(jnp.zeros((2, 2), jnp.int32))[1], 0.0)


class PointerNetworkTest(chex.TestCase):
    def setUp(self):
        super().setUp()
        self.net = PointerActorCritic(cell_dim=3, num_slots=4, slot_dim=2, hidden_size=8)
        self.x = jax.random.normal(jax.random.key(0), (5, 3 + 4 * 2 + 2))  # 2 extra features
        self.params = self.net.init(jax.random.key(1), self.x)

    def test_logits_are_the_scaled_bilinear_form(self):
        logits, value = self.net.apply(self.params, self.x)
        chex.assert_shape(logits, (5, 4))
        chex.assert_shape(value, (5,))
        p = self.params["params"]
        cell = jnp.concatenate([self.x[:, :3], self.x[:, 11:]], -1)
        h = jnp.tanh(cell @ p["actor"]["Dense_0"]["kernel"] + p["actor"]["Dense_0"]["bias"])
        h = jnp.tanh(h @ p["actor"]["Dense_1"]["kernel"] + p["actor"]["Dense_1"]["bias"])
        query = h @ p["actor"]["Dense_2"]["kernel"] + p["actor"]["Dense_2"]["bias"]
        slots = self.x[:, 3:11].reshape(5, 4, 2)
        keys = slots @ p["slot_embedding"]["kernel"] + p["slot_embedding"]["bias"]
        want = jnp.einsum("be,bke->bk", query, keys) / np.sqrt(query.shape[-1])
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)

    def test_permuting_slots_permutes_logits(self):
        perm = np.array([2, 0, 3, 1])
        slots = self.x[:, 3:11].reshape(5, 4, 2)[:, perm].reshape(5, 8)
        x_perm = jnp.concatenate([self.x[:, :3], slots, self.x[:, 11:]], -1)
        logits, _ = self.net.apply(self.params, self.x)
        logits_perm, _ = self.net.apply(self.params, x_perm)
        np.testing.assert_allclose(logits_perm, logits[:, perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["categorical", "gaussian", "pointer"])
def test_unknown_kind_is_refused_and_known_ones_build(kind):
    with pytest.raises(ValueError, match="allowed: categorical, gaussian, pointer"):
        action_distribution("beta", jnp.zeros((2,)), jnp.ones((2,), bool))
    head = jnp.zeros((3, 4))
    action_distribution(kind, head, jnp.ones((3, 6 if kind == "pointer" else 4), bool))


def test_log_prob_is_exact_for_widely_spread_logits():
    """Suffix sums shift by the row maximum: spreads up to the logit bound must stay exact."""
    logits = np.array([0.0, 39.0, -39.0, 5.0, -20.0], np.float32)
    slot_mask = np.ones(5, bool)
    draw_mask = np.ones(4, bool)
    actions = [1, 3, 0, 2]  # the big order first, then the small ones
    want = sequential_log_prob(logits.astype(np.float64), slot_mask, draw_mask, actions)
    got = PointerDraws(jnp.asarray(logits), jnp.asarray(slot_mask), jnp.asarray(draw_mask))
    np.testing.assert_allclose(got.log_prob(jnp.asarray(actions)), want, rtol=1e-5, atol=1e-4)
