"""Training at the medical scale target (issue 5): DyPS and NoPS on 3130 agents within 24 GB.

The `medical` preset: one agent per census block group (3130 in the synthetic Atlanta), 63-day
episodes (63 decisions, 24 hourly SEIR steps each), `num_envs` from the preset (2), PPO batch from
the preset (all 126 (env, day) transitions in one minibatch, each holding all agents).

For each city size (`--num-cbgs`, default 3130) and method (`--methods`, default dyps, nops and ps
as the cheapest reference), a fresh subprocess (so its peak memory is its own):

1. builds the config and the city, `jax.jit(fns.init)`, and compiles `fns.iterate` for ONE
   iteration with `.lower().compile()` (compile seconds, XLA's temp/argument/output buffer sizes
   from `compiled.memory_analysis()`);
2. if the estimate (resident memory after compiling + XLA temp + arguments + outputs) exceeds
   `--memory-limit-gb` (default 20, leaving room under 24 GB) it stops there and reports the
   estimate instead of running out of memory;
3. otherwise runs `--iterations` iterations (one compiled call each, `block_until_ready`): the first
   call is reported separately, seconds per iteration is the median of the others;
4. reports the peak resident memory of the child: `ru_maxrss` of `getrusage(RUSAGE_SELF)` and
   /proc's VmHWM (the parent imports no JAX and stays small, so the ru_maxrss Linux carries
   across fork+exec does not inflate it), and the last iteration's metrics: `episode_return` (team
   return, mean over environments) and `prevented_infections` (infections prevented over the
   episode vs the no-vaccine run).

Breakdown (where time and memory go, one subprocess per part and size):

* `env`: the environment alone, one episode in each of the E environments (`jit(vmap)` of a
  `lax.scan` over the days, random logits as actions), compile excluded, median of 2 calls;
* `vlstm`: DyPS's VLSTM ELBO and its gradient (`value_and_grad(vlstm_elbo)`) at the shapes of one
  iteration (T = 63 steps, B = E x N sequences), XLA memory and median of 2 calls;
* `dyps-g1`: DyPS training with `num_groups=1`: compared with `dyps` it isolates the cost of running
  all G groups' networks on every agent, compared with `ps` the cost of the role models.

Run: `python benchmarks/bench_medical_train.py --out` (writes `benchmarks/results/medical_train.md`);
`--num-cbgs 500,3130` adds a smaller city. About 4 minutes for 3130 agents (methods and
breakdown), 5.5 minutes with `--num-cbgs 500,3130`, on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (imports no JAX: this parent process stays small)

DEFAULT_OUT = common.RESULTS / "medical_train.md"
GB = 2**30


# ----------------------------------------------------------------------------- child processes


def peak_rss() -> dict:
    """Peak resident memory of this process in GB: ru_maxrss (KB on Linux) and VmHWM."""
    out = {"ru_maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line[:5].lower() + "_gb"] = int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    return out


def memory(compiled) -> dict:
    mem = compiled.memory_analysis()
    get = lambda name: getattr(mem, name, float("nan")) / GB if mem else float("nan")  # noqa: E731
    return {
        "temp_gb": get("temp_size_in_bytes"),
        "arg_gb": get("argument_size_in_bytes"),
        "out_gb": get("output_size_in_bytes"),
    }


def child_method(method: str, num_cbgs: int, iterations: int, limit_gb: float, **overrides) -> dict:
    import jax

    from dyps_jax.config import make_config
    from dyps_jax.train import make_train_fns

    t0 = time.perf_counter()
    config = make_config(
        env="medical",
        method=method,
        env_params={"num_cbgs": num_cbgs},
        checkpoint_every=0,
        **overrides,
    )
    env = config.env.build()
    _ = env.city  # generate (and cache) the city now, so it is not counted as compile time
    setup_s = time.perf_counter() - t0
    fns = make_train_fns(config)
    t0 = time.perf_counter()
    state = jax.jit(fns.init)(jax.random.key(0))
    compiled = jax.jit(fns.iterate, static_argnums=1).lower(state, 1).compile()
    compile_s = time.perf_counter() - t0
    row = {
        "method": method,
        "num_cbgs": num_cbgs,
        "agents": config.num_agents,
        "num_envs": config.num_envs,
        "groups": config.num_param_sets,
        "setup_s": setup_s,
        "compile_s": compile_s,
        **memory(compiled),
    }
    rss = peak_rss()
    row["rss_after_compile_gb"] = rss.get("vmrss_gb", rss["ru_maxrss_gb"])
    row["estimate_gb"] = (
        row["rss_after_compile_gb"] + row["temp_gb"] + row["arg_gb"] + row["out_gb"]
    )
    if row["estimate_gb"] > limit_gb:
        row["skipped"] = f"estimated {row['estimate_gb']:.1f} GB > limit {limit_gb} GB"
        return {**row, **peak_rss()}
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        state, metrics = compiled(state)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
        print(
            f"  {method} {num_cbgs}: iteration {len(times)} {times[-1]:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    row.update(
        first_s=times[0],
        s_per_iter=statistics.median(times[1:] or times),
        iteration_times=times,
        episode_return=float(metrics["episode_return"][-1]),
        prevented_infections=float(metrics["prevented_infections"][-1]),
    )
    return {**row, **peak_rss()}


def child_part(part: str, num_cbgs: int) -> dict:
    import jax
    import jax.numpy as jnp

    from dyps_jax.config import make_config

    config = make_config(env="medical", method="dyps", env_params={"num_cbgs": num_cbgs})
    env = config.env.build()
    _ = env.city
    n_envs, horizon, n = config.num_envs, env.max_steps, env.num_agents
    if part == "env":

        def episode(key):
            state, _ = env.reset(key)

            def body(s, k):
                s, ts = env.step(k, s, jax.random.normal(k, (n,)))
                return s, ts.reward.sum()

            return jax.lax.scan(body, state, jax.random.split(key, horizon))[1].sum()

        fn = jax.jit(jax.vmap(episode))
        args = (jax.random.split(jax.random.key(0), n_envs),)
    elif part == "vlstm":
        from dyps_jax.roles.vlstm import VLSTM, init_vlstm, vlstm_elbo

        share = config.sharing
        net = VLSTM(
            target_dim=env.obs_dim + 1, hidden=share.vlstm_hidden, latent=share.vlstm_latent
        )
        in_dim = env.obs_dim + env.num_actions + 1
        params = init_vlstm(net, jax.random.key(0), env.obs_dim, in_dim)
        b = n_envs * n
        k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
        states = jax.random.normal(k1, (horizon, b, env.obs_dim))
        actions = jax.random.normal(k2, (horizon, b, env.num_actions))
        rewards = jax.random.normal(k3, (horizon, b))
        final = jax.random.normal(k4, (b, env.obs_dim))
        valid = jnp.ones((horizon, b))
        fn = jax.jit(
            jax.value_and_grad(
                lambda p, *xs: vlstm_elbo(net, p, jax.random.key(2), *xs), has_aux=True
            )
        )
        args = (params, states, actions, rewards, final, valid)
    else:
        raise ValueError(f"part: unknown {part!r}")
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    row = {"part": part, "num_cbgs": num_cbgs, "compile_s": compile_s, **memory(compiled)}
    row["s_per_call"] = common.time_calls(compiled, *args, repeats=2)
    return {**row, **peak_rss()}


# ----------------------------------------------------------------------------- parent


def run_child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, __file__, *args]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    wall = time.perf_counter() - t0
    sys.stderr.write(proc.stderr[-2000:] if proc.returncode else "")
    if proc.returncode != 0:
        kind = "killed (out of memory?)" if proc.returncode < 0 else f"exit {proc.returncode}"
        return {"error": f"child {kind}"}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["wall_s"] = wall
    print(
        "  ", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True
    )
    return row


def child_versions() -> dict:
    code = (
        "import jax, json; d = jax.devices()[0]; "
        "print(json.dumps({'jax': jax.__version__, 'kind': d.device_kind, 'platform': d.platform}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def attribution(rows: list[dict], parts: list[dict], limit_gb: float) -> list[str]:
    """Markdown bullets splitting DyPS's iteration time and memory, per city size (when measured)."""
    ok = lambda r: "error" not in r and "skipped" not in r  # noqa: E731
    lines = []
    for size in sorted({r["num_cbgs"] for r in rows}):
        get = {r["method"]: r for r in rows if r["num_cbgs"] == size and ok(r)}
        get.update({p["part"]: p for p in parts if p["num_cbgs"] == size and ok(p)})
        if not {"dyps", "dyps-g1", "ps", "env", "vlstm"} <= set(get):
            continue
        dyps, g1, ps, env, vlstm = (get[k] for k in ("dyps", "dyps-g1", "ps", "env", "vlstm"))
        t = dyps["s_per_iter"]
        split = [
            ("environment (2 episodes)", env["s_per_call"]),
            (
                "policy forward in the rollout + PPO with G = 1 (`ps` - env)",
                ps["s_per_iter"] - env["s_per_call"],
            ),
            (
                "role models: VLSTM, CVAE, selector (`dyps-g1` - `ps`; the VLSTM ELBO + gradient "
                f"alone: {vlstm['s_per_call']:.2f} s)",
                g1["s_per_iter"] - ps["s_per_iter"],
            ),
            (
                "evaluating all G = 4 groups' networks on every agent (`dyps` - `dyps-g1`)",
                t - g1["s_per_iter"],
            ),
        ]
        per_agent_gb = dyps["temp_gb"] / size
        room = (limit_gb - (dyps["ru_maxrss_gb"] - dyps["temp_gb"])) / per_agent_gb
        lines += [
            "",
            f"## DyPS at {size:,} agents: where its {t:.1f} s per iteration and "
            f"{dyps['ru_maxrss_gb']:.1f} GB go (differences of the rows above)",
            "",
            *[f"- {name}: {sec:.1f} s ({100 * sec / t:.0f} %)" for name, sec in split],
            f"- memory: XLA temp of the DyPS iteration {dyps['temp_gb']:.2f} GB, of which the VLSTM "
            f"ELBO + gradient alone needs {vlstm['temp_gb']:.2f} GB "
            f"({100 * vlstm['temp_gb'] / dyps['temp_gb']:.0f} %): reverse mode through its "
            f"`lax.scan` keeps every step's activations for all 63 x {2 * size:,} sequences. "
            f"Peak RSS {dyps['ru_maxrss_gb']:.1f} GB vs NoPS {get['nops']['ru_maxrss_gb']:.1f} GB "
            f"and PS {ps['ru_maxrss_gb']:.1f} GB."
            if "nops" in get
            else "",
            f"- extrapolation (temp linear in agents x environments, {1000 * per_agent_gb:.2f} GB "
            f"per 1000 agents at E = 2): DyPS stays under {limit_gb:.0f} GB up to about "
            f"{round(room, -3):,.0f} agents at E = 2 (or E ≈ {2 * room / size:.0f} environments of "
            f"{size:,} agents).",
        ]
    return lines


