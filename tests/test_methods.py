"""The baselines and variants beyond DyPS: PSA, SePS, the ablations, role-as-state, MAPPO, CoPO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_medical import write_tiny_city

import dyps_jax
from dyps_jax import group_metrics, neighbourhoods, selectors, seps, sharing
from dyps_jax.nets import ActorCritic


def _config(path, method, iterations=2, **kw):
    base = dyps_jax.make_config(env=path, method=method, num_envs=4, **kw)
    steps = iterations * base.num_envs * base.episode_length
    return dyps_jax.make_config(env=path, method=method, num_envs=4, total_steps=steps, **kw)


def _run(config, iterations=None):
    fns = dyps_jax.make_train_fns(config)
    state0 = fns.init(jax.random.key(0))
    n = iterations or config.num_iterations
    state1, metrics = jax.jit(fns.iterate, static_argnums=1)(state0, n)
    for name, value in metrics.items():
        assert np.all(np.isfinite(value)), name
    return state0, state1, metrics


def _moved(before, after) -> np.ndarray:
    """Per parameter set (leading axis), whether any leaf changed."""
    diffs = [np.abs(np.asarray(a - b)).reshape(len(a), -1).max(-1)
             for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))]
    return np.max(diffs, axis=0) > 0


def test_method_table_sizes_and_inputs():
    n, m, h, k = 6, 3, 5, 2
    expected = {"nops": n, "ps": 1, "ps-id": 1, "psa": n, "seps": m, "dyps": m,
                "dyps-no-cvae": m, "dyps-no-vlstm": m, "dyps-no-repr": m, "role-as-state": 1,
                "ps-types": k}
    assert set(expected) == set(dyps_jax.METHODS)
    for method, sets in expected.items():
        assert sharing.METHOD_SPECS[method].num_param_sets(n, m, k) == sets, method
    obs = jnp.ones((2, n, 4))
    emb = jnp.arange(2 * n * h, dtype=jnp.float32).reshape(2, n, h)
    x = sharing.policy_features(sharing.METHOD_SPECS["role-as-state"], obs, emb)
    assert x.shape == (2, n, 4 + h) == (2, n, sharing.feature_dim(
        sharing.METHOD_SPECS["role-as-state"], 4, n, h))
    np.testing.assert_array_equal(x[..., 4:], emb)
    x = sharing.policy_features(sharing.METHOD_SPECS["ps-id"], obs, None)
    np.testing.assert_array_equal(x[0, :, 4:], np.eye(n))
    spec = sharing.METHOD_SPECS["dyps-no-repr"]
    assert not spec.trains_vlstm and not spec.trains_cvae and spec.has_roles


@pytest.mark.parametrize("selector, sees_agents, sees_groups", [
    ("dyps", True, True), ("no-cvae", True, False), ("no-vlstm", False, True),
    ("no-repr", False, False),
])
def test_ablation_selectors_see_only_their_inputs(selector, sees_agents, sees_groups):
    n, m = 5, 3
    net = selectors.build(selector, n)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    emb = jax.random.normal(k1, (2, n, 8))
    z = jax.random.normal(k2, (m, 4))
    params = net.init(k3, emb, z)
    logits, value = net.apply(params, emb, z)
    assert logits.shape == (2, n, m) and value.shape == (2,)
    d_emb = jax.grad(lambda e: net.apply(params, e, z)[0].sum())(emb)
    d_z = jax.grad(lambda g: net.apply(params, emb, g)[0].sum())(z)
    assert bool(jnp.any(d_emb != 0)) == sees_agents
    assert bool(jnp.any(d_z != 0)) == sees_groups
    # every selector tells agents apart by their identity I_a: rows differ for equal embeddings
    same, _ = net.apply(params, jnp.zeros_like(emb), z)
    assert not np.allclose(same[0, 0], same[0, 1])


def test_psa_trains_per_agent_critics_and_the_shared_critic(tiny_lbf):
    config = _config(tiny_lbf, "psa", iterations=1)
    state0, state1, metrics = _run(config)
    assert metrics["shared_value_loss"][0] > 0
    critic = lambda s: s.policy.params["params"]["critic"]  # noqa: E731
    assert _moved(critic(state0), critic(state1)).all()  # every agent's own critic
    assert state1.critics.params["params"]["Dense_0"]["kernel"].shape[0] == 1
    assert _moved(state0.critics.params, state1.critics.params).all()  # the shared one


def test_kmeans_recovers_planted_clusters():
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    labels = np.repeat(np.arange(3), [7, 5, 9])
    points = centres[labels] + 0.3 * np.random.default_rng(0).normal(size=(len(labels), 2))
    found = seps.kmeans(jax.random.key(0), jnp.asarray(points, jnp.float32), 3)
    assert float(group_metrics.adjusted_rand_index(found, jnp.asarray(labels), 3, 3)) == 1.0


def test_seps_clusters_agents_by_what_their_ids_predict():
    """6 agents of 2 planted types: o' = o + 1 for type 0 and o - 1 for type 1."""
    types = np.array([0, 1, 0, 1, 1, 0])
    rng = np.random.default_rng(0)
    size = 1024
    agent = rng.integers(0, 6, size)
    obs = rng.normal(size=(size, 3)).astype(np.float32)
    next_obs = obs + np.where(types[agent] == 0, 1.0, -1.0)[:, None]
    buffer = seps.Buffer(jnp.asarray(obs), jnp.zeros((size, 2)), jnp.asarray(next_obs, jnp.float32),
                         jnp.zeros(size), jnp.asarray(agent, jnp.int32), jnp.ones(size))
    found = jax.jit(seps.cluster, static_argnums=(2, 3))(jax.random.key(1), buffer, 6, 2)
    assert float(group_metrics.adjusted_rand_index(found, jnp.asarray(types), 2, 2)) == 1.0


