"""Adjusted Rand index and purity against a direct pair-counting reference."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyps_jax import group_metrics


def _ari_by_pairs(a: np.ndarray, b: np.ndarray) -> float:
    """Hubert & Arabie's index from the four pair counts, the textbook definition."""
    same_a, same_b = [], []
    for i, j in itertools.combinations(range(len(a)), 2):
        same_a.append(a[i] == a[j])
        same_b.append(b[i] == b[j])
    same_a, same_b = np.array(same_a), np.array(same_b)
    both = np.sum(same_a & same_b)
    pairs = len(same_a)
    expected = same_a.sum() * same_b.sum() / pairs
    maximum = 0.5 * (same_a.sum() + same_b.sum())
    if maximum == expected:
        return 1.0
    return float((both - expected) / (maximum - expected))


labelings = st.integers(2, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
    )
)


@settings(deadline=None, max_examples=60)
@given(labelings)
def test_ari_matches_pair_counting(pair):
    a, b = (np.array(x, np.int32) for x in pair)
    ours = float(group_metrics.adjusted_rand_index(jnp.asarray(a), jnp.asarray(b), 4, 3))
    assert ours == pytest.approx(_ari_by_pairs(a, b), abs=1e-5)


def test_ari_is_invariant_to_relabelling_and_batches():
    types = jnp.array([0, 0, 1, 1, 2, 2])
    groups = jnp.array([[3, 3, 0, 0, 1, 1], [0, 1, 0, 1, 0, 1]])
    ari = group_metrics.adjusted_rand_index(groups, types, 4, 3)
    chex.assert_shape(ari, (2,))
    assert float(ari[0]) == pytest.approx(1.0)
    assert float(ari[1]) < 0.0


def test_purity():
    types = jnp.array([0, 0, 0, 1, 1, 1])
    assert float(group_metrics.purity(jnp.array([0, 0, 0, 1, 1, 1]), types, 2, 2)) == 1.0
    # group 0 holds types 0,0,1 (majority 0), group 1 holds 0,1,1: 4 of 6 agents in their type
    assert float(group_metrics.purity(jnp.array([0, 0, 1, 0, 1, 1]), types, 2, 2)) == pytest.approx(4 / 6)
    # splitting a type over two groups keeps purity at 1 (unlike the ARI)
    split = jnp.array([0, 2, 0, 1, 1, 1])
    assert float(group_metrics.purity(split, types, 3, 2)) == 1.0
    assert float(group_metrics.adjusted_rand_index(split, types, 3, 2)) < 1.0


def test_jit_matches_eager():
    key = jax.random.key(0)
    groups = jax.random.randint(key, (5, 20), 0, 4)
    types = jnp.arange(20) % 3
    eager = group_metrics.adjusted_rand_index(groups, types, 4, 3)
    jitted = jax.jit(group_metrics.adjusted_rand_index, static_argnums=(2, 3))(groups, types, 4, 3)
    np.testing.assert_allclose(eager, jitted, atol=1e-5)


def test_separation_by_type():
    types = jnp.array([0, 0, 0, 1, 1, 1])
    noise = jax.random.normal(jax.random.key(0), (4, 6, 5))
    apart = noise + 10.0 * types[:, None]
    assert float(group_metrics.separation(apart, types, 2).min()) > 10.0
    # 1-D values 0, 2 | 4, 6: centroids 1 and 5 around 3, between 4 * 2^2 = 16, within 4 * 1 = 4
    values = jnp.array([0.0, 2.0, 4.0, 6.0])[:, None]
    ratio = group_metrics.separation(values, jnp.array([0, 0, 1, 1]), 2)
    assert float(ratio) == pytest.approx(4.0)
