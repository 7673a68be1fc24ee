"""Evaluates a rule baseline (Table 7) or a trained run on whole episodes; prints one JSON line.

    python -m dyps_jax.evaluate --env medical --policy none|random|population|cases \
        [--seed S] [--episodes K] [--stochastic]
    python -m dyps_jax.evaluate --env ridehailing-1 --policy greedy|nearest|random [--replay]
    python -m dyps_jax.evaluate --run RUN_DIR [--checkpoint N] [--episodes K] [--greedy] [--replay]

Episodes run as one jitted `lax.scan` over the steps, vmapped over K episodes (keys split from the
seed); metrics after an episode's end (LBF, RWARE can end early) are not counted. A run folder
(written by `python -m dyps_jax.train`) is checked before anything compiles: its config.json, then
the checkpoint (the latest, or step `--checkpoint`); its policy is `dyps_jax.make_policy` (sampled
actions and groups, or their modes with `--greedy`).

Printed figures are means over the episodes of episode totals, each with its standard deviation
over the episodes (`<name>_std`): `return` (the team return, the sum of all agents' rewards) and the
scenario's metrics. Ride-hailing: `gmv` (raw price units), `orr` and `served` per day; `--replay`
feeds the paper's exact order stream. Medical: `infections`, `prevented_infections` (compared with
the no-vaccine run on the same episode keys; in the mean-field mode that counterfactual is
deterministic, in the stochastic mode it shares the seeds), `doses_used`, `confirmed`, `deaths`.
Other scenarios: their own metrics (`food_collected`, `deliveries`, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dyps_jax.envs import core
from dyps_jax.envs.medical import VaccineAllocation
from dyps_jax.rules import RULES, get_rule

# Medical metric names as printed (episode totals of the environment's per-day metrics).
_MEDICAL_NAMES = {"infections": "new_infections", "doses_used": "doses",
                  "confirmed": "new_confirmed", "deaths": "deaths"}


def _rollout_totals(env, policy, keys: jax.Array,
                    assign: Callable[[jax.Array], Any] | None = None) -> dict[str, jax.Array]:
    """One episode per key (at most `env.max_steps` steps): per-episode metric totals, f32[K].

    `policy(key, timestep, state, context) -> actions`, `context = assign(key)` drawn once per
    episode (a learned policy's groups; None for rules). Adds `return`, the team return. Pure.
    """

    def one(key):
        k_reset, k_run = jax.random.split(key)
        context = None if assign is None else assign(jax.random.fold_in(key, 1))
        state, timestep = env.reset(k_reset)

        def body(carry, k):
            state, timestep, ended = carry
            k_pol, k_env = jax.random.split(k)
            actions = policy(k_pol, timestep, state, context)
            state, timestep = env.step(k_env, state, actions)
            alive = (~ended).astype(timestep.reward.dtype)
            out = {**timestep.metrics, "return": timestep.reward.sum()}
            return (state, timestep, ended | timestep.done), jax.tree.map(lambda m: m * alive, out)

        carry = (state, timestep, jax.numpy.zeros((), bool))
        _, metrics = jax.lax.scan(body, carry, jax.random.split(k_run, env.max_steps))
        return jax.tree.map(lambda x: x.sum(0), metrics)

    return jax.vmap(one)(keys)


def _episode_keys(seed: int, episodes: int) -> jax.Array:
    return jax.random.split(jax.random.PRNGKey(seed), episodes)


def _numpy(totals: dict[str, jax.Array]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64) for k, v in totals.items()}


def _episode_totals(env, policy, seed: int, episodes: int) -> dict[str, np.ndarray]:
    """`_rollout_totals` of a rule policy on `episodes` keys from `seed`, jitted, as numpy."""
    keys = _episode_keys(seed, episodes)
    return _numpy(jax.jit(lambda k: _rollout_totals(env, policy, k))(keys))


def _rule_policy(rule, env):
    act = rule.make(env)
    return lambda key, timestep, state, context: act(key, timestep, state)


def _mean_std(result: dict, name: str, values: np.ndarray) -> None:
    result[name] = float(values.mean())
    result[f"{name}_std"] = float(values.std())


def _eval_spec(kind: str, spec: dict) -> dict:
    # Medical: the same-seed no-vaccine counterfactual replaces the environment's own metric.
    return {**spec, "prevented_metric": False} if kind == "medical" else spec


def _no_vaccine(kind: str, spec: dict, seed: int, episodes: int) -> dict[str, np.ndarray] | None:
    """Medical: the no-vaccine rule's totals on the evaluation keys (None for other kinds)."""
    if kind != "medical":
        return None
    rule = RULES[kind]["none"]
    env = core.build(kind, {**spec, **rule.env_overrides})
    return _episode_totals(env, _rule_policy(rule, env), seed, episodes)


def _format(kind: str, env, totals: dict[str, np.ndarray], baseline, header: dict) -> dict:
    """The figures of the module docstring from per-episode totals (and the medical baseline)."""
    totals = dict(totals)
    result = dict(header)
    if kind == "ridehailing":
        result["demand"] = env.demand
    _mean_std(result, "return", totals.pop("return"))
    if kind != "medical":
        for name in sorted(totals):
            _mean_std(result, name, totals[name])
        return result
    population = float(np.sum(env.population))
    prevented = baseline["new_infections"] - totals["new_infections"]
    no_vaccine = float(baseline["new_infections"].mean())
    result["stochastic"] = bool(env.stochastic)
    _mean_std(result, "infections", totals["new_infections"])
    _mean_std(result, "prevented_infections", prevented)
    result["prevented_fraction"] = float(prevented.mean()) / no_vaccine if no_vaccine > 0 else 0.0
    result["infected_fraction"] = result["infections"] / population
    for name in ("doses_used", "confirmed", "deaths"):
        _mean_std(result, name, totals[_MEDICAL_NAMES[name]])
    return result


def _check_episodes(episodes: Any) -> None:
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"episodes: must be a positive integer, got {episodes!r}")


