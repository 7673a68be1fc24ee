"""Learning check: DyPS and the sharing baselines against a uniform random policy on one scenario.

Trains each method with `make_train` (seeds vmapped in one compiled call), evaluates a uniform random
policy over the allowed actions on the same scenario, and writes
`experiments/results/learning_<env>.{csv,md,png}`: the mean team episode return of the first and
last 10 % of iterations, per method, plus the learning curves.

    python experiments/learning.py --env lbf-1 --total-steps 300000 --seeds 2
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import dyps_jax  # noqa: E402
from dyps_jax.checkpoint import write_atomic  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def random_policy_return(env_name: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean and std of the team return of uniformly random allowed actions."""
    env = dyps_jax.envs.make(env_name)

    def episode(key):
        k_reset, k_run = jax.random.split(key)
        state, ts = env.reset(k_reset)

        def step(carry, key):
            state, ts, ended = carry
            k_act, k_env = jax.random.split(key)
            logits = jnp.where(ts.action_mask, 0.0, -1e9)
            action = jax.random.categorical(k_act, logits).astype(jnp.int32)
            state, nts = env.step(k_env, state, action)
            reward = nts.reward.sum() * (~ended)
            return (state, nts, ended | nts.done), reward

        _, rewards = jax.lax.scan(step, (state, ts, False), jax.random.split(k_run, env.max_steps))
        return rewards.sum()

    returns = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(seed), episodes))
    return float(returns.mean()), float(returns.std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="lbf-1")
    parser.add_argument("--methods", default="dyps,ps-id,nops,ps")
    parser.add_argument("--total-steps", type=int, default=300_000)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()

    rows, curves = [], {}
    rand_mean, rand_std = random_policy_return(args.env, 1024, seed=123)
    rows.append({"method": "random", "first_return": rand_mean, "final_return": rand_mean,
                 "final_std_over_seeds": rand_std, "train_seconds": 0.0})
    for method in args.methods.split(","):
        config = dyps_jax.make_config(env=args.env, method=method, total_steps=args.total_steps,
                                      num_envs=args.num_envs)
        train = jax.jit(jax.vmap(dyps_jax.make_train(config)))
        keys = jax.random.split(jax.random.key(0), args.seeds)
        compiled = train.lower(keys).compile()
        t0 = time.perf_counter()
        _, metrics = compiled(keys)
        ret = np.asarray(jax.block_until_ready(metrics["episode_return"]))  # [seeds, iterations]
        seconds = time.perf_counter() - t0
        tail = max(1, ret.shape[1] // 10)
        curves[method] = ret
        rows.append({
            "method": method,
            "first_return": float(ret[:, :tail].mean()),
            "final_return": float(ret[:, -tail:].mean()),
            "final_std_over_seeds": float(ret[:, -tail:].mean(axis=1).std()),
            "train_seconds": round(seconds, 1),
        })
        print(rows[-1], flush=True)

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"learning_{args.env}"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(stem.with_suffix(".csv"), buf.getvalue())

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    lines = [
        f"# Learning on {args.env}",
        "",
        f"Command: `python experiments/learning.py --env {args.env} --total-steps "
        f"{args.total_steps} --num-envs {args.num_envs} --seeds {args.seeds}`  ",
        f"Date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, device {jax.devices()[0].device_kind}"
        f", jax {jax.__version__}, git {rev}. Team return = sum of all agents' rewards in an episode "
        "(LBF: 1.0 = all food collected; RWARE: deliveries); first/final = mean over the first/last 10 % of iterations and "
        f"{args.seeds} seeds; random = uniform over allowed actions, 1024 episodes.",
        "",
        "| method | first return | final return | std over seeds | train seconds (all seeds) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['method']} | {r['first_return']:.3f} | {r['final_return']:.3f} | "
              f"{r['final_std_over_seeds']:.3f} | {r['train_seconds']} |" for r in rows]
    write_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6, 4))
    steps_per_iter = args.num_envs * dyps_jax.envs.make(args.env).max_steps
    for method, ret in curves.items():
        x = np.arange(1, ret.shape[1] + 1) * steps_per_iter
        ax.plot(x, ret.mean(axis=0), label=method)
    ax.axhline(rand_mean, color="grey", linestyle="--", label="random")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("team episode return")
    ax.set_title(args.env)
    ax.legend()
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
