"""Where DyPS's time per iteration goes: its pieces added one at a time on top of PS.

For each scenario preset (`--envs`) at its own number of parallel environments, six
configurations, each the one before plus one piece of DyPS:

1. `ps`: one shared parameter set, no role models (the baseline of issue 13's 1.5x target);
2. `+ set machinery`: SePS after its clustering with one parameter set (`num_groups=1`): the
   grouped update's per-set optimiser, per-group advantage normalisation and per-group loss sums,
   with every agent on one network (so the next row isolates the network's cost);
3. `+ groups`: SePS after its clustering, i.e. M parameter sets with a fixed assignment and no
   role models (the grouped policy's own cost: rollout and PPO update over M sets);
4. `+ selector`: DyPS without representations (`dyps-no-repr`): the assignment sampled every
   iteration from a learned selector, trained on the group advantage;
5. `+ VLSTM, CVAE`: DyPS without the group response (`group_response_coef=0`, the paper's DyPS);
6. `+ response`: DyPS as configured by default (the groups' response models, EM's E- and M-step).

Each row is timed as `bench_train.py` times a method (`--iterations` iterations per compiled call,
one warm-up call, median of `--repeats` calls, compile excluded), and reports the wall seconds and
the process's CPU seconds (all threads) per iteration. CPU seconds move less than wall seconds when
other jobs share the cores, so the pieces' shares are computed from them. Peak memory is XLA's
compiled memory analysis, as in `bench_train.py`.

Run: `python benchmarks/bench_dyps_cost.py --envs lbf-1,lbf-2,rolegame,rware-1 --out` (writes
`benchmarks/results/dyps_cost.md`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from bench_train import compile_training, peak_bytes  # noqa: E402

DEFAULT_OUT = common.RESULTS / "dyps_cost.md"

# (label, method, overrides): each row adds one piece of DyPS to the row before.
STAGES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ps", "ps", {}),
    ("+ set machinery (SePS, one set)", "seps", {"num_groups": 1}),
    ("+ groups (SePS, fixed)", "seps", {}),
    ("+ selector (dyps-no-repr)", "dyps-no-repr", {}),
    ("+ VLSTM, CVAE (paper's DyPS)", "dyps", {"group_response_coef": 0.0}),
    ("+ response (DyPS default)", "dyps", {}),
)


def time_stage(env_name: str, method: str, overrides: dict[str, Any], iterations: int,
               repeats: int) -> dict[str, float]:
    """Wall and CPU seconds per iteration (medians) and peak GB of one configuration."""
    config, state, compiled, _ = compile_training(env_name, method, iterations, **overrides)
    state, out = compiled(state)  # warm-up
    jax.block_until_ready((state, out))
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        state, out = compiled(state)
        jax.block_until_ready((state, out))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall": statistics.median(walls) / iterations,
            "cpu": statistics.median(cpus) / iterations,
            "peak_gb": peak_bytes(compiled) / 2**30,
            "groups": config.num_param_sets, "agents": config.num_agents,
            "num_envs": config.num_envs}


def table_rows(env_name: str, stages: list[dict[str, float]]) -> list[str]:
    """One markdown row per stage: its times, its piece's added CPU time and share of DyPS's
    extra CPU time over PS."""
    base, full = stages[0]["cpu"], stages[-1]["cpu"]
    extra = full - base
    rows = []
    for i, ((label, _, _), s) in enumerate(zip(STAGES, stages)):
        added = s["cpu"] - (stages[i - 1]["cpu"] if i else 0.0)
        share = f"{added / extra:.0%}" if i and extra > 0 else "-"
        rows.append(
            f"| {env_name} | {s['agents']} | {s['num_envs']} | {label} | {s['groups']} | "
            f"{1e3 * s['wall']:.1f} | {1e3 * s['cpu']:.1f} | {s['cpu'] / base:.2f} | "
            f"{1e3 * added:+.1f} | {share} | {s['peak_gb']:.4f} | "
            f"{s['peak_gb'] / stages[0]['peak_gb']:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="lbf-1,lbf-2,rolegame,rware-1",
                        help="comma-separated scenario presets")
    parser.add_argument("--iterations", type=int, default=2,
                        help="training iterations per timed call (compiled into one lax.scan)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    parser.add_argument("--note", default="", help="free text added to the results header")
    common.add_out_argument(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.iterations < 2 or args.repeats < 1:
        # SePS switches to its clustered groups after one iteration: in the warm-up call only if
        # that call runs at least two.
        parser.error(f"--iterations {args.iterations}, --repeats {args.repeats}: need "
                     "--iterations >= 2 and --repeats >= 1")
    env_names = [e for e in args.envs.split(",") if e]

    load_start, t_start = common.load_average(), time.perf_counter()
    lines_rows = []
    for name in env_names:
        stages = []
        for label, method, overrides in STAGES:
            s = time_stage(name, method, overrides, args.iterations, args.repeats)
            stages.append(s)
            print(f"{name} {label}: {1e3 * s['wall']:.1f} ms wall, {1e3 * s['cpu']:.1f} ms CPU "
                  f"per iteration, peak {s['peak_gb']:.4f} GB", flush=True)
        lines_rows += table_rows(name, stages)
    lines = [
        *common.run_header("Where DyPS's time per iteration goes", "bench_dyps_cost.py", argv,
                           load_start, time.perf_counter() - t_start, args.note),
        "- each row adds one piece of DyPS to the row above (benchmarks/bench_dyps_cost.py's "
        "docstring); the preset's own E environments and hyper-parameters; one iteration = one "
        f"episode per environment plus all updates; {args.iterations} iterations per compiled "
        f"call, one warm-up call, median of {args.repeats} timed calls, compile excluded.",
        "- CPU ms: the process's CPU time (all threads) per iteration, which other jobs on the "
        "cores disturb less than wall time; x PS, added and share (of DyPS's CPU time over PS's) "
        "are computed from it. Peak GB: XLA's memory analysis of the compiled program.",
        "",
        "| scenario | agents | E | configuration | groups G | wall ms | CPU ms | CPU x PS | "
        "added CPU ms | share of DyPS's extra | peak GB | memory x PS |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *lines_rows,
    ]
    text = "\n".join(lines) + "\n"
    common.print_and_write(text, args.out)
    return text


if __name__ == "__main__":
    main()