def evaluate_rule(env_name_or_path: str, policy: str, seed: int = 0, episodes: int = 1,
                  **env_overrides: Any) -> dict[str, Any]:
    """Runs the rule `policy` (and, for medical, the no-vaccine counterfactual on the same keys).

    Returns env, policy, seed, episodes and the figures of the module docstring (ride-hailing adds
    demand, medical stochastic). Raises ValueError naming a bad env, policy or parameter.
    """
    _check_episodes(episodes)
    spec = core.load_preset(env_name_or_path)["env"]
    kind = spec.pop("kind")
    rule = get_rule(kind, policy)
    spec = _eval_spec(kind, {**spec, **env_overrides, **rule.env_overrides})
    env = core.build(kind, spec)
    totals = _episode_totals(env, _rule_policy(rule, env), seed, episodes)
    baseline = totals if isinstance(env, VaccineAllocation) and not env.vaccinate else _no_vaccine(
        kind, spec, seed, episodes)
    header = {"env": str(env_name_or_path), "policy": policy, "seed": seed, "episodes": episodes}
    return _format(kind, env, totals, baseline, header)


def evaluate_states(config, states, episodes: int = 1, greedy: bool = False, seed: int = 0,
                    **env_overrides: Any) -> list[dict[str, Any]]:
    """Evaluates a batch of train states of one config, e.g. the seeds of a vmapped `make_train`.

    Args:
      config: the `TrainConfig` the states were trained with.
      states: a `TrainState` whose leaves carry a leading seed axis [S].
      episodes, greedy, seed: K episodes per state (the same keys for every state), policy modes.
      env_overrides: replace parameters of the scenario (e.g. `demand="replay"`).

    Returns one result per state (the figures of the module docstring, plus method, env, greedy,
    seed, episodes and `per_episode`: each metric's K episode totals). All states run in one
    jitted call, vmapped over the seed axis.
    """
    from dyps_jax.config import EnvSpec
    from dyps_jax.policy import make_policy

    _check_episodes(episodes)
    kind = config.env.kind
    if env_overrides.get("demand") == "replay" and kind != "ridehailing":
        raise ValueError(f"replay: only ride-hailing has a recorded day; {config.env.name} is "
                         f"{kind}")
    spec = _eval_spec(kind, {**config.env.params, **env_overrides})
    env = core.build(kind, spec)  # validates the overrides
    eval_config = dataclasses.replace(config, env=EnvSpec(config.env.name, kind, spec))
    keys = _episode_keys(seed, episodes)

    def totals(state):
        learned = make_policy(eval_config, state, greedy=greedy)

        def policy(key, ts, env_state, groups):
            return learned.act(key, ts.obs, ts.action_mask, groups)

        return _rollout_totals(env, policy, keys, learned.assign)

    per_seed = _numpy(jax.jit(jax.vmap(totals))(states))
    baseline = _no_vaccine(kind, spec, seed, episodes)
    header = {"env": config.env.name, "method": config.method, "greedy": greedy, "seed": seed,
              "episodes": episodes}
    results = []
    for i in range(len(per_seed["return"])):
        seed_totals = {k: v[i] for k, v in per_seed.items()}
        result = _format(kind, env, seed_totals, baseline, header)
        result["per_episode"] = {k: v.tolist() for k, v in seed_totals.items()}
        if baseline is not None:
            result["per_episode"]["prevented_infections"] = (
                baseline["new_infections"] - seed_totals["new_infections"]).tolist()
        results.append(result)
    return results


