"""The paper's tables and figures, one command each: train, evaluate, set beside the paper.

    python experiments/paper.py --table 2 [--seeds 5] [--scenarios ridehailing-1,ridehailing-2]
                                [--budget paper|quick] [--episodes 10]
    python experiments/paper.py --table 7                     # the rules on the replayed days
    python experiments/paper.py --figure 6a|6b|7|8|9 [--budget quick]

A table is data (`TABLES`): its columns (scenario, metric) and its rows (the paper's label, our
`--method` and settings, the paper's mean ± std per column). Every row is trained on every scenario
of the table with `make_train`, the seeds as one vmapped axis (`--seed-chunk` seeds per compiled
call), then evaluated with `dyps_jax.evaluate.evaluate_states` on `--episodes` episodes per seed
(ride-hailing: the replayed paper day, as Table 7; sampled actions unless `--greedy`). A row whose
method or setting `dyps_jax.make_config` does not accept yet is written as missing, with the
reason, and is trained as soon as the config accepts it.

Outputs in `experiments/results/` (`--out`):

* `table<k>.md` and `table<k>.csv` (`table<k>_<scenario>_....` when `--scenarios` picks some of the
  table's scenarios, so a partial run never replaces the whole table's files): ours (mean ± std over seeds of the per-seed evaluation means)
  beside the paper's, plus the budget, seeds, wall time and the command;
* `table<k>.json`: per-seed evaluation episodes in the marl-eval layout
  (environment -> task -> algorithm -> run_<seed> -> step_0 / absolute_metrics -> metric -> list
  of episode values), plus the missing rows;
* `figure<k>.png` (and `.json` with the numbers drawn).

Finished training jobs are kept in `<out>/paper_runs/` (keyed by scenario, row, budget and seeds;
small JSON files, kept under version control so a paper-budget table can be finished over several
sittings), so a table or figure that needs the same job reuses it; `--fresh` retrains, `--rows`
trains only some rows. Each job records its git revision and date, and a table lists them, since
a reused job may predate the current code.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

import dyps_jax  # noqa: E402
from dyps_jax.checkpoint import write_atomic, write_json  # noqa: E402
from dyps_jax.evaluate import evaluate_rule, evaluate_states  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py: the results files' git revision)

RESULTS = HERE / "results"
METRIC_LABEL = {"return": "Return", "gmv": "GMV", "orr": "ORR",
                "prevented_infections": "Infection reduction"}
# Training steps per scenario of the quick budget: a few iterations, for checking the pipeline.
QUICK = {"lbf-1": 40_000, "lbf-2": 40_000, "rware-1": 64_000, "rware-2": 64_000,
         "ridehailing-1": 4_608, "ridehailing-2": 4_608, "medical": 1_260}


@dataclasses.dataclass(frozen=True)
class Row:
    """A row of a paper table: its label, how we train it, and the paper's (mean, std) per column.

    method None: no issue plans the method (listed as missing with `note`).
    """

    label: str
    method: str | None
    settings: dict[str, Any]
    paper: tuple[tuple[float, float] | None, ...]
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Table:
    number: str
    title: str
    columns: tuple[tuple[str, str], ...]  # (scenario, metric)
    rows: tuple[Row, ...]


def _p(*values: float) -> tuple[tuple[float, float], ...]:
    return tuple(zip(values[::2], values[1::2]))


RH = (("ridehailing-1", "gmv"), ("ridehailing-1", "orr"), ("ridehailing-2", "gmv"),
      ("ridehailing-2", "orr"))
RH2 = (("ridehailing-2", "gmv"), ("ridehailing-2", "orr"))
IPPO = Row("IPPO", "nops", {}, _p(519200, 4250, 0.20, 0.01))
DYPS_IPPO = Row("DyPS+IPPO", "dyps", {}, _p(713520, 3480, 0.35, 0.02))
COPO = Row("CoPO", "ps", {"algo": "copo"}, _p(633410, 2100, 0.34, 0.02))
DYPS_COPO = Row("DyPS+CoPO", "dyps", {"algo": "copo"}, _p(873810, 4080, 0.50, 0.01))

TABLES: dict[str, Table] = {t.number: t for t in (
    Table("2", "Performance comparison over all baselines",
          (("lbf-1", "return"), ("lbf-2", "return"), ("rware-1", "return"), ("rware-2", "return"),
           *RH, ("medical", "prevented_infections")),
          (Row("NoPS", "nops", {}, _p(0.31, 0.02, 0.91, 0.05, 2, 0.15, 0.35, 0.12, 230680, 2550,
                                      0.40, 0.02, 519200, 4250, 0.20, 0.01, 253, 24)),
           Row("PS", "ps", {}, _p(0.25, 0.03, 0.83, 0.04, 2.5, 0.22, 1.21, 0.15, 250940, 2230,
                                  0.43, 0.01, 542500, 4140, 0.23, 0.02, 345, 43)),
           Row("PS-id", "ps-id", {}, _p(0.52, 0.02, 0.91, 0.05, 4.6, 0.20, 10.45, 1.15, 260590,
                                        2150, 0.45, 0.03, 556320, 3970, 0.24, 0.01, 378, 55)),
           Row("PSA", "psa", {}, _p(0.41, 0.03, 0.90, 0.03, 4.5, 0.18, 12.11, 2.12, 253920, 2080,
                                    0.42, 0.03, 547500, 4270, 0.22, 0.03, 365, 68)),
           Row("SePS", "seps", {}, _p(0.61, 0.04, 0.96, 0.03, 6, 0.15, 33.21, 2.50, 257690, 2210,
                                      0.43, 0.02, 545300, 4210, 0.23, 0.02, 452, 72)),
           Row("DyPS", "dyps", {}, _p(0.68, 0.02, 0.98, 0.04, 6.7, 0.20, 35.41, 2.31, 318200,
                                      2240, 0.66, 0.02, 713520, 3480, 0.35, 0.02, 539, 78)))),
    Table("3", "Ablation studies", RH,
          (Row("w/o CVAE", "dyps-no-cvae", {}, _p(305750, 2250, 0.65, 0.01, 859430, 4220, 0.48,
                                                  0.02)),
           Row("w/o VLSTM", "dyps-no-vlstm", {}, _p(301200, 2100, 0.64, 0.02, 865270, 4010, 0.49,
                                                    0.04)),
           Row("w/o Repr.", "dyps-no-repr", {}, _p(290990, 2190, 0.62, 0.03, 849260, 4190, 0.46,
                                                   0.03)),
           Row("DyPS", "dyps", {}, _p(318200, 2240, 0.66, 0.02, 873810, 4080, 0.50, 0.01)))),
    Table("4", "Adaptability to multiple MARL algorithms", RH2,
          (IPPO, DYPS_IPPO, COPO, DYPS_COPO,
           Row("MAPPO", "ps", {"algo": "mappo"}, _p(536300, 21040, 0.22, 0.01)),
           Row("DyPS+MAPPO", "dyps", {"algo": "mappo"}, _p(591460, 4705, 0.34, 0.02)))),
    Table("5", "Role utilisation methods", RH2,
          (Row("Role-As-State", "role-as-state", {}, _p(573740, 5310, 0.26, 0.01)),
           Row("Rode", None, {}, _p(781540, 7830, 0.40, 0.02),
               note="not planned: RODE (QMIX-based action-space roles) is outside this project"),
           IPPO, COPO, DYPS_IPPO, DYPS_COPO)),
    Table("7", "Rule-based methods (replayed paper day)", RH,
          (Row("Greedy", "greedy", {}, ((220770, 0), (0.37, 0), (539450, 0), (0.23, 0))),
           Row("Nearest", "nearest", {}, ((162590, 0), (0.37, 0), (345180, 0), (0.24, 0))),
           Row("Random", "random", {}, (None, None, None, None)))),
)}
FIGURES = ("6a", "6b", "7", "8", "9")


def budget_steps(scenario: str, budget: str | int) -> int:
    """Training env steps of a scenario: the preset's (paper), `QUICK`'s, or a given number."""
    if isinstance(budget, int):
        return budget
    if budget == "paper":
        return int(dyps_jax.make_config(env=scenario).total_steps)  # the preset's Table 6 budget
    return QUICK.get(scenario, 10_000)


def row_config(scenario: str, row: Row, budget: str, overrides: dict | None = None):
    """The row's TrainConfig on a scenario, or the reason it cannot be built (a missing method)."""
    if row.method is None:  # make_config(method=None) would build the preset's default method
        return None, row.note
    settings = {**row.settings, **(overrides or {})}
    try:
        return dyps_jax.make_config(env=scenario, method=row.method,
                                    total_steps=budget_steps(scenario, budget), **settings), None
    except ValueError as err:
        return None, str(err)


