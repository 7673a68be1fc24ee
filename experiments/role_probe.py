"""Do the VLSTM's agent embeddings carry the agents' types? The role model alone, on fixed data.

Records E episodes of uniformly random allowed actions in a scenario with true agent types
(`env.agent_types`), trains DyPS's VLSTM (eq. 12) on those trajectories with Adam, and reports every
25 updates the ELBO loss and `role_separation` (between-type over within-type variance) of the final
hidden state h_T and of the mean hidden state over the episode, for the paper's decoder and for the
action-conditioned one (`vlstm_decoder`, docs/grouping.md). Writes
`experiments/results/role_probe_<env>.md`.

    python experiments/role_probe.py --env rware-1 --steps 100 --updates 300
"""

from __future__ import annotations

import argparse
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from dyps_jax import envs
from dyps_jax.checkpoint import write_atomic
from dyps_jax.group_metrics import separation
from dyps_jax.roles.vlstm import VLSTM, init_vlstm, vlstm_elbo

RESULTS = Path(__file__).parent / "results"


def random_trajectories(env, num_envs: int, steps: int, key: jax.Array):
    """obs, one-hot actions, rewards, next obs: each [T, E, N, ...]."""

    def episode(key):
        k_reset, k_run = jax.random.split(key)
        state, ts = env.reset(k_reset)

        def step(carry, key):
            state, ts = carry
            k_act, k_env = jax.random.split(key)
            logits = jnp.where(ts.action_mask, 0.0, -1e9)
            action = jax.random.categorical(k_act, logits)
            state, nts = env.step(k_env, state, action)
            return (state, nts), (ts.obs, jax.nn.one_hot(action, env.num_actions), nts.reward,
                                  nts.obs)

        return jax.lax.scan(step, (state, ts), jax.random.split(k_run, steps))[1]

    return jax.jit(jax.vmap(episode, out_axes=1))(jax.random.split(key, num_envs))


def probe(env, data, decoder: str, updates: int, lr: float, seed: int) -> list[tuple]:
    obs, action, reward, next_obs = data
    T, E, N = reward.shape
    flat = lambda x: x.reshape((T, E * N) + x.shape[3:])  # noqa: E731
    # As in training: step t predicts s_{t+1} = obs[t + 1], the last step the state after it.
    trajectory = (flat(obs), flat(action), flat(reward), next_obs[-1].reshape(E * N, -1))
    valid = jnp.ones((T, E * N))
    net = VLSTM(target_dim=env.obs_dim + 1)
    params = init_vlstm(net, jax.random.key(seed), env.obs_dim,
                        env.obs_dim + env.num_actions + 1,
                        env.num_actions if decoder == "action" else 0)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    opt = tx.init(params)
    types = jnp.asarray(env.agent_types)
    num_types = int(env.agent_types.max()) + 1

    @jax.jit
    def update(params, opt, key):
        def loss(p, embedding):
            return vlstm_elbo(net, p, key, *trajectory, valid, embedding, decoder == "action")

        (value, h_final), grads = jax.value_and_grad(loss, has_aux=True)(params, "final")
        _, h_mean = loss(params, "mean")
        ratio = [separation(h.reshape(E, N, -1), types, num_types).mean()
                 for h in (h_final, h_mean)]
        updates_, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates_), opt, value, *ratio

    rows = []
    for i in range(updates):
        params, opt, value, sep_final, sep_mean = update(params, opt, jax.random.key(i))
        if i % 25 == 0 or i == updates - 1:
            rows.append((i, float(value), float(sep_final), float(sep_mean)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="rware-1")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100, help="steps recorded per episode")
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = envs.make(args.env)
    if getattr(env, "agent_types", None) is None:
        parser.error(f"--env: {args.env!r} has no true agent types to probe for")
    data = random_trajectories(env, args.num_envs, args.steps, jax.random.key(args.seed))
    lines = []
    for decoder in ("paper", "action"):
        t0 = time.perf_counter()
        rows = probe(env, data, decoder, args.updates, args.lr, args.seed)
        lines += [f"## decoder `{decoder}` ({time.perf_counter() - t0:.0f} s)", "",
                  "| update | -ELBO | separation of h_T | separation of mean h_t |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {i} | {v:.3f} | {a:.3f} | {b:.3f} |" for i, v, a, b in rows] + [""]
        print("\n".join(lines[-len(rows) - 6:]), flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    head = [f"# VLSTM role probe on {args.env}", "",
            f"Command: `python experiments/role_probe.py --env {args.env} --num-envs "
            f"{args.num_envs} --steps {args.steps} --updates {args.updates} --lr {args.lr} "
            f"--seed {args.seed}`  ",
            f"Date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, device {jax.devices()[0].device_kind}, "
            f"jax {jax.__version__}, git {rev}. {args.num_envs} episodes of {args.steps} steps of "
            "uniformly random actions, one full batch per update; separation = between-type over "
            "within-type variance of the embeddings (0: no type information).", ""]
    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / f"role_probe_{args.env}.md", "\n".join(head + lines))


if __name__ == "__main__":
    main()
