"""How agents reach their group's weights: five strategies, forward and backward inside a scan.

N agents, each in one of G groups (groups int32[N], random, fixed over the scan), apply their
group's MLP (D inputs, two tanh hidden layers of H units, A outputs, like the policy's actor in
`nets.py`; weights stacked [G, ...]) to their input at each of T steps of a `lax.scan`; the timed
program is `jit(value_and_grad(sum over the scan of a loss of the outputs))` with respect to the
stacked weights, so every strategy pays its forward pass, its backward pass and its weight gradient:

* `select`: every group's MLP on every agent ([G, N, H] activations), each agent keeps its own
  group's row (`take_along_axis`); G x the FLOPs (what `nets.grouped_apply` did for every G >= 2);
* `ragged`: agents sorted by group (`argsort`), each layer one `jax.lax.ragged_dot` with the group
  sizes, outputs unsorted;
* `gather`: each agent's weights gathered by index ([N, D, H] per layer), a batched product;
* `matvec`: as `gather`, written NoPS's way: `vmap` over agents of the MLP with its own weights;
* `blocks`: `nets.blocked_apply`, agents sorted into blocks of one group each, a weight copy per
  block, a batched matmul over blocks.

Every strategy is checked against `select` (outputs and gradients, relative error < 1e-4) before
it is timed. Reported: median seconds per call (compile excluded), XLA temporary memory of the
compiled program (`memory_analysis().temp_size_in_bytes`), and the fastest strategy per shape.
Beside them, `one set` times the same program with every agent on group 0's weights (what PS pays
for the same rows; not a way to reach G groups, so not checked or ranked): the fastest strategy's
time over it is the floor of what G parameter sets cost over one at that shape.

Run: `python benchmarks/bench_grouped_params.py --out` (writes
`benchmarks/results/grouped_params.md`; a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from dyps_jax.nets import blocked_apply  # noqa: E402

DEFAULT_OUT = common.RESULTS / "grouped_params.md"
STRATEGIES = ("select", "ragged", "gather", "matvec", "blocks")
ONE_SET = "one set"


def init_params(key: jax.Array, groups: int, sizes: tuple[int, ...]) -> list[dict]:
    """Stacked MLP weights: one {"w": f32[G, in, out], "b": f32[G, out]} per layer."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (groups, i, o)) / np.sqrt(i), "b": jnp.zeros((groups, o))}
            for k, i, o in zip(keys, sizes[:-1], sizes[1:])]


def mlp(layers: list[dict], x: jax.Array) -> jax.Array:
    """One group's MLP (leaves without the group axis) on x f32[..., D]."""
    for i, layer in enumerate(layers):
        x = x @ layer["w"] + layer["b"]
        x = jnp.tanh(x) if i < len(layers) - 1 else x
    return x


def apply(strategy: str, params: list[dict], x: jax.Array, groups: jax.Array) -> jax.Array:
    """f32[N, A]: agent n's group MLP on x[n] (x f32[N, D], groups int32[N])."""
    if strategy == "select":
        every = jax.vmap(mlp, in_axes=(0, None))(params, x)  # [G, N, A]
        return jnp.take_along_axis(every, groups[None, :, None], axis=0)[0]
    if strategy == "ragged":
        order = jnp.argsort(groups)
        sizes = jnp.bincount(groups, length=params[0]["w"].shape[0]).astype(jnp.int32)
        h, sorted_groups = x[order], groups[order]
        for i, layer in enumerate(params):
            h = jax.lax.ragged_dot(h, layer["w"], sizes) + layer["b"][sorted_groups]
            h = jnp.tanh(h) if i < len(params) - 1 else h
        return jnp.zeros_like(h).at[order].set(h)
    if strategy == "gather":
        h = x
        for i, layer in enumerate(params):
            h = jnp.einsum("nd,ndh->nh", h, layer["w"][groups]) + layer["b"][groups]
            h = jnp.tanh(h) if i < len(params) - 1 else h
        return h
    if strategy == "matvec":
        own = jax.tree.map(lambda p: p[groups], params)
        return jax.vmap(mlp)(own, x)
    if strategy == "blocks":
        return blocked_apply(mlp, params, x[None], groups[None])[0]
    if strategy == ONE_SET:
        return mlp(jax.tree.map(lambda p: p[0], params), x)
    raise ValueError(f"strategy: unknown {strategy!r}; allowed: {', '.join(STRATEGIES)}")


def program(strategy: str, xs: jax.Array, groups: jax.Array):
    """value_and_grad over the weights of a T-step scan of the strategy; xs f32[T, N, D]."""

    def loss(params):
        def step(total, x):
            out = apply(strategy, params, x, groups)
            return total + jnp.mean(jnp.sin(out)), None

        total, _ = jax.lax.scan(step, jnp.zeros(()), xs)
        return total

    return jax.value_and_grad(loss)


