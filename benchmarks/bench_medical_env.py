"""Throughput of the Medical environment (63 days x 24 hourly SEIR steps) and its scaling.

* Episodes/s for a batch of episodes (`--batches`, default 1, 4, 16) on the 3130-region synthetic
  Atlanta: `jit(vmap)` over the batch of a `lax.scan` over the 63 days with population-proportional
  logits, compiled with `.lower().compile()` (compile time excluded), timed with
  `block_until_ready`, median of `--repeats` runs; mean-field and stochastic modes.
* Baseline: the same mean-field dynamics written in NumPy (`np.bincount` over the edge list, a Python
  loop over the hours), one episode, as a user without JAX would write it.
* Scaling with the number of regions (`--sizes`, default 500, 3130, 20000; 20,000 POIs each): one
  subprocess per size reports the city generation time, the compile time, seconds per episode
  (batch 1, median of `--repeats`), the peak resident memory of the process (VmHWM: Python, JAX,
  the city and the compiled episode together) and XLA's temporary buffer size of the episode.

Run: `python benchmarks/bench_medical_env.py --out` (writes `benchmarks/results/medical_env.md`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from dyps_jax.envs.medical import VaccineAllocation  # noqa: E402

DEFAULT_OUT = common.RESULTS / "medical_env.md"


def episode_runner(env: VaccineAllocation, batch: int):
    """Compiled fn(keys u32[batch, 2]) -> new infections per episode f32[batch].

    Logits are log(population) plus small per-episode noise: without it the mean-field episodes of
    a batch would be identical and `vmap` would compute one of them only.
    """
    log_pop = jnp.log(jnp.asarray(env.population))

    def one(key):
        state, _ = env.reset(key)

        def body(s, k):
            noise = 0.1 * jax.random.normal(k, log_pop.shape)
            s, ts = env.step(k, s, log_pop + noise)
            return s, ts.metrics["new_infections"]

        return jax.lax.scan(body, state, jax.random.split(key, env.num_days))[1].sum()

    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    fn = jax.jit(jax.vmap(one))
    t0 = time.perf_counter()
    compiled = fn.lower(keys).compile()
    return compiled, keys, time.perf_counter() - t0


def numpy_episode(env: VaccineAllocation) -> float:
    """The mean-field dynamics in NumPy (same equations as `VaccineAllocation.hour_step`)."""
    city = env.city
    pop = city.population.astype(np.float64)
    c, p = len(pop), city.num_pois
    ec, ep, prob = city.edge_cbg, city.edge_poi, city.edge_prob.astype(np.float64)
    coef = env.psi * (city.poi_dwell / (city.poi_dwell + 60.0)) ** 2 / city.poi_area
    ifr = city.ifr.astype(np.float64)
    l, i, r = pop * env.initial_exposed, np.zeros(c), np.zeros(c)
    tc, td, v = np.zeros(c), np.zeros(c), np.zeros(c)
    budget, total = env.daily_budget * pop.sum(), 0.0
    for day in range(env.num_days):
        v = np.minimum(v + budget * pop / pop.sum(), pop)
        a = 1.0 - v / pop
        m = city.mobility[min(day, len(city.mobility) - 1)]
        for hour in range(24):
            scale = env.v0 * city.hourly[hour] * m
            s = np.maximum(pop - l - i - r, 0.0)
            lam = np.minimum(1.0, coef * scale * np.bincount(ep, prob * i[ec], minlength=p))
            poi = a * s * scale * np.bincount(ec, prob * lam[ep], minlength=c)
            new_l = np.minimum(s, s * np.minimum(1.0, env.beta_base * a * i / pop) + poi)
            new_i, new_r = l / 96.0, i / 84.0
            conf, died = tc / 168.0, td / 432.0
            l, i, r = l + new_l - new_i, i + new_i - new_r, r + new_r
            tc, td = tc + 0.1 * new_i - conf, td + ifr * new_i - died
            total += new_l.sum()
    return total


def scaling_child(size: int, repeats: int) -> None:
    """Runs in a subprocess: prints one JSON line for `size` regions."""
    t0 = time.perf_counter()
    env = VaccineAllocation(num_cbgs=size, prevented_metric=False)
    _ = env.city
    gen_s = time.perf_counter() - t0
    fn, keys, compile_s = episode_runner(env, 1)
    episode_s = common.time_calls(fn, keys, repeats=repeats)
    rss_mb = common.peak_rss_mb()
    mem = fn.memory_analysis()
    temp_mb = getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20 if mem else float("nan")
    print(json.dumps({"size": size, "edges": int(env.city.edge_cbg.size), "gen_s": gen_s,
                      "compile_s": compile_s, "episode_s": episode_s, "peak_rss_mb": rss_mb,
                      "xla_temp_mb": temp_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 3130, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", nargs="?", const=str(DEFAULT_OUT), default=None,
                        help=f"write a markdown table (default path {DEFAULT_OUT})")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        scaling_child(args.child, args.repeats)
        return

    lines = []
    env = VaccineAllocation(prevented_metric=False)
    rows = []
    for stochastic in (False, True):
        batches = args.batches if not stochastic else args.batches[:1]
        for batch in batches:
            e = VaccineAllocation(prevented_metric=False, stochastic=stochastic)
            fn, keys, compile_s = episode_runner(e, batch)
            sec = common.time_calls(fn, keys, repeats=args.repeats)
            rows.append(("stochastic" if stochastic else "mean-field", batch, compile_s, sec))
            print(f"{rows[-1][0]} batch {batch}: {batch / sec:.3f} episodes/s "
                  f"(compile {compile_s:.1f}s)", flush=True)
    t0 = time.perf_counter()
    numpy_episode(env)
    numpy_s = time.perf_counter() - t0
    print(f"numpy: {numpy_s:.2f} s/episode", flush=True)

    scaling = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(size), "--repeats",
                              str(args.repeats)], capture_output=True, text=True, check=True)
        scaling.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(scaling[-1], flush=True)

    dev = jax.devices()[0]
    lines += [
        *common.header_lines(
            "Medical environment throughput",
            "python benchmarks/bench_medical_env.py --out",
            f"{dev.platform} ({dev.device_kind}), {common.host(processor=False)}",
        ),
        "- one episode = 63 daily decisions x 24 hourly SEIR steps (1512 steps, two `segment_sum`s "
        "each); population-proportional logits; jit + vmap over the batch, compile excluded, "
        f"median of {args.repeats} runs.",
        "",
        "## Episodes per second, 3130 regions (20,000 POIs, 187,800 edges)",
        "",
        "| mode | batch | episodes/s | region-days/s | s per call | compile s | vs NumPy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, batch, compile_s, sec in rows:
        eps = batch / sec
        ratio = f"{eps * numpy_s:.1f}x" if mode == "mean-field" else "-"
        lines.append(f"| {mode} | {batch} | {eps:.3f} | {eps * 63 * 3130:,.0f} | {sec:.2f} | "
                     f"{compile_s:.1f} | {ratio} |")
    lines.append(f"| NumPy mean-field (baseline) | 1 | {1 / numpy_s:.3f} | "
                 f"{63 * 3130 / numpy_s:,.0f} | {numpy_s:.2f} | - | 1.0x |")
    lines += [
        "",
        "## Scaling with the number of regions (mean-field, batch 1, 20,000 POIs, 60 links each)",
        "",
        "| regions | edges | city generation s | compile s | s per episode | peak RSS MB "
        "| XLA temp MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scaling:
        lines.append(f"| {s['size']:,} | {s['edges']:,} | {s['gen_s']:.1f} | {s['compile_s']:.1f} "
                     f"| {s['episode_s']:.2f} | {s['peak_rss_mb']:,.0f} | {s['xla_temp_mb']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        common.write_result(args.out, text)


if __name__ == "__main__":
    main()
