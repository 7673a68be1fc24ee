"""Several devices (mesh.py): the environment batch (and the agent axis) split over 4 forced CPU
devices gives the single-device run's metrics, and bad device counts are refused before
compiling."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from dyps_jax import make_config
from dyps_jax.train import make_train_fns

# Runs in a fresh interpreter: the forced device count must be set before jax starts.
SHARDED_RUN = """
import json, jax, numpy as np
from dyps_jax import make_config
from dyps_jax.train import make_train_fns

out = {"device_count": jax.device_count()}
for devices, agent_devices in ((1, 1), (4, 1), (4, 2)):
    config = make_config("rolegame", method="dyps-no-repr", num_envs=4, total_steps=64,
                         devices=devices, agent_devices=agent_devices)
    fns = make_train_fns(config)
    state = jax.jit(fns.init)(jax.random.key(0))
    placed = fns.place(jax.device_get(state))  # as a restored checkpoint comes: host arrays
    final, metrics = jax.jit(fns.iterate, static_argnums=1)(state, config.num_iterations)
    embedding = final.roles.agent_embedding
    param = jax.tree.leaves(final.policy.params)[0]
    # Keyed by the mesh: environment devices x agent devices.
    out[f"{devices // agent_devices}x{agent_devices}"] = {
        "metrics": {k: np.asarray(v).tolist() for k, v in metrics.items()},
        "embedding_devices": len(embedding.sharding.device_set),
        "embedding_shards": [list(s.data.shape) for s in embedding.addressable_shards],
        "embedding_shape": list(embedding.shape),
        "param_replicated": param.sharding.is_fully_replicated,
        "param_devices": len(param.sharding.device_set),
        # One device: `place` leaves the host arrays as they are.
        "placed_like_init": devices == 1 or placed.roles.agent_embedding.sharding
                            == state.roles.agent_embedding.sharding,
    }
print(json.dumps(out))
"""


def test_sharded_run_matches_single_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", SHARDED_RUN], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["device_count"] == 4
    single = out["1x1"]
    # One device: nothing split. 4 x 1: each device holds one of the 4 environments' embeddings
    # h_a; 2 x 2: two environments' halves of the agents each.
    assert single["embedding_devices"] == 1 and single["param_devices"] == 1
    n, h = single["embedding_shape"][1:]
    for name, shard in (("4x1", [1, n, h]), ("2x2", [2, n // 2, h])):
        sharded = out[name]
        assert sharded["embedding_devices"] == 4
        assert sharded["embedding_shards"] == [shard] * 4, name
        assert sharded["param_replicated"] and sharded["param_devices"] == 4
        assert sharded["placed_like_init"]
        assert single["metrics"].keys() == sharded["metrics"].keys()
        for metric, values in single["metrics"].items():
            assert len(values) == 2
            # Same program up to the order of cross-device sums.
            np.testing.assert_allclose(sharded["metrics"][metric], values, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name}: {metric}")


def test_devices_that_do_not_divide_num_envs_are_refused():
    with pytest.raises(ValueError, match="num_envs: 6 environments cannot be split evenly over 4 "
                                         "devices; num_envs must be a multiple of 4"):
        make_config("rolegame", num_envs=6, devices=4)
    with pytest.raises(ValueError, match="devices: must be >= 0"):
        make_config("rolegame", devices=-1)
    # rolegame has 8 agents: 4 devices on its agent axis are allowed, 3 are not.
    make_config("rolegame", num_envs=4, devices=4, agent_devices=4)
    with pytest.raises(ValueError, match=r"agent_devices: 8 agents cannot be split evenly over 3 "
                                         r"devices; allowed: a divisor of 8 \(1, 2, 4, 8, ...\)"):
        make_config("rolegame", devices=3, agent_devices=3)
    with pytest.raises(ValueError, match="devices: 4 devices cannot form a mesh with "
                                         "agent_devices = 8; devices must be a multiple of 8"):
        make_config("rolegame", devices=4, agent_devices=8)
    with pytest.raises(ValueError, match="num_envs: 6 environments cannot be split evenly over 4 devices"):
        make_config("rolegame", num_envs=6, devices=8, agent_devices=2)
    with pytest.raises(ValueError, match="agent_devices: must be >= 1"):
        make_config("rolegame", agent_devices=0)


def test_more_devices_than_present_are_refused_before_compiling():
    count = jax.local_device_count()
    config = make_config("rolegame", num_envs=4 * count, devices=2 * count)
    with pytest.raises(ValueError, match=f"devices: {2 * count} requested but only {count} local"):
        make_train_fns(config)
