import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyps_jax.nets import (
    ActorCritic,
    block_size,
    blocked_apply,
    grouped_apply,
    init_stacked,
    segment_mean,
    use_blocks,
)


@pytest.fixture
def setup():
    net = ActorCritic(head_size=5, hidden_size=16)
    params = init_stacked(net, jax.random.key(0), 3, jnp.zeros((1, 7)))
    x = jax.random.normal(jax.random.key(1), (4, 3, 7))
    return net, params, x


class GroupedApplyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_each_agent_uses_its_group_row(self):
        net = ActorCritic(head_size=5, hidden_size=16)
        params = init_stacked(net, jax.random.key(0), 3, jnp.zeros((1, 7)))
        x = jax.random.normal(jax.random.key(1), (4, 5, 7))
        groups = jax.random.randint(jax.random.key(2), (4, 5), 0, 3)
        logits, value = self.variant(
            lambda p, x, g: grouped_apply(net.apply, p, x, g, per_agent=False)
        )(params, x, groups)
        chex.assert_shape(logits, (4, 5, 5))
        chex.assert_shape(value, (4, 5))
        for b in range(4):
            for n in range(5):
                g = int(groups[b, n])
                row = jax.tree.map(lambda leaf, g=g: leaf[g], params)
                want_logits, want_value = net.apply(row, x[b, n])
                np.testing.assert_allclose(logits[b, n], want_logits, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(value[b, n], want_value, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_per_agent_path_equals_group_path_with_identity_assignment(self):
        net = ActorCritic(head_size=5, hidden_size=16)
        params = init_stacked(net, jax.random.key(0), 6, jnp.zeros((1, 7)))
        x = jax.random.normal(jax.random.key(1), (3, 6, 7))
        groups = jnp.broadcast_to(jnp.arange(6), (3, 6))
        fast = self.variant(lambda p, x: grouped_apply(net.apply, p, x, groups, per_agent=True))
        slow = self.variant(lambda p, x: grouped_apply(net.apply, p, x, groups, per_agent=False))
        for a, b in zip(fast(params, x), slow(params, x)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_reaches_only_used_groups(setup):
    net, params, x = setup
    groups = jnp.zeros((4, 3), jnp.int32).at[:, 1].set(2)  # group 1 unused

    def loss(p):
        logits, value = grouped_apply(net.apply, p, x, groups, per_agent=False)
        return logits.sum() + value.sum()

    grads = jax.grad(loss)(params)
    for leaf in jax.tree.leaves(grads):
        norms = [float(jnp.abs(leaf[i]).sum()) for i in range(3)]
        assert norms[1] == 0.0
    assert all(float(jnp.abs(jax.tree.leaves(grads)[-1][i]).sum()) > 0 for i in (0, 2))


@pytest.mark.parametrize("groups_of", ["random", "one group empty", "all in the last group"])
def test_blocked_apply_equals_select_outputs_and_gradients(groups_of):
    net = ActorCritic(head_size=5, hidden_size=16)
    params = init_stacked(net, jax.random.key(0), 3, jnp.zeros((1, 7)))
    x = jax.random.normal(jax.random.key(1), (6, 5, 7))
    groups = {"random": jax.random.randint(jax.random.key(2), (6, 5), 0, 3),
              "one group empty": jnp.zeros((6, 5), jnp.int32).at[:, 2:].set(2),
              "all in the last group": jnp.full((6, 5), 2, jnp.int32)}[groups_of]

    def loss(p, strategy):
        logits, value = grouped_apply(net.apply, p, x, groups, False, strategy)
        return jnp.sin(logits).sum() + (value ** 2).sum(), (logits, value)

    def loss_blocks(p, block):
        logits, value = blocked_apply(net.apply, p, x, groups, block)
        return jnp.sin(logits).sum() + (value ** 2).sum(), (logits, value)

    (_, want), want_grads = jax.value_and_grad(loss, has_aux=True)(params, "select")
    for block in (4, 16):  # padding inside the data, and one block per group
        (_, got), got_grads = jax.jit(jax.value_and_grad(loss_blocks, has_aux=True),
                                      static_argnums=1)(params, block)
        for a, b in zip((*want, *jax.tree.leaves(want_grads)), (*got, *jax.tree.leaves(got_grads))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_strategy_rule_and_bad_strategy():
    assert not use_blocks(10_000, 1) and not use_blocks(64, 4) and use_blocks(1536, 4)
    assert use_blocks(96, 4) and use_blocks(96, 64) and not use_blocks(96, 2)
    assert use_blocks(128, 2) and not use_blocks(128, 3)
    assert block_size(1536, 4) == 32 and block_size(394_380, 4) == 1024 and block_size(40, 8) == 16
    net = ActorCritic(head_size=5, hidden_size=16)
    params = init_stacked(net, jax.random.key(0), 2, jnp.zeros((1, 7)))
    with pytest.raises(ValueError, match="strategy: unknown 'gather'"):
        grouped_apply(net.apply, params, jnp.zeros((2, 3, 7)), jnp.zeros((2, 3), jnp.int32),
                      False, "gather")


def test_segment_mean_empty_group_is_zero_not_nan():
    values = jnp.array([1.0, 3.0, 5.0, 7.0])
    groups = jnp.array([0, 0, 2, 2])
    weights = jnp.array([1.0, 1.0, 1.0, 0.0])
    out = segment_mean(values, groups, weights, 3)
    np.testing.assert_allclose(out, [2.0, 0.0, 5.0])


def test_init_stacked_sets_differ(setup):
    _, params, _ = setup
    leaf = jax.tree.leaves(params)[1]
    assert leaf.shape[0] == 3
    assert not np.allclose(leaf[0], leaf[1])
