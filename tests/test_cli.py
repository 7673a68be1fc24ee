import csv
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from dyps_jax import checkpoint
from dyps_jax.cli import config_from_args, run
from dyps_jax.train import make_train_fns


def test_flags_map_to_config(tiny_lbf):
    config, _ = config_from_args(["--env", tiny_lbf, "--method", "nops", "--seed", "3",
                                  "--total-steps", "400", "--num-envs", "2", "--lr", "0.001",
                                  "--env-param", "max_steps=20", "--gae-lambda", "0.9",
                                  "--vlstm-grad-sequences", "0"])
    assert config.method == "nops" and config.seed == 3 and config.total_steps == 400
    assert config.num_envs == 2 and config.ppo.lr == 0.001 and config.ppo.gae_lambda == 0.9
    assert config.env.params["max_steps"] == 20 and config.sharing.vlstm_grad_sequences == 0


@pytest.mark.parametrize("argv, match", [
    (["--env", "atlantis"], "unknown scenario 'atlantis'"),
    (["--method", "qmix"], "unknown method 'qmix'"),
    (["--num-groups", "99"], "num_groups"),
    (["--num-envs", "-1"], "num_envs"),
    (["--algo", "qmix"], "algo: unknown 'qmix'"),
    (["--vlstm-grad-sequences", "-1"], "vlstm_grad_sequences: must be 0"),
])
def test_bad_flags_exit_with_message(argv, match):
    proc = subprocess.run([sys.executable, "-m", "dyps_jax.train", *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert match in proc.stderr


def test_ridehailing_summary_reports_gmv_and_orr(tiny_ridehailing, tmp_path):
    config, _ = config_from_args(["--env", tiny_ridehailing, "--method", "ps",
                                  "--total-steps", "96", "--num-envs", "4", "--out", str(tmp_path)])
    summary = run(config, quiet=True)
    rows = list(csv.DictReader(open(tmp_path / summary["run_dir"].split("/")[-1] / "metrics.csv")))
    assert summary["final_gmv"] == pytest.approx(float(rows[-1]["gmv"]))
    assert 0 < summary["final_orr"] <= 1
    assert summary["final_served"] > 0


def test_run_writes_complete_run_folder_and_checkpoint_restores(tiny_lbf, tmp_path):
    config, _ = config_from_args(["--env", tiny_lbf, "--method", "dyps", "--num-groups", "2",
                                  "--total-steps", "200", "--num-envs", "4", "--log-every", "2",
                                  "--checkpoint-every", "4", "--out", str(tmp_path)])
    summary = run(config, quiet=True)
    run_dir = tmp_path / summary["run_dir"].split("/")[-1]
    files = sorted(p.name for p in run_dir.iterdir())
    assert files == ["checkpoints", "config.json", "metrics.csv", "metrics.jsonl", "summary.json"]
    assert json.loads((run_dir / "config.json").read_text())["sharing"]["method"] == "dyps"
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 6))
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 5
    assert not list(run_dir.glob(".*tmp"))

    fns = make_train_fns(config)
    like = jax.eval_shape(fns.init, jax.random.key(0))
    state = checkpoint.restore(run_dir / "checkpoints", like)
    assert int(state.iteration) == 5
    # a restored state keeps training
    state, metrics = jax.jit(fns.iterate, static_argnums=1)(state, 1)
    assert np.isfinite(metrics["episode_return"]).all()


def test_restore_errors_are_clear(tmp_path, tiny_lbf):
    config, _ = config_from_args(["--env", tiny_lbf, "--method", "ps", "--total-steps", "40",
                                  "--num-envs", "4"])
    like = jax.eval_shape(make_train_fns(config).init, jax.random.key(0))
    with pytest.raises(ValueError, match="no checkpoint found"):
        checkpoint.restore(tmp_path / "empty", like)
    mngr = checkpoint.manager(tmp_path / "ck")
    checkpoint.save(mngr, 1, make_train_fns(config).init(jax.random.key(0)))
    for f in (tmp_path / "ck" / "1").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot restore step 1"):
        checkpoint.restore(tmp_path / "ck", like)


def test_write_atomic_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "summary.json"
    checkpoint.write_json(target, {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        checkpoint.write_json(target, {"a": Boom()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_console_script_entry_point_resolves():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "dyps-jax"]
    assert callable(script.load())


def test_seps_run_logs_its_clusters_and_their_ari(tmp_path):
    preset = tmp_path / "rolegame-tiny.toml"
    preset.write_text('name = "rolegame-tiny"\n[env]\nkind = "rolegame"\nnum_agents = 4\n'
                      'num_types = 2\nnum_cues = 2\nmax_steps = 4\n[train]\nbatch_size = 8\n')
    config, _ = config_from_args(["--env", str(preset), "--method", "seps", "--algo", "mappo",
                                  "--num-groups", "2", "--total-steps", "48", "--num-envs", "4",
                                  "--seps-pretrain-fraction", "0.5", "--seps-samples", "64",
                                  "--checkpoint-every", "0", "--out", str(tmp_path)])
    summary = run(config, quiet=True)
    assert summary["algo"] == "mappo" and "-seps-mappo-" in summary["run_dir"]
    assert sorted(sum(summary["seps_clusters"], [])) == [0, 1, 2, 3]
    assert -1.0 <= summary["seps_type_ari"] <= 1.0
