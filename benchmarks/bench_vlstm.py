"""What the VLSTM's ELBO costs: its forward pass, and its gradient through W steps of the episode.

`roles.vlstm.vlstm_elbo` on one iteration's shapes (T steps, B agent sequences, D-wide observations,
A actions; random data, the VLSTM's default sizes), jitted alone:

* `forward`: the loss and every sequence's h_a, no gradient;
* `W = w`: `value_and_grad` with the gradient on `--grad-sequences` sequences through a window of
  w consecutive steps (`grad_steps`, truncated backpropagation through time); `W = all` (0) runs
  reverse mode through every step, the paper's gradient;
* `all, no remat`: the same without rematerialisation, to tell what the backward recurrence costs
  from what it recomputes.

Defaults are rware-1's shapes at 4 environments (T = 500, B = 32, D = 71, A = 5). Run:
`python benchmarks/bench_vlstm.py --out` (writes `benchmarks/results/vlstm.md`; a minute on 2 CPU
cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from dyps_jax.roles.vlstm import VLSTM, init_vlstm, vlstm_elbo  # noqa: E402

DEFAULT_OUT = common.ROOT / "benchmarks" / "results" / "vlstm.md"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="episode length T")
    parser.add_argument("--sequences", type=int, default=32, help="agent sequences B (E x N)")
    parser.add_argument("--obs-dim", type=int, default=71, help="observation size D")
    parser.add_argument("--actions", type=int, default=5, help="actions A (one-hot)")
    parser.add_argument("--grad-sequences", type=int, default=64,
                        help="sequences the gradient is computed on (vlstm_grad_sequences)")
    parser.add_argument("--windows", default="0,100,50,32,25",
                        help="comma-separated gradient windows W (vlstm_grad_steps); 0 = all steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    common.add_out_argument(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",") if w]
    sizes = {"steps": args.steps, "sequences": args.sequences, "obs-dim": args.obs_dim,
             "actions": args.actions, "repeats": args.repeats}
    for flag, value in sizes.items():
        if value < 1:
            parser.error(f"--{flag}: expected a positive integer, got {value}")
    if not windows or min(windows) < 0:
        parser.error(f"--windows: expected integers >= 0, got {windows}")

    T, B, D, A = args.steps, args.sequences, args.obs_dim, args.actions
    model = VLSTM(target_dim=D + 1)
    params = init_vlstm(model, jax.random.key(0), D, D + A + 1)
    k_states, k_final, k_act, key = jax.random.split(jax.random.key(1), 4)
    data = (jax.random.normal(k_states, (T, B, D)),
            jax.nn.one_hot(jax.random.randint(k_act, (T, B), 0, A), A),
            jnp.zeros((T, B)), jax.random.normal(k_final, (B, D)), jnp.ones((T, B)))

    def elbo(p, **kw):
        return vlstm_elbo(model, p, key, *data, grad_sequences=args.grad_sequences, **kw)

    programs = {"forward": lambda p: elbo(p)}
    for w in windows:
        programs[f"W = {w or 'all'}"] = (
            lambda p, w=w: jax.value_and_grad(lambda q: elbo(q, grad_steps=w), has_aux=True)(p))
    programs["W = all, no remat"] = lambda p: jax.value_and_grad(
        lambda q: elbo(q, remat=False), has_aux=True)(p)

    load_start, t_start = common.load_average(), time.perf_counter()
    rows = []
    for name, fn in programs.items():
        compiled = jax.jit(fn).lower(params).compile()
        ms = common.time_calls(compiled, params, repeats=args.repeats) * 1e3
        rows.append((name, ms))
        print(f"{name}: {ms:.1f} ms", flush=True)
    lines = [
        *common.run_header("VLSTM: forward pass and gradient through a window of steps",
                           "bench_vlstm.py", argv, load_start, time.perf_counter() - t_start),
        f"- T = {T} steps, B = {B} sequences, D = {D}, A = {A}, gradient on "
        f"min(B, {args.grad_sequences}) sequences; `jit` of `vlstm_elbo` alone, median of "
        f"{args.repeats} calls after a warm-up, compile excluded.",
        "",
        "| program | ms per call | x forward |",
        "|---|---:|---:|",
    ]
    forward = rows[0][1]
    lines += [f"| {name} | {ms:.1f} | {ms / forward:.2f} |" for name, ms in rows]
    text = "\n".join(lines) + "\n"
    common.print_and_write(text, args.out)
    return text


if __name__ == "__main__":
    main()
