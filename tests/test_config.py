import pytest

import dyps_jax
from dyps_jax.config import AUTO_SELECTOR_STEPS, override_names


def test_preset_train_table_then_overrides():
    config = dyps_jax.make_config(env="lbf-1", method="ps-id", lr=3e-4, num_envs=8)
    assert config.env.kind == "lbf" and config.env.params["num_agents"] == 6
    assert config.ppo.lr == 3e-4  # override beats the preset's Table 6 value
    assert config.ppo.batch_size == 256 and config.total_steps == 1_000_000  # from the preset
    assert config.num_envs == 8 and config.method == "ps-id"
    assert config.num_param_sets == 1


def test_num_param_sets_per_method():
    assert dyps_jax.make_config(env="lbf-2", method="nops").num_param_sets == 12
    assert dyps_jax.make_config(env="lbf-2", method="dyps", num_groups=3).num_param_sets == 3


def test_selector_steps_one_per_episode_up_to_the_cap():
    steps = lambda **kw: dyps_jax.make_config(env="rolegame", **kw).selector_steps  # noqa: E731
    assert steps(num_envs=4) == 4 and steps(num_envs=16) == 16  # one per episode
    # Each step reads the whole batch: past AUTO_SELECTOR_STEPS episodes the count stays there.
    assert steps(num_envs=64) == AUTO_SELECTOR_STEPS == 16
    assert steps(num_envs=64, selector_updates=40) == 40  # an explicit count is kept


def test_env_params_override_and_validation():
    config = dyps_jax.make_config(env="lbf-1", env_params={"num_agents": 3}, num_groups=2)
    assert config.num_agents == 3
    with pytest.raises(ValueError, match="num_agents"):
        dyps_jax.make_config(env="lbf-1", env_params={"num_agents": 0})
    with pytest.raises(ValueError, match="bogus"):
        dyps_jax.make_config(env="lbf-1", env_params={"bogus": 1})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"env": "nope"}, "unknown scenario 'nope'.*lbf-1"),
        ({"method": "mappo"}, "unknown method 'mappo'.*dyps"),
        ({"num_groups": 0}, "num_groups.*between 1 and .*6.*got 0"),
        ({"num_groups": 7}, "num_groups.*got 7"),
        ({"num_envs": 0}, "num_envs.*> 0.*got 0"),
        ({"total_steps": -5}, "total_steps.*got -5"),
        ({"total_steps": 100}, "total_steps: 100 is less than one iteration"),
        ({"lr": -1.0}, "lr.*got -1.0"),
        ({"gamma": 1.5}, "gamma.*1.5"),
        ({"batch_size": 2.5}, "batch_size.*2.5"),
        ({"learning_rate": 1e-3}, "unknown setting.*learning_rate"),
        ({"vlstm_grad_sequences": -3}, "vlstm_grad_sequences: must be 0 .* got -3"),
        ({"vlstm_grad_sequences": 2.5}, "vlstm_grad_sequences: expected int, got 2.5"),
    ],
)
def test_bad_values_name_the_field(kwargs, match):
    args = {"env": "lbf-1", "method": "dyps", **kwargs}
    with pytest.raises(ValueError, match=match):
        dyps_jax.make_config(**args)


def test_malformed_and_incomplete_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[env\nkind = 'lbf'")
    with pytest.raises(ValueError, match="malformed TOML"):
        dyps_jax.make_config(env=str(bad))
    no_kind = tmp_path / "nokind.toml"
    no_kind.write_text("[env]\nnum_agents = 3\n")
    with pytest.raises(ValueError, match="'kind'"):
        dyps_jax.make_config(env=str(no_kind))
    wrong_kind = tmp_path / "wrong.toml"
    wrong_kind.write_text("[env]\nkind = 'chess'\n")
    with pytest.raises(ValueError, match="unknown environment kind 'chess'"):
        dyps_jax.make_config(env=str(wrong_kind))
    with pytest.raises(ValueError, match="does not exist"):
        dyps_jax.make_config(env=str(tmp_path / "missing.toml"))
    bad_train = tmp_path / "badtrain.toml"
    bad_train.write_text("[env]\nkind = 'lbf'\n[train]\nlr = 'fast'\n")
    with pytest.raises(ValueError, match="lr: expected float, got 'fast'"):
        dyps_jax.make_config(env=str(bad_train))


def test_every_preset_loads():
    for name in dyps_jax.envs.preset_names():
        config = dyps_jax.make_config(env=name, method="ps")
        assert config.env.name == name


def test_override_names_cover_cli_flags():
    names = override_names()
    for flag in ("seed", "total_steps", "num_envs", "num_groups", "out", "batch_size", "lr",
                 "selector_lr", "gamma", "clip_eps", "gae_lambda"):
        assert flag in names
