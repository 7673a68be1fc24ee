"""dyps_jax.make_policy and `python -m dyps_jax.evaluate --run` on a saved tiny run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LBF, TINY_RIDEHAILING, _write_preset

import dyps_jax
from dyps_jax.cli import config_from_args, run
from dyps_jax.evaluate import evaluate_run, evaluate_states, load_run, main
from dyps_jax.policy import pointer_mode
from dyps_jax.ppo import PointerDraws
from dyps_jax.train import policy_network

TINY_MEDICAL = """
name = "medical-tiny"
[env]
kind = "medical"
num_cbgs = 50
num_pois = 200
num_days = 6
city_seed = 1
"""


@pytest.fixture(scope="module")
def lbf_run(tmp_path_factory):
    """A PS run of 2 iterations on the tiny LBF, checkpoints at iterations 1 and 2."""
    root = tmp_path_factory.mktemp("evaluate")
    preset = _write_preset(root, TINY_LBF)
    config, _ = config_from_args(["--env", preset, "--method", "ps", "--total-steps", "80",
                                  "--num-envs", "4", "--log-every", "1", "--checkpoint-every", "1",
                                  "--out", str(root / "runs")])
    return Path(run(config, quiet=True)["run_dir"])


def test_evaluate_run_greedy_cli_and_sampled(lbf_run, capsys):
    main(["--run", str(lbf_run), "--greedy", "--episodes", "3", "--seed", "5"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    greedy = json.loads(lines[0])
    assert greedy["run"] == str(lbf_run) and greedy["method"] == "ps" and greedy["greedy"]
    assert (greedy["checkpoint"], greedy["iteration"], greedy["env_steps"]) == (2, 2, 80)
    assert greedy["episodes"] == 3 and greedy["seed"] == 5
    sampled = evaluate_run(lbf_run, episodes=3, seed=5)
    assert not sampled["greedy"]
    for result in (greedy, sampled):
        # Team return of LBF: 1.0 when both foods are eaten; at most 2 foods.
        assert 0.0 <= result["return"] <= 1.0 + 1e-5 and result["return_std"] >= 0.0
        assert 0.0 <= result["food_collected"] <= 2.0 and result["food_collected_std"] >= 0.0
        # Foods are worth a share of the return: none eaten <=> zero return.
        assert (result["food_collected"] == 0) == (result["return"] == 0)


def test_load_run_picks_the_checkpoint(lbf_run):
    config, state, step = load_run(lbf_run, 1)
    assert step == 1 and int(state.iteration) == 1 and config.method == "ps"
    assert int(load_run(lbf_run)[1].iteration) == 2
    with pytest.raises(ValueError, match=r"no step 7 in .*saved steps: 1, 2"):
        load_run(lbf_run, 7)


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


def test_missing_or_corrupt_run_folder_names_it(lbf_run, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"{missing}.*not a run folder"):
        load_run(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*has no config.json"):
        load_run(empty)

    bad = _copy(lbf_run, tmp_path)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"{bad / 'config.json'}.*not valid JSON"):
        load_run(bad)
    data = json.loads((lbf_run / "config.json").read_text())
    data["sharing"]["method"] = "qmix"
    (bad / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="config.json.*unknown method 'qmix'"):
        load_run(bad)
    data["sharing"]["method"], data["ppo"]["warp"] = "ps", 9
    (bad / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="config.ppo: unknown field 'warp'"):
        load_run(bad)

    shutil.copy(lbf_run / "config.json", bad / "config.json")
    for f in (bad / "checkpoints" / "2").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"cannot restore step 2 from {bad / 'checkpoints'}"):
        load_run(bad)
    shutil.rmtree(bad / "checkpoints")
    with pytest.raises(ValueError, match=f"{bad / 'checkpoints'}.*holds no checkpoint"):
        load_run(bad)


def test_cli_errors_exit_before_compiling(lbf_run, tmp_path):
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
           "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    for args, message in (
        (["--run", str(tmp_path / "gone")], f"{tmp_path / 'gone'}"),
        (["--run", str(lbf_run), "--replay"], "only ride-hailing has a recorded day"),
        (["--run", str(lbf_run), "--policy", "greedy"], "--policy: not used with --run"),
        (["--env", "ridehailing-1", "--greedy", "--policy", "greedy"], "--greedy: only with --run"),
    ):
        out = subprocess.run([sys.executable, "-m", "dyps_jax.evaluate", *args],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)


@pytest.mark.parametrize("preset", [TINY_LBF, TINY_RIDEHAILING, TINY_MEDICAL])
def test_make_policy_greedy_is_deterministic_and_sampled_is_not(preset, tmp_path):
    config = dyps_jax.make_config(env=_write_preset(tmp_path, preset), method="ps-id",
                                  num_envs=2, total_steps=10_000)
    state = dyps_jax.make_train_fns(config).init(jax.random.key(0))
    env = config.env.build()
    _, ts = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 8))  # obs [8, N, D]
    greedy = dyps_jax.make_policy(config, state, greedy=True)
    sampled = dyps_jax.make_policy(config, state)
    groups = greedy.assign(jax.random.key(2))
    assert groups.shape == (env.num_agents,) and groups.dtype == jnp.int32
    act = jax.jit(greedy.act)
    a = act(jax.random.key(3), ts.obs, ts.action_mask, groups)
    np.testing.assert_array_equal(a, act(jax.random.key(4), ts.obs, ts.action_mask, groups))
    s1 = sampled(jax.random.key(3), ts.obs, ts.action_mask)
    s2 = sampled(jax.random.key(4), ts.obs, ts.action_mask)
    assert a.shape == s1.shape and a.dtype == s1.dtype
    assert not np.array_equal(s1, s2)
    # The actions step the environment (format and shape as the training rollout gives them).
    state0, ts0 = env.reset(jax.random.key(5))
    _, ts1 = env.step(jax.random.key(6), state0, greedy(jax.random.key(7), ts0.obs,
                                                          ts0.action_mask))
    assert np.isfinite(np.asarray(ts1.reward)).all()


def test_pointer_mode_is_the_most_likely_sequence():
    k_logits, k_mask, k_draws, k_sample = jax.random.split(jax.random.key(0), 4)
    rows, slots, draws = 64, 7, 5
    logits = 2.0 * jax.random.normal(k_logits, (rows, slots))
    slot_mask = jax.random.bernoulli(k_mask, 0.7, (rows, slots)).at[:, 0].set(True)
    active = jax.random.randint(k_draws, (rows, 1), 0, draws + 1)
    draw_mask = jnp.arange(draws)[None] < active
    dist = PointerDraws(logits, slot_mask, draw_mask)
    mode = pointer_mode(dist)
    best = dist.log_prob(mode)
    samples = jax.vmap(dist.sample)(jax.random.split(k_sample, 256))  # [256, rows, draws]
    assert (jax.vmap(dist.log_prob)(samples) <= best[None] + 1e-5).all()
    mode = np.asarray(mode)
    assert (mode[~np.asarray(draw_mask)] == 0).all()  # inactive draws stay
    for row, mask in zip(mode, np.asarray(slot_mask)):
        orders = row[row > 0]
        assert mask[orders].all() and len(set(orders)) == len(orders)


def test_role_as_state_policy_feeds_the_mean_training_embedding(tmp_path):
    """Role-as-state's input is [o, h_a]; the policy feeds the state's h_a averaged over the
    training environments, exactly as the network would see it."""
    config = dyps_jax.make_config(env=_write_preset(tmp_path, TINY_LBF), method="role-as-state",
                                  num_envs=2, total_steps=10_000)
    state = dyps_jax.make_train_fns(config).init(jax.random.key(0))
    shape = state.roles.agent_embedding.shape  # [E, N, H]
    embedding = jax.random.normal(jax.random.key(1), shape)
    state = state.replace(roles=state.roles.replace(agent_embedding=embedding))
    env = config.env.build()
    _, ts = jax.vmap(env.reset)(jax.random.split(jax.random.key(2), 8))  # obs [8, N, D]
    policy = dyps_jax.make_policy(config, state, greedy=True)
    np.testing.assert_allclose(policy.embedding, embedding.mean(axis=0), rtol=1e-6)

    net = policy_network(config, env)
    x = jnp.concatenate([ts.obs, jnp.broadcast_to(policy.embedding, (8,) + shape[1:])], axis=-1)
    head, _ = net.apply(jax.tree.map(lambda p: p[0], state.policy.params), x)
    logits = jnp.where(ts.action_mask, head, -jnp.inf)
    expected = jnp.argmax(logits, axis=-1)
    np.testing.assert_array_equal(policy(jax.random.key(3), ts.obs, ts.action_mask), expected)

    # A whole evaluation runs (the stand-alone policy used to refuse this method).
    result = evaluate_states(config, jax.tree.map(lambda a: a[None], state), episodes=2)[0]
    assert result["method"] == "role-as-state" and np.isfinite(result["return"])
