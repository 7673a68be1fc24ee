"""Scaling of training with the number of agents: DyPS and PS on the medical and ride-hailing scenarios.

For each scenario (`--scenarios`), size (`--sizes-medical`, `--sizes-ridehailing`, smallest first)
and method (`--methods`, default ps, dyps), with ONE environment per iteration (E = 1) and the
preset's other hyper-parameters:

* medical: the `medical` preset with `num_cbgs` = N regions (the agents) and
  `num_pois` = round(N x `--pois-per-region`) points of interest (default 20000 / 3130, the
  synthetic Atlanta's ratio, so the visit network keeps its density as the city grows);
* ride-hailing: the `ridehailing-1` preset (l_max 3, K = 50 order slots, 10 drivers per cell,
  144 steps) on a generated R x C hexagonal city (`city = ""`) with the gravity demand
  generator (`demand = "gravity"`, `envs/gravity.py`; its defaults: mean rate 5 orders per cell
  per step, correlation length 2, peak strength 1.5, decay 2); agents = cells = R x C.

Each (scenario, size, method) runs in a fresh subprocess, so that its peak resident memory
(VmHWM, which only grows within a process) is its own, and so that a child the operating system
kills for memory is recorded and the sweep goes on. The child:

1. builds the configuration (`make_config(..., num_envs=1, checkpoint_every=0,
   env_params=...)`; a preset `batch_size` above one episode's transitions is lowered to it, as
   `make_config` does), the training functions and `jax.jit(fns.init)` (setup s: includes
   generating the city);
2. compiles ONE training iteration, `jax.jit(fns.iterate, static_argnums=1).lower(state,
   1).compile()` (compile s), and reads XLA's memory analysis of the compiled program
   (`bench_train.peak_bytes`: arguments + outputs + temporaries - aliased bytes; computed at
   compile time, so it does not depend on the load);
3. unless `--memory-only`: one warm-up call, then the median of `--repeats` timed calls
   (`common.time_carried`, each ending in `jax.block_until_ready`): seconds per iteration, and
   agent-steps/s = episode length x agents / (s / iteration);
4. reports its peak RSS (VmHWM: with `--memory-only`, that of building, initialising and
   compiling only).

A child that raises XLA's RESOURCE_EXHAUSTED or MemoryError is recorded as "out of memory", one
killed by a signal (SIGKILL: the kernel's out-of-memory killer, usually) or past `--timeout` or
failing otherwise as such; the larger sizes of that scenario and method are then skipped (they
are listed as skipped) and the sweep goes on with the others. The table is rewritten after every
row (atomically, `common.write_result`), so a stopped run keeps its finished rows; the plot
(`--plot`: seconds per iteration and XLA peak GB against agents, log-log, one line per scenario x
method) is redrawn with it.

"time x PS" and "memory x PS" divide by PS's row of the same scenario and size (issue 13's target
for DyPS: both at most 1.5). Adding `dyps-no-vlstm` and `dyps-no-cvae` to `--methods` also
gives where DyPS's memory goes (DyPS minus each ablation, and the rest over PS).

Run (the default sizes; an hour or more on 2 CPU cores, most of it at the largest sizes):
`python benchmarks/bench_scale.py` (writes benchmarks/results/scale.md and scale.png). About a
quarter of an hour: `python benchmarks/bench_scale.py --sizes-medical 1000,2500
--sizes-ridehailing 10x10,32x32 --out benchmarks/results/scale_small.md --plot
benchmarks/results/scale_small.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (imports no JAX: the parent process must not hold a device)

DEFAULT_OUT = common.RESULTS / "scale.md"
DEFAULT_PLOT = common.RESULTS / "scale.png"
SCENARIO_NAMES = ("medical", "ridehailing")
PRESETS = {"medical": "medical", "ridehailing": "ridehailing-1"}
DEFAULT_SIZES = {"medical": "1000,2500,5000,10000,20000",
                 "ridehailing": "10x10,32x32,50x50,71x71,100x100"}
POIS_PER_REGION = 20000 / 3130  # the synthetic Atlanta's POIs per census block group
GB = 2**30
RESULT_MARK = "BENCH_SCALE_RESULT "  # prefixes the child's one JSON line on stdout


# ----------------------------------------------------------------------------- sizes


def parse_sizes(scenario: str, text: str) -> list[tuple[int, int]]:
    """`--sizes-<scenario>` as (rows, cols) pairs, fewest agents first.

    medical: region counts N, returned as (N, 1); ridehailing: "RxC" or "S" (an S x S city)."""
    sizes = []
    for item in (t.strip().lower() for t in text.split(",") if t.strip()):
        rows, _, cols = item.partition("x") if scenario == "ridehailing" else (item, "", "1")
        if not (rows.isdigit() and (cols or rows).isdigit()) or int(rows) < 1 or int(cols or rows) < 1:
            form = "R x C cells ('32x32') or a side ('32')" if scenario == "ridehailing" else \
                "a number of regions"
            raise ValueError(f"--sizes-{scenario}: {item!r} is not {form}")
        sizes.append((int(rows), int(cols or rows)))
    return sorted(set(sizes), key=lambda rc: (rc[0] * rc[1], rc))


def env_params(scenario: str, size: tuple[int, int], pois_per_region: float) -> dict:
    """The preset's `[env]` overrides for one size."""
    rows, cols = size
    if scenario == "medical":
        return {"num_cbgs": rows, "num_pois": max(1, round(rows * pois_per_region))}
    return {"rows": rows, "cols": cols, "city": "", "demand": "gravity"}


