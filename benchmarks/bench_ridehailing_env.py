"""Throughput of the ride-hailing environment (144-step days) against NumPy and object-Python, and
its scaling to 10,000 cells.

* Days/s for a batch of days (`--batches`, default 1, 16, 256) on ridehailing-1 (6x6) and
  ridehailing-2 (10x10), stochastic Poisson mode, with the Greedy and the Random rule
  (`dyps_jax.rules`): `jit(vmap)` over the days of a `lax.scan` over the 144 steps (policy +
  `env.step`, observations computed every step as a learner would need them), compiled with
  `.lower().compile()` (compile time excluded), timed with `block_until_ready`, median of
  `--repeats` calls. Cell-steps/s (= agent-steps/s) = days/s x 144 x cells.
* Baselines, one day each (median of `--repeats` days), same run: the same simulator written
  (1) in NumPy as a user would write it (idle-driver counts per cell, arrivals by step, the pending
  orders as arrays; a Python loop over steps and cells with NumPy inside) and (2) as object-oriented
  pure Python in the style of the paper's original simulator (Driver and Order objects; a loop over
  drivers, cells and orders every step), which the paper reports at 7-9 s of CPU per 10x10 day.
  Precondition, asserted before any timing: on the paper's replayed order streams both baselines
  give the JAX environment's Greedy GMV and served count (220,775.79 on ridehailing-1, 539,449.2 on
  ridehailing-2), so they are the same model.
* Scaling of one step (`env.step` + Greedy, batch 1, jit) with the number of cells: synthetic
  cities of `--sizes` S x S cells (default 10, 32, 64, 100 -> 100 ... 10,000 cells; l_max 5, 10
  drivers per cell, base rates 0..9), one subprocess per size: ms per step, cell-steps/s, compile
  time, seconds per full-day rollout (batch 1), peak resident memory of the process (VmHWM) and
  XLA's temporary buffers of the step and of the day.

Run: `python benchmarks/bench_ridehailing_env.py --out` (writes
`benchmarks/results/ridehailing_env.md`; about 8-10 minutes on 2 CPU cores). `--quick` is a
smoke run (batch 1, a 4x4 city, one repeat; about a minute).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from dyps_jax.envs import make  # noqa: E402
from dyps_jax.envs.orders import PRICE_MEAN, PRICE_STD, duration_probs  # noqa: E402
from dyps_jax.envs.ridehailing import RideHailing, paper_city  # noqa: E402
from dyps_jax.rules import RULES  # noqa: E402

SCRIPT = "bench_ridehailing_env.py"
DEFAULT_OUT = common.RESULTS / "ridehailing_env.md"
PRESETS = {"ridehailing-1": "rh1_36", "ridehailing-2": "rh2_100"}
# Greedy GMV of the paper's replayed days (the JAX environment's figures, the paper's Table 7).
REPLAY_GMV = {"ridehailing-1": 220_775.79, "ridehailing-2": 539_449.2}


# ----------------------------------------------------------------------------- JAX


def day_runner(env, rule: str, batch: int):
    """Compiled fn(keys) -> (GMV f32[batch], checksum of the last observations f32[batch]).

    One day = `env.reset`, then a `lax.scan` over `env.max_steps` steps of (rule, `env.step`). The
    timestep (observations included) is carried so that XLA computes it every step.
    """
    policy = RULES["ridehailing"][rule].make(env)

    def one(key):
        k_reset, k_run = jax.random.split(key)
        state, ts = env.reset(k_reset)

        def body(carry, k):
            state, ts = carry
            k_pol, k_env = jax.random.split(k)
            state, ts = env.step(k_env, state, policy(k_pol, ts, state))
            return (state, ts), ts.metrics["gmv"]

        (_, ts), gmv = jax.lax.scan(body, (state, ts), jax.random.split(k_run, env.max_steps))
        return gmv.sum(), ts.obs.sum()

    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    fn = jax.jit(jax.vmap(one))
    t0 = time.perf_counter()
    compiled = fn.lower(keys).compile()
    return compiled, keys, time.perf_counter() - t0


def step_runner(env):
    """Compiled fn(state, key) -> (state, GMV of the step): Greedy + `env.step`, batch 1."""
    policy = RULES["ridehailing"]["greedy"].make(env)

    def step(state, key):
        state, ts = env.step(key, state, policy(key, None, state))
        return state, (ts.metrics["gmv"], ts.obs.sum())

    state, _ = jax.jit(env.reset)(jax.random.key(1))
    fn = jax.jit(step)
    t0 = time.perf_counter()
    compiled = fn.lower(state, jax.random.key(2)).compile()
    return compiled, state, time.perf_counter() - t0


def jax_replay_greedy(name: str) -> tuple[float, int]:
    """(GMV, served) of the JAX environment's Greedy rule on the paper's replayed day."""
    env = make(name, demand="replay")
    policy = RULES["ridehailing"]["greedy"].make(env)

    def day(key):
        state, ts = env.reset(key)

        def body(state, k):
            state, ts = env.step(k, state, policy(k, None, state))
            return state, (ts.metrics["gmv"], ts.metrics["served"])

        _, (gmv, served) = jax.lax.scan(body, state, jax.random.split(key, env.max_steps))
        return gmv.sum(), served.sum()

    gmv, served = jax.jit(day)(jax.random.PRNGKey(0))
    return float(gmv), int(served)


def step_breakdown(name: str, batch: int, repeats: int) -> list[tuple[str, float]]:
    """(part, ms per call) of one step of `batch` days of `name` (jit(vmap), Poisson demand)."""
    env = make(name)
    policy = RULES["ridehailing"]["greedy"].make(env)
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    states, _ = jax.jit(jax.vmap(env.reset))(keys)
    t = jnp.int32(env.horizon // 2)
    actions = jax.jit(jax.vmap(lambda k, s: policy(k, None, s)))(keys, states)
    parts = {
        "Greedy rule + env.step (the whole step)":
            (lambda k, s: env.step(k, s, policy(k, None, s)), (keys, states)),
        "Greedy rule alone (pairwise ranks of the K prices of every cell)":
            (lambda k, s: policy(k, None, s), (keys, states)),
        "env.served_slots (draws -> served orders)": (env.served_slots, (states, actions)),
        "order sampling (demand_model.sample, inverse-CDF Poisson)":
            (lambda k: env.demand_model.sample(k, t), (keys,)),
        "sampling + merge into the candidate table ([waiting | new] halves, no sort)":
            (lambda k, s: env._merge(s.orders, env.demand_model.sample(k, t)), (keys, states)),
        "observations (env._observe)": (env._observe, (states,)),
    }
    out = []
    for label, (fn, args) in parts.items():
        compiled = jax.jit(jax.vmap(fn)).lower(*args).compile()
        out.append((label, 1e3 * common.time_calls(compiled, *args, repeats=max(repeats, 20))))
    return out


# ----------------------------------------------------------------------------- NumPy baseline


class NumpyCity:
    """The simulator in NumPy as a user would write it: counts of idle drivers per cell, drivers
    arriving per future step, the pending orders as arrays; per step a Python loop over cells.

    `stream` (rows t, origin, destination, duration, price) replays a fixed day; otherwise orders
    per step and cell ~ Poisson(rates[t, g]) with the paper's durations, prices and ring
    destinations.
    """

    def __init__(self, env: RideHailing, stream: np.ndarray | None = None):
        self.n, self.lmax, self.horizon = env.num_cells, env.max_duration, env.horizon
        self.k, self.drivers = env.max_candidates, env.drivers_per_cell
        self.rates = np.asarray(env.demand_model.rates, np.float64)
        self.probs = duration_probs(self.lmax)
        self.mean, self.std = np.asarray(PRICE_MEAN), np.asarray(PRICE_STD)
        self.ring_cells, self.ring_within = env.grid.ring_table(self.lmax)
        self.stream = None
        if stream is not None:
            order = np.argsort(stream[:, 0], kind="stable")
            self.stream = stream[order]
            self.bounds = np.searchsorted(self.stream[:, 0], np.arange(self.horizon + 1))

    def new_orders(self, rng: np.random.Generator, t: int):
        """(origin, destination, duration, price) of the orders born at step t."""
        if self.stream is not None:
            rows = self.stream[self.bounds[t]:self.bounds[t + 1]]
            return (rows[:, 1].astype(np.int64), rows[:, 2].astype(np.int64),
                    rows[:, 3].astype(np.int64), rows[:, 4].astype(np.float32))
        origin = np.repeat(np.arange(self.n), rng.poisson(self.rates[t]))
        duration = rng.choice(self.lmax, size=origin.size, p=self.probs) + 1
        mean = self.mean[duration - 1]
        price = rng.normal(mean, self.std[duration - 1])
        price = np.where(price <= 0.0, mean, price).astype(np.float32)
        reachable = self.ring_within[origin, duration - 1]
        pick = (rng.random(origin.size) * reachable).astype(np.int64)
        return origin, self.ring_cells[origin, pick].astype(np.int64), duration, price

    def day(self, seed: int = 0) -> tuple[float, int, int]:
        """One Greedy day: (GMV, served, generated)."""
        rng = np.random.default_rng(seed)
        n, k = self.n, self.k
        idle = np.full(n, self.drivers, np.int64)
        arriving = np.zeros((self.horizon + self.lmax + 1, n), np.int64)  # idle again at step t
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        waiting = (empty_i, empty_i, empty_i, empty_f)  # born last step, not served
        gmv, served_total, generated = 0.0, 0, 0
        for t in range(self.horizon):
            idle += arriving[t]
            new = self.new_orders(rng, t)
            generated += new[0].size
            origin, dest, dur, price = (np.concatenate([w, x]) for w, x in zip(waiting, new))
            # Candidates of a cell: its waiting orders, then its new ones (arrival order), K at most.
            by_cell = np.argsort(origin, kind="stable")
            starts = np.searchsorted(origin[by_cell], np.arange(n + 1))
            served = np.zeros(origin.size, bool)
            for g in range(n):
                cand = by_cell[starts[g]:starts[g + 1]][:k]
                if cand.size == 0 or idle[g] == 0:
                    continue
                take = cand[np.argsort(-price[cand], kind="stable")[:idle[g]]]
                served[take] = True
                idle[g] -= take.size
            gmv += float(price[served].astype(np.float64).sum())
            served_total += int(served.sum())
            np.add.at(arriving, (t + dur[served], dest[served]), 1)
            keep = ~served & (np.arange(origin.size) >= waiting[0].size)  # new and not served
            waiting = (origin[keep], dest[keep], dur[keep], price[keep])
        return gmv, served_total, generated


# ----------------------------------------------------------------------------- object-Python baseline


class Order:
    __slots__ = ("origin", "destination", "duration", "price", "born", "served")

    def __init__(self, origin, destination, duration, price, born):
        self.origin, self.destination, self.duration = origin, destination, duration
        self.price, self.born, self.served = price, born, False


class Driver:
    __slots__ = ("cell", "busy", "free_at", "destination")

    def __init__(self, cell):
        self.cell, self.busy, self.free_at, self.destination = cell, False, -1, cell

    def serve(self, order, t):
        self.busy, self.free_at, self.destination = True, t + order.duration, order.destination

    def tick(self, t, cells):
        """Ends a trip at its destination when its time has come."""
        if self.busy and self.free_at == t:
            self.busy, self.cell = False, self.destination
            cells[self.cell].idle.append(self)


class Cell:
    __slots__ = ("id", "idle", "orders")

    def __init__(self, cell_id):
        self.id, self.idle, self.orders = cell_id, [], []


class ObjectCity:
    """The simulator as object-oriented pure Python, in the style of the original (a Driver object
    per driver, an Order object per order; loops over drivers, cells and orders every step).
    Random numbers: NumPy for the Poisson counts, Python's `random` for everything else."""

    def __init__(self, env: RideHailing, stream: np.ndarray | None = None):
        self.n, self.lmax, self.horizon = env.num_cells, env.max_duration, env.horizon
        self.k, self.drivers = env.max_candidates, env.drivers_per_cell
        self.rates = np.asarray(env.demand_model.rates, np.float64).tolist()
        self.probs = duration_probs(self.lmax).tolist()
        cells, within = env.grid.ring_table(self.lmax)
        self.rings = [[cells[g, :within[g, d]].tolist() for d in range(self.lmax)]
                      for g in range(self.n)]
        self.stream = None
        if stream is not None:
            self.stream = [[] for _ in range(self.horizon)]
            for t, o, d, dur, price in stream.tolist():
                # prices as float32 values, like the JAX environment and the NumPy version
                self.stream[int(t)].append((int(o), int(d), int(dur), float(np.float32(price))))

    def day(self, seed: int = 0) -> tuple[float, int, int]:
        """One Greedy day: (GMV, served, generated)."""
        rnd, rng = random.Random(seed), np.random.default_rng(seed)
        cells = [Cell(g) for g in range(self.n)]
        drivers = []
        for cell in cells:
            for _ in range(self.drivers):
                driver = Driver(cell.id)
                drivers.append(driver)
                cell.idle.append(driver)
        durations = list(range(1, self.lmax + 1))
        gmv, served, generated = 0.0, 0, 0
        for t in range(self.horizon):
            for driver in drivers:
                driver.tick(t, cells)
            if self.stream is not None:
                for o, d, dur, price in self.stream[t]:
                    cells[o].orders.append(Order(o, d, dur, price, t))
                    generated += 1
            else:
                for cell in cells:
                    for _ in range(rng.poisson(self.rates[t][cell.id])):
                        dur = rnd.choices(durations, self.probs)[0]
                        mean = PRICE_MEAN[dur - 1]
                        price = rnd.gauss(mean, PRICE_STD[dur - 1])
                        if price <= 0.0:
                            price = mean
                        dest = rnd.choice(self.rings[cell.id][dur - 1])
                        cell.orders.append(Order(cell.id, dest, dur, price, t))
                        generated += 1
            for cell in cells:
                candidates = sorted(cell.orders[:self.k], key=lambda o: -o.price)
                for order in candidates:
                    if not cell.idle:
                        break
                    driver = cell.idle.pop()
                    driver.serve(order, t)
                    order.served = True
                    gmv += order.price
                    served += 1
                cell.orders = [o for o in cell.orders if not o.served and o.born == t]
        return gmv, served, generated


