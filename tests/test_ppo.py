import chex
import jax
import jax.numpy as jnp
import numpy as np

from dyps_jax.ppo import (
    accumulated_grad,
    action_distribution,
    chunk_count,
    gae,
    masked_categorical,
    normalize_per_group,
    ppo_terms,
)


def gae_reference(rewards, values, dones, last_value, gamma, lam):
    T = len(rewards)
    adv = np.zeros(T)
    running = 0.0
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_value * (1 - dones[t]) - values[t]
        running = delta + gamma * lam * (1 - dones[t]) * running
        adv[t] = running
    return adv, adv + values


class GAETest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_loop(self):
        rng = np.random.default_rng(0)
        rewards = rng.normal(size=12).astype(np.float32)
        values = rng.normal(size=12).astype(np.float32)
        dones = (rng.random(12) < 0.2).astype(np.float32)
        adv, ret = self.variant(gae, static_argnums=(4, 5))(
            rewards, values, dones, jnp.asarray(0.7), 0.97, 0.9
        )
        want_adv, want_ret = gae_reference(rewards, values, dones, 0.7, 0.97, 0.9)
        np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)


def test_masked_actions_get_zero_probability():
    logits = jnp.zeros((2, 4))
    mask = jnp.array([[True, False, True, False], [True, True, True, True]])
    dist = masked_categorical(logits, mask)
    probs = dist.probs
    np.testing.assert_allclose(probs[0], [0.5, 0, 0.5, 0], atol=1e-6)
    samples = dist.sample(seed=jax.random.key(0), sample_shape=(500,))
    assert not np.any(np.asarray(samples[:, 0]) % 2 == 1)
    assert np.isfinite(dist.entropy()).all()


def test_normalize_per_group_standardises_each_group():
    rng = np.random.default_rng(1)
    adv = jnp.asarray(np.concatenate([rng.normal(5, 2, 200), rng.normal(-3, 0.1, 200)]))
    groups = jnp.asarray(np.repeat([0, 1], 200))
    out = normalize_per_group(adv, groups, jnp.ones(400), 2)
    for g in range(2):
        part = np.asarray(out[groups == g])
        assert abs(part.mean()) < 1e-4 and abs(part.std() - 1) < 1e-3


def test_ppo_terms_clip():
    logits = jnp.log(jnp.array([[0.9, 0.1]]))
    mask = jnp.ones((1, 2), bool)
    old = jnp.log(jnp.array([0.5]))  # ratio 1.8 for action 0
    dist = masked_categorical(logits, mask)
    terms = ppo_terms(dist, jnp.array([0.0]), jnp.array([0]), old, jnp.array([0.0]),
                      jnp.array([1.0]), jnp.array([0.0]), 0.2)
    np.testing.assert_allclose(terms.policy_loss, [-1.2], rtol=1e-5)
    # negative advantage: the unclipped (larger) penalty is kept
    terms = ppo_terms(dist, jnp.array([0.0]), jnp.array([0]), old, jnp.array([0.0]),
                      jnp.array([-1.0]), jnp.array([0.0]), 0.2)
    np.testing.assert_allclose(terms.policy_loss, [1.8], rtol=1e-5)


def test_gaussian_head_log_prob_and_shapes():
    head = jnp.array([[0.5, jnp.log(2.0)], [-1.0, 0.0]])  # mean, log-std for 2 agents, A = 1
    dist = action_distribution("gaussian", head, jnp.ones((2, 1), bool))
    action = jnp.array([[1.5], [-1.0]])
    want = -0.5 * ((action[:, 0] - head[:, 0]) / jnp.exp(head[:, 1])) ** 2 - head[:, 1] \
        - 0.5 * jnp.log(2 * jnp.pi)
    np.testing.assert_allclose(dist.log_prob(action), want, rtol=1e-5)
    assert dist.sample(seed=jax.random.key(0)).shape == (2, 1)


def test_chunk_count_is_the_fewest_dividing_chunks_within_the_row_cap():
    assert chunk_count(144, 36, 131_072) == 1
    assert chunk_count(144, 10_000, 131_072) == 12  # 12 samples x 10k agents = 120k rows
    assert chunk_count(126, 3130, 131_072) == 6
    assert chunk_count(7, 1_000_000, 10) == 7  # one sample per chunk even when over the cap


class AccumulatedGradTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_chunked_gradient_equals_the_whole_batch_gradient(self):
        rng = np.random.default_rng(2)
        params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "skip": None}
        batch = {"x": jnp.asarray(rng.normal(size=(12, 4, 5)), jnp.float32),
                 "y": jnp.asarray(rng.normal(size=(12, 4, 3)), jnp.float32)}
        count = 12 * 4

        def loss(p, b):
            err = jnp.square(jnp.tanh(b["x"] @ p["w"]) - b["y"]).sum(-1)
            return err.sum() / count, {"err": err.sum() / count, "rows": jnp.float32(err.size)}

        whole, whole_aux = jax.grad(loss, has_aux=True)(params, batch)
        for chunks in (1, 3, 12):
            grads, aux = self.variant(accumulated_grad, static_argnums=(0, 3))(
                loss, params, batch, chunks)
            np.testing.assert_allclose(grads["w"], whole["w"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(aux["err"], whole_aux["err"], rtol=1e-5)
            assert float(aux["rows"]) == 48.0