def load_run(run_dir: str | Path, step: int | None = None):
    """Reads a run folder: `(config, state, step)`, checked before anything compiles.

    Raises ValueError naming the folder or file for a missing folder, a missing or unreadable
    config.json, no checkpoint, an unknown step (listing the saved ones) or a checkpoint that does
    not restore into the config's train state.
    """
    from dyps_jax import checkpoint
    from dyps_jax.config import config_from_dict
    from dyps_jax.train import make_train_fns

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run: {str(run_dir)!r} is not a run folder (no such directory)")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"run: {str(run_dir)!r} has no config.json; is it a run folder of "
                         "`python -m dyps_jax.train`?")
    try:
        config = config_from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"run: {str(config_path)!r} is not valid JSON: {err}") from None
    except ValueError as err:
        raise ValueError(f"run: {str(config_path)!r}: {err}") from None
    ckpt_dir = run_dir / "checkpoints"
    steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) \
        if ckpt_dir.is_dir() else []
    if not steps:
        raise ValueError(f"run: {str(ckpt_dir)!r} holds no checkpoint (was the run trained with "
                         "--checkpoint-every 0?)")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"checkpoint: no step {step} in {str(ckpt_dir)!r}; saved steps: "
                         f"{', '.join(map(str, steps))}")
    # Evaluation runs on one device, whatever the run was trained on (`--devices`).
    config = dataclasses.replace(config, devices=1, agent_devices=1)
    like = jax.eval_shape(make_train_fns(config).init, jax.random.key(0))
    return config, checkpoint.restore(ckpt_dir, like, step), step


def evaluate_run(run_dir: str | Path, step: int | None = None, episodes: int = 1,
                 greedy: bool = False, seed: int = 0, **env_overrides: Any) -> dict[str, Any]:
    """Evaluates the policy saved in a run folder on `episodes` fresh episodes.

    `env_overrides` replace parameters of the run's scenario (e.g. `demand="replay"`). Returns the
    run, env, method, checkpoint step, training iteration and env steps, greedy, seed, episodes and
    the figures of the module docstring. Raises ValueError for a bad run folder (see `load_run`).
    """
    _check_episodes(episodes)
    config, state, step = load_run(run_dir, step)
    batch = jax.tree.map(lambda x: x[None], state)
    (result,) = evaluate_states(config, batch, episodes, greedy, seed, **env_overrides)
    del result["per_episode"]
    header = {"run": str(run_dir), "checkpoint": step, "iteration": int(state.iteration),
              "env_steps": int(state.env_steps)}
    return {**header, **result}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dyps_jax.evaluate",
        description="Evaluate a rule baseline (--env, --policy) or a trained run (--run) on whole "
                    "episodes; prints one JSON line.",
    )
    parser.add_argument("--env", default=None,
                        help="rules: scenario preset name or path to a .toml file (default: "
                             "medical)")
    parser.add_argument("--policy",
                        help="rule: " + "; ".join(f"{k}: {'|'.join(v)}" for k, v in RULES.items()))
    parser.add_argument("--run", help="a run folder of `python -m dyps_jax.train` (config.json and "
                                      "checkpoints/): evaluate its trained policy")
    parser.add_argument("--checkpoint", type=int,
                        help="with --run: the checkpoint step (default: the latest)")
    parser.add_argument("--greedy", action="store_true",
                        help="with --run: the most likely actions and groups instead of samples")
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
    overrides: dict[str, Any] = {"stochastic": True} if args.stochastic else {}
    if args.replay:
        overrides["demand"] = "replay"
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes: must be >= 1, got {args.episodes}")
        if args.run is not None:
            for flag, value in (("--env", args.env), ("--policy", args.policy)):
                if value is not None:
                    raise ValueError(f"{flag}: not used with --run (the run folder names its "
                                     "scenario and method)")
            result = evaluate_run(args.run, args.checkpoint, episodes=args.episodes,
                                  greedy=args.greedy, seed=args.seed, **overrides)
        else:
            if args.policy is None:
                raise ValueError("--policy: required without --run (a rule: "
                                 + "; ".join(f"{k}: {'|'.join(v)}" for k, v in RULES.items())
                                 + ")")
            for flag, value in (("--checkpoint", args.checkpoint), ("--greedy", args.greedy)):
                if value not in (None, False):
                    raise ValueError(f"{flag}: only with --run")
            env = args.env or "medical"
            spec = core.load_preset(env)["env"]
            get_rule(spec["kind"], args.policy)  # validate before any compilation
            result = evaluate_rule(env, args.policy, seed=args.seed, episodes=args.episodes,
                                   **overrides)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