def test_seps_pretrains_then_copies_the_shared_network_into_every_cluster(tmp_path):
    path = tmp_path / "rolegame-tiny.toml"
    path.write_text('name = "rolegame-tiny"\n[env]\nkind = "rolegame"\nnum_agents = 4\n'
                    'num_types = 2\nnum_cues = 2\nmax_steps = 4\n[train]\nbatch_size = 8\n')
    config = _config(str(path), "seps", iterations=4, num_groups=2, seps_pretrain_fraction=0.5,
                     seps_samples=64)
    assert config.seps_pretrain_iterations == 2
    fns = dyps_jax.make_train_fns(config)
    iterate = jax.jit(fns.iterate, static_argnums=1)
    state0 = fns.init(jax.random.key(0))
    pre, metrics = iterate(state0, 2)
    assert np.all(np.asarray(pre.seps.assignment) == 0)
    assert np.all(metrics["group_size_0"] == 4)
    # pre-training trains set 0 only and fills the buffer
    assert _moved(state0.policy.params, pre.policy.params).tolist() == [True, False]
    assert float(pre.seps.buffer.valid.sum()) > 0
    post, metrics = iterate(pre, 1)
    assignment = np.asarray(post.seps.assignment)
    assert assignment.shape == (4,) and set(assignment) <= {0, 1}
    assert np.isfinite(metrics["type_ari"]).all()
    # after the switch every cluster started from the pre-trained network: cluster sets that no
    # agent uses are still exact copies of it
    for leaf, old in zip(jax.tree.leaves(post.policy.params), jax.tree.leaves(pre.policy.params)):
        for g in range(2):
            if g not in assignment:
                np.testing.assert_array_equal(leaf[g], old[0])


def test_mappo_critic_sees_the_global_state_and_the_actor_does_not():
    net = ActorCritic(head_size=3, hidden_size=8, actor_dim=4)
    x = jax.random.normal(jax.random.key(0), (2, 5, 4 + 6))
    params = net.init(jax.random.key(1), x)
    shifted = x.at[..., 4:].add(1.0)
    head, value = net.apply(params, x)
    head2, value2 = net.apply(params, shifted)
    np.testing.assert_array_equal(head, head2)
    assert not np.allclose(value, value2)


def test_mappo_trains_on_the_global_state_with_a_team_reward(tiny_lbf):
    config = _config(tiny_lbf, "ps", algo="mappo")
    env = config.env.build()
    state0, state1, _ = _run(config)
    kernel = state1.policy.params["params"]["critic"]["Dense_0"]["kernel"]
    assert kernel.shape[1] == env.obs_dim + env.global_state_dim  # [G, obs + global, hidden]
    actor = state1.policy.params["params"]["actor"]["Dense_0"]["kernel"]
    assert actor.shape[1] == env.obs_dim
    before = state0.policy.params["params"]["critic"]["Dense_0"]["kernel"][:, env.obs_dim:]
    assert not np.allclose(kernel[:, env.obs_dim:], before)  # the global-state weights learn


@pytest.mark.parametrize("method", ["psa", "dyps"])
def test_copo_moves_its_coordination_factor(tiny_lbf, method):
    config = _config(tiny_lbf, method, algo="copo", num_groups=2, lcf_lr=1e-2)
    state0, state1, metrics = _run(config)
    assert float(state0.lcf.params["mean"]) == 0.0
    assert float(state1.lcf.params["mean"]) != 0.0
    assert float(state1.lcf.params["log_std"]) != float(state0.lcf.params["log_std"])
    assert metrics["lcf_mean_deg"].shape == (2,)
    assert state1.critics.params["params"]["Dense_0"]["kernel"].shape[0] == (
        3 if method == "psa" else 2)


