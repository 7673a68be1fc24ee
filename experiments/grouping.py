"""Does DyPS's grouping learn roles? An ablation of the group selector on one scenario.

Trains DyPS under several selector variants (each a set of config overrides, from the paper's literal
reading to the default of dyps-jax) and the fixed-assignment baselines, seeds vmapped in one compiled
call, and writes `experiments/results/<name>.{md,json}`: per variant, the team return and the
grouping diagnostics (selector entropy, share of agents changing group per iteration, and where the
scenario has true agent types, the adjusted Rand index and purity of the most likely groups) over the
first and last 10 % of iterations, mean and std over seeds.

    python experiments/grouping.py --env rolegame --total-steps 60000 --seeds 3
    python experiments/grouping.py --env rware-1 --total-steps 1000000 --seeds 3 --num-groups 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import jax
import numpy as np

import dyps_jax
from dyps_jax.checkpoint import write_atomic

RESULTS = Path(__file__).parent / "results"
PAPER = {"selector_signal": "team-return", "group_embedding": "mean", "selector_lr": 1e-5,
         "group_response_coef": 0.0}
# Each row switches one thing on, in the order docs/grouping.md explains them.
VARIANTS: dict[str, tuple[str, dict]] = {
    "paper": ("dyps", PAPER),
    "paper + selector lr 1e-2": ("dyps", {**PAPER, "selector_lr": 1e-2}),
    "+ group advantage": ("dyps", {**PAPER, "selector_lr": 1e-2,
                                   "selector_signal": "group-advantage", "group_balance_coef": 0.0}),
    "+ unit z_g": ("dyps", {"group_balance_coef": 0.0, "group_response_coef": 0.0}),
    "+ group balance": ("dyps", {"group_response_coef": 0.0}),
    "+ group response (default)": ("dyps", {}),
    "+ VLSTM decoder sees a_t": ("dyps", {"vlstm_decoder": "action"}),
    # The default with one of its parts as it was before: a forward response model whose fit is a
    # gain (git 862c4fe), or one selector step per iteration instead of one per episode.
    "forward response": ("dyps", {"response_model": "forward", "response_selector": "fit"}),
    "one selector step per iteration": ("dyps", {"selector_updates": 1}),
    "ps": ("ps", {}),
    "ps-id": ("ps-id", {}),
    "nops": ("nops", {}),
    # The grouping DyPS should find, given: one parameter set per true type.
    "ps-types": ("ps-types", {}),
}
GROUPING = ("selector_entropy", "group_changes", "type_ari", "type_purity", "role_separation")
RESPONSE = ("response_type_ari", "response_confidence", "response_spread",
            "group_embedding_cosine")
CURVE_POINTS = 50


def run_variant(env: str, method: str, overrides: dict, args: argparse.Namespace) -> dict:
    extra = {"num_groups": args.num_groups} if args.num_groups and method == "dyps" else {}
    config = dyps_jax.make_config(env=env, method=method, total_steps=args.total_steps,
                                  num_envs=args.num_envs, **overrides, **extra)
    train = jax.jit(jax.vmap(dyps_jax.make_train(config)))
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    compiled = train.lower(keys).compile()
    t0 = time.perf_counter()
    _, metrics = compiled(keys)
    metrics = jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
    row: dict = {"method": method, "overrides": overrides | extra, "train_seconds": round(seconds, 1)}
    for name in ("episode_return",) + GROUPING + RESPONSE:
        if name not in metrics:
            continue
        values = np.asarray(metrics[name])  # [seeds, iterations]
        tail = max(1, values.shape[1] // 10)
        row[name] = {"first": float(values[:, :tail].mean()),
                     "final": float(values[:, -tail:].mean()),
                     "final_std": float(values[:, -tail:].mean(axis=1).std()),
                     "final_per_seed": values[:, -tail:].mean(axis=1).round(4).tolist()}
    # Per-seed curves, at most CURVE_POINTS points each (means over consecutive iterations).
    curves = {}
    for name in ("episode_return",) + GROUPING + RESPONSE:
        if name in metrics:
            values = np.asarray(metrics[name])
            width = -(-values.shape[1] // CURVE_POINTS)
            usable = values[:, : values.shape[1] // width * width]
            curves[name] = usable.reshape(len(values), -1, width).mean(-1).round(4).tolist()
    row["curves"] = curves
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="rolegame")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    parser.add_argument("--total-steps", type=int, default=60_000)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--num-groups", type=int, default=0, help="DyPS groups (0: the default)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="first seed of the vmapped batch")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every DyPS variant (repeatable)")
    parser.add_argument("--name", default="", help="results file stem (default grouping_<env>)")
    args = parser.parse_args()
    chosen = args.variants.split(",")
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; allowed: {', '.join(VARIANTS)}")

    common = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        common[key] = tomllib.loads(f"v = {value}")["v"] if value[:1].isdigit() else value
    # The revision the runs start from (HEAD may move while a long ablation runs).
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    rows = {}
    for name in chosen:
        method, overrides = VARIANTS[name]
        rows[name] = run_variant(args.env, method, {**overrides, **common} if method == "dyps"
                                 else overrides, args)
        print(name, json.dumps(rows[name]), flush=True)

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / (args.name or f"grouping_{args.env}")
    command = (f"python experiments/grouping.py --env {args.env} --total-steps {args.total_steps} "
               f"--num-envs {args.num_envs} --seeds {args.seeds}"
               + (f" --num-groups {args.num_groups}" if args.num_groups else "")
               + (f" --seed {args.seed}" if args.seed else "")
               + (f" --variants '{args.variants}'" if args.variants != ",".join(VARIANTS) else "")
               + "".join(f" --set {pair}" for pair in args.set)
               + (f" --name {args.name}" if args.name else ""))
    meta = {"command": command, "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "device": jax.devices()[0].device_kind, "jax": jax.__version__, "git": rev}
    write_atomic(stem.with_suffix(".json"), json.dumps({**meta, "rows": rows}, indent=1) + "\n")

    def cell(row: dict, key: str) -> str:
        if key not in row:
            return "-"
        return f"{row[key]['final']:.3f} ± {row[key]['final_std']:.3f}"

    lines = [
        f"# Grouping ablation on {args.env}",
        "",
        f"Command: `{command}`  ",
        f"Date {meta['date']}, device {meta['device']}, jax {meta['jax']}, git {rev}. Final = mean "
        f"over the last 10 % of iterations, ± std over {args.seeds} seeds. ARI and purity compare "
        "each agent's most likely group with its true type; changes = share of agents whose most "
        "likely group changed since the previous iteration; role separation = between-type over "
        "within-type variance of the agent embeddings h_a (0: h_a says nothing about the type).",
        "",
        "| variant | return | selector entropy | changes | type ARI | type purity | role separation "
        "| seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row, k) for k in ("episode_return",) + GROUPING)
                     + f" | {row['train_seconds']} |")
    write_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
