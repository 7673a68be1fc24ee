"""The command line: `dyps-jax` / `python -m dyps_jax.train`.

It builds the config with `make_config` (so every bad value is reported before compiling), compiles
the jitted chunk of iterations (and the shorter last chunk, if any) up front, then runs them a few
at a time, drawing a progress bar (a plain line every few seconds when the output is not a
terminal) and writing the run folder described in `run_dir.py`.

Stops: a non-finite loss or parameter stops the run (`status: diverged`, exit 3) keeping the last
good checkpoint, as running out of memory does (`status: out_of_memory`, exit 1); Ctrl-C or
SIGTERM finishes the running chunk, saves a checkpoint and the summary (`status: interrupted`,
exit 130/143); `--resume RUN_DIR` continues such a run bit-identically.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dyps_jax import checkpoint, envs, group_metrics, run_dir
from dyps_jax.config import (
    AUTO_SELECTOR_STEPS,
    METHODS,
    SETTINGS,
    ConfigAdjusted,
    TrainConfig,
    config_from_dict,
    make_config,
)
from dyps_jax.train import make_train_fns

EXIT_USAGE, EXIT_FAILED, EXIT_DIVERGED = 2, 1, 3

_HELP = {
    "seed": "random seed",
    "total_steps": "environment steps in all (summed over parallel environments; rounded down to "
                   "whole iterations, recorded in config.json)",
    "num_envs": "parallel environments (episodes per iteration)",
    "num_groups": "parameter groups M of DyPS, its ablations and SePS (paper default 4; the "
                  "roles sweep of Fig. 6a runs 1..6)",
    "algo": "base algorithm: ippo (per-agent reward, own critic), mappo (team reward, critic on "
            "the global state) or copo (coordinated advantage); docs/methods.md",
    "lcf_lr": "CoPO: learning rate of the coordination factor's distribution",
    "seps_pretrain_fraction": "SePS: share of total-steps spent pre-training the shared network",
    "seps_samples": "SePS: transitions recorded during pre-training for the id VAE",
    "out": "folder for run folders",
    "devices": "local devices (GPUs, TPU cores) the parallel environments are split over; 0 = "
               "all of them; num_envs must be a multiple (docs/architecture.md)",
    "agent_devices": "of --devices, how many split the agent axis (the others split the "
                     "environments); a divisor of the scenario's agent count (docs/architecture.md)",
    "batch_size": "PPO minibatch size in (env, step) transitions (Table 6); at most num_envs x "
                  "episode length",
    "chunk_rows": "most agent rows (transitions x agents) one PPO gradient computation holds; "
                  "larger minibatches are summed over chunks (same update, less memory)",
    "lr": "allocation actor/critic learning rate (Table 6)",
    "selector_lr": "group-selector learning rate (Table 6's 1e-5 is for --selector-signal "
                   "team-return)",
    "selector_signal": "DyPS selector training signal: group-advantage or team-return (the "
                       "paper); docs/grouping.md",
    "group_embedding": "z_g in eq. 13: unit (normalised CVAE means) or mean (the paper)",
    "group_balance_coef": "weight of the entropy of group usage in the selector's loss",
    "group_response_coef": "weight of the group-response fit in the selector's objective; 0 "
                           "drops the group response models (the paper)",
    "response_steps": "time steps per episode sampled for the group-response model",
    "response_model": "the groups' response models: forward (predict s_t+1, r_t+1 from s_t, "
                      "a_t) or inverse (predict a_t from s_t, s_t+1, r_t+1)",
    "response_prior": "prior of each agent's group in the group response's E-step: selector "
                      "(a_g) or uniform (the response models' evidence alone)",
    "selector_updates": "group-selector optimiser steps per iteration, on that iteration's batch "
                        f"(0: one per episode, as Algorithm 1, at most {AUTO_SELECTOR_STEPS})",
    "response_updates": "Adam steps of the group-response models per iteration (EM's M-step)",
    "response_batch": "transitions per M-step of the group-response models (at most those the "
                      "E-step scores)",
    "response_lr": "learning rate of the group-response models",
    "response_temperature": "divides the group response's evidence in its E-step (1: the exact "
                            "posterior; larger: softer responsibilities)",
    "response_target": "what the group response models predict: state-reward (s_t+1, r_t+1) or "
                       "state (s_t+1 alone)",
    "response_smoothing": "share of each group-response model's fit spread evenly over all "
                          "agents (keeps a model EM leaves empty from collapsing)",
    "response_selector": "how the group response trains the selector: fit (its centred "
                         "log-likelihood as a gain) or posterior (cross-entropy to each agent's "
                         "EM posterior)",
    "vlstm_decoder": "VLSTM decoder input besides (z_t, h_t-1): paper (nothing) or action (a_t)",
    "vlstm_grad_sequences": "agent sequences per iteration the VLSTM's gradient is computed on "
                            "(0: all, the paper); every agent's h_a still comes from all of them",
    "vlstm_grad_steps": "consecutive steps of those sequences the VLSTM's gradient runs through, "
                        "a window drawn every iteration (0: the whole episode, the paper)",
    "agent_embedding": "h_a: final (h_T, the paper) or mean (of h_t over the episode)",
    "gamma": "discount (Table 6)",
    "clip_eps": "PPO clip (Table 6)",
    "gae_lambda": "GAE lambda (Table 6)",
}


def _version() -> str:
    try:
        return metadata.version("dyps-jax")
    except metadata.PackageNotFoundError:
        from dyps_jax import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dyps-jax",
        description="Train DyPS, one of its ablations or a parameter-sharing baseline on a "
                    "scenario preset, with IPPO, MAPPO or CoPO.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--env", default=None,
                        help=f"scenario preset ({', '.join(envs.preset_names())}) or a .toml path "
                             "(default: lbf-1)")
    parser.add_argument("--config", default=None, metavar="CONFIG_JSON",
                        help="rerun the configuration of a run folder (RUN_DIR/config.json); "
                             "other flags override it")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue an interrupted run from its last checkpoint, in its folder")
    parser.add_argument("--resume-fallback", action="store_true",
                        help="with --resume: if the last checkpoint is corrupted, continue from "
                             "the previous good one")
    parser.add_argument("--method", default=None,
                        help=f"one of {', '.join(METHODS)} (default: preset or dyps)")
    parser.add_argument("--env-param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter of the scenario's [env] table (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between plain progress lines when the output is not a "
                             "terminal (default: 10)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard scalars to RUN_DIR/tb (pip install "
                             "'dyps-jax[tb]')")
    for name in sorted(set(SETTINGS) - {"method"}):
        default = SETTINGS[name][1]
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=None,
                            help=f"{_HELP.get(name, name.replace('_', ' '))} (default: preset or "
                                 f"{default})")
    return parser


def _env_params(pairs: list[str]) -> dict:
    """`KEY=VALUE` strings to a dict; values parse as TOML (numbers, booleans), else strings (which
    the environment parses to the parameter's declared type, e.g. `False` -> false)."""
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


def _saved_config(path: Path, flag: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{flag}: {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{flag}: cannot read {str(path)!r}: {err}") from None


def _build_config(args: argparse.Namespace) -> TrainConfig:
    settings = {k: v for k, v in vars(args).items()
                if k in SETTINGS and k != "method" and v is not None}
    if args.resume:
        given = sorted(f"--{k.replace('_', '-')}" for k in (*settings, "env", "config", "method")
                       if getattr(args, k, None) is not None) + (["--env-param"] * bool(args.env_param))
        if given:
            raise ValueError(f"--resume continues a run as it was configured; drop {', '.join(given)}")
        return config_from_dict(_saved_config(Path(args.resume) / "config.json", "--resume"))
    if args.resume_fallback:
        raise ValueError("--resume-fallback: only meaningful with --resume RUN_DIR")
    settings["env_params"] = _env_params(args.env_param)
    if args.config:
        if args.env:
            raise ValueError("--config: the scenario comes from the saved configuration; drop --env")
        return config_from_dict(_saved_config(Path(args.config), "--config"),
                                method=args.method, **settings)
    return make_config(env=args.env or "lbf-1", method=args.method, **settings)


def config_from_args(argv: list[str] | None = None,
                     note: Callable[[str], None] | None = None
                     ) -> tuple[TrainConfig, argparse.Namespace]:
    """Parses the command line into a validated config; bad values exit 2 with one message.

    `note` receives each setting the config adjusted (`ConfigAdjusted`), e.g. rounded total_steps.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConfigAdjusted)
            config = _build_config(args)
    except ValueError as err:  # one line, without argparse's long usage block
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {err}\n")
    for w in caught:
        if note is not None and issubclass(w.category, ConfigAdjusted):
            note(str(w.message))
        elif not issubclass(w.category, ConfigAdjusted):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not args.progress_every >= 0:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: --progress-every: must be >= 0 seconds, "
                                f"got {args.progress_every}\n")
    return config, args


class _StopRequest:
    """Turns SIGINT/SIGTERM into a request to stop after the running chunk; a second signal
    stops at once (KeyboardInterrupt)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


def _finite_check(state: Any) -> tuple[Callable[[Any], Any], list[str]]:
    """A jitted `state -> bool[L]` (is each floating leaf all finite) and the leaves' names."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    picked = [(jax.tree_util.keystr(path), i) for i, (path, leaf) in enumerate(leaves)
              if jnp.issubdtype(leaf.dtype, jnp.floating)]

    def check(s):
        flat = jax.tree.leaves(s)
        return jnp.stack([jnp.isfinite(flat[i]).all() for _, i in picked])

    return jax.jit(check), [name for name, _ in picked]


def _first_nonfinite(metrics: dict[str, np.ndarray]) -> tuple[int, list[str]] | None:
    """(chunk index, names) of the first iteration with a non-finite metric, or None."""
    bad: dict[str, np.ndarray] = {
        k: np.asarray(~np.isfinite(np.asarray(v, np.float64).reshape(len(v), -1)).all(axis=1))
        for k, v in metrics.items()
    }
    hits = [i for i in range(len(next(iter(bad.values())))) if any(b[i] for b in bad.values())]
    if not hits:
        return None
    return hits[0], sorted(k for k, b in bad.items() if b[hits[0]])


def _tensorboard_writer_class() -> type:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard: needs tensorboardX; pip install 'dyps-jax[tb]'") from None
    return SummaryWriter


def run(config: TrainConfig, quiet: bool = False, console: Console | None = None, *,
        resume: str | Path | None = None, resume_fallback: bool = False,
        tensorboard: bool = False, progress_every: float = 10.0) -> dict:
    """Trains with progress output and writes the run folder; returns the summary.

    With `resume` (a run folder of this config) it restores the last verified checkpoint (the
    previous good one when it is corrupted and `resume_fallback`) and continues in that folder.
    The summary's `status` is completed, interrupted or diverged.
    """
    console = console or Console(stderr=True)
    say = console.print if not quiet else (lambda *a, **k: None)
    fns = make_train_fns(config)
    total_iters = config.num_iterations
    steps_per_iter = config.num_envs * config.episode_length
    if resume is None:
        run_dir.check_out(config.out)
    else:
        folder = Path(resume).resolve()
    if tensorboard:  # fail before compiling when the extra is missing
        _tensorboard_writer_class()

    t0 = time.perf_counter()
    state = None
    if resume is not None:
        like = jax.eval_shape(fns.init, jax.random.key(config.seed))
        state = fns.place(checkpoint.restore(
            folder / "checkpoints", like, fallback=resume_fallback,
            warn=lambda m: console.print(f"[yellow]warning:[/] {m}")))
    done_iters = start_iters = 0 if state is None else int(state.iteration)
    chunk = min(config.log_every, total_iters)
    # Chunks start at multiples of `chunk`, as in an uninterrupted run, so a resume replays the
    # same compiled programs; the shorter last chunk is compiled now, not in the middle of a run
    # (where it would freeze the progress output).
    sizes = sorted({n for n in (chunk, (total_iters - done_iters) % chunk) if n}, reverse=True)
    say(f"compiling {config.method} on {config.env.name} ({total_iters} iterations x "
        f"{steps_per_iter} env steps, chunks of {' and '.join(map(str, sizes))})…")
    if state is None:
        state = jax.jit(fns.init)(jax.random.key(config.seed))
    iterate = jax.jit(fns.iterate, static_argnums=1)
    compiled = {n: iterate.lower(state, n).compile() for n in sizes if done_iters < total_iters}
    finite, leaf_names = _finite_check(state)
    compile_s = time.perf_counter() - t0

    # From here a stop signal ends the run cleanly after the running chunk; before (while
    # compiling) SIGTERM ends the process at once and Ctrl-C raises KeyboardInterrupt: nothing
    # has been written yet.
    with _StopRequest() as stop:
        if resume is None:
            folder = run_dir.create(config.out, config.env.name, config.method, config.seed,
                                    config.algo)
            checkpoint.write_json(folder / "config.json", config.to_dict())
        say(f"compiled in {compile_s:.1f}s -> {folder}"
            + (f" (resuming at iteration {done_iters})" if resume is not None else ""))
        writer = _tensorboard_writer_class()(str(folder / "tb")) if tensorboard else None
        log = run_dir.MetricsLog(folder, writer)
        rows = log.truncate(done_iters) if resume is not None else []
        ckpt = checkpoint.manager(folder / "checkpoints") if config.checkpoint_every else None
        saved_iters = done_iters if resume is not None else 0
        pending: list[dict] = []
        status, diverged, failure, failed_at, train_s = "completed", None, "", 0, 0.0

        def save_and_flush(state) -> None:
            nonlocal saved_iters, pending
            if ckpt and saved_iters != done_iters:
                checkpoint.save(ckpt, done_iters, state)
                saved_iters = done_iters
            log.append(pending)
            rows.extend(pending)
            pending = []

        reporter = _Progress(console, quiet, progress_every, total_iters, steps_per_iter)
        with reporter:
            reporter.update(done_iters, rows[-1] if rows else None, 0.0, start_iters)
            while done_iters < total_iters:
                if stop.signum:
                    status = "interrupted"
                    break
                n = min(chunk, total_iters - done_iters)
                t = time.perf_counter()
                try:
                    new_state, metrics = compiled[n](state)
                    metrics = jax.device_get(metrics)
                except Exception as err:
                    if not is_out_of_memory(err):
                        raise
                    status, failure = "out_of_memory", first_line(err)
                    failed_at = done_iters + 1
                    break
                leaves_ok = np.asarray(finite(new_state))
                train_s += time.perf_counter() - t
                chunk_rows = [
                    {"iteration": done_iters + i + 1, "env_steps": (done_iters + i + 1) * steps_per_iter,
                     **{k: float(np.asarray(v[i]).mean()) for k, v in metrics.items()}}
                    for i in range(n)
                ]
                bad = _first_nonfinite(metrics)
                if bad is None and not leaves_ok.all():
                    bad = n - 1, [f"parameter {leaf_names[i]}"
                                  for i in np.flatnonzero(~leaves_ok)]
                if bad is not None:
                    index, names = bad
                    diverged = {"iteration": done_iters + index + 1, "quantities": names}
                    status = "diverged"
                    break
                state = new_state
                done_iters += n
                pending.extend(chunk_rows)
                if not ckpt or done_iters % config.checkpoint_every < n \
                        or done_iters == total_iters:
                    save_and_flush(state)
                reporter.update(done_iters, pending[-1] if pending else rows[-1], train_s,
                                start_iters)
        if status == "interrupted":
            save_and_flush(state)
        if ckpt:
            ckpt.close()
        if log.tensorboard is not None:
            log.tensorboard.close()

    summary = _summary(config, folder, rows, status, compile_s, train_s,
                       done_iters - start_iters, steps_per_iter)
    summary["last_checkpoint"] = saved_iters if ckpt and saved_iters else None
    if resume is not None:
        summary["resumed_from"] = start_iters
    if diverged:
        summary["diverged_iteration"] = diverged["iteration"]
        summary["diverged_quantities"] = diverged["quantities"]
    if status == "interrupted":
        summary["interrupted_by"] = stop.name
    if failure:
        summary["error"], summary["failed_iteration"] = failure, failed_at
    summary.update(_clusters(config, state))
    checkpoint.write_json(folder / "summary.json", summary)
    if not quiet and status == "completed":
        table = Table(title="summary")
        table.add_column("field")
        table.add_column("value")
        for key, value in summary.items():
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(table)
    return summary


def _clusters(config: TrainConfig, state) -> dict:
    """SePS: the clusters it found (agent ids per cluster) and their ARI against the true types."""
    if state is None or state.seps is None:
        return {}
    assignment = np.asarray(state.seps.assignment)
    out: dict[str, Any] = {"seps_clusters": [np.flatnonzero(assignment == k).tolist()
                                             for k in range(config.num_param_sets)]}
    types = getattr(config.env.build(), "agent_types", None)
    if types is not None:
        out["seps_type_ari"] = float(group_metrics.adjusted_rand_index(
            jnp.asarray(assignment), jnp.asarray(types), config.num_param_sets,
            int(np.max(types)) + 1))
    return out


def _summary(config: TrainConfig, folder: Path, rows: list[dict], status: str, compile_s: float,
             train_s: float, trained_iters: int, steps_per_iter: int) -> dict:
    returns = np.array([r["episode_return"] for r in rows], np.float64)
    tail = max(1, len(returns) // 10)
    # The scenario's own metrics (GMV, ORR, infections, ...), as episode totals.
    _, first_step = jax.eval_shape(config.env.build().reset, jax.random.key(0))
    scenario = {f"final_{name}": float(np.mean([r[name] for r in rows[-tail:]])) if rows else None
                for name in first_step.metrics}
    done = rows[-1]["iteration"] if rows else 0
    return {
        "status": status,
        "env": config.env.name,
        "method": config.method,
        "algo": config.algo,
        "seed": config.seed,
        "iterations": done,
        "env_steps": done * steps_per_iter,
        "final_return": float(returns[-tail:].mean()) if rows else None,
        "first_return": float(returns[:tail].mean()) if rows else None,
        "best_return": float(returns.max()) if rows else None,
        **scenario,
        "compile_seconds": round(compile_s, 2),
        "train_seconds": round(train_s, 2),
        "env_steps_per_second": round(trained_iters * steps_per_iter / max(train_s, 1e-9), 1),
        "device": jax.devices()[0].device_kind,
        "run_dir": str(folder),
    }


class _Progress:
    """A rich progress bar on a terminal; otherwise one plain line every `every` seconds."""

    def __init__(self, console: Console, quiet: bool, every: float, total_iters: int,
                 steps_per_iter: int):
        self.console, self.every = console, every
        self.total_iters, self.steps_per_iter = total_iters, steps_per_iter
        self.bar = console.is_terminal and not quiet
        self.plain = not console.is_terminal and not quiet
        self.last_print = -float("inf")
        self.started = time.perf_counter()
        columns = [TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                   TextColumn("return {task.fields[ret]}"), TextColumn("{task.fields[sps]} steps/s"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        self.progress = Progress(*columns, console=console, disable=not self.bar)
        self.task = self.progress.add_task("training", total=total_iters * steps_per_iter,
                                           ret="-", sps="-")

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, done_iters: int, row: dict | None, train_s: float, start_iters: int) -> None:
        ret = f"{row['episode_return']:.3f}" if row else "-"
        sps = (done_iters - start_iters) * self.steps_per_iter / train_s if train_s else 0.0
        self.progress.update(self.task, completed=done_iters * self.steps_per_iter, ret=ret,
                             sps=f"{sps:,.0f}")
        now = time.perf_counter()
        if self.plain and train_s and (now - self.last_print >= self.every
                                       or done_iters == self.total_iters):
            self.last_print = now
            left = (self.total_iters - done_iters) * self.steps_per_iter / sps if sps else 0.0
            self.console.print(
                f"iteration {done_iters}/{self.total_iters} "
                f"({done_iters * self.steps_per_iter:,} env steps) return {ret} "
                f"{sps:,.0f} steps/s elapsed {now - self.started:.0f}s ETA {left:.0f}s",
                highlight=False, soft_wrap=True)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (at most 200 characters), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in text \
        or "out of memory" in text.lower()


def main(argv: list[str] | None = None) -> None:
    console = Console(stderr=True)
    prefix = "dyps-jax:"

    def note(message: str) -> None:
        console.print(f"{prefix} note: {message}", highlight=False, soft_wrap=True)

    def fail(message: str, code: int) -> None:
        console.print(f"{prefix} error: {message}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(code)

    try:
        config, args = config_from_args(argv, note=note)
        summary = run(config, quiet=args.quiet, console=console, resume=args.resume,
                      resume_fallback=args.resume_fallback, tensorboard=args.tensorboard,
                      progress_every=args.progress_every)
    except KeyboardInterrupt:  # Ctrl-C while compiling, or a second signal
        console.print(f"{prefix} interrupted by SIGINT; stopped without saving a checkpoint",
                      highlight=False)
        sys.exit(128 + signal.SIGINT)
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    except OSError as err:
        fail(f"{err.strerror or err}: {err.filename or ''}", EXIT_FAILED)
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        fail(f"out of memory ({first_line(err)}); lower --num-envs or the scenario's size",
             EXIT_FAILED)
    folder = summary["run_dir"]
    if summary["status"] == "out_of_memory":
        fail(f"out of memory at iteration {summary['failed_iteration']} ({summary['error']}); lower "
             f"--num-envs or the scenario's size; last good checkpoint: "
             f"{summary['last_checkpoint'] or 'none'} in {folder}", EXIT_FAILED)
    if summary["status"] == "diverged":
        fail(f"diverged at iteration {summary['diverged_iteration']}: non-finite "
             f"{', '.join(summary['diverged_quantities'])}; last good checkpoint: "
             f"{summary['last_checkpoint'] or 'none'} in {folder}", EXIT_DIVERGED)
    if summary["status"] == "interrupted":
        signum = signal.Signals[summary["interrupted_by"]]
        saved = (f"checkpoint and summary saved; continue with: dyps-jax --resume {folder}"
                 if summary["last_checkpoint"] else f"no checkpoint to resume from; summary saved "
                                                    f"in {folder}")
        console.print(f"{prefix} interrupted by {signum.name} at iteration {summary['iterations']}:"
                      f" {saved}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(128 + signum)


if __name__ == "__main__":
    main(sys.argv[1:])