def size_label(scenario: str, params: dict) -> str:
    if scenario == "medical":
        return f"{params['num_cbgs']:,} regions, {params['num_pois']:,} POIs"
    return f"{params['rows']} x {params['cols']} cells"


# ----------------------------------------------------------------------------- child process


def measure(spec: dict) -> dict:
    """Builds, compiles and (repeats > 0) times one training iteration; runs in the child."""
    import warnings

    import jax
    from bench_train import peak_bytes

    from dyps_jax.config import ConfigAdjusted, make_config
    from dyps_jax.train import make_train_fns

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # The presets' batch sizes exceed one E = 1 episode; lowering them is expected here.
        warnings.simplefilter("ignore", ConfigAdjusted)
        config = make_config(env=spec["preset"], method=spec["method"], num_envs=1,
                             checkpoint_every=0, env_params=spec["env_params"])
    fns = make_train_fns(config)
    state = jax.block_until_ready(jax.jit(fns.init)(jax.random.key(0)))
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = jax.jit(fns.iterate, static_argnums=1).lower(state, 1).compile()
    compile_s = time.perf_counter() - t0
    device = jax.devices()[0]
    row = {
        "agents": config.num_agents,
        "groups": config.num_param_sets,
        "episode_length": config.episode_length,
        "batch_size": config.ppo.batch_size,
        "setup_s": setup_s,
        "compile_s": compile_s,
        "peak_gb": peak_bytes(compiled) / GB,
        "s_per_iter": float("nan"),
        "agent_sps": float("nan"),
        "device": f"{device.device_kind} ({device.platform})",
        "jax": jax.__version__,
    }
    if spec["repeats"] > 0:
        sec = common.time_carried(compiled, state, spec["repeats"])[0]
        row |= {"s_per_iter": sec, "agent_sps": config.episode_length * config.num_agents / sec}
    return row


def out_of_memory(err: BaseException) -> bool:
    from dyps_jax.cli import is_out_of_memory  # the child's import: the parent holds no JAX

    return is_out_of_memory(err)


def child_main(spec_json: str) -> None:
    """`--child SPEC`: prints one RESULT_MARK line (a JSON row, or the error it met)."""
    try:
        row = measure(json.loads(spec_json)) | {"status": "ok"}
    except Exception as err:  # reported in the table; the parent goes on with the sweep
        from dyps_jax.cli import first_line

        kind = "out of memory" if out_of_memory(err) else "failed"
        row = {"status": f"{kind}: {type(err).__name__}: {first_line(err)}"}
    row["rss_gb"] = common.peak_rss_mb() / 1024
    print(RESULT_MARK + json.dumps(row), flush=True)