def f(x, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dyps,nops,ps", help="comma-separated methods")
    parser.add_argument(
        "--num-cbgs", default="3130", help="comma-separated city sizes (agents), e.g. 500,3130"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=3,
        help="iterations run per method (first reported separately)",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=20.0,
        help="do not run a method whose estimated peak exceeds this",
    )
    parser.add_argument(
        "--no-breakdown", action="store_true", help="skip the env / VLSTM breakdown children"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    parser.add_argument("--note", default="", help="free text added to the results header")
    common.add_out_argument(parser, DEFAULT_OUT, "the results")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "NUM_CBGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, size = args.child[0], int(args.child[1])
        if kind in ("env", "vlstm"):
            row = child_part(kind, size)
        elif kind == "dyps-g1":
            row = child_method("dyps", size, args.iterations, args.memory_limit_gb, num_groups=1)
        else:
            row = child_method(kind, size, args.iterations, args.memory_limit_gb)
        print(json.dumps(row))
        return ""

    methods = [m for m in args.methods.split(",") if m]
    sizes = [int(s) for s in args.num_cbgs.split(",") if s]
    load_start, t_start = common.load_average(), time.perf_counter()
    child_args = [
        "--iterations", str(args.iterations), "--memory-limit-gb", str(args.memory_limit_gb)
    ]  # fmt: skip
    rows, parts = [], []
    for size in sizes:
        for method in methods:
            row = run_child(["--child", method, str(size), *child_args], args.timeout)
            rows.append({"method": method, "num_cbgs": size, **row})
        if not args.no_breakdown:
            for part in ("env", "vlstm", "dyps-g1"):
                extra = child_args if part == "dyps-g1" else []
                row = run_child(["--child", part, str(size), *extra], args.timeout)
                parts.append({"part": part, "num_cbgs": size, **row})
    total_s = time.perf_counter() - t_start
    load_end = common.load_average()
    info = child_versions()

    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    lines = [
        *common.header_lines(
            "Training on the medical scenario (scale target, issue 5)",
            common.command_line("bench_medical_train.py", argv),
            f"{info['kind']} ({info['platform']}), {common.host()}, {ram_gb:.0f} GB RAM",
            jax_version=info["jax"],
        ),
        f"- load average (1/5/15 min) at start {load_start}, at end {load_end}; the 2 cores were "
        "shared with other users' jobs, so the seconds are noisy; whole run "
        f"{total_s / 60:.1f} min" + (f". {args.note}" if args.note else ""),
        "- preset `medical`: 63-day episodes, E = 2 environments per iteration, PPO 4 epochs of one "
        "126-transition minibatch (each transition holds all N agents); one fresh subprocess per "
        "row; one iteration per compiled call; compile excludes city generation (`setup s`).",
        "- peak RSS: `ru_maxrss` of the child (and /proc VmHWM); XLA temp / "
        "args: `compiled.memory_analysis()` of the one-iteration program; return and prevented "
        "infections: last iteration, mean over the 2 environments (hardly move in "
        f"{args.iterations} iterations: they show the run is sane, not that it learns).",
        "",
        "| CBGs (agents) | method | groups G | setup s | compile s | first iteration s "
        "| s / iteration | peak RSS GB | VmHWM GB | XLA temp GB | XLA args GB | episode return "
        "| prevented infections |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['num_cbgs']:,} | {r['method']} | {r['error']} |" + " |" * 10)
            continue
        if "skipped" in r:
            lines.append(
                f"| {r['num_cbgs']:,} | {r['method']} | {r['groups']} | {f(r['setup_s'])} "
                f"| {f(r['compile_s'])} | not run: {r['skipped']} | - | {f(r['ru_maxrss_gb'], '.2f')} "
                f"| {f(r.get('vmhwm_gb'), '.2f')} | {f(r['temp_gb'], '.2f')} | "
                f"{f(r['arg_gb'], '.2f')} | - | - |"
            )
            continue
        lines.append(
            f"| {r['num_cbgs']:,} | {r['method']} | {r['groups']} | {f(r['setup_s'])} "
            f"| {f(r['compile_s'])} | {f(r['first_s'])} | {f(r['s_per_iter'])} "
            f"| {f(r['ru_maxrss_gb'], '.2f')} | {f(r.get('vmhwm_gb'), '.2f')} "
            f"| {f(r['temp_gb'], '.2f')} | {f(r['arg_gb'], '.2f')} | {f(r['episode_return'], ',.0f')} "
            f"| {f(r['prevented_infections'], ',.0f')} |"
        )
    if parts:
        lines += [
            "",
            "## Where the time and memory go (one subprocess per part)",
            "",
            "- `env`: the environment alone, one 63-day episode in each of the 2 environments "
            "(random logits), median of 2 calls after a warm-up;",
            "- `vlstm`: DyPS's VLSTM ELBO + gradient at one iteration's shapes (63 steps x "
            "2·N sequences), median of 2 calls after a warm-up;",
            "- `dyps-g1`: DyPS training with `num_groups=1` (s per call = s / iteration as above): "
            "against `dyps` it isolates the cost of evaluating all G = 4 groups' networks on every "
            "agent (docs/architecture.md, \"Grouped parameters\"), against `ps` the cost of the role models (VLSTM, CVAE, selector).",
            "",
            "| CBGs (agents) | part | compile s | s per call | XLA temp GB | peak RSS GB |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for p in parts:
            if "error" in p:
                lines.append(f"| {p['num_cbgs']:,} | {p['part']} | {p['error']} | | | |")
                continue
            if "skipped" in p:
                lines.append(
                    f"| {p['num_cbgs']:,} | {p['part']} | {f(p['compile_s'])} "
                    f"| not run: {p['skipped']} | {f(p['temp_gb'], '.2f')} "
                    f"| {f(p['ru_maxrss_gb'], '.2f')} |"
                )
                continue
            lines.append(
                f"| {p['num_cbgs']:,} | {p['part']} | {f(p['compile_s'])} "
                f"| {f(p.get('s_per_call', p.get('s_per_iter')), '.2f')} "
                f"| {f(p['temp_gb'], '.2f')} "
                f"| {f(p['ru_maxrss_gb'], '.2f')} |"
            )
    lines += attribution(rows, parts, args.memory_limit_gb)
    text = "\n".join(lines) + "\n"
    common.print_and_write(text, args.out)
    return text


if __name__ == "__main__":
    main()
