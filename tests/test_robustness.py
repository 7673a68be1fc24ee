"""Catalogue of bad inputs and unclean stops (issue 12): each must end in a clear error naming the
value, or be handled as documented, never a traceback or a silently wrong run.

`bad_inputs` lists command lines that must exit 2 with one `dyps-jax: error:` line, and
`runtime_bad_inputs` two found only while running (divergence, out of memory);
`python tests/test_robustness.py` runs all of them, each in its own process, and counts clear errors,
tracebacks and silent runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import dyps_jax
from dyps_jax import checkpoint, envs
from dyps_jax.cli import main
from dyps_jax.config import ConfigAdjusted, config_from_dict
from dyps_jax.train import make_train_fns

# ---------------------------------------------------------------------------- typed env parameters


@pytest.mark.parametrize("preset, name, raw, want", [
    ("lbf-1", "force_coop", "False", False),
    ("lbf-1", "normalize_reward", "no", False),
    ("lbf-1", "observe_levels", "yes", True),
    ("rware-1", "load_gate", "False", False),
    ("lbf-1", "num_agents", "3", 3),
    ("lbf-1", "penalty", 1, 1.0),
])
def test_string_values_parse_to_the_declared_type(preset, name, raw, want):
    env = envs.make(preset, **{name: raw})
    assert getattr(env, name) == want and type(getattr(env, name)) is type(want)


def test_config_records_parsed_env_params():
    config = dyps_jax.make_config("lbf-1", env_params={"force_coop": "False"})
    assert config.env.params["force_coop"] is False
    assert config.env.build().force_coop is False


@pytest.mark.parametrize("preset, params, match", [
    ("lbf-1", {"force_coop": "maybe"}, r"env.force_coop: must be true or false, got 'maybe'"),
    ("lbf-1", {"num_agents": 2.5}, r"env.num_agents: must be an integer, got 2.5"),
    ("lbf-1", {"field_size": 2}, r"env.field_size: must be >= 3, got 2"),
    ("lbf-1", {"penalty": float("nan")}, r"env.penalty: must be a number \(finite\)"),
    ("lbf-1", {"max_food_level": 0}, r"env.max_food_level: must be >= 1"),
    ("rware-1", {"sensor_range": 0}, r"env.sensor_range: must be >= 1, got 0"),
    ("rware-1", {"load_gate": 1.5}, r"env.load_gate: must be true or false"),
    ("rolegame", {"num_cues": "many"}, r"env.num_cues: must be an integer, got 'many'"),
    ("medical", {"daily_budget": 2.0}, r"env.daily_budget: must be <= 1.0, got 2.0"),
    ("medical", {"stochastic": "sometimes"}, r"env.stochastic: must be true or false"),
    ("ridehailing-1", {"demand": "bogus"}, r"env.demand: unknown 'bogus'; allowed: poisson, replay"),
    ("ridehailing-1", {"reward_scale": -1.0}, r"env.reward_scale: must be > 0.0, got -1.0"),
    ("ridehailing-1", {"base_low": 9, "base_high": 2}, r"env.base_low: must be <= base_high"),
])
def test_every_environment_rejects_bad_parameters(preset, params, match):
    with pytest.raises(ValueError, match=match):
        envs.make(preset, **params)


def test_direct_construction_is_checked_by_the_same_mechanism():
    from dyps_jax.envs.lbf import LevelBasedForaging
    from dyps_jax.envs.rware import ColouredWarehouse

    with pytest.raises(ValueError, match="env.force_coop: must be true or false, got 'False'"):
        LevelBasedForaging(force_coop="False")
    with pytest.raises(ValueError, match="env.num_agents: must be >= 1, got 0"):
        ColouredWarehouse(num_agents=0)


def test_every_registered_parameter_declares_a_type():
    from dyps_jax.envs.core import _REGISTRY
    from dyps_jax.envs.params import _declared

    for kind, cls in _REGISTRY.items():
        for name, (allowed, _) in _declared(cls).items():
            assert set(allowed) <= {int, float, bool, str, type(None)}, (kind, name, allowed)


# ---------------------------------------------------------------------------- ignored settings


def test_toml_train_method_takes_effect(tmp_path, tiny_lbf):
    text = open(tiny_lbf).read().replace("[train]\n", '[train]\nmethod = "nops"\n')
    path = tmp_path / "nops.toml"
    path.write_text(text)
    assert dyps_jax.make_config(str(path)).method == "nops"
    assert dyps_jax.make_config(str(path), method="ps").method == "ps"  # the argument wins


def test_trips_path_without_replay_is_an_error(tmp_path):
    trips = tmp_path / "t.csv"
    trips.write_text("t,origin,destination,duration,price\n0,0,1,1,5.0\n")
    with pytest.raises(ValueError, match="env.trips_path: .*only replayed with demand = 'replay'"):
        dyps_jax.make_config("ridehailing-1", env_params={"trips_path": str(trips)})


def test_batch_size_above_one_iteration(tiny_lbf):
    # an explicit request is refused ...
    with pytest.raises(ValueError, match=r"batch_size: 64 is more than .* = 20\); allowed: 1..20"):
        dyps_jax.make_config(tiny_lbf, num_envs=2, batch_size=64, total_steps=200)
    # ... a preset's value is lowered, and the configuration says so
    with pytest.warns(ConfigAdjusted, match="batch_size"):
        config = dyps_jax.make_config(tiny_lbf, num_envs=1, total_steps=100)
    assert config.ppo.batch_size == 10


def test_total_steps_rounded_down_and_recorded(tiny_lbf):
    with pytest.warns(ConfigAdjusted, match="running 2 iterations = 80 steps"):
        config = dyps_jax.make_config(tiny_lbf, num_envs=4, total_steps=100)
    assert config.total_steps == 80 and config.num_iterations == 2
    assert config.to_dict()["total_steps"] == 80
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dyps_jax.make_config(tiny_lbf, num_envs=4, total_steps=80).total_steps == 80


@pytest.mark.parametrize("kwargs, match", [
    ({"clip_eps": float("inf")}, "clip_eps: must be a finite number, got inf"),
    ({"lr": float("nan")}, "lr: must be a finite number"),
    ({"seed": 2**64}, r"seed: must be in 0..9223372036854775807"),
    ({"seed": -1}, r"seed: must be in 0.."),
])
def test_non_finite_and_out_of_range_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dyps_jax.make_config("lbf-1", **kwargs)


def test_config_roundtrips_through_its_dict(tiny_lbf):
    config = dyps_jax.make_config(tiny_lbf, method="ps-id", num_envs=2, total_steps=200,
                                  env_params={"force_coop": True})
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert dataclasses.replace(config, seed=5) == config_from_dict(config.to_dict(), seed=5)
    with pytest.raises(ValueError, match="config.env: expected an object with name, kind"):
        config_from_dict({"env": {}})
    with pytest.raises(ValueError, match="config.ppo: unknown field 'seed'"):
        config_from_dict({**config.to_dict(), "ppo": {"seed": 1}})


# ---------------------------------------------------------------------------- file inputs


def test_truncated_city_npz_is_a_clear_error(tmp_path):
    from dyps_jax.envs.cities import generate_city

    city = generate_city(5, 7, seed=0, num_days=3)
    path = tmp_path / "city.npz"
    np.savez(path, **city._asdict())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"city file: .*city.npz' is not a readable .npz"):
        dyps_jax.make_config("medical", env_params={"city_path": str(path), "num_cbgs": 5,
                                                    "num_pois": 7})


def test_bad_trips_csv_fails_before_compiling(tmp_path):
    path = tmp_path / "trips.csv"
    path.write_text("t,origin,destination,when,price\n0,0,1,1,5.0\n")
    with pytest.raises(ValueError, match="unknown columns 'when'"):
        dyps_jax.make_config("ridehailing-1", env_params={"trips_path": str(path),
                                                          "demand": "replay"})
    with pytest.raises(ValueError, match="trip table .*missing.csv' does not exist"):
        dyps_jax.make_config("ridehailing-1", env_params={"trips_path": str(tmp_path / "missing.csv"),
                                                          "demand": "replay"})


# ---------------------------------------------------------------------------- the command line

def _cli(argv, cache: Path, wait: bool = True, timeout: float = 900):
    """Runs `python -m dyps_jax.train argv`; processes of one test module share a compilation
    cache, so the runs of one configuration compile it once."""
    # TF_CPP_MIN_LOG_LEVEL: XLA logs an error-level notice on each cache hit on some CPUs
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "dyps_jax.train", *map(str, argv)]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _only_run(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def _assert_valid_json(path: Path) -> dict:
    def no_constants(token):
        raise AssertionError(f"{path.name} holds a bare {token}")

    return json.loads(path.read_text(), parse_constant=no_constants)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny DyPS configuration run three ways: uninterrupted (with TensorBoard), rerun from
    its config.json and stopped by SIGTERM, then resumed. 61 iterations in chunks of 2: the last
    chunk is shorter, so two programs are compiled up front."""
    from conftest import TINY_LBF

    base = tmp_path_factory.mktemp("runs")
    cache = base / "jax-cache"
    preset = base / "lbf-tiny.toml"
    preset.write_text(TINY_LBF)
    argv = ["--env", preset, "--method", "dyps", "--num-groups", 2, "--num-envs", 2,
            "--total-steps", 61 * 20, "--log-every", 2, "--checkpoint-every", 4,
            "--progress-every", 0]
    full = _cli([*argv, "--out", base / "full", "--tensorboard"], cache)
    assert full.returncode == 0, full.stderr
    full_dir = _only_run(base / "full")

    proc = _cli(["--config", full_dir / "config.json", "--out", base / "cut", "--progress-every",
                 0], cache, wait=False)
    for line in proc.stderr:  # the first progress line: training has started
        if line.startswith("iteration"):
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)
    cut_dir = _only_run(base / "cut")
    cut_summary = _assert_valid_json(cut_dir / "summary.json")
    cut_rows = (cut_dir / "metrics.csv").read_text().splitlines()
    cut_checkpoints = sorted(p.name for p in (cut_dir / "checkpoints").iterdir())
    resumed = _cli(["--resume", cut_dir], cache)
    return {"full": full, "full_dir": full_dir, "cut_rc": proc.returncode, "cut_stderr": stderr,
            "cut_dir": cut_dir, "cut_summary": cut_summary, "cut_rows": cut_rows,
            "cut_checkpoints": cut_checkpoints,
            "resumed": resumed, "cache": cache, "base": base}