def run_child(spec: dict, timeout: float | None) -> dict:
    """One measurement in a fresh Python process; a row with a `status` whatever happens."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    if proc.returncode < 0:  # no result line: killed before it could report
        reason = " (out of memory? the kernel's OOM killer sends SIGKILL)" if proc.returncode == -9 else ""
        return {"status": f"killed by signal {-proc.returncode}{reason}"}
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return {"status": f"failed (exit {proc.returncode}): {last}"}


# ----------------------------------------------------------------------------- report


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def ratio(row: dict, ps: dict | None, key: str) -> str:
    ok = ps is not None and row["status"] == "ok" and ps["status"] == "ok"
    return fmt(row[key] / ps[key], ".2f") if ok and ps and ps[key] > 0 else "-"


def table_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| scenario | agents | size | method | groups G | setup s | compile s | s / iteration "
        "| agent-steps/s | XLA peak GB | peak RSS GB | time x PS | memory x PS | status |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ps = next((p for p in rows if p["method"] == "ps" and p["scenario"] == r["scenario"]
                   and p["size"] == r["size"]), None)
        lines.append(
            f"| {r['scenario']} | {r['agents']:,} | {r['size']} | {r['method']} "
            f"| {r.get('groups', '-')} | {fmt(r.get('setup_s'), '.1f')} "
            f"| {fmt(r.get('compile_s'), '.1f')} | {fmt(r.get('s_per_iter'), '.3f')} "
            f"| {fmt(r.get('agent_sps'), ',.0f')} | {fmt(r.get('peak_gb'), '.4f')} "
            f"| {fmt(r.get('rss_gb'), '.2f')} | {ratio(r, ps, 's_per_iter')} "
            f"| {ratio(r, ps, 'peak_gb')} | {r['status']} |"
        )
    return lines


def attribution_lines(rows: list[dict]) -> list[str]:
    """Where DyPS's XLA peak goes, where the ablation rows of the same size are there."""
    ok = {(r["scenario"], r["size"], r["method"]): r["peak_gb"] for r in rows
          if r["status"] == "ok"}
    lines = []
    for scenario, size in dict.fromkeys((r["scenario"], r["size"]) for r in rows):
        get = lambda m: ok.get((scenario, size, m))  # noqa: B023
        dyps, no_vlstm, no_cvae, ps = (get(m) for m in ("dyps", "dyps-no-vlstm", "dyps-no-cvae",
                                                         "ps"))
        if dyps is None or (no_vlstm is None and no_cvae is None):
            continue
        vlstm = dyps - no_vlstm if no_vlstm is not None else None
        cvae = dyps - no_cvae if no_cvae is not None else None
        rest = (dyps - ps - vlstm - cvae if None not in (ps, vlstm, cvae) else None)
        lines.append(f"| {scenario} | {size} | {fmt(ps, '.4f')} | {dyps:.4f} | {fmt(vlstm, '.4f')} "
                     f"| {fmt(cvae, '.4f')} | {fmt(rest, '.4f')} |")
    if not lines:
        return []
    return [
        "",
        "## Where DyPS's memory goes (XLA peak GB)",
        "",
        "VLSTM = DyPS - `dyps-no-vlstm`, CVAE = DyPS - `dyps-no-cvae`; the rest = DyPS - PS - VLSTM "
        "- CVAE (role models' parameters and Adam states, the selector, all groups' networks in "
        "the rollout).",
        "",
        "| scenario | size | PS | DyPS | VLSTM | CVAE | rest |",
        "|---|---|---:|---:|---:|---:|---:|",
        *lines,
    ]


