"""Evaluates a rule baseline (Table 7) on whole episodes and prints one JSON line.

    python -m dyps_jax.evaluate --env medical --policy none|random|population|cases \
        [--seed S] [--episodes K] [--stochastic]
    python -m dyps_jax.evaluate --env ridehailing-1 --policy greedy|nearest|random [--replay]

Episodes run as one jitted `lax.scan` over the steps, vmapped over K episodes (keys split from the
seed). Medical: `prevented_infections` compares with the no-vaccine run on the same episode keys (in
the mean-field mode that counterfactual is deterministic; in the stochastic mode it shares the
seeds). Ride-hailing: `gmv` (raw price units) and `orr` per day; `--replay` feeds the paper's exact
order stream. Printed figures are means (and standard deviations for ride-hailing) over the episodes
of episode totals.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
import numpy as np

from dyps_jax.envs import core
from dyps_jax.rules import RULES, get_rule


def _episode_totals(env, policy, seed: int, episodes: int) -> dict[str, np.ndarray]:
    """Runs `episodes` episodes of `env.max_steps` steps; returns per-episode metric totals."""

    def one(key):
        k_reset, k_run = jax.random.split(key)
        state, timestep = env.reset(k_reset)

        def body(carry, k):
            state, timestep = carry
            k_pol, k_env = jax.random.split(k)
            actions = policy(k_pol, timestep, state)
            state, timestep = env.step(k_env, state, actions)
            return (state, timestep), timestep.metrics

        _, metrics = jax.lax.scan(body, (state, timestep), jax.random.split(k_run, env.max_steps))
        return jax.tree.map(lambda x: x.sum(0), metrics)

    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    out = jax.jit(jax.vmap(one))(keys)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def evaluate_rule(env_name_or_path: str, policy: str, seed: int = 0, episodes: int = 1,
                  **env_overrides: Any) -> dict[str, Any]:
    """Runs the rule `policy` (and, for medical, the no-vaccine counterfactual on the same keys).

    Ride-hailing returns gmv, orr and served (means over episodes of day totals) with their
    standard deviations. Medical returns infections, prevented_infections, prevented_fraction,
    infected_fraction, doses_used, confirmed, deaths (means over episodes of episode totals).
    Both add env, policy, seed and episodes (and demand or stochastic). Raises ValueError naming a
    bad env, policy or parameter.
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: must be a positive integer, got {episodes!r}")
    spec = core.load_preset(env_name_or_path)["env"]
    kind = spec.pop("kind")
    rule = get_rule(kind, policy)
    spec.update(env_overrides)
    header = {"env": str(env_name_or_path), "policy": policy, "seed": seed, "episodes": episodes}
    if kind == "ridehailing":
        env = core.build(kind, {**spec, **rule.env_overrides})
        totals = _episode_totals(env, rule.make(env), seed, episodes)
        result = {**header, "demand": env.demand}
        for name in ("gmv", "orr", "served"):
            result[name] = float(totals[name].mean())
            result[f"{name}_std"] = float(totals[name].std())
        return result
    if kind == "medical":
        spec["prevented_metric"] = False  # the same-seed counterfactual below replaces it

    def run(rule_):
        env = core.build(kind, {**spec, **rule_.env_overrides})
        return env, _episode_totals(env, rule_.make(env), seed, episodes)

    env, totals = run(rule)
    if policy == "none":
        baseline = totals
    else:
        baseline = run(RULES[kind]["none"])[1]
    population = float(np.sum(env.population))
    infections = float(totals["new_infections"].mean())
    prevented = float((baseline["new_infections"] - totals["new_infections"]).mean())
    no_vaccine = float(baseline["new_infections"].mean())
    return {
        **header,
        "stochastic": bool(getattr(env, "stochastic", False)),
        "infections": infections,
        "prevented_infections": prevented,
        "prevented_fraction": prevented / no_vaccine if no_vaccine > 0 else 0.0,
        "infected_fraction": infections / population,
        "doses_used": float(totals["doses"].mean()),
        "confirmed": float(totals["new_confirmed"].mean()),
        "deaths": float(totals["deaths"].mean()),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dyps_jax.evaluate",
        description="Run a rule baseline on whole episodes; prints one JSON line.",
    )
    parser.add_argument("--env", default="medical",
                        help="scenario preset name or path to a .toml file (default: medical)")
    parser.add_argument("--policy", required=True,
                        help="rule: " + "; ".join(f"{k}: {'|'.join(v)}" for k, v in RULES.items()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--stochastic", action="store_true",
                        help="medical: Poisson/binomial draws instead of the mean-field mode")
    parser.add_argument("--replay", action="store_true",
                        help="ride-hailing: replay the city's recorded order stream (the paper's "
                             "exact day) instead of drawing fresh days")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    overrides = {"stochastic": True} if args.stochastic else {}
    if args.replay:
        overrides["demand"] = "replay"
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes: must be >= 1, got {args.episodes}")
        spec = core.load_preset(args.env)["env"]
        get_rule(spec["kind"], args.policy)  # validate before any compilation
        result = evaluate_rule(args.env, args.policy, seed=args.seed, episodes=args.episodes,
                               **overrides)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