def test_sigterm_saves_checkpoint_and_summary_with_one_line(runs):
    assert runs["cut_rc"] == 128 + signal.SIGTERM
    assert "Traceback" not in runs["cut_stderr"]
    last = runs["cut_stderr"].strip().splitlines()[-1]
    assert last.startswith("dyps-jax: interrupted by SIGTERM at iteration ")
    assert f"--resume {runs['cut_dir']}" in last
    summary = runs["cut_summary"]
    stopped = summary["iterations"]
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    assert 0 < stopped < 61, "the signal must stop the run in the middle"
    assert summary["last_checkpoint"] == stopped
    # metrics.csv does not run ahead of the last checkpoint
    assert len(runs["cut_rows"]) - 1 == stopped
    assert f"{stopped}.sha256" in runs["cut_checkpoints"]


def test_resume_continues_bit_identically(runs):
    resumed = runs["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at iteration" in resumed.stderr
    summary = _assert_valid_json(runs["cut_dir"] / "summary.json")
    assert summary["status"] == "completed" and summary["iterations"] == 61
    assert summary["resumed_from"] == runs["cut_summary"]["iterations"]
    full, cut = runs["full_dir"], runs["cut_dir"]
    # --config reran the same run: every metric of every iteration is equal, to the last bit
    assert (cut / "metrics.csv").read_text() == (full / "metrics.csv").read_text()
    assert (cut / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
    config = config_from_dict(_assert_valid_json(full / "config.json"))
    like = jax.eval_shape(make_train_fns(config).init, jax.random.key(0))
    a = checkpoint.restore(full / "checkpoints", like)
    b = checkpoint.restore(cut / "checkpoints", like)
    assert int(a.iteration) == int(b.iteration) == 61
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_folder_logs_and_progress(runs):
    full, folder = runs["full"], runs["full_dir"]
    err = full.stderr
    assert "compiling dyps on lbf-tiny (61 iterations x 20 env steps, chunks of 2 and 1)…" in err
    assert "compiled in" in err
    # output is not a terminal: plain progress lines, one per chunk with --progress-every 0
    assert sum(line.startswith("iteration ") for line in err.splitlines()) == 31
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["checkpoints", "config.json", "metrics.csv", "metrics.jsonl", "summary.json",
                     "tb"]
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, 62))
    assert any(p.name.startswith("events.out.tfevents") for p in (folder / "tb").iterdir())
    assert _assert_valid_json(folder / "summary.json")["status"] == "completed"
    # two checkpoints kept, each with its checksum
    names = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert names == ["60", "60.sha256", "61", "61.sha256"]


