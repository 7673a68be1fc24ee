"""One training iteration on several device layouts: time, memory per device, same metrics.

A layout `DexDa` splits the run over De x Da devices: De on the environment batch and Da on the
agent axis (`make_config(devices=De*Da, agent_devices=Da)`, docs/architecture.md "Several
devices"). For each method and layout the script compiles `iterate` for `--iterations`
iterations, times it (median of `--repeats` calls after a warm-up, compile excluded), reads XLA's
memory analysis of the compiled program (per device: SPMD compiles one program that every device
runs) and compares the last iteration's metrics with the first layout's (the largest relative
difference; sharding must not change results beyond the order of sums).

    python benchmarks/bench_sharding.py --env medical --layouts 1x1,2x1,2x2 --force-cpu-devices 4
    python benchmarks/bench_sharding.py --env medical --layouts 1x1,2x1,2x4 --out   # 8 GPUs

`--force-cpu-devices N` makes N CPU devices (XLA_FLAGS, set before JAX starts): a correctness and
memory check, whose times say nothing about real devices, since the N share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DEFAULT_OUT = common.RESULTS / "sharding.md"


def parse_layout(text: str) -> tuple[int, int]:
    """'2x4' -> (2, 4): environment devices, agent devices."""
    try:
        env_devices, agent_devices = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"layout {text!r}: expected <env devices>x<agent devices>, e.g. 2x2") from None
    if env_devices < 1 or agent_devices < 1:
        raise argparse.ArgumentTypeError(f"layout {text!r}: both counts must be >= 1")
    return env_devices, agent_devices


def measure(env: str, method: str, layout: tuple[int, int], num_envs: int | None,
            iterations: int, repeats: int) -> dict:
    """Compile seconds, median seconds per iteration, temp GB per device and the last metrics."""
    import numpy as np
    from bench_train import compile_training  # imports JAX: after --force-cpu-devices is set

    env_devices, agent_devices = layout
    config, state, compiled, compile_s = compile_training(
        env, method, iterations, num_envs, devices=env_devices * agent_devices,
        agent_devices=agent_devices)
    seconds = common.time_calls(compiled, state, repeats=repeats)
    _, metrics = compiled(state)
    memory = compiled.memory_analysis()
    return {"compile_s": compile_s, "iteration_s": seconds / iterations,
            "temp_gb": memory.temp_size_in_bytes / 1e9 if memory is not None else float("nan"),
            "metrics": {k: float(np.asarray(v)[-1]) for k, v in metrics.items()},
            "num_envs": config.num_envs, "num_agents": config.num_agents}


def largest_difference(metrics: dict, reference: dict) -> tuple[float, str]:
    """The largest |a - b| / max(|b|, 1e-3) over the metrics both have, and its name."""
    return max((abs(metrics[k] - v) / max(abs(v), 1e-3), k) for k, v in reference.items()
               if k in metrics)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="medical")
    parser.add_argument("--methods", default="ps,dyps")
    parser.add_argument("--layouts", type=lambda s: [parse_layout(v) for v in s.split(",")],
                        default=[(1, 1), (2, 1), (2, 2)])
    parser.add_argument("--num-envs", type=int, default=0, help="default: the preset's")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--force-cpu-devices", type=int, default=0)
    parser.add_argument("--note", default="")
    common.add_out_argument(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.repeats < 1 or args.num_envs < 0:
        parser.error(f"--iterations, --repeats must be >= 1 and --num-envs >= 0, got "
                     f"{args.iterations}, {args.repeats}, {args.num_envs}")
    if args.force_cpu_devices:
        if "jax" in sys.modules:
            parser.error("--force-cpu-devices: JAX is already imported in this process")
        # Forced devices are threads sharing the cores: on a busy machine one can reach a
        # collective long after the others, past XLA's default 40 s before it aborts the process.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                                   f"device_count={args.force_cpu_devices} "
                                   "--xla_cpu_collective_call_terminate_timeout_seconds=1800")
        os.environ["JAX_PLATFORMS"] = "cpu"

    load_start, t0 = common.load_average(), time.perf_counter()
    rows = []
    for method in args.methods.split(","):
        reference = None
        for layout in args.layouts:
            result = measure(args.env, method, layout, args.num_envs or None, args.iterations,
                             args.repeats)
            reference = reference or result
            worst, name = largest_difference(result["metrics"], reference["metrics"])
            row = (f"| {method} | {layout[0]}x{layout[1]} | {result['num_envs']} | "
                   f"{result['num_agents']} | {result['compile_s']:.1f} | "
                   f"{result['iteration_s']:.2f} | {result['temp_gb']:.3f} | {worst:.1e} ({name}) |")
            print(row, flush=True)
            rows.append(row)
    forced = (f"; {args.force_cpu_devices} CPU devices forced on the machine's cores, so the "
              "seconds do not say what real devices would do" if args.force_cpu_devices else "")
    lines = [*common.run_header(f"Device layouts on {args.env}", "bench_sharding.py", argv,
                                load_start, time.perf_counter() - t0, args.note),
             f"- one call = {args.iterations} iteration(s) of the preset; median of "
             f"{args.repeats} calls after a warm-up, compile excluded{forced}",
             "- layout DexDa: De devices split the environments, Da the agent axis; temp GB: "
             "XLA's temporaries per device; difference: largest relative difference of the last "
             "iteration's metrics from the first layout's",
             "", "| method | layout | E | agents | compile s | s / iteration | temp GB / device | "
             "largest difference |", "|---|---|---:|---:|---:|---:|---:|---|", *rows]
    common.print_and_write("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