def render(args, argv: list[str] | None, rows: list[dict], load_start: str, elapsed: float) -> str:
    first = next((r for r in rows if "device" in r), {})
    device = f"{first.get('device', 'unknown')}, {common.host()}"
    pois = args.pois_per_region
    lines = [
        *common.header_lines("Training scaling with the number of agents",
                             common.command_line("bench_scale.py", argv), device,
                             first.get("jax") or metadata.version("jax")),
        f"- load average (1/5/15 min) at start {load_start}, now {common.load_average()}; "
        f"run so far {elapsed:.0f}s" + (f". {args.note}" if args.note else ""),
        "- E = 1 environment, one iteration (one episode + all updates) per compiled call, "
        "preset hyper-parameters, PPO batch = one episode's transitions; one fresh subprocess "
        "per row; "
        + ("--memory-only: compiled, not run (no times; peak RSS of building and compiling)."
           if args.memory_only else
           f"s / iteration: median of {args.repeats} timed call(s) after one warm-up call, "
           "compile excluded; agent-steps/s = episode length x agents / (s / iteration)."),
        f"- medical (`medical` preset): N regions = agents, num_pois = round(N x {pois:.4g})"
        + (" (20000 / 3130, the synthetic Atlanta's ratio)" if pois == POIS_PER_REGION else "")
        + "; 63-day episodes.",
        "- ridehailing (`ridehailing-1` preset): generated R x C hexagonal city (`city = \"\"`), "
        "gravity demand (`demand = \"gravity\"`, default generator parameters), agents = cells; "
        "144-step episodes, l_max 3, K = 50.",
        "- setup s: config, city and `jit(init)`; XLA peak GB: compiled memory analysis of the "
        "one-iteration program (arguments + outputs + temporaries - aliased); peak RSS: the "
        "child's VmHWM; time x PS, memory x PS: over PS's row of the same size.",
        "",
        *table_lines(rows),
        *attribution_lines(rows),
    ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | Path, memory_only: bool) -> None:
    """Two log-log panels against agents: s / iteration and XLA peak GB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    # One colour per scenario, one line style per method: PS and DyPS of a scenario side by side.
    colours = {s: f"C{i}" for i, s in enumerate(dict.fromkeys(r["scenario"] for r in rows))}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    styles = ("--", "-", ":", "-.")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("s_per_iter", "seconds per iteration"), ("peak_gb", "XLA peak GB"))
    for ax, (key, label) in zip(axes, panels):
        for scenario, method in dict.fromkeys((r["scenario"], r["method"]) for r in rows):
            pts = sorted((r["agents"], r[key]) for r in rows
                         if (r["scenario"], r["method"]) == (scenario, method)
                         and r["status"] == "ok" and math.isfinite(r[key]) and r[key] > 0)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=colours[scenario],
                        linestyle=styles[methods.index(method) % len(styles)],
                        label=f"{scenario} {method}")
        ax.set(xscale="log", yscale="log", xlabel="agents", ylabel=label)
        ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^1, 3x10^1, ... overlap
        ax.grid(True, which="both", alpha=0.3)
        if key == "s_per_iter" and memory_only:
            ax.text(0.5, 0.5, "--memory-only: not timed", transform=ax.transAxes, ha="center")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle("Training scaling with the number of agents (E = 1, one iteration)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)  # then renamed, so a stopped run never leaves half a PNG
    os.replace(tmp, path)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def sweep(args, on_row: Callable[[list[dict]], object]) -> list[dict]:
    """Every scenario, size (smallest first) and method; PS and DyPS of a size side by side, so a
    stopped run has complete pairs. A method that fails at one size skips its larger sizes."""
    rows: list[dict] = []
    for scenario in args.scenarios:
        failed: dict[str, str] = {}
        for size in args.sizes[scenario]:
            params = env_params(scenario, size, args.pois_per_region)
            for method in args.methods:
                base = {"scenario": scenario, "method": method, "agents": size[0] * size[1],
                        "size": size_label(scenario, params)}
                if method in failed:
                    row = base | {"status": f"skipped ({failed[method]} failed)"}
                else:
                    spec = {"preset": PRESETS[scenario], "method": method, "env_params": params,
                            "repeats": args.repeats}
                    row = base | run_child(spec, args.timeout)
                    if row["status"] != "ok":
                        failed[method] = base["size"]
                rows.append(row)
                print(f"{scenario} {base['size']} {method}: " + (
                    f"compile {row['compile_s']:.1f}s, {fmt(row['s_per_iter'], '.3f')} s/iteration, "
                    f"XLA peak {row['peak_gb']:.3f} GB, RSS {row['rss_gb']:.2f} GB"
                    if row["status"] == "ok" else row["status"]), flush=True)
                on_row(rows)
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIO_NAMES),
                        help=f"comma-separated, from {', '.join(SCENARIO_NAMES)}")
    for scenario in SCENARIO_NAMES:
        parser.add_argument(f"--sizes-{scenario}", default=DEFAULT_SIZES[scenario],
                            help="comma-separated " + ("region counts" if scenario == "medical"
                                                       else "city sizes RxC (or S for S x S)")
                            + f" (default {DEFAULT_SIZES[scenario]})")
    parser.add_argument("--pois-per-region", type=float, default=POIS_PER_REGION,
                        help="medical: num_pois = round(N x this) (default 20000/3130)")
    parser.add_argument("--methods", default="ps,dyps",
                        help="comma-separated methods (add dyps-no-vlstm,dyps-no-cvae for where "
                             "DyPS's memory goes)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls (median)")
    parser.add_argument("--memory-only", action="store_true",
                        help="compile only: XLA peak memory without running")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per (scenario, size, method) subprocess (default none)")
    parser.add_argument("--note", default="", help="free text added to the results header")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results table (markdown)")
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="figure (PNG)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return ""

    from dyps_jax.config import METHODS  # imports JAX but starts no backend: holds no device

    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.methods = [m for m in args.methods.split(",") if m]
    for flag, values, allowed in (("scenarios", args.scenarios, SCENARIO_NAMES),
                                  ("methods", args.methods, METHODS)):
        for v in values:
            if v not in allowed:
                parser.error(f"--{flag}: unknown {v!r}; allowed: {', '.join(allowed)}")
    try:
        args.sizes = {s: parse_sizes(s, getattr(args, f"sizes_{s}")) for s in args.scenarios}
    except ValueError as err:
        parser.error(str(err))
    if args.repeats < 1:
        parser.error("--repeats: must be at least 1")
    if not args.pois_per_region > 0:
        parser.error("--pois-per-region: must be > 0")
    if args.memory_only:
        args.repeats = 0

    load_start, t_start = common.load_average(), time.perf_counter()

    def write(rows: list[dict]) -> str:
        # After every row: a stopped run keeps what it finished.
        text = render(args, argv, rows, load_start, time.perf_counter() - t_start)
        common.write_result(args.out, text)
        plot(rows, args.plot, args.memory_only)
        return text

    rows = sweep(args, write)
    text = write(rows)
    print()
    print(text)
    print(f"wrote {args.out} and {args.plot}")
    return text


if __name__ == "__main__":
    main()