def _job_path(args: argparse.Namespace, scenario: str, label: str) -> Path:
    """Where a finished job is cached: by budget, scenario, row label, seeds, episodes, mode."""
    stem = label.lower().replace("/", "").replace(" ", "-").replace("+", "-").replace(".", "")
    mode = "-greedy" if args.greedy else ""
    return (args.out / "paper_runs" / str(args.budget) / Path(scenario).stem
            / f"{stem}-s{args.seeds}-e{args.episodes}{mode}.json")


def train_and_evaluate(config, seeds: int, chunk: int, episodes: int, greedy: bool) -> dict:
    """Trains `seeds` seeds (chunks of `chunk` vmapped seeds) and evaluates every seed.

    Returns per-seed evaluation results (with their episode lists), training curves
    f32[seeds, iterations] of the scenario's metrics, and wall times.
    """
    train = jax.jit(jax.vmap(dyps_jax.make_train(config)))
    overrides = {"demand": "replay"} if config.env.kind == "ridehailing" else {}
    chunks, curves, t0 = [], {}, time.perf_counter()
    for first in range(0, seeds, chunk):
        keys = jax.vmap(jax.random.key)(np.arange(first, min(seeds, first + chunk)))
        states, metrics = jax.block_until_ready(train(keys))
        chunks.append(states)
        for name, values in metrics.items():
            curves.setdefault(name, []).extend(np.asarray(values, np.float64).tolist())
    # One evaluation of all seeds: its memory does not grow with the training batch.
    states = jax.tree.map(lambda *x: jax.numpy.concatenate(x), *chunks)
    evals = evaluate_states(config, states, episodes=episodes, greedy=greedy, seed=10_000,
                            **overrides)
    keep = {"episode_return", "gmv", "orr", "food_collected", "deliveries", "new_infections",
            "prevented_infections"}
    return {"evals": evals, "curves": {k: v for k, v in curves.items() if k in keep},
            "steps_per_iteration": config.num_envs * config.episode_length,
            "total_steps": config.total_steps, "seconds": round(time.perf_counter() - t0, 1),
            "git": _git_rev(), "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "jax": jax.__version__, "device": jax.devices()[0].device_kind}


class Runner:
    """Runs (or reuses) the jobs of a table or figure under one progress display."""

    def __init__(self, args: argparse.Namespace, total: int):
        self.args, self.console = args, Console(stderr=True)
        columns = [TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} jobs"), TimeElapsedColumn(),
                   TextColumn("{task.fields[now]}")]
        self.progress = Progress(*columns, console=self.console)
        self.task = self.progress.add_task(args.what, total=total, now="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def job(self, scenario: str, row: Row, overrides: dict | None = None) -> dict:
        """The outcome of one (scenario, row): {"missing": reason} or `train_and_evaluate`'s."""
        a = self.args
        label = row.label + "".join(f" {k}={v}" for k, v in (overrides or {}).items())
        self.progress.update(self.task, now=f"{label} on {scenario}")
        config, reason = row_config(scenario, row, a.budget, overrides)
        if config is None:
            self.console.print(f"[yellow]missing[/] {label} on {scenario}: {reason}")
            outcome = {"missing": reason}
        else:
            path = _job_path(a, scenario, label)
            if path.is_file() and not a.fresh:
                outcome = json.loads(path.read_text())
            elif a.rows is not None and row.label not in a.rows:
                self.console.print(f"not run: {label} on {scenario} (not in --rows, not cached)")
                self.progress.advance(self.task)
                return {"not_run": True}
            else:
                chunk = a.seed_chunk or a.seeds
                outcome = train_and_evaluate(config, a.seeds, chunk, a.episodes, a.greedy)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, outcome)
            self.console.print(f"{label} on {scenario}: {_short(outcome)} "
                               f"({outcome['seconds']} s)")
        self.progress.advance(self.task)
        return outcome


