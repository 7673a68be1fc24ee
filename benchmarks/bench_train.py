"""Full-training throughput of every sharing method against the bare environment.

For each scenario (`--envs`, default lbf-1, ridehailing-1; `--envs all` for every preset in
envs/), method (`--methods`, default all ten) and base algorithm (`--algos`, default ippo), with the
preset's hyper-parameters and `--num-envs` parallel environments (default 16; `8,medical=2` sets 8
for every scenario but medical; `preset` takes each preset's own `num_envs`):

* training: `fns = make_train_fns(config)`, `state = jax.jit(fns.init)(key)`, then
  `jax.jit(fns.iterate, static_argnums=1).lower(state, n).compile()` for n = `--iterations`
  iterations per call (compile time reported separately). One warm-up call, then `--repeats` timed
  calls (each ends with `jax.block_until_ready`, the state carried from call to call); the figure
  is the median. Peak memory: XLA's compiled memory analysis of that n-iteration program
  (`compiled.memory_analysis()`), arguments + outputs + temporaries - aliased bytes, i.e. what the
  compiled program holds at its peak besides the code; it is computed at compile time, so it does
  not vary with the load. One iteration = one episode in each of the E environments (assignment, rollout,
  DyPS's role-model updates, PPO epochs), so env steps per iteration = E x episode length and
  agent steps = env steps x agents. SePS is timed after its clustering: it pre-trains for one
  iteration, so the switch happens in the warm-up call when `--iterations` >= 2 (the clustering's
  own cost is in that call, not in the figure).
* environment alone, same batch E: `jit` of a `lax.scan` over `--env-steps` steps of
  `vmap(env.step)` with random valid actions (the action kind's distribution with all-zero policy
  outputs: uniform over the mask's valid actions or pointer slots) and auto-reset of finished
  episodes, compile excluded, median of `--repeats` calls.

Ratios: "/ PS" is a method's env-steps/s over PS's with IPPO (full sharing, the cheapest method)
in the same scenario; "time x PS" and "memory x PS" are its seconds per iteration and peak memory
over PS's (issue 13's target for DyPS: both at most 1.5); "/ env only" is training env-steps/s over the bare environment's env-steps/s at the same
batch (the share of the environment's speed that survives the learning work).

Run: `python benchmarks/bench_train.py --out` (writes `benchmarks/results/train.md`; about 20-30
minutes on 2 CPU cores, most of it compiling). Every preset, DyPS against PS, a few minutes:
`python benchmarks/bench_train.py --envs all --methods ps,dyps --num-envs 4,medical=1 --iterations 2
--repeats 2 --no-env-only --out benchmarks/results/train_presets.md`. `--memory-only` compiles
without running (peak memory only, the time columns read nan): the same table in the compile time
alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from dyps_jax.algos import ALGOS  # noqa: E402
from dyps_jax.config import METHODS, make_config  # noqa: E402
from dyps_jax.ppo import action_distribution, head_size  # noqa: E402
from dyps_jax.train import make_train_fns  # noqa: E402

DEFAULT_OUT = common.RESULTS / "train.md"


def peak_bytes(compiled) -> float:
    """Peak memory of a compiled program from XLA's memory analysis: arguments + outputs +
    temporaries - bytes aliased between arguments and outputs (NaN when the backend has none)."""
    mem = compiled.memory_analysis()
    if mem is None:
        return float("nan")
    return float(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                 - mem.alias_size_in_bytes)


def parse_num_envs(text: str, env_names: list[str]) -> dict[str, int | None]:
    """`--num-envs`: "16", "preset", or a default then `name=E` entries ("4,medical=1").

    Returns scenario -> E (None: the preset's own num_envs)."""
    default: int | None = 16
    per_env: dict[str, int | None] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, _, value = item.rpartition("=")
        number = None if value == "preset" else int(value) if value.isdigit() else -1
        if number is not None and number < 1:
            raise ValueError(f"--num-envs: {item!r} is not a positive integer or 'preset'")
        if name:
            if name not in env_names:
                raise ValueError(f"--num-envs: {name!r} is not one of --envs ({', '.join(env_names)})")
            per_env[name] = number
        else:
            default = number
    return {name: per_env.get(name, default) for name in env_names}


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


def compile_training(env_name: str, method: str, iterations: int, num_envs: int | None = None,
                     **overrides: Any):
    """(config, initial state, the compiled `iterations`-iteration program, compile seconds) of a
    preset and method with `make_config` overrides; num_envs None: the preset's own."""
    kw = {"env": env_name, "method": method, "checkpoint_every": 0, **overrides}
    if num_envs is not None:
        kw["num_envs"] = num_envs
    config = make_config(**kw)
    if method == "seps":
        # One pre-training iteration, so the switch happens in the warm-up call (iterations >= 2).
        config = make_config(**kw, seps_pretrain_fraction=0.5 / config.num_iterations)
    fns = make_train_fns(config)
    t0 = time.perf_counter()
    state = jax.jit(fns.init)(jax.random.key(0))
    compiled = jax.jit(fns.iterate, static_argnums=1).lower(state, iterations).compile()
    return config, state, compiled, time.perf_counter() - t0


def train_rate(env_name: str, method: str, algo: str, num_envs: int | None, iterations: int,
               repeats: int) -> dict:
    """Compile and time `iterations` training iterations per call; returns one result row.

    num_envs None: the preset's own."""
    config, state, compiled, compile_s = compile_training(env_name, method, iterations, num_envs,
                                                          algo=algo)
    env_steps = config.num_envs * config.episode_length
    row = {
        "env": env_name,
        "method": method,
        "algo": algo,
        "agents": config.num_agents,
        "groups": config.num_param_sets,
        "num_envs": config.num_envs,
        "compile_s": compile_s,
        "peak_gb": peak_bytes(compiled) / 2**30,
    }
    if repeats == 0:  # --memory-only
        return row | {"s_per_iter": float("nan"), "env_sps": float("nan"),
                      "agent_sps": float("nan"), "return": float("nan")}
    sec, state, metrics = common.time_carried(compiled, state, repeats)
    sec_per_iter = sec / iterations
    return row | {
        "s_per_iter": sec_per_iter,
        "env_sps": env_steps / sec_per_iter,
        "agent_sps": env_steps * config.num_agents / sec_per_iter,
        "return": float(metrics["episode_return"][-1]),
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="lbf-1,ridehailing-1",
                        help="comma-separated scenario presets, or 'all' (every envs/*.toml)")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, from {', '.join(METHODS)}",
    )
    parser.add_argument("--algos", default="ippo",
                        help=f"comma-separated, from {', '.join(ALGOS)}")
    parser.add_argument("--num-envs", default="16",
                        help="parallel environments E: a number, 'preset', or a default then "
                             "name=E entries, e.g. '4,medical=1'")
    parser.add_argument("--no-env-only", action="store_true",
                        help="skip the environment-only rows")
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
    parser.add_argument("--memory-only", action="store_true",
                        help="compile only: peak memory without the timed calls (implies "
                             "--no-env-only)")
    parser.add_argument("--note", default="", help="free text added to the results header")
    common.add_out_argument(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.memory_only:
        args.no_env_only, args.repeats = True, 0
    env_names = [e for e in args.envs.split(",") if e]
    if env_names == ["all"]:
        env_names = sorted(p.stem for p in (common.ROOT / "envs").glob("*.toml"))
    try:
        num_envs = parse_num_envs(args.num_envs, env_names)
    except ValueError as err:
        parser.error(str(err))
    methods = [m for m in args.methods.split(",") if m]
    algos = [a for a in args.algos.split(",") if a]
    for flag, values, allowed in (("methods", methods, METHODS), ("algos", algos, ALGOS)):
        for v in values:
            if v not in allowed:
                parser.error(f"--{flag}: unknown {v!r}; allowed: {', '.join(allowed)}")

    load_start, t_start = common.load_average(), time.perf_counter()
    rows, env_rates = [], {}
    for name in env_names:
        if not args.no_env_only:
            config = make_config(env=name, method="ps")
            batch = num_envs[name] or config.num_envs
            env = config.env.build()
            rate, comp = env_only_rate(env, batch, args.env_steps, args.repeats)
            env_rates[name] = (rate, comp, env.num_agents, batch)
            print(f"{name}: environment only {rate:,.0f} env-steps/s (compile {comp:.1f}s)",
                  flush=True)
        for method, algo in ((m, a) for a in algos for m in methods):
            row = train_rate(name, method, algo, num_envs[name], args.iterations, args.repeats)
            rows.append(row)
            print(
                f"{name} {method} {algo}: {row['env_sps']:,.0f} env-steps/s, "
                f"{row['s_per_iter']:.3f} s/iteration, peak {row['peak_gb']:.3f} GB, "
                f"compile {row['compile_s']:.1f}s",
                flush=True,
            )
    total_s = time.perf_counter() - t_start

    lines = [
        *common.run_header("Full-training throughput", "bench_train.py", argv, load_start, total_s,
                           args.note),
        "- absolute figures move with other jobs on the machine (the load averages above); "
        "ratios within one run less so.",
        "- E parallel environments (column E), preset hyper-parameters (PPO "
        "4 epochs); one iteration = one episode per environment plus all updates; "
        f"{args.iterations} iterations per compiled call, "
        + ("--memory-only: compiled, not run (no times)." if args.memory_only else
           f"one warm-up call, median of {args.repeats} timed calls; compile time excluded "
           "from the rates."),
        "- peak GB: XLA's memory analysis of the compiled n-iteration program (arguments + outputs "
        "+ temporaries - aliased), computed at compile time; time x PS and memory x PS: s / "
        "iteration and peak GB over PS's (IPPO) in the same scenario.",
        *([] if args.no_env_only else [
            "- env-only: `jit(lax.scan(vmap(env.step)))` over the same E environments with random "
            f"valid actions and auto-reset ({args.env_steps} steps per call), median of "
            f"{args.repeats}."]),
        "",
        "| scenario | agents | E | method | algo | groups G | compile s | s / iteration "
        "| env-steps/s | agent-steps/s | peak GB | / PS | time x PS | memory x PS | / env only |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in env_names:
        rate = None
        if name in env_rates:
            rate, comp, n, batch = env_rates[name]
            lines.append(
                f"| {name} | {n} | {batch} | env only (random actions) | - | - | {comp:.1f} | - "
                f"| {rate:,.0f} | {rate * n:,.0f} | - | - | - | - | 1 |"
            )
        ps = next((r for r in rows if r["env"] == name and r["method"] == "ps"
                   and r["algo"] == "ippo"), None)
        for r in (r for r in rows if r["env"] == name):
            ratios = ((f"{r['env_sps'] / ps['env_sps']:.2f}", f"{r['s_per_iter'] / ps['s_per_iter']:.2f}",
                       f"{r['peak_gb'] / ps['peak_gb']:.2f}") if ps else ("-", "-", "-"))
            vs_env = f"{r['env_sps'] / rate:.3f} (1/{rate / r['env_sps']:.0f})" if rate else "-"
            lines.append(
                f"| {name} | {r['agents']} | {r['num_envs']} | {r['method']} | {r['algo']} "
                f"| {r['groups']} | {r['compile_s']:.1f} "
                f"| {r['s_per_iter']:.3f} | {r['env_sps']:,.0f} | {r['agent_sps']:,.0f} "
                f"| {r['peak_gb']:.4f} | {' | '.join(ratios)} | {vs_env} |"
            )
    table = "\n".join(lines) + "\n"
    common.print_and_write(table, args.out)
    return table


if __name__ == "__main__":
    main()
