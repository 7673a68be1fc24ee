"""Environment-only throughput of the coloured warehouse vs the reference `rware` and jumanji.

Measures env-steps/s (one step of one warehouse with all its robots; agent-steps/s = env-steps/s x
robots) on the rware-1 layout (2 shelf rows x 3 columns, height 8, 8 robots, 4 requests):

* ours: `jax.jit` of a `lax.scan` over `--steps` steps of `jax.vmap(env.step)` over a batch of
  warehouses, random actions drawn inside the scan;
* jumanji 1.1.2 `RobotWarehouse` with `RandomGenerator` of the same layout, run the same way. Its
  episodes end on any collision; it is stepped on without auto-reset (only step cost is timed);
* the reference `rware` 2.0.0 `Warehouse` (NumPy + networkx), a Python loop over single steps with
  pre-drawn random actions, resetting at the end of each 500-step episode.

Compile time is excluded (`.lower().compile()`); timed calls end with `block_until_ready`; the
figure is the median of `--repeats` calls. Both JAX rollouts fold the observations and rewards into
their output, so XLA cannot drop the observation computation.

    python benchmarks/bench_rware_env.py            # print the table
    python benchmarks/bench_rware_env.py --out      # also write results/rware_env.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import time_calls  # noqa: E402

from dyps_jax.envs.rware import ColouredWarehouse  # noqa: E402

NUM_AGENTS, REQUESTS = 8, 4
RESULTS = common.RESULTS / "rware_env.md"


def ours_steps_per_s(batch: int, steps: int, repeats: int) -> float:
    env = ColouredWarehouse(num_agents=NUM_AGENTS, request_queue_size=REQUESTS)
    states, _ = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), batch))
    step = jax.vmap(env.step)

    def rollout(states, key):
        def body(states, k):
            k_act, k_env = jax.random.split(k)
            actions = jax.random.randint(k_act, (batch, NUM_AGENTS), 0, 5)
            states, ts = step(jax.random.split(k_env, batch), states, actions)
            return states, ts.obs.sum() + ts.reward.sum()

        states, out = jax.lax.scan(body, states, jax.random.split(key, steps))
        return states, out.sum()

    fn = jax.jit(rollout).lower(states, jax.random.key(1)).compile()
    return batch * steps / time_calls(fn, states, jax.random.key(1), repeats=repeats)


def jumanji_steps_per_s(batch: int, steps: int, repeats: int) -> float:
    from jumanji.environments.routing.robot_warehouse import RobotWarehouse
    from jumanji.environments.routing.robot_warehouse.generator import RandomGenerator

    env = RobotWarehouse(
        generator=RandomGenerator(
            shelf_rows=2, shelf_columns=3, column_height=8, num_agents=NUM_AGENTS,
            sensor_range=1, request_queue_size=REQUESTS,
        ),
        time_limit=500,
    )  # fmt: skip
    states, _ = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), batch))
    step = jax.vmap(env.step)

    def rollout(states, key):
        def body(states, k):
            actions = jax.random.randint(k, (batch, NUM_AGENTS), 0, 5)
            states, ts = step(states, actions)
            return states, ts.observation.agents_view.sum() + ts.reward.sum()

        states, out = jax.lax.scan(body, states, jax.random.split(key, steps))
        return states, out.sum()

    fn = jax.jit(rollout).lower(states, jax.random.key(1)).compile()
    return batch * steps / time_calls(fn, states, jax.random.key(1), repeats=repeats)


def reference_steps_per_s(steps: int, repeats: int) -> float:
    from rware.warehouse import RewardType, Warehouse

    env = Warehouse(
        shelf_columns=3, column_height=8, shelf_rows=2, n_agents=NUM_AGENTS, msg_bits=0,
        sensor_range=1, request_queue_size=REQUESTS, max_inactivity_steps=None, max_steps=500,
        reward_type=RewardType.INDIVIDUAL,
    )  # fmt: skip
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 5, (steps, NUM_AGENTS)).tolist()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for a in actions:
            if env.step(a)[2]:
                env.reset()
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def git_revision() -> str:
    """HEAD, marked when this script or the rware environment has uncommitted changes."""
    return common.git_revision(
        paths=("src/dyps_jax/envs/rware.py", __file__), dirty_suffix="+uncommitted rware changes"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,64,1024", help="comma-separated env batch sizes")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed JAX call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    parser.add_argument("--ref-steps", type=int, default=1000, help="reference steps per run")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference `rware` (e.g. on a GPU machine without it)")
    parser.add_argument("--out", nargs="?", const=str(RESULTS), default=None,
                        help=f"write the markdown table (default path {RESULTS})")  # fmt: skip
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]

    ref = (float("nan") if args.no_reference
           else reference_steps_per_s(args.ref_steps, args.repeats))
    rows = []
    for batch in batches:
        ours = ours_steps_per_s(batch, args.steps, args.repeats)
        jum = jumanji_steps_per_s(batch, args.steps, args.repeats)
        rows.append(
            f"| {batch} | {ours:,.0f} | {ours * NUM_AGENTS:,.0f} | {jum:,.0f} | {ref:,.0f} "
            f"| {ours / ref:,.1f}x | {ours / jum:,.2f}x |"
        )
        print(rows[-1], file=sys.stderr)

    device = jax.devices()[0]
    lines = [
        "# RWARE environment throughput (env only)",
        "",
        f"* command: `{common.command_line('bench_rware_env.py', argv or None)}`",
        f"* date: {common.utc_now()}",
        f"* device: {device.platform} ({device.device_kind}), {jax.device_count()} device(s); "
        f"jax {jax.__version__}; git {git_revision()}",
        f"* layout: 2 shelf rows x 3 columns, height 8 (20x10), {NUM_AGENTS} robots, "
        f"{REQUESTS} requests; ours with 2 colours",
        f"* JAX: jit(scan over {args.steps} steps of vmap(step)), random actions, compile "
        f"excluded, median of {args.repeats} calls; reference: Python loop of {args.ref_steps} "
        "steps, one env (its per-step cost does not depend on the batch)",
        "* jumanji's RobotWarehouse ends episodes on collisions; it is stepped on without reset",
        "",
        "| envs in batch | ours env-steps/s | ours agent-steps/s | jumanji env-steps/s "
        "| reference rware env-steps/s | ours / reference | ours / jumanji |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        common.write_result(args.out, text)


if __name__ == "__main__":
    main()
