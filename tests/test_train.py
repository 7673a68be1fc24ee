"""make_train: every method trains end to end, determinism, vmap over seeds."""

import jax
import jax.flatten_util
import numpy as np
import pytest

import dyps_jax
from dyps_jax.ppo import chunk_count


def _config(path, method, iterations=2, **kw):
    base = dyps_jax.make_config(env=path, method=method, num_envs=4, **kw)
    steps = iterations * base.num_envs * base.episode_length
    return dyps_jax.make_config(env=path, method=method, num_envs=4, total_steps=steps, **kw)


@pytest.mark.parametrize("method", dyps_jax.METHODS)
def test_every_method_trains_and_reports_metrics(tiny_lbf, method):
    config = _config(tiny_lbf, method, num_groups=2)
    state, metrics = jax.jit(dyps_jax.make_train(config))(jax.random.key(0))
    assert metrics["episode_return"].shape == (2,)
    for name, value in metrics.items():
        assert np.all(np.isfinite(value)), name
    assert int(state.iteration) == 2
    assert int(state.env_steps) == config.total_steps
    leaves = jax.tree.leaves(state.policy.params)
    assert all(leaf.shape[0] == config.num_param_sets for leaf in leaves)
    spec = config.method_spec
    trained = {"vlstm_loss": spec.trains_vlstm, "cvae_loss": spec.trains_cvae,
               "selector_loss": spec.selector is not None,
               "shared_value_loss": spec.shared_critic}
    assert {name for name, used in trained.items() if used} == set(trained) & set(metrics)
    if spec.has_roles:
        assert state.roles.agent_embedding.shape == (4, 4, config.sharing.vlstm_hidden)
    else:
        assert state.roles is None


@pytest.mark.parametrize("method", [m for m in dyps_jax.METHODS if m != "ps-types"])
def test_every_method_trains_the_pointer_head_on_ridehailing(tiny_ridehailing, method):
    """Every method but the type oracle (ride-hailing cells have no true types)."""
    config = _config(tiny_ridehailing, method, num_groups=2)
    state, metrics = jax.jit(dyps_jax.make_train(config))(jax.random.key(0))
    for name, value in metrics.items():
        assert np.all(np.isfinite(value)), name
    assert np.all(metrics["gmv"] > 0) and np.all((metrics["orr"] > 0) & (metrics["orr"] <= 1))
    assert np.all(metrics["approx_kl"] >= 0)
    # The first update moved the pointer head's slot embedding of every parameter set.
    fresh = dyps_jax.make_train_fns(config).init(jax.random.key(0))
    before = fresh.policy.params["params"]["slot_embedding"]["kernel"]
    after = state.policy.params["params"]["slot_embedding"]["kernel"]
    assert np.all(np.abs(np.asarray(after - before)).reshape(len(before), -1).max(-1) > 0)


def test_same_key_same_result_and_vmap_over_seeds(tiny_lbf):
    config = _config(tiny_lbf, "dyps", num_groups=2)
    train = jax.jit(dyps_jax.make_train(config))
    _, m1 = train(jax.random.key(3))
    _, m2 = train(jax.random.key(3))
    np.testing.assert_array_equal(m1["episode_return"], m2["episode_return"])
    keys = jax.random.split(jax.random.key(0), 2)
    _, batched = jax.jit(jax.vmap(dyps_jax.make_train(config)))(keys)
    assert batched["episode_return"].shape == (2, 2)
    _, single = train(keys[1])
    np.testing.assert_allclose(batched["vlstm_loss"][1], single["vlstm_loss"], rtol=1e-4)


def test_parameters_change_and_groups_are_sampled(tiny_lbf):
    config = _config(tiny_lbf, "dyps", iterations=1, num_groups=3)
    fns = dyps_jax.make_train_fns(config)
    state0 = fns.init(jax.random.key(1))
    state1, metrics = jax.jit(fns.iterate, static_argnums=1)(state0, 1)
    for name in ("policy", ):
        before = jax.tree.leaves(getattr(state0, name).params)
        after = jax.tree.leaves(getattr(state1, name).params)
        assert any(not np.allclose(a, b) for a, b in zip(before, after))
    for model in ("vlstm", "cvae", "selector"):
        before = jax.tree.leaves(getattr(state0.roles, model).params)
        after = jax.tree.leaves(getattr(state1.roles, model).params)
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), model
    # random initial selector weights spread 16 agent slots over more than one of 3 groups
    assert sum(float(metrics[f"group_size_{m}"][0]) > 0 for m in range(3)) > 1
    assert not np.allclose(state1.roles.agent_embedding, 0.0)


def test_ps_id_learns_on_tiny_lbf(tiny_lbf):
    """A short run must beat the first iterations' (near-random) return clearly."""
    config = _config(tiny_lbf, "ps-id", iterations=120, lr=3e-3)
    _, metrics = jax.jit(dyps_jax.make_train(config))(jax.random.key(0))
    ret = np.asarray(metrics["episode_return"])
    assert ret[-20:].mean() > ret[:20].mean() + 0.15, (ret[:20].mean(), ret[-20:].mean())


def test_vlstm_gradient_subset_in_training_keeps_the_embeddings(tiny_lbf):
    # One iteration from the same state: the h_a it stores come from the VLSTM's forward pass over
    # every agent before its update, so a 3-sequence gradient (of 16) must leave them unchanged
    # while the VLSTM's update differs.
    def one_iteration(sequences):
        config = _config(tiny_lbf, "dyps", iterations=1, num_groups=2,
                         vlstm_grad_sequences=sequences)
        fns = dyps_jax.make_train_fns(config)
        return jax.jit(fns.iterate, static_argnums=1)(fns.init(jax.random.key(1)), 1)

    (full, _), (sub, sub_metrics) = one_iteration(0), one_iteration(3)
    np.testing.assert_allclose(sub.roles.agent_embedding, full.roles.agent_embedding,
                               rtol=1e-5, atol=1e-6)
    assert np.isfinite(sub_metrics["vlstm_loss"]).all()
    full_w, sub_w = (jax.flatten_util.ravel_pytree(s.roles.vlstm.params)[0] for s in (full, sub))
    assert not np.allclose(full_w, sub_w)


@pytest.mark.parametrize("method", ["dyps", "mappo-ps"])
def test_chunked_minibatches_give_the_same_update(tiny_ridehailing, method):
    """chunk_rows below one minibatch's rows splits its gradient into chunks: same training."""
    method, algo = ("ps", "mappo") if method == "mappo-ps" else (method, "ippo")
    config = _config(tiny_ridehailing, method, iterations=1, num_groups=2, algo=algo)
    rows = config.ppo.batch_size * config.num_agents
    chunked = _config(tiny_ridehailing, method, iterations=1, num_groups=2, algo=algo,
                      chunk_rows=rows // 4)
    whole, m_whole = jax.jit(dyps_jax.make_train(config))(jax.random.key(5))
    part, m_part = jax.jit(dyps_jax.make_train(chunked))(jax.random.key(5))
    flat = lambda s: jax.flatten_util.ravel_pytree(s.policy.params)[0]  # noqa: E731
    assert chunk_count(config.ppo.batch_size, config.num_agents, rows // 4) == 4
    assert float(np.abs(flat(whole) - flat(part)).max()) < 1e-5
    np.testing.assert_allclose(m_whole["value_loss"], m_part["value_loss"], rtol=1e-4)