def ratio(x: float) -> str:
    return f"{x:,.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def time_days(city, repeats: int) -> tuple[float, float]:
    """(median seconds per day, mean GMV) of `repeats` days with seeds 0.. ."""
    times, gmvs = [], []
    for seed in range(repeats):
        t0 = time.perf_counter()
        gmvs.append(city.day(seed)[0])
        times.append(time.perf_counter() - t0)
    return statistics.median(times), float(np.mean(gmvs))


# ----------------------------------------------------------------------------- scaling child


def temp_mb(compiled) -> float:
    mem = compiled.memory_analysis()
    return getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20 if mem else float("nan")


def synthetic_city(side: int) -> RideHailing:
    return RideHailing(rows=side, cols=side, city="", demand="poisson", max_duration=5,
                       drivers_per_cell=10, base_low=0, base_high=9)


def scaling_child(side: int, repeats: int) -> None:
    """Runs in a subprocess: prints one JSON line for an S x S synthetic city."""
    env = synthetic_city(side)
    t0 = time.perf_counter()
    _ = env.demand_model.rates, env.demand_model._rings  # city generation (lambda table, rings)
    gen_s = time.perf_counter() - t0
    step, state, step_compile_s = step_runner(env)
    step_s, _, _ = common.time_carried(step, state, max(repeats, 5), keyed=True)
    day, keys, day_compile_s = day_runner(env, "greedy", 1)
    day_s, _, out = common.time_carried(lambda k: (k, day(k)), keys, repeats)
    gmv = float(out[0][0])
    print(json.dumps({"side": side, "cells": env.num_cells, "gen_s": gen_s,
                      "step_compile_s": step_compile_s, "step_s": step_s,
                      "day_compile_s": day_compile_s, "day_s": day_s, "gmv": gmv,
                      "peak_rss_mb": common.peak_rss_mb(), "step_temp_mb": temp_mb(step),
                      "day_temp_mb": temp_mb(day)}))