def _short(outcome: dict) -> str:
    names = [k for k in ("gmv", "orr", "prevented_infections", "return") if k in outcome["evals"][0]]
    return ", ".join(f"{n} {np.mean([e[n] for e in outcome['evals']]):.4g}" for n in names[:2])


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.3g}"


def _cell(mean_std: tuple[float, float] | None) -> str:
    if mean_std is None:
        return ""
    mean, std = mean_std
    return _fmt(mean) + (f" ± {_fmt(std)}" if std else "")


def _git_rev() -> str:
    """Short HEAD, with "-dirty" when the code a job runs (src/, experiments/*.py) is modified."""
    return common.git_revision(["src", "experiments/*.py"])


def _job_stamps(outcomes: dict) -> str:
    """Where each trained job of a table comes from: cached jobs may predate the current code."""
    stamps = [f"{label} on {Path(scenario).stem}: {o.get('git', 'unrecorded')}, {o['seconds']} s"
              + (f", {o['date']}" if "date" in o else "")
              for (scenario, label), o in outcomes.items() if "evals" in o]
    return "; ".join(stamps) or "none"


def marl_eval_json(table: Table, outcomes: dict) -> dict:
    """Per-seed evaluation episodes in the marl-eval layout (module docstring)."""
    data: dict = {}
    for (scenario, label), outcome in outcomes.items():
        if "missing" in outcome or "not_run" in outcome:
            continue
        kind = dyps_jax.envs.load_preset(scenario)["env"]["kind"]
        metrics = sorted({m for s, m in table.columns if s == scenario} | {"return"})
        runs = {}
        for seed, result in enumerate(outcome["evals"]):
            episodes = {m: result["per_episode"][m] for m in metrics}
            runs[f"run_{seed}"] = {"step_0": {"step_count": outcome["total_steps"], **episodes},
                                   "absolute_metrics": episodes}
        data.setdefault(kind, {}).setdefault(scenario, {})[label] = runs
    return data


