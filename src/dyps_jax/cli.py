"""The command line: `python -m dyps_jax.train` / `dyps-jax`.

It builds the config with `make_config` (so every bad value is reported before compiling), then runs
the jitted iterations a few at a time, drawing a progress bar and writing the run folder:

    <out>/<scenario>-<method>[-<algo>]-s<seed>-<time>/
        config.json      the full resolved configuration
        metrics.csv      one row per iteration (rewritten atomically after every chunk)
        summary.json     final figures, written at the end
        checkpoints/     Orbax checkpoints of the whole TrainState
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dyps_jax import checkpoint, envs, group_metrics
from dyps_jax.config import METHODS, SETTINGS, TrainConfig, make_config
from dyps_jax.train import make_train_fns

_HELP = {
    "seed": "random seed",
    "total_steps": "environment steps in all (summed over parallel environments)",
    "num_envs": "parallel environments (episodes per iteration)",
    "num_groups": "parameter groups M of DyPS, its ablations and SePS (paper default 4; the "
                  "roles sweep of Fig. 6a runs 1..6)",
    "algo": "base algorithm: ippo (per-agent reward, own critic), mappo (team reward, critic on "
            "the global state) or copo (coordinated advantage); docs/methods.md",
    "lcf_lr": "CoPO: learning rate of the coordination factor's distribution",
    "seps_pretrain_fraction": "SePS: share of total-steps spent pre-training the shared network",
    "seps_samples": "SePS: transitions recorded during pre-training for the id VAE",
    "out": "folder for run folders",
    "batch_size": "PPO minibatch size in (env, step) transitions (Table 6)",
    "lr": "allocation actor/critic learning rate (Table 6)",
    "selector_lr": "group-selector learning rate (Table 6's 1e-5 is for --selector-signal "
                   "team-return)",
    "selector_signal": "DyPS selector training signal: group-advantage or team-return (the "
                       "paper); docs/grouping.md",
    "group_embedding": "z_g in eq. 13: unit (normalised CVAE means) or mean (the paper)",
    "group_balance_coef": "weight of the entropy of group usage in the selector's loss",
    "vlstm_decoder": "VLSTM decoder input besides (z_t, h_t-1): paper (nothing) or action (a_t)",
    "agent_embedding": "h_a: final (h_T, the paper) or mean (of h_t over the episode)",
    "gamma": "discount (Table 6)",
    "clip_eps": "PPO clip (Table 6)",
    "gae_lambda": "GAE lambda (Table 6)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dyps-jax",
        description="Train DyPS, one of its ablations or a parameter-sharing baseline on a "
                    "scenario preset, with IPPO, MAPPO or CoPO.",
    )
    parser.add_argument("--env", default="lbf-1",
                        help=f"scenario preset ({', '.join(envs.preset_names())}) or a .toml path")
    parser.add_argument("--method", default="dyps", help=f"one of {', '.join(METHODS)}")
    parser.add_argument("--env-param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter of the scenario's [env] table (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for name in sorted(set(SETTINGS) - {"method"}):
        default = SETTINGS[name][1]
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=None,
                            help=f"{_HELP.get(name, name.replace('_', ' '))} (default: preset or "
                                 f"{default})")
    return parser


def _env_params(pairs: list[str]) -> dict:
    """`KEY=VALUE` strings to a dict; values parse as TOML (numbers, booleans), else strings."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env-param: expected KEY=VALUE, got {pair!r}")
        try:
            params[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            params[key] = value
    return params


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    parser = _parser()
    args = parser.parse_args(argv)
    skip = {"env", "method", "env_param", "quiet"}
    overrides = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    try:
        overrides["env_params"] = _env_params(args.env_param)
        config = make_config(env=args.env, method=args.method, **overrides)
    except ValueError as err:
        parser.error(str(err))
    return config, args


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run(config: TrainConfig, quiet: bool = False, console: Console | None = None) -> dict:
    """Trains with a progress bar and writes the run folder; returns the summary."""
    console = console or Console(stderr=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    algo = "" if config.algo == "ippo" else f"-{config.algo}"
    run_dir = Path(config.out) / f"{config.env.name}-{config.method}{algo}-s{config.seed}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=False)
    checkpoint.write_json(run_dir / "config.json", config.to_dict())
    ckpt = checkpoint.manager(run_dir / "checkpoints") if config.checkpoint_every else None

    fns = make_train_fns(config)
    total_iters = config.num_iterations
    steps_per_iter = config.num_envs * config.episode_length
    t0 = time.perf_counter()
    state = jax.jit(fns.init)(jax.random.key(config.seed))
    iterate = jax.jit(fns.iterate, static_argnums=1)
    chunk = min(config.log_every, total_iters)
    compiled = {chunk: iterate.lower(state, chunk).compile()}
    compile_s = time.perf_counter() - t0
    console.print(f"[bold]{config.method}[/] ({config.algo}) on [bold]{config.env.name}[/]: "
                  f"{total_iters} iterations "
                  f"x {steps_per_iter} env steps, compiled in {compile_s:.1f}s -> {run_dir}")

    rows: list[dict] = []
    done_iters, train_s = 0, 0.0
    columns = [TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
               TextColumn("return {task.fields[ret]}"), TextColumn("{task.fields[sps]} steps/s"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=quiet) as progress:
        task = progress.add_task("training", total=total_iters * steps_per_iter, ret="-", sps="-")
        while done_iters < total_iters:
            n = min(chunk, total_iters - done_iters)
            if n not in compiled:
                compiled[n] = iterate.lower(state, n).compile()
            t = time.perf_counter()
            state, metrics = compiled[n](state)
            metrics = jax.device_get(metrics)
            train_s += time.perf_counter() - t
            for i in range(n):
                row = {"iteration": done_iters + i + 1,
                       "env_steps": (done_iters + i + 1) * steps_per_iter}
                row.update({k: float(np.asarray(v[i]).mean()) for k, v in metrics.items()})
                rows.append(row)
            done_iters += n
            checkpoint.write_atomic(run_dir / "metrics.csv", _csv(rows))
            if ckpt and (done_iters % config.checkpoint_every < n or done_iters == total_iters):
                checkpoint.save(ckpt, done_iters, state)
            sps = done_iters * steps_per_iter / max(train_s, 1e-9)
            progress.update(task, completed=done_iters * steps_per_iter,
                            ret=f"{rows[-1]['episode_return']:.3f}", sps=f"{sps:,.0f}")

    returns = np.array([r["episode_return"] for r in rows])
    tail = max(1, len(returns) // 10)
    # The scenario's own metrics (GMV, ORR, infections, ...), as episode totals.
    _, first_step = jax.eval_shape(config.env.build().reset, jax.random.key(0))
    scenario = {f"final_{name}": float(np.mean([r[name] for r in rows[-tail:]]))
                for name in first_step.metrics}
    summary = {
        "env": config.env.name,
        "method": config.method,
        "algo": config.algo,
        "seed": config.seed,
        "iterations": total_iters,
        "env_steps": total_iters * steps_per_iter,
        "final_return": float(returns[-tail:].mean()),
        "first_return": float(returns[:tail].mean()),
        "best_return": float(returns.max()),
        **scenario,
        **_clusters(config, state),
        "compile_seconds": round(compile_s, 2),
        "train_seconds": round(train_s, 2),
        "env_steps_per_second": round(total_iters * steps_per_iter / max(train_s, 1e-9), 1),
        "device": jax.devices()[0].device_kind,
        "run_dir": str(run_dir),
    }
    checkpoint.write_json(run_dir / "summary.json", summary)
    if ckpt:
        ckpt.close()
    table = Table(title="summary")
    table.add_column("field")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    return summary


def _clusters(config: TrainConfig, state) -> dict:
    """SePS: the clusters it found (agent ids per cluster) and their ARI against the true types."""
    if state.seps is None:
        return {}
    assignment = np.asarray(state.seps.assignment)
    out = {"seps_clusters": [np.flatnonzero(assignment == k).tolist()
                             for k in range(config.num_param_sets)]}
    types = getattr(config.env.build(), "agent_types", None)
    if types is not None:
        out["seps_type_ari"] = float(group_metrics.adjusted_rand_index(
            assignment, np.asarray(types), config.num_param_sets, int(np.max(types)) + 1))
    return out


def main(argv: list[str] | None = None) -> None:
    config, args = config_from_args(argv)
    run(config, quiet=args.quiet)


if __name__ == "__main__":
    main(sys.argv[1:])