# ----------------------------------------------------------------------------- main


def check_baselines(names) -> list[str]:
    """Asserts that NumPy and object-Python Greedy reproduce the JAX replay GMV; returns lines."""
    lines = []
    for name in names:
        stream, _ = paper_city(PRESETS[name])
        env = make(name)
        jax_gmv, jax_served = jax_replay_greedy(name)
        np_gmv, np_served, _ = NumpyCity(env, stream).day()
        ob_gmv, ob_served, _ = ObjectCity(env, stream).day()
        for who, gmv, served in (("NumPy", np_gmv, np_served), ("object-Python", ob_gmv, ob_served)):
            assert served == jax_served and abs(gmv - jax_gmv) < 1.0, (
                f"{name}: {who} Greedy replay gives GMV {gmv:.2f} / served {served}, "
                f"the JAX environment {jax_gmv:.2f} / {jax_served}")
            assert abs(gmv - REPLAY_GMV[name]) < 0.1, (
                f"{name}: {who} Greedy replay GMV {gmv:.2f}, expected {REPLAY_GMV[name]:,}")
        lines.append(f"| {name} | {jax_gmv:,.2f} | {np_gmv:,.2f} | {ob_gmv:,.2f} | {jax_served:,} |")
        print(f"{name} replay Greedy GMV: JAX {jax_gmv:,.2f}, NumPy {np_gmv:,.2f}, "
              f"object {ob_gmv:,.2f}, served {jax_served}", flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 32, 64, 100],
                        help="side S of the S x S synthetic cities of the scaling table")
    parser.add_argument("--scenarios", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 1, a 4x4 city, 1 repeat (about a minute)")
    common.add_out_argument(parser, DEFAULT_OUT)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.sizes, args.repeats = [1], [4], 1
    if args.child is not None:
        scaling_child(args.child, args.repeats)
        return

    load_start, t_start = common.load_average(), time.perf_counter()
    check_lines = check_baselines(args.scenarios)

    rows, baselines = [], {}
    # A Random day costs what a Greedy day costs (the same sort on other keys): small batches only.
    random_batches = [b for b in args.batches if b <= 16] or args.batches[:1]
    for name in args.scenarios:
        env = make(name)
        cells = env.num_cells
        for rule in ("greedy", "random"):
            for batch in args.batches if rule == "greedy" else random_batches:
                fn, keys, compile_s = day_runner(env, rule, batch)
                sec, _, out = common.time_carried(lambda k, f=fn: (k, f(k)), keys, args.repeats)
                gmv = float(np.mean(np.asarray(out[0])))
                rows.append((name, rule, batch, cells, compile_s, sec, gmv))
                print(f"{name} {rule} batch {batch}: {batch / sec:,.1f} days/s, "
                      f"{batch * 144 * cells / sec:,.0f} cell-steps/s (compile {compile_s:.1f}s, "
                      f"GMV {gmv:,.0f})", flush=True)
        np_s, np_gmv = time_days(NumpyCity(env), args.repeats)
        ob_s, ob_gmv = time_days(ObjectCity(env), args.repeats)
        baselines[name] = (cells, np_s, np_gmv, ob_s, ob_gmv)
        print(f"{name}: NumPy {np_s:.3f} s/day (GMV {np_gmv:,.0f}), object-Python {ob_s:.3f} "
              f"s/day (GMV {ob_gmv:,.0f})", flush=True)

    breakdown_name = args.scenarios[-1]
    breakdown_batch = max(random_batches)
    breakdown = step_breakdown(breakdown_name, breakdown_batch, args.repeats)
    for label, ms in breakdown:
        print(f"{breakdown_name} batch {breakdown_batch}: {label}: {ms:.3f} ms", flush=True)

    scaling = []
    for side in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(side), "--repeats",
                              str(args.repeats)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"scaling child {side}x{side} failed:\n{out.stderr[-3000:]}")
        scaling.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(scaling[-1], flush=True)
    total_s = time.perf_counter() - t_start

    dev = jax.devices()[0]
    lines = [
        *common.header_lines(
            "Ride-hailing environment throughput",
            common.command_line(SCRIPT, argv),
            f"{dev.platform} ({dev.device_kind}), {common.host(processor=False)}",
        ),
        f"- load average (1/5/15 min) at start {load_start}, at end {common.load_average()} "
        f"(this run alone adds about 1; more means other jobs shared the cores and the figures "
        f"are slower than on an idle machine); whole run {total_s:.0f}s.",
        "- one day = 144 ten-minute steps; stochastic Poisson demand from the paper's lambda "
        "tables; K = 50 candidate slots per cell. JAX: jit(vmap over days) of a lax.scan over the "
        "steps (rule + env.step, observations computed every step), compile excluded "
        f"(.lower().compile()), median of {args.repeats} calls ending in block_until_ready. "
        "Cell-steps/s = agent-steps/s (one agent per cell).",
        f"- baselines: one Greedy day (median of {args.repeats} days, seeds 0..), single thread: "
        "NumPy (counts per cell, pending orders as arrays, a Python loop over steps and cells) and "
        "object-oriented pure Python (Driver / Order objects, loops over drivers, cells and "
        "orders), the style of the paper's original simulator.",
        "",
        "## Baselines are the same model (precondition, asserted)",
        "",
        "Greedy on the paper's replayed order stream (`demand = \"replay\"`):",
        "",
        "| scenario | JAX GMV | NumPy GMV | object-Python GMV | served (all three) |",
        "|---|---:|---:|---:|---:|",
        *check_lines,
        "",
        "## Days per second, Poisson demand",
        "",
        "| scenario | rule | batch | days/s | cell-steps/s | s per call | compile s "
        "| mean GMV/day | vs NumPy | vs object-Python |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rule, batch, cells, compile_s, sec, gmv in rows:
        _, np_s, _, ob_s, _ = baselines[name]
        dps = batch / sec
        lines.append(f"| {name} | {rule} | {batch} | {dps:,.1f} | {dps * 144 * cells:,.0f} | "
                     f"{sec:.3f} | {compile_s:.1f} | {gmv:,.0f} | {ratio(dps * np_s)} | "
                     f"{ratio(dps * ob_s)} |")
    for name, (cells, np_s, np_gmv, ob_s, ob_gmv) in baselines.items():
        lines.append(f"| {name} | NumPy greedy (baseline) | 1 | {1 / np_s:,.2f} | "
                     f"{144 * cells / np_s:,.0f} | {np_s:.3f} | - | {np_gmv:,.0f} | 1.00x | "
                     f"{ratio(ob_s / np_s)} |")
        lines.append(f"| {name} | object-Python greedy (baseline) | 1 | {1 / ob_s:,.2f} | "
                     f"{144 * cells / ob_s:,.0f} | {ob_s:.3f} | - | {ob_gmv:,.0f} | "
                     f"{ratio(np_s / ob_s)} | 1.00x |")
    lines += ["", "Speed-up of the JAX Greedy day over the baselines, same run:", "",
              "| scenario | JAX batch 1 s/day | JAX best batch: s/day (batch) | NumPy s/day | "
              "object-Python s/day | batch 1 vs NumPy | best vs NumPy | batch 1 vs object "
              "| best vs object |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (_, np_s, _, ob_s, _) in baselines.items():
        greedy = [(batch, sec / batch) for n, r, batch, _, _, sec, _ in rows
                  if n == name and r == "greedy"]
        one = dict(greedy).get(1, greedy[0][1])
        best_batch, best = min(greedy, key=lambda x: x[1])
        lines.append(f"| {name} | {one:.4f} | {best:.5f} ({best_batch}) | {np_s:.3f} | "
                     f"{ob_s:.3f} | {ratio(np_s / one)} | {ratio(np_s / best)} | "
                     f"{ratio(ob_s / one)} | {ratio(ob_s / best)} |")
    lines += [
        "",
        f"## Where one step's time goes ({breakdown_name}, batch {breakdown_batch}, Poisson)",
        "",
        "Each part compiled alone as jit(vmap) over the batch, median of at least 20 calls (parts "
        "overlap: sampling is inside the merge row, and all of them are inside the whole step).",
        "",
        "| part | ms per call | share of the whole step |",
        "|---|---:|---:|",
    ]
    whole = breakdown[0][1]
    for label, ms in breakdown:
        lines.append(f"| {label} | {ms:.3f} | {100 * ms / whole:.0f} % |")
    lines += [
        "",
        "## Scaling of one step with the number of cells (synthetic cities, batch 1, Greedy)",
        "",
        "S x S hexagonal city, `city = \"\"`, Poisson demand, l_max 5, 10 drivers per cell, base "
        "rates 0..9; one subprocess per size. Step = Greedy + `env.step` (jit, state carried, "
        "median of at least 5 calls); day = the 144-step rollout above at batch 1. Peak RSS: "
        "VmHWM of the whole process (Python, JAX, both compiled programs and their runs).",
        "",
        "| cells | city gen s | step compile s | ms per step | cell-steps/s | day compile s "
        "| s per day | GMV of the day | peak RSS MB | XLA temp MB (step / day) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scaling:
        lines.append(f"| {s['cells']:,} | {s['gen_s']:.2f} | {s['step_compile_s']:.1f} | "
                     f"{s['step_s'] * 1e3:,.2f} | {s['cells'] / s['step_s']:,.0f} | "
                     f"{s['day_compile_s']:.1f} | {s['day_s']:.2f} | {s['gmv']:,.0f} | "
                     f"{s['peak_rss_mb']:,.0f} | {s['step_temp_mb']:.1f} / "
                     f"{s['day_temp_mb']:.1f} |")
    common.print_and_write("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