def table_stem(number: str, scenarios: list[str], subset: bool) -> str:
    """`table<k>`, or `table<k>_<scenario>_...` for a run of some of the table's scenarios."""
    return f"table{number}" + "".join(f"_{Path(s).stem}" for s in scenarios if subset)


def write_table(table: Table, outcomes: dict, args: argparse.Namespace, seconds: float,
                stem_name: str) -> str:
    """Writes <out>/<stem_name>.{md,csv,json}; returns the markdown."""
    stem = args.out / stem_name
    header = ["method"] + [f"{s} {METRIC_LABEL[m]}" for s, m in table.columns]
    rows, csv_rows, missing = [], [], {}
    for row in table.rows:
        cells, paper_cells = [], []
        for (scenario, metric), paper in zip(table.columns, row.paper):
            outcome = outcomes.get((scenario, row.label))
            paper_cells.append(_cell(paper))
            if outcome is None or "not_run" in outcome:
                cells.append("not run")
            elif "missing" in outcome:
                cells.append("missing")
                missing.setdefault(row.label, outcome["missing"])
            else:
                per_seed = np.array([e[metric] for e in outcome["evals"]])
                # One seed (and the rules): the std over its evaluation episodes.
                std = per_seed.std() if len(per_seed) > 1 else outcome["evals"][0][f"{metric}_std"]
                cells.append(_cell((per_seed.mean(), std)))
                csv_rows.append({"table": table.number, "method": row.label, "scenario": scenario,
                                 "metric": metric, "mean": per_seed.mean(),
                                 "std": std, "seeds": len(per_seed),
                                 "paper_mean": paper[0] if paper else "",
                                 "paper_std": paper[1] if paper else "",
                                 "per_seed": " ".join(f"{v:.6g}" for v in per_seed)})
        rows.append((row.label, cells, paper_cells))
    command = "python experiments/paper.py " + " ".join(sys.argv[1:])
    learned = table.number != "7"
    lines = [f"# Table {table.number}: {table.title}", "",
             f"Command: `{command}`  ",
             f"Date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, device {jax.devices()[0].device_kind}, "
             f"jax {jax.__version__}, git {_git_rev()}, wall time {seconds:.0f} s.  "]
    if learned:
        budgets = ", ".join(f"{s} {budget_steps(s, args.budget):,}"
                            for s in dict.fromkeys(s for s, _ in table.columns))
        lines.append(f"Budget `{args.budget}` (env steps: {budgets}); {args.seeds} seeds; each "
                     f"seed evaluated on {args.episodes} episodes ("
                     + ("greedy" if args.greedy else "sampled") + " policy; ride-hailing on the "
                     "replayed paper day). Ours: mean ± std over seeds of the per-seed means; "
                     "paper: mean ± std over 5 seeds.  ")
        lines.append("Jobs (git revision, wall seconds of training and evaluation, date): "
                     + _job_stamps(outcomes) + ".")
    else:
        lines.append(f"Rules on the replayed paper day; Random over {args.episodes} episodes "
                     "(std over episodes), Greedy and Nearest are deterministic there.")
    lines += ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * len(table.columns)]
    for label, cells, paper_cells in rows:
        lines.append(f"| {label} (ours) | " + " | ".join(cells) + " |")
        if any(paper_cells):
            lines.append(f"| {label} (paper) | " + " | ".join(paper_cells) + " |")
    if missing:
        lines += ["", "Missing (rerun once `dyps_jax.make_config` accepts them):", ""]
        lines += [f"* {label}: {reason}" for label, reason in missing.items()]
    markdown = "\n".join(lines) + "\n"
    write_atomic(stem.with_suffix(".md"), markdown)
    buf = io.StringIO()
    fields = ["table", "method", "scenario", "metric", "mean", "std", "seeds", "paper_mean",
              "paper_std", "per_seed"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(csv_rows)
    write_atomic(stem.with_suffix(".csv"), buf.getvalue())
    if learned:
        write_json(stem.with_suffix(".json"), {"marl_eval": marl_eval_json(table, outcomes),
                                               "missing": missing, "command": command})
    return markdown


def run_table(args: argparse.Namespace) -> str:
    table = TABLES[args.table]
    scenarios = list(dict.fromkeys(s for s, _ in table.columns))
    all_scenarios = list(scenarios)
    if args.scenarios:
        unknown = sorted(set(args.scenarios) - set(scenarios))
        if unknown:
            raise SystemExit(f"--scenarios: {unknown} not in table {table.number}; allowed: "
                             f"{', '.join(scenarios)}")
        scenarios = [s for s in scenarios if s in args.scenarios]
        keep = [i for i, (s, _) in enumerate(table.columns) if s in scenarios]
        table = dataclasses.replace(
            table, columns=tuple(table.columns[i] for i in keep),
            rows=tuple(dataclasses.replace(r, paper=tuple(r.paper[i] for i in keep))
                       for r in table.rows))
    stem = table_stem(table.number, scenarios, scenarios != all_scenarios)
    t0 = time.perf_counter()
    outcomes = {}
    if table.number == "7":
        for scenario in scenarios:
            for row in table.rows:
                episodes = args.episodes if row.method == "random" else 1
                result = evaluate_rule(scenario, row.method, seed=0, episodes=episodes,
                                       demand="replay")
                outcomes[(scenario, row.label)] = {"evals": [result]}
                print(json.dumps(result), flush=True)
        return write_table(table, outcomes, args, time.perf_counter() - t0, stem)
    with Runner(args, len(scenarios) * len(table.rows)) as runner:
        for scenario in scenarios:
            for row in table.rows:
                outcomes[(scenario, row.label)] = runner.job(scenario, row)
    return write_table(table, outcomes, args, time.perf_counter() - t0, stem)


# ------------------------------------------------------------------------------------- figures


def _save(fig, name: str, out: Path, data: dict) -> None:
    sys.path.insert(0, str(HERE))
    from group_maps import save_png

    save_png(fig, out / f"{name}.png")
    write_json(out / f"{name}.json", data)


def figure_6a(args, runner: Runner) -> None:
    """GMV and ORR of DyPS against the number of roles M = 1..6 (paper: Ride-Hailing (2))."""
    scenario = (args.scenarios or ["ridehailing-2"])[0]
    dyps = Row("DyPS", "dyps", {}, ())
    points = []
    for m in range(1, 7):
        outcome = runner.job(scenario, dyps, {"num_groups": m})
        if "missing" not in outcome:
            stats = {k: [e[k] for e in outcome["evals"]] for k in ("gmv", "orr")}
            points.append({"num_groups": m, **{k: (float(np.mean(v)), float(np.std(v)))
                                               for k, v in stats.items()}})
    fig, ax = plt.subplots(figsize=(5, 3.6))
    m = [p["num_groups"] for p in points]
    ax.errorbar(m, [p["gmv"][0] for p in points], [p["gmv"][1] for p in points], marker="o",
                color="tab:blue", label="GMV")
    ax.set_xlabel("number of roles M")
    ax.set_ylabel("GMV", color="tab:blue")
    ax2 = ax.twinx()
    ax2.errorbar(m, [p["orr"][0] for p in points], [p["orr"][1] for p in points], marker="s",
                 color="tab:orange", label="ORR")
    ax2.set_ylabel("ORR", color="tab:orange")
    ax.set_title(f"DyPS on {scenario}: roles sweep ({args.budget} budget, {args.seeds} seeds)",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, "figure6a", args.out, {"scenario": scenario, "points": points})


def figure_6b(args, runner: Runner) -> None:
    """Role maps early, middle, late in training: `group_maps.py` on the scenario."""
    scenario = (args.scenarios or ["ridehailing-2"])[0]
    runner.progress.update(runner.task, now=f"group maps on {scenario}")
    cmd = [sys.executable, str(HERE / "group_maps.py"), "--env", scenario, "--snapshots", "3",
           "--total-steps", str(budget_steps(scenario, args.budget)), "--name", "figure6b"]
    subprocess.run(cmd, check=True)
    for suffix in (".png", ".json"):  # group_maps.py writes into experiments/results
        (RESULTS / f"groups_figure6b{suffix}").replace(args.out / f"figure6b{suffix}")
    runner.progress.advance(runner.task)


def _ridehailing_day(scenario: str):
    """Orders per cell of the replayed day, and the mean idle drivers per cell under Greedy."""
    from dyps_jax.envs.ridehailing import paper_city
    from dyps_jax.rules import get_rule

    env = dyps_jax.envs.make(scenario, demand="replay")
    stream, _ = paper_city(env.city)
    orders = np.bincount(stream[:, 1].astype(int), minlength=env.num_cells)
    greedy = get_rule("ridehailing", "greedy").make(env)

    def day(key):
        state, ts = env.reset(key)

        def step(state, k):
            state, _ = env.step(k, state, greedy(k, None, state))
            return state, state.idle

        return jax.lax.scan(step, state, jax.random.split(key, env.max_steps))[1]

    idle = np.asarray(jax.jit(day)(jax.random.key(0)), np.float64)  # [T, N]
    return env, orders, idle.mean(0)


def _hex_figure(scenario: str, values: np.ndarray, title: str, label: str, cmap: str):
    sys.path.insert(0, str(HERE))
    from group_maps import make_layout
    from matplotlib.collections import PolyCollection

    layout = make_layout(dyps_jax.make_config(env=scenario))
    fig, ax = plt.subplots(figsize=(5, 4.6))
    cells = PolyCollection(layout.xy[:, None] + layout.cell[None], array=values, cmap=cmap,
                           edgecolors="0.4", linewidths=0.5)
    ax.add_collection(cells)
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.set_axis_off()
    fig.colorbar(cells, ax=ax, label=label, shrink=0.8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def figure_7_8(args, runner: Runner, which: str) -> None:
    scenario = (args.scenarios or ["ridehailing-1"])[0]
    runner.progress.update(runner.task, now=f"replayed day of {scenario}")
    env, orders, drivers = _ridehailing_day(scenario)
    if which == "7":
        fig = _hex_figure(scenario, orders, f"Orders per cell, replayed day of {scenario}",
                          "orders in the day", "Reds")
        data = {"orders_per_cell": orders.tolist()}
    else:
        ratio = orders / env.max_steps / np.maximum(drivers, 1e-3)
        fig = _hex_figure(scenario, ratio, f"Orders per step / mean idle drivers (Greedy), "
                          f"{scenario}", "demand-supply ratio", "Blues")
        data = {"orders_per_cell": orders.tolist(), "mean_idle_drivers": drivers.tolist(),
                "ratio": ratio.tolist()}
    _save(fig, f"figure{which}", args.out, {"scenario": scenario, **data})
    runner.progress.advance(runner.task)


def figure_9(args, runner: Runner) -> None:
    """Training GMV curves of Table 2's methods with std bands over seeds (Ride-Hailing (2))."""
    scenario = (args.scenarios or ["ridehailing-2"])[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    data = {}
    for row in TABLES["2"].rows:
        outcome = runner.job(scenario, row)
        if "missing" in outcome:
            data[row.label] = {"missing": outcome["missing"]}
            continue
        gmv = np.array(outcome["curves"]["gmv"])  # [seeds, iterations]
        x = np.arange(1, gmv.shape[1] + 1) * outcome["steps_per_iteration"]
        mean, std = gmv.mean(0), gmv.std(0)
        ax.plot(x, mean, label=row.label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        data[row.label] = {"env_steps": x.tolist(), "mean": mean.tolist(), "std": std.tolist()}
    ax.set_xlabel("environment steps")
    ax.set_ylabel("GMV of training episodes")
    ax.set_title(f"{scenario}: {args.budget} budget, {args.seeds} seeds (band: ±1 std)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, "figure9", args.out, {"scenario": scenario, "curves": data})


def run_figure(args: argparse.Namespace) -> None:
    jobs = {"6a": 6, "6b": 1, "7": 1, "8": 1, "9": len(TABLES["2"].rows)}[args.figure]
    with Runner(args, jobs) as runner:
        if args.figure == "6a":
            figure_6a(args, runner)
        elif args.figure == "6b":
            figure_6b(args, runner)
        elif args.figure in ("7", "8"):
            figure_7_8(args, runner, args.figure)
        else:
            figure_9(args, runner)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--table", choices=sorted(TABLES))
    what.add_argument("--figure", choices=FIGURES)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-chunk", type=int, default=0,
                        help="seeds per training call (default: all; DyPS on ride-hailing needs "
                             "about 3.5 GB per seed)")
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=None,
                        help="comma-separated subset of the table's scenarios (figures: the one "
                             "scenario to draw)")
    parser.add_argument("--budget", choices=("paper", "quick"), default="quick")
    parser.add_argument("--steps", type=int, default=0,
                        help="training env steps for every scenario, replacing --budget's")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per seed")
    parser.add_argument("--greedy", action="store_true", help="evaluate the greedy policy")
    parser.add_argument("--fresh", action="store_true", help="retrain cached jobs")
    parser.add_argument("--rows", type=lambda s: s.split(","), default=None,
                        help="comma-separated row labels to train (e.g. DyPS,SePS); the other "
                             "rows are taken from the cache where there, else written as not run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for name in ("seeds", "episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.seed_chunk < 0 or args.steps < 0:
        parser.error(f"--seed-chunk, --steps: must be >= 0, got {args.seed_chunk}, {args.steps}")
    if args.steps:
        args.budget = args.steps
    if args.rows is not None:
        if not args.table:
            parser.error("--rows: picks rows of a --table; a figure needs all of its jobs")
        labels = [r.label for r in TABLES[args.table].rows]
        unknown = [r for r in args.rows if r not in labels]
        if unknown:
            parser.error(f"--rows: {unknown} not rows of table {args.table}; allowed: "
                         f"{', '.join(labels)}")
    args.what = f"table {args.table}" if args.table else f"figure {args.figure}"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.table:
        print(run_table(args))
    else:
        run_figure(args)


if __name__ == "__main__":
    main()