def test_corrupted_checkpoint_is_refused_and_fallback_is_opt_in(runs, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(runs["full_dir"], folder)
    config = config_from_dict(_assert_valid_json(folder / "config.json"))
    like = jax.eval_shape(make_train_fns(config).init, jax.random.key(0))
    victim = max((p for p in (folder / "checkpoints" / "61").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = os.urandom(64)  # 64 garbled bytes
    victim.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot restore step 61 from .*61: "
                                                         r"checksum mismatch"):
        checkpoint.restore(folder / "checkpoints", like)
    warned = []
    state = checkpoint.restore(folder / "checkpoints", like, fallback=True, warn=warned.append)
    assert int(state.iteration) == 60 and "step 61" in warned[0]
    (folder / "checkpoints" / "60.sha256").unlink()  # as saved by an older dyps-jax
    warned = []
    state = checkpoint.restore(folder / "checkpoints", like, step=60, warn=warned.append)
    assert int(state.iteration) == 60 and "no checksum" in warned[0]
    # the command line: a clear one-line error unless --resume-fallback is given
    proc = _cli(["--resume", folder], runs["cache"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("dyps-jax: error: checkpoint: cannot "
                                                           "restore step 61")


def test_divergence_stops_the_run(tmp_path, tiny_lbf, runs):
    proc = _cli(["--env", tiny_lbf, "--method", "ps", "--num-envs", 2, "--total-steps", 80,
                 "--lr", 1e30, "--log-every", 2, "--checkpoint-every", 2, "--out", tmp_path],
                runs["cache"])
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dyps-jax: error: diverged at iteration ")
    assert "non-finite" in last and "loss" in last
    folder = _only_run(tmp_path)
    summary = _assert_valid_json(folder / "summary.json")
    assert summary["status"] == "diverged"
    assert f"iteration {summary['diverged_iteration']}:" in last
    assert summary["diverged_iteration"] == 1 and "policy_loss" in summary["diverged_quantities"]
    assert summary["final_return"] is None and summary["last_checkpoint"] is None
    assert "last good checkpoint: none" in last
    assert _assert_valid_json(folder / "config.json")["ppo"]["lr"] == 1e30
    # nothing non-finite reached the logs, and no checkpoint of a diverged state was saved
    assert not (folder / "metrics.csv").exists()
    assert not list((folder / "checkpoints").glob("*.sha256"))


def test_divergence_after_a_good_checkpoint_keeps_it(tmp_path, tiny_lbf):
    """Four good iterations (checkpoints at 2 and 4), then the same run continued with a learning
    rate that blows up: it stops at iteration 5, the summary names it and points at checkpoint 4,
    which restores finite parameters, and the logs hold exactly the good iterations."""
    from dyps_jax.cli import run

    def config(iterations, lr):
        return dyps_jax.make_config(env=tiny_lbf, method="ps", num_envs=2,
                                    total_steps=iterations * 20, lr=lr, log_every=2,
                                    checkpoint_every=2, out=str(tmp_path))

    good = run(config(4, 3e-4), quiet=True)
    assert good["status"] == "completed" and good["last_checkpoint"] == 4
    folder = Path(good["run_dir"])
    summary = run(config(8, 1e30), quiet=True, resume=folder)
    assert summary["status"] == "diverged"
    assert summary["diverged_iteration"] == 5 and summary["last_checkpoint"] == 4
    assert _assert_valid_json(folder / "summary.json")["status"] == "diverged"
    fns = make_train_fns(config(8, 3e-4))
    state = checkpoint.restore(folder / "checkpoints", jax.eval_shape(fns.init, jax.random.key(0)))
    assert int(state.iteration) == 4
    assert all(bool(np.isfinite(leaf).all()) for leaf in jax.tree.leaves(state.policy.params))
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4]
    assert "nan" not in (folder / "metrics.jsonl").read_text().lower()


def test_out_of_memory_is_one_clear_line_and_a_summary(tmp_path):
    """A real allocation failure (terabytes in one buffer) while running: exit 1, one line, no
    traceback, and the run folder's summary says what happened."""
    ((_, argv, text),) = [case for case in runtime_bad_inputs(tmp_path) if case[0] == "out of memory"]
    proc = _cli(argv, tmp_path / "cache")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dyps-jax: error: {text} at iteration 1 (")
    assert "last good checkpoint: none" in last
    summary = _assert_valid_json(_only_run(tmp_path / "runtime") / "summary.json")
    assert summary["status"] == "out_of_memory" and summary["failed_iteration"] == 1
    assert "Out of memory" in summary["error"]


# ---------------------------------------------------------------------------- bad inputs catalogue


def bad_inputs(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(kind, argv, text the one-line error must hold) for bad command lines of every kind the
    issue lists; files they need are written under `tmp`."""
    from conftest import TINY_LBF

    tiny = tmp / "lbf-tiny.toml"
    tiny.write_text(TINY_LBF)
    escape = tmp / "escape.toml"
    escape.write_text(TINY_LBF.replace('name = "lbf-tiny"', 'name = "../../x"'))
    malformed = tmp / "malformed.toml"
    malformed.write_text("[env\nkind = 'lbf'")
    fast = tmp / "fast.toml"
    fast.write_text("[env]\nkind = 'lbf'\n[train]\nlr = 'fast'\n")
    trips = tmp / "trips.csv"
    trips.write_text("t,origin,destination,when,price\n0,0,1,1,5.0\n")
    city = tmp / "city.npz"
    city.write_bytes(b"PK\x03\x04 truncated")
    a_file = tmp / "a-file"
    a_file.write_text("x")
    garbage = tmp / "garbage.json"
    garbage.write_text("{not json")
    no_run = tmp / "no-such-run"
    rh = ["--env", "ridehailing-1"]
    return [
        ("config", ["--env", "atlantis"], "unknown scenario 'atlantis'"),
        ("config", ["--method", "qmix"], "unknown method 'qmix'"),
        ("config", ["--num-groups", "99"], "num_groups: must be between 1"),
        ("config", ["--num-envs", "-1"], "num_envs: must be > 0"),
        ("config", ["--num-envs", "1.5"], "invalid int value"),
        ("config", ["--gamma", "1.5"], "gamma: must be in [0, 1]"),
        ("config", ["--lr", "nan"], "lr: must be a finite number"),
        ("config", ["--clip-eps", "inf"], "clip_eps: must be a finite number"),
        ("config", ["--seed", str(2**70)], "seed: must be in 0.."),
        ("config", ["--seed", "-3"], "seed: must be in 0.."),
        ("config", ["--selector-signal", "vibes"], "selector_signal: unknown 'vibes'"),
        ("config", ["--total-steps", "10"], "total_steps: 10 is less than one iteration"),
        ("config", ["--total-steps", str(10**12)], "total_steps: must be at most 2147483647"),
        ("config", ["--num-envs", str(10**8), "--total-steps", str(2 * 10**9)],
         "at most 2147483647 (int32 indices)"),
        ("config", ["--batch-size", "100000"], "batch_size: 100000 is more than"),
        ("config", ["--progress-every", "-1"], "--progress-every: must be >= 0"),
        ("config", ["--env", str(malformed)], "malformed TOML"),
        ("config", ["--env", str(fast)], "lr: expected float, got 'fast'"),
        ("config", ["--env", str(escape), "--out", str(tmp / "out")], "name: '../../x' must be"),
        ("env param", ["--env-param", "force_coop=maybe"], "env.force_coop: must be true or false"),
        ("env param", ["--env-param", "num_agents=0"], "env.num_agents: must be >= 1, got 0"),
        ("env param", ["--env-param", "penalty=lots"], "env.penalty: must be a number"),
        ("env param", ["--env-param", "bogus=1"], "unknown parameter(s) ['bogus']"),
        ("env param", ["--env-param", "noequals"], "--env-param: expected KEY=VALUE"),
        ("env param", ["--env", "rware-1", "--env-param", "load_gate=perhaps"],
         "env.load_gate: must be true or false"),
        ("env param", ["--env", "rolegame", "--env-param", "num_types=99"], "env.num_types"),
        ("env param", ["--env", "medical", "--env-param", "daily_budget=5"],
         "env.daily_budget: must be <= 1.0"),
        ("env param", [*rh, "--env-param", "demand=uber"], "env.demand: unknown 'uber'"),
        ("env param", [*rh, "--env-param", "max_candidates=7"], "env.max_candidates: must be even"),
        ("ignored setting", [*rh, "--env-param", f"trips_path={trips}"],
         "env.trips_path: a trip table is only replayed with demand = 'replay'"),
        ("file input", [*rh, "--env-param", "demand=replay", "--env-param", f"trips_path={trips}"],
         "unknown columns 'when'"),
        ("file input", [*rh, "--env-param", "demand=replay", "--env-param",
                        f"trips_path={tmp / 'none.csv'}"], "does not exist"),
        ("file input", ["--env", "medical", "--env-param", f"city_path={city}"],
         "is not a readable .npz archive"),
        ("file input", ["--config", str(tmp / "missing.json")], "--config: "),
        ("file input", ["--config", str(garbage)], "--config: cannot read"),
        ("file input", ["--config", str(garbage), "--env", "lbf-1"], "drop --env"),
        ("run folder", ["--env", str(tiny), "--num-envs", "2", "--total-steps", "20", "--out",
                        str(a_file)], "out: "),
        ("run folder", ["--env", str(tiny), "--num-envs", "2", "--total-steps", "20", "--out",
                        "/dev/null/runs"], "out: cannot create folder"),
        ("run folder", ["--env", str(tiny), "--num-envs", "2", "--total-steps", "20", "--out",
                        "/sys/dyps-runs"], "out: cannot create folder"),
        ("resume", ["--resume", str(no_run)], "--resume: "),
        ("resume", ["--resume", str(no_run), "--seed", "3"], "drop --seed"),
        ("resume", ["--resume-fallback"], "only meaningful with --resume"),
    ]


def test_every_bad_input_is_one_clear_line(tmp_path, capsys):
    failures = []
    for kind, argv, text in bad_inputs(tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        # argparse's own errors (a flag's type) print the usage block first
        one_line = len(err) == 1 or "invalid int value" in text
        if not (exit_info.value.code == 2 and err and err[-1].startswith("dyps-jax: error: ")
                and text in err[-1] and one_line):
            failures.append((kind, argv, exit_info.value.code, err[-3:]))
    assert not failures, failures


def test_settings_adjusted_are_said(tiny_lbf):
    from dyps_jax.cli import config_from_args

    notes = []
    config, _ = config_from_args(["--env", tiny_lbf, "--num-envs", "4", "--total-steps", "100"],
                                 note=notes.append)
    assert config.total_steps == 80
    assert notes == ["total_steps: 100 is not a multiple of one iteration (40 env steps); running "
                     "2 iterations = 80 steps (recorded in config.json)"]
    config, _ = config_from_args(["--env", tiny_lbf, "--env-param", "force_coop=False"])
    assert config.env.params["force_coop"] is False


def test_run_folders_started_together_do_not_collide(tmp_path):
    from dyps_jax import run_dir

    folders = {run_dir.create(tmp_path, "lbf-1", "dyps", 0) for _ in range(3)}
    assert len(folders) == 3 and all(f.parent == tmp_path for f in folders)
    with pytest.raises(ValueError, match="outside"):
        run_dir.create(tmp_path, "../x", "dyps", 0)


def test_metrics_are_appended_and_truncated_on_resume(tmp_path):
    from dyps_jax.run_dir import MetricsLog

    log = MetricsLog(tmp_path)
    log.append([{"iteration": 1, "env_steps": 10, "loss": 0.5}])
    first = (tmp_path / "metrics.csv").read_text()
    log.append([{"iteration": 2, "env_steps": 20, "loss": 0.25},
                {"iteration": 3, "env_steps": 30, "loss": 0.125}])
    text = (tmp_path / "metrics.csv").read_text()
    assert text.startswith(first) and text.count("iteration") == 1 and len(text.splitlines()) == 4
    again = MetricsLog(tmp_path)  # a resume from the checkpoint of iteration 2
    assert [r["iteration"] for r in again.truncate(2)] == [1, 2]
    again.append([{"iteration": 3, "env_steps": 30, "loss": 0.5}])
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == [
        "1,10,0.5", "2,20,0.25", "3,30,0.5"]
    assert [r["loss"] for r in again.read()] == [0.5, 0.25, 0.5]


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("dyps-jax ")


def test_json_is_always_valid(tmp_path):
    checkpoint.write_json(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), 1.0],
                                                "c": np.float32(2.5)})
    assert _assert_valid_json(tmp_path / "s.json") == {"a": None, "b": [None, 1.0], "c": 2.5}


def runtime_bad_inputs(tmp: Path) -> list[tuple[str, list[str], str]]:
    """Bad inputs found only while running (each compiles a tiny configuration)."""
    from conftest import TINY_LBF

    tiny = tmp / "lbf-tiny.toml"
    tiny.write_text(TINY_LBF)
    base = ["--env", str(tiny), "--method", "ps", "--out", str(tmp / "runtime")]
    return [
        ("divergence", [*base, "--num-envs", "2", "--total-steps", "80", "--lr", "1e30"],
         "diverged at iteration 1: non-finite"),
        # 2e9 agent transitions of 360 observation floats per iteration: terabytes in one buffer
        # (the allocation fails at once unless the kernel overcommits memory without limit)
        ("out of memory", [*base, "--num-envs", str(2 * 10**6), "--total-steps", str(2 * 10**7),
                           *[f"--env-param={p}" for p in ("num_agents=80", "field_size=50",
                                                          "num_food=40", "sight=50")]],
         "out of memory"),
    ]


def _tally(tmp: Path) -> dict[str, int]:
    """Runs every catalogued bad command line in its own process; counts the outcomes."""
    counts = {"clear error": 0, "traceback": 0, "silent": 0}
    for kind, argv, text in bad_inputs(tmp) + runtime_bad_inputs(tmp):
        extra = [] if "--out" in argv or "--resume" in argv else ["--out", str(tmp / "runs")]
        proc = subprocess.run([sys.executable, "-m", "dyps_jax.train", *argv, *extra],
                              capture_output=True, text=True, timeout=900)
        if "Traceback" in proc.stderr:
            outcome = "traceback"
        elif proc.returncode != 0 and text in proc.stderr:
            outcome = "clear error"
        else:
            outcome = "silent"
        counts[outcome] += 1
        print(f"{outcome:12s} rc={proc.returncode} {kind:16s} {' '.join(argv)[:90]}")
    return counts


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(_tally(Path(tmp)))
