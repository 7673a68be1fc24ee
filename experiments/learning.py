"""Learning check: DyPS and the sharing baselines against simple policies on one scenario.

Trains each method with `make_train` (seeds vmapped in one compiled call), evaluates the baselines on
the same scenario (the rule policies of `dyps_jax.rules` where the scenario has them, e.g. Greedy,
Nearest and Random for ride-hailing; else a uniform random policy over the allowed actions), and
writes `experiments/results/learning_<env>.{csv,md,png}`: per method, the mean of each metric
(`--metrics`, default the team episode return) over the first and last 10 % of iterations, plus the
learning curves of the first metric.

    python experiments/learning.py --env lbf-1 --total-steps 300000 --seeds 2
    python experiments/learning.py --env ridehailing-1 --metrics gmv,orr --total-steps 300000
    python experiments/learning.py --env ridehailing-1 --methods dyps,ps,dyps:mappo,ps:copo

A method may name its base algorithm after a colon (`dyps:mappo`; default ippo).
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
from dyps_jax.evaluate import evaluate_rule  # noqa: E402
from dyps_jax.rules import RULES  # noqa: E402

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


def baseline_rows(env_name: str, metrics: list[str], episodes: int, seed: int) -> list[dict]:
    """Rows of the scenario's rule policies (mean and std over episodes), or of uniform random."""
    kind = dyps_jax.envs.load_preset(env_name)["env"]["kind"]
    rows = []
    if kind in RULES and kind != "medical":
        for rule in RULES[kind]:
            result = evaluate_rule(env_name, rule, seed=seed, episodes=episodes)
            row = {"method": f"rule: {rule}"}
            for m in metrics:
                row |= {f"first_{m}": result[m], f"final_{m}": result[m],
                        f"final_{m}_std": result[f"{m}_std"]}
            rows.append(row | {"train_seconds": 0.0})
        return rows
    if metrics != ["episode_return"]:
        raise ValueError(f"--metrics: {metrics} needs rule baselines; {kind!r} has none")
    mean, std = random_policy_return(env_name, episodes, seed)
    return [{"method": "random", "first_episode_return": mean, "final_episode_return": mean,
             "final_episode_return_std": std, "train_seconds": 0.0}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="lbf-1")
    parser.add_argument("--methods", default="dyps,ps-id,nops,ps",
                        help="comma-separated METHOD or METHOD:ALGO (algo: ippo, mappo, copo)")
    parser.add_argument("--metrics", default="episode_return",
                        help="comma-separated training metrics to report (episode totals)")
    parser.add_argument("--total-steps", type=int, default=300_000)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--name", default="",
                        help="results file stem (default learning_<env>)")
    args = parser.parse_args()
    names = args.metrics.split(",")

    rows, curves = baseline_rows(args.env, names, 1024, seed=123), {}
    baseline_curves = [(r["method"], r[f"final_{names[0]}"]) for r in rows]
    for method in args.methods.split(","):
        name, _, algo = method.partition(":")
        config = dyps_jax.make_config(env=args.env, method=name, total_steps=args.total_steps,
                                      num_envs=args.num_envs, **({"algo": algo} if algo else {}))
        train = jax.jit(jax.vmap(dyps_jax.make_train(config)))
        keys = jax.random.split(jax.random.key(0), args.seeds)
        compiled = train.lower(keys).compile()
        t0 = time.perf_counter()
        _, metrics = compiled(keys)
        metrics = jax.block_until_ready(metrics)
        seconds = time.perf_counter() - t0
        row = {"method": method}
        for m in names:
            values = np.asarray(metrics[m])  # [seeds, iterations]
            tail = max(1, values.shape[1] // 10)
            row |= {f"first_{m}": float(values[:, :tail].mean()),
                    f"final_{m}": float(values[:, -tail:].mean()),
                    f"final_{m}_std": float(values[:, -tail:].mean(axis=1).std())}
        curves[method] = np.asarray(metrics[names[0]])
        rows.append(row | {"train_seconds": round(seconds, 1)})
        print(rows[-1], flush=True)

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / (args.name or f"learning_{args.env}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(stem.with_suffix(".csv"), buf.getvalue())

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    metric_flag = "" if names == ["episode_return"] else f" --metrics {args.metrics}"
    lines = [
        f"# Learning on {args.env}",
        "",
        f"Command: `python experiments/learning.py --env {args.env}{metric_flag} --methods "
        f"{args.methods} --total-steps {args.total_steps} --num-envs {args.num_envs} --seeds "
        f"{args.seeds}"
        + (f" --name {args.name}" if args.name else "") + "`  ",
        f"Date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, device {jax.devices()[0].device_kind}"
        f", jax {jax.__version__}, git {rev}. Metrics are episode totals: episode_return = sum of "
        "all agents' rewards (LBF: 1.0 = all food collected; RWARE: deliveries); gmv = price of "
        "the orders served in a day, orr = served / generated. first/final = mean over the "
        f"first/last 10 % of iterations and {args.seeds} seeds, std = over seeds (the plot's bands: "
        "± std over seeds per iteration); baselines: "
        "1024 episodes (std over episodes).",
        "",
        "| method | " + " | ".join(f"first {m} | final {m} | std" for m in names)
        + " | train seconds (all seeds) |",
        "|---|" + "---:|---:|---:|" * len(names) + "---:|",
    ]
    lines += ["| " + r["method"] + " | " + " | ".join(
        f"{r[f'first_{m}']:.3f} | {r[f'final_{m}']:.3f} | {r[f'final_{m}_std']:.3f}"
        for m in names) + f" | {r['train_seconds']} |" for r in rows]
    write_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6, 4))
    steps_per_iter = args.num_envs * dyps_jax.envs.make(args.env).max_steps
    for method, ret in curves.items():
        x = np.arange(1, ret.shape[1] + 1) * steps_per_iter
        line, = ax.plot(x, ret.mean(axis=0), label=method)
        ax.fill_between(x, ret.mean(axis=0) - ret.std(axis=0), ret.mean(axis=0) + ret.std(axis=0),
                        color=line.get_color(), alpha=0.15, linewidth=0)
    for (name, value), style in zip(baseline_curves, ("--", ":", "-.", (0, (1, 3)))):
        ax.axhline(value, color="grey", linestyle=style, label=name)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(names[0])
    ax.set_title(args.env)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
