"""Environment throughput of our LBF against the reference `lbforaging` and jumanji's LBF.

For each scenario (lbf-1: 6 agents, 4 foods; lbf-2: 12 agents, 10 foods; 10x10, 50 steps):

* ours and jumanji's `LevelBasedForaging` (jumanji 1.1.2, 10x10 generator, full view, agent
  levels up to 3): `jit(vmap)` over a batch of environments of a `lax.scan` over `--steps` steps
  with random valid actions (drawn from the action mask) and auto-reset of finished episodes;
  compiled with `.lower().compile()` before timing (compile time excluded), timed with
  `block_until_ready`, median of `--repeats` runs;
* the reference `lbforaging` 2.0.0 `ForagingEnv`: one environment in a Python loop, random valid
  actions, reset when an episode ends, median of `--repeats` runs of `--ref-steps` steps.

Env-steps/s counts environment transitions (one per environment per step); agent-steps/s is that
times the number of agents. Run: `python benchmarks/bench_lbf_env.py --out` (writes
`benchmarks/results/lbf_env.md`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from dyps_jax.envs.lbf import LevelBasedForaging  # noqa: E402

PRESETS = {"lbf-1": (6, 4), "lbf-2": (12, 10)}
DEFAULT_OUT = common.RESULTS / "lbf_env.md"


def random_valid(key: jax.Array, mask: jax.Array) -> jax.Array:
    """int32[N]: one uniformly random allowed action per agent; mask: bool[N, A]."""
    return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf)).astype(jnp.int32)


def where_tree(cond, a, b):
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def ours_runner(num_agents: int, num_food: int, batch: int, steps: int):
    """(compiled fn, initial carry): one call = `steps` auto-reset steps of `batch` envs."""
    env = LevelBasedForaging(num_agents=num_agents, num_food=num_food)

    def one_env_step(carry, key):
        state, mask = carry
        k_act, k_reset = jax.random.split(key)
        state, ts = env.step(k_act, state, random_valid(k_act, mask))
        fresh_state, fresh_ts = env.reset(k_reset)
        state = where_tree(ts.done, fresh_state, state)
        mask = jnp.where(ts.done, fresh_ts.action_mask, ts.action_mask)
        return (state, mask), ts.reward.sum()

    def run(carry, key):
        def body(carry, key):
            return jax.vmap(one_env_step)(carry, jax.random.split(key, batch))

        carry, rewards = jax.lax.scan(body, carry, jax.random.split(key, steps))
        return carry, rewards.sum()

    states, ts = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), batch))
    carry = (states, ts.action_mask)
    return jax.jit(run).lower(carry, jax.random.key(1)).compile(), carry


def jumanji_runner(num_agents: int, num_food: int, batch: int, steps: int):
    from jumanji.environments.routing.lbf import LevelBasedForaging as JumanjiLBF
    from jumanji.environments.routing.lbf.generator import RandomGenerator

    env = JumanjiLBF(
        generator=RandomGenerator(grid_size=10, fov=10, num_agents=num_agents, num_food=num_food,
                                  max_agent_level=3, force_coop=False),
        time_limit=50,
    )

    def one_env_step(carry, key):
        state, mask = carry
        k_act, k_reset = jax.random.split(key)
        state, ts = env.step(state, random_valid(k_act, mask))
        fresh_state, fresh_ts = env.reset(k_reset)
        done = ts.last()
        state = where_tree(done, fresh_state, state)
        mask = jnp.where(done, fresh_ts.observation.action_mask, ts.observation.action_mask)
        return (state, mask), ts.reward.sum()

    def run(carry, key):
        def body(carry, key):
            return jax.vmap(one_env_step)(carry, jax.random.split(key, batch))

        carry, rewards = jax.lax.scan(body, carry, jax.random.split(key, steps))
        return carry, rewards.sum()

    states, ts = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), batch))
    carry = (states, ts.observation.action_mask)
    return jax.jit(run).lower(carry, jax.random.key(1)).compile(), carry


def time_jax(compiled, carry, batch: int, steps: int, repeats: int) -> float:
    """Median env-steps/s over `repeats` calls (after one warm-up call)."""
    return batch * steps / common.time_carried(compiled, carry, repeats, keyed=True)[0]


def time_reference(num_agents: int, num_food: int, steps: int, repeats: int) -> float:
    """Median env-steps/s of one `lbforaging` env in a Python loop with random valid actions."""
    from lbforaging.foraging.environment import ForagingEnv

    levels = [(i % 3) + 1 for i in range(num_agents)]
    env = ForagingEnv(players=num_agents, min_player_level=levels, max_player_level=levels,
                      min_food_level=1, max_food_level=None, field_size=(10, 10),
                      max_num_food=num_food, sight=10, max_episode_steps=50, force_coop=False)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            actions = [
                rng.choice([a.value for a in env._valid_actions[p]]) for p in env.players
            ]
            _, _, done, _, _ = env.step(actions)
            if done:
                env.reset(seed=int(rng.integers(1 << 30)))
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--steps", type=int, default=100, help="scan length of one timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-steps", type=int, default=1000)
    parser.add_argument("--scenarios", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--no-jumanji", action="store_true")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference `lbforaging` (e.g. on a GPU machine without it)")
    common.add_out_argument(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    rows = []
    for name in args.scenarios:
        n, f = PRESETS[name]
        ref_rate = (float("nan") if args.no_reference
                    else time_reference(n, f, args.ref_steps, args.repeats))
        print(f"{name}: reference {fmt(ref_rate)} env-steps/s", flush=True)
        for batch in args.batches:
            # Long scans for small batches so each timed call does enough work to time.
            steps = max(args.steps, 2000 // batch)
            ours = time_jax(*ours_runner(n, f, batch, steps), batch, steps, args.repeats)
            jum = float("nan")
            if not args.no_jumanji:
                jum = time_jax(*jumanji_runner(n, f, batch, steps), batch, steps, args.repeats)
            print(f"{name} batch {batch}: ours {fmt(ours)}, jumanji {fmt(jum)}", flush=True)
            rows.append((name, n, batch, ours, ref_rate, jum))

    lines = [
        *common.header_lines(
            "LBF environment throughput",
            common.command_line("bench_lbf_env.py", argv),
            f"{device.device_kind} ({device.platform}), {common.host()}",
        ),
        "- env-steps/s (agent-steps/s = env-steps/s x agents); JAX envs: jit + vmap over the "
        "batch, "
        "scan with random valid actions and auto-reset, compile excluded, median of "
        f"{args.repeats} runs; reference: one `lbforaging` env in a Python loop "
        f"({args.ref_steps} steps per run).",
        "",
        "| scenario | batch | ours env-steps/s | ours agent-steps/s | reference env-steps/s "
        "| jumanji env-steps/s | ours / reference | ours / jumanji |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, batch, ours, ref_rate, jum in rows:
        lines.append(
            f"| {name} | {batch} | {fmt(ours)} | {fmt(ours * n)} | {fmt(ref_rate)} | {fmt(jum)} "
            f"| {ours / ref_rate:.1f}x | {ours / jum:.2f}x |"
        )
    table = "\n".join(lines) + "\n"
    common.print_and_write(table, args.out)
    return table


if __name__ == "__main__":
    main()