def test_neighbourhoods_of_each_scenario():
    env = dyps_jax.make_config(env="ridehailing-1", method="ps").env.build()
    index, weight = neighbourhoods.neighbourhood(env)(None)
    assert index.shape == (36, 7)
    assert float(weight[0].sum()) < 7 < float(weight.sum(-1).max()) + 1  # corner vs inner cell
    lbf = dyps_jax.make_config(env="lbf-1", method="ps").env.build()
    state, _ = lbf.reset(jax.random.key(0))
    state = state.replace(agent_pos=jnp.array([[0, 0], [2, 2], [3, 3], [9, 9], [9, 7], [5, 0]]))
    index, weight = neighbourhoods.neighbourhood(lbf)(state)
    np.testing.assert_array_equal(weight[0], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(weight[3], [0, 0, 0, 1, 1, 0])
    reward = jnp.array([1.0, 3.0, 0.0, 0.0, 2.0, 4.0])
    np.testing.assert_allclose(neighbourhoods.neighbour_reward(index, weight, reward)[:4],
                               [2.0, 4.0 / 3.0, 1.5, 1.0])


def test_every_algo_under_vmap_with_seps(tiny_lbf):
    for algo in ("mappo", "copo"):
        config = _config(tiny_lbf, "seps", iterations=2, num_groups=2, algo=algo,
                         seps_pretrain_fraction=0.5, seps_samples=64)
        keys = jax.random.split(jax.random.key(0), 2)
        state, metrics = jax.jit(jax.vmap(dyps_jax.make_train(config)))(keys)
        assert metrics["episode_return"].shape == (2, 2)
        assert np.all(np.isfinite(metrics["episode_return"]))
        assert state.seps.assignment.shape == (2, 4)


@pytest.mark.parametrize("kwargs, match", [
    ({"algo": "qmix"}, "algo: unknown 'qmix'.*ippo, mappo, copo"),
    ({"method": "seps", "seps_pretrain_fraction": 1.0}, "seps_pretrain_fraction.*got 1.0"),
    ({"method": "seps", "seps_pretrain_fraction": 0.99, "total_steps": 16000},
     "leaves no iteration after pre-training"),
    ({"method": "seps", "num_groups": 7}, "num_groups.*got 7"),
    ({"method": "psa-id"}, "unknown method 'psa-id'.*role-as-state"),
])
def test_bad_combinations_stop_before_compiling(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dyps_jax.make_config(**{"env": "lbf-1", **kwargs})


def test_type_oracle_gives_each_agent_the_set_of_its_true_type(tiny_lbf):
    config = _config(tiny_lbf, "ps-types")
    types = config.env.build().agent_types  # fixed levels i mod 3 of 4 agents: 0, 1, 2, 0
    assert config.num_param_sets == 3
    state0, state1, _ = _run(config)
    probs = dyps_jax.group_probabilities(config, state1)
    np.testing.assert_array_equal(np.argmax(probs, -1), np.tile(types, (4, 1)))
    assert _moved(state0.policy.params, state1.policy.params).all()


def test_type_oracle_needs_agent_types(tiny_ridehailing):
    with pytest.raises(ValueError, match="ps-types.*defines no agent types.*rolegame"):
        dyps_jax.make_config(env=tiny_ridehailing, method="ps-types")


def test_copo_needs_neighbourhoods(tmp_path):
    city = tmp_path / "tiny.npz"
    write_tiny_city(city)  # no CBG centroids
    with pytest.raises(ValueError, match="copo needs CBG centroids"):
        dyps_jax.make_config(env="medical", method="ps", algo="copo",
                             num_groups=1, env_params={"num_cbgs": 2, "num_pois": 1, "city_path": str(city)})
    with pytest.raises(ValueError, match="environment kind 'cartpole' has none"):
        neighbourhoods.neighbourhood(type("CartPole", (), {"kind": "cartpole"})())


@pytest.mark.parametrize("method, algo", [("psa", "copo"), ("role-as-state", "mappo")])
def test_algos_on_the_pointer_head(tiny_ridehailing, method, algo):
    config = _config(tiny_ridehailing, method, algo=algo)
    _, state, metrics = _run(config)
    assert np.all(metrics["gmv"] > 0)
    assert state.critics.params["params"]["Dense_0"]["kernel"].shape[0] == (
        3 if algo == "copo" else 1) if method == "psa" else state.critics is None