def measure(n: int, g: int, args) -> list[dict]:
    sizes = (args.dim, args.hidden, args.hidden, args.outputs)
    params = init_params(jax.random.key(0), g, sizes)
    xs = jax.random.normal(jax.random.key(1), (args.steps, n, args.dim))
    groups = jax.random.randint(jax.random.key(2), (n,), 0, g)
    rows, reference = [], None
    for strategy in (*STRATEGIES, ONE_SET):
        fn = jax.jit(program(strategy, xs, groups))
        t0 = time.perf_counter()
        compiled = fn.lower(params).compile()
        compile_s = time.perf_counter() - t0
        value, grads = compiled(params)
        flat = np.concatenate([np.ravel(value)] + [np.ravel(x) for x in jax.tree.leaves(grads)])
        if reference is None:
            reference = flat
        error = float(np.linalg.norm(flat - reference) / np.linalg.norm(reference))
        if error > 1e-4 and strategy != ONE_SET:
            raise AssertionError(f"{strategy} at N={n}, G={g} differs from select ({error:.2e})")
        sec = common.time_calls(compiled, params, repeats=args.repeats)
        mem = compiled.memory_analysis()
        temp_mb = mem.temp_size_in_bytes / 2**20 if mem is not None else float("nan")
        rows.append({"n": n, "g": g, "strategy": strategy, "s": sec, "compile_s": compile_s,
                     "temp_mb": temp_mb, "error": error})
        print(f"N={n} G={g} {strategy}: {sec * 1e3:.1f} ms, temp {temp_mb:.1f} MB, "
              f"compile {compile_s:.1f}s, rel. error {error:.1e}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1000,5000,20000", help="comma-separated N")
    parser.add_argument("--groups", default="2,8,64", help="comma-separated G")
    parser.add_argument("--steps", type=int, default=4, help="scan length T")
    parser.add_argument("--dim", type=int, default=32, help="input size D")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units H")
    parser.add_argument("--outputs", type=int, default=8, help="outputs A")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (median)")
    parser.add_argument("--note", default="", help="free text added to the results header")
    common.add_out_argument(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    agents = [int(v) for v in args.agents.split(",") if v]
    group_counts = [int(v) for v in args.groups.split(",") if v]
    for flag, values in (("agents", agents), ("groups", group_counts)):
        if not values or min(values) < 1:
            parser.error(f"--{flag}: expected positive integers, got {values}")

    load_start, t_start = common.load_average(), time.perf_counter()
    rows = [r for n in agents for g in group_counts for r in measure(n, g, args)]
    lines = [
        *common.run_header("Grouped parameters: how agents reach their group's weights",
                           "bench_grouped_params.py", argv, load_start,
                           time.perf_counter() - t_start, args.note),
        f"- MLP {args.dim} -> {args.hidden} -> {args.hidden} -> {args.outputs} (tanh), weights "
        f"stacked per group; `jit(value_and_grad)` of a {args.steps}-step `lax.scan`, one row of N "
        f"agents per step; median of {args.repeats} calls after a warm-up, compile excluded; temp: "
        "XLA's temporary buffers of the compiled program. Every strategy's value and gradients "
        "match `select`'s (relative error column).",
        "",
        "| N | G | " + " | ".join(f"{s} ms" for s in STRATEGIES) + " | "
        + " | ".join(f"{s} temp MB" for s in STRATEGIES)
        + f" | {ONE_SET} ms | fastest | fastest x {ONE_SET} | max rel. error |",
        "|---:|---:|" + "---:|" * (2 * len(STRATEGIES) + 1) + "---|---:|---:|",
    ]
    for n in agents:
        for g in group_counts:
            shape = {r["strategy"]: r for r in rows if r["n"] == n and r["g"] == g}
            one = shape.pop(ONE_SET)
            best = min(shape.values(), key=lambda r: r["s"])
            lines.append(
                f"| {n:,} | {g} | " + " | ".join(f"{shape[s]['s'] * 1e3:.1f}" for s in STRATEGIES)
                + " | " + " | ".join(f"{shape[s]['temp_mb']:.1f}" for s in STRATEGIES)
                + f" | {one['s'] * 1e3:.1f} | {best['strategy']} | {best['s'] / one['s']:.2f}"
                + f" | {max(r['error'] for r in shape.values()):.1e} |")
    table = "\n".join(lines) + "\n"
    common.print_and_write(table, args.out)
    return table


if __name__ == "__main__":
    main()
