"""Full-training throughput of every sharing method against the bare environment.

For each scenario (`--envs`, default lbf-1, ridehailing-1), method (`--methods`, default all ten)
and base algorithm (`--algos`, default ippo), with the preset's hyper-parameters and `--num-envs`
parallel environments (default 16):

* training: `fns = make_train_fns(config)`, `state = jax.jit(fns.init)(key)`, then
  `jax.jit(fns.iterate, static_argnums=1).lower(state, n).compile()` for n = `--iterations`
  iterations per call (compile time reported separately). One warm-up call, then `--repeats` timed
  calls (each ends with `jax.block_until_ready`, the state carried from call to call); the figure
  is the median. One iteration = one episode in each of the E environments (assignment, rollout,
  DyPS's role-model updates, PPO epochs), so env steps per iteration = E x episode length and
  agent steps = env steps x agents. SePS is timed after its clustering: it pre-trains for one
  iteration, so the switch happens in the warm-up call when `--iterations` >= 2 (the clustering's
  own cost is in that call, not in the figure).
* environment alone, same batch E: `jit` of a `lax.scan` over `--env-steps` steps of
  `vmap(env.step)` with random valid actions (the action kind's distribution with all-zero policy
  outputs: uniform over the mask's valid actions or pointer slots) and auto-reset of finished
  episodes, compile excluded, median of `--repeats` calls.

Ratios: "/ PS" is a method's env-steps/s over PS's with IPPO (full sharing, the cheapest method)
in the same scenario; "/ env only" is training env-steps/s over the bare environment's env-steps/s at the same
batch (the share of the environment's speed that survives the learning work).

Run: `python benchmarks/bench_train.py --out` (writes `benchmarks/results/train.md`; about 20-30
minutes on 2 CPU cores, most of it compiling).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from dyps_jax.algos import ALGOS  # noqa: E402
from dyps_jax.config import METHODS, make_config  # noqa: E402
from dyps_jax.ppo import action_distribution, head_size  # noqa: E402
from dyps_jax.train import make_train_fns  # noqa: E402

DEFAULT_OUT = common.RESULTS / "train.md"


def env_only_rate(env, batch: int, steps: int, repeats: int) -> tuple[float, float]:
    """(median env-steps/s, compile s) of `batch` environments stepped with random valid actions."""

    def random_actions(key, mask):
        # The policy distribution of the action kind with all-zero outputs: uniform over valid
        # actions (categorical, pointer draws) or N(0, 1) (gaussian).
        head = jnp.zeros((env.num_agents, head_size(env.action_kind, env.num_actions)))
        if mask is None:
            mask = jnp.ones((env.num_agents, env.num_actions), bool)
        action = action_distribution(env.action_kind, head, mask).sample(seed=key)
        return action[..., 0] if env.action_kind == "gaussian" and env.num_actions == 1 else action

    def one_env(carry, key):
        state, ts = carry
        k_act, k_step, k_reset = jax.random.split(key, 3)
        state, next_ts = env.step(k_step, state, random_actions(k_act, ts.action_mask))
        fresh_state, fresh_ts = env.reset(k_reset)
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(next_ts.done, x, y), a, b)  # noqa: E731
        return (pick(fresh_state, state), pick(fresh_ts, next_ts)), next_ts.reward.sum()

    def run(carry, key):
        def body(carry, key):
            return jax.vmap(one_env)(carry, jax.random.split(key, batch))

        carry, rewards = jax.lax.scan(body, carry, jax.random.split(key, steps))
        return carry, rewards.sum()

    carry = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), batch))
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(carry, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - t0
    sec = common.time_carried(compiled, carry, repeats, keyed=True)[0]
    return batch * steps / sec, compile_s


def train_rate(env_name: str, method: str, algo: str, num_envs: int, iterations: int,
               repeats: int) -> dict:
    """Compile and time `iterations` training iterations per call; returns one result row."""
    kw = {"env": env_name, "method": method, "algo": algo, "num_envs": num_envs,
          "checkpoint_every": 0}
    config = make_config(**kw)
    if method == "seps":
        # One pre-training iteration, so the switch happens in the warm-up call (iterations >= 2).
        config = make_config(**kw, seps_pretrain_fraction=0.5 / config.num_iterations)
    fns = make_train_fns(config)
    t0 = time.perf_counter()
    state = jax.jit(fns.init)(jax.random.key(0))
    compiled = jax.jit(fns.iterate, static_argnums=1).lower(state, iterations).compile()
    compile_s = time.perf_counter() - t0
    sec, state, metrics = common.time_carried(compiled, state, repeats)
    sec_per_iter = sec / iterations
    env_steps = config.num_envs * config.episode_length
    return {
        "env": env_name,
        "method": method,
        "algo": algo,
        "agents": config.num_agents,
        "groups": config.num_param_sets,
        "compile_s": compile_s,
        "s_per_iter": sec_per_iter,
        "env_sps": env_steps / sec_per_iter,
        "agent_sps": env_steps * config.num_agents / sec_per_iter,
        "return": float(metrics["episode_return"][-1]),
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="lbf-1,ridehailing-1",
                        help="comma-separated scenario presets")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, from {', '.join(METHODS)}",
    )
    parser.add_argument("--algos", default="ippo",
                        help=f"comma-separated, from {', '.join(ALGOS)}")
    parser.add_argument("--num-envs", type=int, default=16, help="parallel environments E")
    parser.add_argument(
        "--iterations",
        type=int,
        default=10,
        help="training iterations per timed call (compiled into one lax.scan)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    parser.add_argument(
        "--env-steps", type=int, default=500, help="scan length of one timed environment-only call"
    )
    parser.add_argument("--note", default="", help="free text added to the results header")
    common.add_out_argument(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    env_names = [e for e in args.envs.split(",") if e]
    methods = [m for m in args.methods.split(",") if m]
    algos = [a for a in args.algos.split(",") if a]
    for flag, values, allowed in (("methods", methods, METHODS), ("algos", algos, ALGOS)):
        for v in values:
            if v not in allowed:
                parser.error(f"--{flag}: unknown {v!r}; allowed: {', '.join(allowed)}")

    load_start, t_start = common.load_average(), time.perf_counter()
    rows, env_rates = [], {}
    for name in env_names:
        env = make_config(env=name, method="ps").env.build()
        rate, comp = env_only_rate(env, args.num_envs, args.env_steps, args.repeats)
        env_rates[name] = (rate, comp, env.num_agents)
        print(f"{name}: environment only {rate:,.0f} env-steps/s (compile {comp:.1f}s)", flush=True)
        for method, algo in ((m, a) for a in algos for m in methods):
            row = train_rate(name, method, algo, args.num_envs, args.iterations, args.repeats)
            rows.append(row)
            print(
                f"{name} {method} {algo}: {row['env_sps']:,.0f} env-steps/s, "
                f"{row['s_per_iter']:.3f} s/iteration, compile {row['compile_s']:.1f}s",
                flush=True,
            )
    total_s = time.perf_counter() - t_start

    device = jax.devices()[0]
    lines = [
        *common.header_lines(
            "Full-training throughput",
            common.command_line("bench_train.py", argv),
            f"{device.device_kind} ({device.platform}), {common.host()}",
        ),
        f"- load average (1/5/15 min) at start {load_start}, at end {common.load_average()}; "
        "the 2 cores were "
        "shared with other users' jobs, so absolute figures are noisy (ratios within one run "
        f"less so); whole run {total_s:.0f}s" + (f". {args.note}" if args.note else ""),
        f"- E = {args.num_envs} parallel environments, preset hyper-parameters (PPO "
        "4 epochs); one iteration = one episode per environment plus all updates; "
        f"{args.iterations} iterations per compiled call, one warm-up call, median of "
        f"{args.repeats} timed calls; compile time excluded from the rates.",
        "- env-only: `jit(lax.scan(vmap(env.step)))` over the same E environments with random valid "
        f"actions and auto-reset ({args.env_steps} steps per call), median of {args.repeats}.",
        "",
        "| scenario | agents | method | algo | groups G | compile s | s / iteration | env-steps/s "
        "| agent-steps/s | / PS | / env only |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in env_names:
        rate, comp, n = env_rates[name]
        lines.append(
            f"| {name} | {n} | env only (random actions) | - | - | {comp:.1f} | - "
            f"| {rate:,.0f} | {rate * n:,.0f} | - | 1 |"
        )
        ps = next((r for r in rows if r["env"] == name and r["method"] == "ps"
                   and r["algo"] == "ippo"), None)
        for r in (r for r in rows if r["env"] == name):
            vs_ps = f"{r['env_sps'] / ps['env_sps']:.2f}" if ps else "-"
            vs_env = r["env_sps"] / rate
            lines.append(
                f"| {name} | {r['agents']} | {r['method']} | {r['algo']} | {r['groups']} "
                f"| {r['compile_s']:.1f} "
                f"| {r['s_per_iter']:.3f} | {r['env_sps']:,.0f} | {r['agent_sps']:,.0f} | {vs_ps} "
                f"| {vs_env:.3f} (1/{1 / vs_env:.0f}) |"
            )
    table = "\n".join(lines) + "\n"
    common.print_and_write(table, args.out)
    return table


if __name__ == "__main__":
    main()
