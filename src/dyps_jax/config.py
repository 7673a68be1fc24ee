"""Typed, frozen configuration and its validation.

`make_config(env="lbf-1", method="dyps", **overrides)` is the one way to build a configuration; the
command line calls it with its flags (`--total-steps` -> `total_steps=`). Precedence, lowest first:
dataclass defaults, the preset's `[train]` table (the paper's Table 6 for that scenario), overrides.
Every bad value raises `ValueError` naming the field, the value and what is allowed, before anything
is compiled. Two settings are adjusted rather than refused, and the configuration records the value
used: `total_steps` is rounded down to whole iterations and a preset's `batch_size` larger than one
iteration's transitions is lowered to it (each with a `ConfigAdjusted` warning); an explicit
`batch_size` override larger than that is an error.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from typing import Any

from dyps_jax import envs, mesh, neighbourhoods
from dyps_jax.algos import ALGOS
from dyps_jax.roles.response import RESPONSE_MODELS
from dyps_jax.sharing import METHOD_SPECS, MethodSpec, num_types

METHODS = tuple(METHOD_SPECS)
SELECTOR_SIGNALS = ("group-advantage", "team-return")
GROUP_EMBEDDINGS = ("unit", "mean")
AGENT_EMBEDDINGS = ("final", "mean")
VLSTM_DECODERS = ("paper", "action")
RESPONSE_SELECTORS = ("fit", "posterior")
RESPONSE_TARGETS = ("state-reward", "state")
RESPONSE_PRIORS = ("selector", "uniform")
MAX_SEED = 2**63 - 1  # jax.random.key takes a 64-bit signed seed
MAX_STEPS = 2**31 - 1  # step counters and transition indices are int32 in the compiled program
# Most selector steps `selector_updates=0` takes per iteration: the presets' largest num_envs, so
# every preset keeps one step per episode (benchmarks/results/train_small_presets_E256.md).
AUTO_SELECTOR_STEPS = 16


class ConfigAdjusted(UserWarning):
    """A setting was changed to a value the run can use; the configuration records the new one."""


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Which scenario: its preset name, environment kind and the resolved environment parameters."""

    name: str
    kind: str
    params: dict[str, Any]

    def build(self) -> envs.Environment:
        return envs.build(self.kind, dict(self.params))


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Per-group PPO of the resource-allocation policies (paper §3.4, Table 6)."""

    lr: float = 5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    update_epochs: int = 4
    batch_size: int = 256  # (env, step) transitions per minibatch, each holding all N agents
    # Most agent rows (transitions x N) whose activations one gradient computation holds; a larger
    # minibatch is split into chunks whose gradients are summed (the same update, ppo.py).
    chunk_rows: int = 131_072
    hidden_size: int = 64
    algo: str = "ippo"  # the base algorithm: ippo, mappo or copo (algos.py)
    lcf_lr: float = 1e-4  # CoPO: learning rate of the coordination factor's distribution


@dataclasses.dataclass(frozen=True)
class SharingConfig:
    """How agents share parameters (`sharing.py`) and DyPS's role models (paper §3.2-3.3)."""

    method: str = "dyps"
    num_groups: int = 4
    selector_lr: float = 1e-2  # Table 6 gives 1e-5 (1e-4 ride-hailing) for the team-return signal
    selector_ent_coef: float = 0.01
    # Selector optimiser steps per iteration, each on that iteration's whole batch; 0 = one per
    # episode of the iteration (num_envs), as Algorithm 1 steps once per episode, at most
    # AUTO_SELECTOR_STEPS: each step reads all E x N agents, so E steps would cost E^2.
    selector_updates: int = 0
    role_lr: float = 1e-3  # VLSTM and CVAE; the paper does not give it
    vlstm_hidden: int = 64
    vlstm_latent: int = 16
    cvae_latent: int = 16
    cvae_beta: float = 0.1  # KL weight of the CVAE; 1 collapses the posterior (roles/cvae.py)
    aux_samples: int = 4096  # (state, action, group) triples per CVAE step
    # How the selector learns and what eq. 13 multiplies (docs/grouping.md); the paper's reading is
    # selector_signal="team-return", group_embedding="mean", group_response_coef=0 and the Table 6
    # selector_lr.
    selector_signal: str = "group-advantage"
    group_balance_coef: float = 0.1  # weight of the entropy of group usage (group-advantage only)
    group_embedding: str = "unit"
    agent_embedding: str = "final"  # h_a: "final" h_T (the paper) or "mean" of h_t over the episode
    vlstm_decoder: str = "paper"  # what the VLSTM decoder sees besides (z_t, h_{t-1}): nothing or a_t
    # Agent sequences (of the E x N of an iteration) the VLSTM's ELBO gradient is computed on, drawn
    # afresh every iteration; 0 = all of them (the paper). Every agent's h_a still comes from the
    # full forward pass (roles/vlstm.py, docs/algorithms.md).
    vlstm_grad_sequences: int = 64
    # Steps of those sequences the gradient runs through: one window of this many consecutive steps
    # drawn every iteration, from the carry the full pass reaches there (truncated backpropagation
    # through time); 0 = the whole episode (the paper). Backpropagating all 500 warehouse steps was
    # most of DyPS's time per iteration (docs/algorithms.md).
    vlstm_grad_steps: int = 32
    # Weight of the group response in the selector's objective; 0 (the paper) drops the groups'
    # response models altogether (roles/response.py, docs/grouping.md).
    group_response_coef: float = 1.0
    response_steps: int = 16  # time steps per episode sampled to score and train the response model
    # EM's M-step: Adam steps of the response models per iteration, each on random transitions (as
    # many as the E-step scores, at most response_batch), with their own optimiser
    # (docs/grouping.md). Steps matter more than rows: on the role game 16 x 1024 rows found the
    # types on 3 seeds of 5, 32 x 512 on 5 of 5; 32 x 4096 rows cost ride-hailing more than PPO.
    response_updates: int = 32
    response_batch: int = 512
    response_lr: float = 3e-3
    # How the response reaches the selector: "posterior" (cross-entropy to the EM posterior of each
    # agent's group, the gate's M-step) or "fit" (its centred mean log-likelihood added to the
    # gains; it drew every warehouse robot into one group, docs/grouping.md).
    response_selector: str = "posterior"
    # Divides the response's evidence (log-likelihood of an agent's sampled transitions) in the
    # E-step: 1 is the exact posterior; larger values give softer responsibilities (deterministic
    # annealing's temperature, Ueda & Nakano 1998), docs/grouping.md.
    response_temperature: float = 1.0
    # What the response models predict from (s_t, a_t): "state-reward", e_{t+1} = (s_{t+1}, r_{t+1})
    # like the VLSTM's decoder, or "state", s_{t+1} alone (roles that show only in rewards are the
    # group advantage's to find; docs/grouping.md).
    response_target: str = "state-reward"
    # The response model of every group: "forward", p(e_{t+1} | s_t, a_t), or "inverse",
    # p(a_t | s_t, e_{t+1}), the action that led to the outcome (roles/response.py).
    response_model: str = "inverse"
    # The prior of each agent's group in the response's E-step: "selector" (a_g) or "uniform"
    # (the evidence alone decides which model explains an agent; docs/grouping.md).
    response_prior: str = "selector"
    # Share of every response model's M-step spread evenly over all agents: r' = (1 - e) r + e / M.
    # Without it a model that EM leaves with almost no weight is still moved full steps by Adam and
    # fits its few samples with a collapsed variance (the role game); with it the warehouse's
    # colours were not found (docs/grouping.md), so 0 stays the default.
    response_smoothing: float = 0.0
    # SePS: share of total_steps spent pre-training the shared network, transitions recorded then.
    seps_pretrain_fraction: float = 0.1
    seps_samples: int = 8192


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    env: EnvSpec
    ppo: PPOConfig = PPOConfig()
    sharing: SharingConfig = SharingConfig()
    seed: int = 0
    total_steps: int = 1_000_000  # environment steps, summed over the parallel environments
    num_envs: int = 16
    log_every: int = 10  # iterations per host call (progress bar, logs)
    checkpoint_every: int = 100  # iterations between checkpoints; 0 disables them
    out: str = "runs"
    devices: int = 1  # local devices the environment batch is split over (0: all), mesh.py
    agent_devices: int = 1  # of those, how many split the agent axis (mesh.py)

    @property
    def method(self) -> str:
        return self.sharing.method

    @property
    def method_spec(self) -> MethodSpec:
        return METHOD_SPECS[self.sharing.method]

    @property
    def algo(self) -> str:
        return self.ppo.algo

    @property
    def num_agents(self) -> int:
        return int(self.env.build().num_agents)

    @property
    def episode_length(self) -> int:
        return int(self.env.build().max_steps)

    @property
    def num_iterations(self) -> int:
        """One iteration runs `num_envs` complete episodes (Algorithm 1)."""
        return self.total_steps // (self.num_envs * self.episode_length)

    @property
    def num_param_sets(self) -> int:
        """G, the length of the leading group axis of the policy parameters."""
        env = self.env.build()
        return self.method_spec.num_param_sets(
            int(env.num_agents), self.sharing.num_groups,
            num_types(getattr(env, "agent_types", None)))

    @property
    def selector_steps(self) -> int:
        """Selector optimiser steps per iteration: `selector_updates`, or for 0 one per episode
        (num_envs, Algorithm 1) up to AUTO_SELECTOR_STEPS."""
        return self.sharing.selector_updates or min(self.num_envs, AUTO_SELECTOR_STEPS)

    @property
    def seps_pretrain_iterations(self) -> int:
        """Iterations of SePS's pre-training phase (they count in `total_steps`)."""
        return math.ceil(self.sharing.seps_pretrain_fraction * self.num_iterations)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _setting_table() -> dict[str, tuple[str | None, Any]]:
    """name -> (section of TrainConfig it lives in, or None for a top-level field; its default)."""
    table: dict[str, tuple[str | None, Any]] = {
        f.name: (None, f.default)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("env", "ppo", "sharing")
    }
    for section, cls in (("ppo", PPOConfig), ("sharing", SharingConfig)):
        table.update({f.name: (section, f.default) for f in dataclasses.fields(cls)})
    return table


SETTINGS = _setting_table()


def override_names() -> list[str]:
    """Every name `make_config` accepts as an override (the CLI flag names with underscores)."""
    return sorted((set(SETTINGS) | {"env_params"}) - {"method"})


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Converts TOML/CLI values to the type of the default, rejecting what does not fit."""
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
        else:
            return value
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"{name}: expected {type(default).__name__}, got {value!r}"
        ) from None
    if not math.isfinite(number):  # would reach config.json as a bare NaN/Infinity
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return number


def make_config(env: str = "lbf-1", method: str | None = None, **overrides: Any) -> TrainConfig:
    """Builds and validates a `TrainConfig`.

    Args:
      env: a preset name (`lbf-1`, ...) or a path to a scenario TOML file.
      method: one of `METHODS`; None takes the preset's `[train] method`, else "dyps".
      **overrides: any name of `override_names()`, e.g. `total_steps=200_000, lr=3e-4`;
        `env_params={"num_agents": 3}` overrides parameters of the preset's `[env]` table.
    """
    preset = envs.load_preset(env)
    env_params = {k: v for k, v in preset["env"].items() if k != "kind"}
    extra_env = overrides.pop("env_params", None) or {}
    if not isinstance(extra_env, dict):
        raise ValueError(f"env_params: expected a dict, got {extra_env!r}")
    env_params.update(extra_env)
    values = dict(preset["train"])
    if method is not None:
        values["method"] = method
    return _assemble(preset["name"], preset["env"]["kind"], env_params, values, overrides)


def config_from_dict(data: Any, **overrides: Any) -> TrainConfig:
    """Rebuilds (and re-validates) a configuration saved by `TrainConfig.to_dict` (a run folder's
    config.json), with optional overrides as in `make_config` (`method=` included).

    Fields the dict lacks take their defaults (runs written before a field existed); unknown fields,
    values of the wrong type and invalid values raise ValueError naming them.
    """
    if not isinstance(data, dict):
        raise ValueError(f"config: expected a JSON object, got {type(data).__name__}")
    env = data.get("env")
    if not isinstance(env, dict) or not {"name", "kind", "params"} <= set(env):
        raise ValueError(f"config.env: expected an object with name, kind and params, got {env!r}")
    if not isinstance(env["params"], dict):
        raise ValueError(f"config.env.params: expected an object, got {env['params']!r}")
    values: dict[str, Any] = {}
    top = {k: v for k, v in data.items() if k not in ("env", "ppo", "sharing")}
    for section, fields in ((None, top), ("ppo", data.get("ppo", {})),
                            ("sharing", data.get("sharing", {}))):
        where = "config" if section is None else f"config.{section}"
        if not isinstance(fields, dict):
            raise ValueError(f"{where}: expected an object, got {fields!r}")
        for name in fields:
            if name not in SETTINGS or SETTINGS[name][0] != section:
                raise ValueError(f"{where}: unknown field {name!r}")
        values.update(fields)
    env_params = {**env["params"], **(overrides.pop("env_params", None) or {})}
    return _assemble(str(env["name"]), str(env["kind"]), env_params, values, overrides)


def _assemble(name: str, kind: str, env_params: dict[str, Any], values: dict[str, Any],
              overrides: dict[str, Any]) -> TrainConfig:
    """Validated TrainConfig from an environment and settings (lowest precedence first)."""
    if "method" in overrides and overrides["method"] is None:
        overrides.pop("method")
    values = {"method": "dyps", **values, **overrides}
    if values["method"] not in METHODS:
        raise ValueError(
            f"method: unknown method {values['method']!r}; allowed: {', '.join(METHODS)}"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", str(name)):
        raise ValueError(f"name: {name!r} must be letters, digits and _ . + - (it names the run "
                         f"folder, which must stay inside --out)")
    spec = EnvSpec(name=name, kind=kind, params=envs.core.parse_params(kind, env_params))
    spec.build()  # validates the environment parameters and reads its files

    allowed = set(override_names()) | {"method"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {unknown}; allowed: {', '.join(sorted(allowed - {'method'}))}"
        )
    sections: dict[str | None, dict[str, Any]] = {None: {}, "ppo": {}, "sharing": {}}
    for key, value in values.items():
        section, default = SETTINGS[key]
        sections[section][key] = _coerce(key, value, default)
    config = TrainConfig(
        env=spec,
        ppo=PPOConfig(**sections["ppo"]),
        sharing=SharingConfig(**sections["sharing"]),
        **sections[None],
    )
    validate(config)
    return _fit_to_iterations(config, explicit_batch="batch_size" in overrides)


def _fit_to_iterations(config: TrainConfig, explicit_batch: bool) -> TrainConfig:
    """Rounds total_steps down to whole iterations and fits batch_size into one iteration."""
    per_iteration = config.num_envs * config.episode_length
    total = config.num_iterations * per_iteration
    if total != config.total_steps:
        warnings.warn(ConfigAdjusted(
            f"total_steps: {config.total_steps} is not a multiple of one iteration "
            f"({per_iteration} env steps); running {config.num_iterations} iterations = {total} "
            f"steps (recorded in config.json)"), stacklevel=3)
        config = dataclasses.replace(config, total_steps=total)
    if config.ppo.batch_size > per_iteration:
        if explicit_batch:
            raise ValueError(
                f"batch_size: {config.ppo.batch_size} is more than the transitions of one "
                f"iteration (num_envs {config.num_envs} x episode length {config.episode_length} "
                f"= {per_iteration}); allowed: 1..{per_iteration}"
            )
        warnings.warn(ConfigAdjusted(
            f"batch_size: the preset's {config.ppo.batch_size} is more than one iteration's "
            f"{per_iteration} transitions; using {per_iteration} (recorded in config.json)"),
            stacklevel=3)
        config = dataclasses.replace(
            config, ppo=dataclasses.replace(config.ppo, batch_size=per_iteration))
    return config


def validate(config: TrainConfig) -> None:
    """Raises ValueError for the first invalid field of `config`."""
    envs.core.check_positive(
        "config",
        total_steps=config.total_steps,
        num_envs=config.num_envs,
        log_every=config.log_every,
    )
    if not 0 <= config.seed <= MAX_SEED:
        raise ValueError(f"seed: must be in 0..{MAX_SEED}, got {config.seed}")
    if config.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every: must be >= 0, got {config.checkpoint_every}")
    ppo, sharing = config.ppo, config.sharing
    envs.core.check_positive(
        "ppo",
        lr=ppo.lr,
        clip_eps=ppo.clip_eps,
        max_grad_norm=ppo.max_grad_norm,
        update_epochs=ppo.update_epochs,
        batch_size=ppo.batch_size,
        chunk_rows=ppo.chunk_rows,
        hidden_size=ppo.hidden_size,
    )
    envs.core.check_positive(
        "sharing",
        selector_lr=sharing.selector_lr,
        role_lr=sharing.role_lr,
        vlstm_hidden=sharing.vlstm_hidden,
        vlstm_latent=sharing.vlstm_latent,
        cvae_latent=sharing.cvae_latent,
        cvae_beta=sharing.cvae_beta,
        aux_samples=sharing.aux_samples,
        response_steps=sharing.response_steps,
        response_updates=sharing.response_updates,
        response_batch=sharing.response_batch,
        response_lr=sharing.response_lr,
        response_temperature=sharing.response_temperature,
        seps_samples=sharing.seps_samples,
        lcf_lr=ppo.lcf_lr,
    )
    for name, choice, allowed in (
        ("selector_signal", sharing.selector_signal, SELECTOR_SIGNALS),
        ("group_embedding", sharing.group_embedding, GROUP_EMBEDDINGS),
        ("agent_embedding", sharing.agent_embedding, AGENT_EMBEDDINGS),
        ("vlstm_decoder", sharing.vlstm_decoder, VLSTM_DECODERS),
        ("response_selector", sharing.response_selector, RESPONSE_SELECTORS),
        ("response_target", sharing.response_target, RESPONSE_TARGETS),
        ("response_model", sharing.response_model, RESPONSE_MODELS),
        ("response_prior", sharing.response_prior, RESPONSE_PRIORS),
        ("algo", ppo.algo, ALGOS),
    ):
        if choice not in allowed:
            raise ValueError(f"{name}: unknown {choice!r}; allowed: {', '.join(allowed)}")
    for name, value in (("gamma", ppo.gamma), ("gae_lambda", ppo.gae_lambda),
                        ("response_smoothing", sharing.response_smoothing)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: must be in [0, 1], got {value}")
    for name, value in (
        ("ent_coef", ppo.ent_coef),
        ("vf_coef", ppo.vf_coef),
        ("selector_ent_coef", sharing.selector_ent_coef),
        ("group_balance_coef", sharing.group_balance_coef),
        ("group_response_coef", sharing.group_response_coef),
    ):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
    n = config.num_agents
    if sharing.selector_updates < 0:
        raise ValueError(f"selector_updates: must be 0 (one per episode) or a positive number of "
                         f"steps, got {sharing.selector_updates}")
    if sharing.vlstm_grad_sequences < 0:
        raise ValueError(f"vlstm_grad_sequences: must be 0 (every agent sequence) or a positive "
                         f"number of sequences, got {sharing.vlstm_grad_sequences}")
    if sharing.vlstm_grad_steps < 0:
        raise ValueError(f"vlstm_grad_steps: must be 0 (the whole episode) or a positive number "
                         f"of steps, got {sharing.vlstm_grad_steps}")
    if not 1 <= sharing.num_groups <= n:
        raise ValueError(
            f"num_groups: must be between 1 and the number of agents ({n}), got {sharing.num_groups}"
        )
    per_iteration = config.num_envs * config.episode_length
    agent_steps = per_iteration * n
    if agent_steps > MAX_STEPS:
        raise ValueError(f"num_envs: one iteration holds num_envs {config.num_envs} x episode "
                         f"length {config.episode_length} x agents {n} = {agent_steps} agent "
                         f"transitions; at most {MAX_STEPS} (int32 indices)")
    if config.total_steps > MAX_STEPS:
        raise ValueError(f"total_steps: must be at most {MAX_STEPS} (int32 step counter), "
                         f"got {config.total_steps}")
    if config.total_steps < per_iteration:
        raise ValueError(
            f"total_steps: {config.total_steps} is less than one iteration "
            f"(num_envs {config.num_envs} x episode length {config.episode_length} = {per_iteration})"
        )
    _validate_combination(config)


def _validate_combination(config: TrainConfig) -> None:
    """What a method or an algorithm needs from the scenario and the budget."""
    env = config.env.build()
    mesh.check_split(config.num_envs, config.devices, config.agent_devices, int(env.num_agents))
    if config.algo == "mappo" and int(getattr(env, "global_state_dim", 0)) <= 0:
        raise ValueError(f"algo: mappo needs the environment's global state, but {config.env.name!r} "
                         "has none (global_state_dim = 0); use ippo or copo")
    if config.algo == "copo":
        neighbourhoods.neighbourhood(env)  # raises if the scenario has no neighbourhoods
    if config.method_spec.assignment == "types" and getattr(env, "agent_types", None) is None:
        raise ValueError(f"method: {config.method} gives each agent the parameter set of its true "
                         f"type, but {config.env.name!r} defines no agent types; scenarios that "
                         "do: lbf with fixed levels (lbf-1, lbf-2), rware (the robot colours), "
                         "rolegame")
    if config.method == "seps":
        fraction = config.sharing.seps_pretrain_fraction
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"seps_pretrain_fraction: must be in (0, 1), got {fraction}")
        if config.seps_pretrain_iterations >= config.num_iterations:
            raise ValueError(
                f"seps_pretrain_fraction: {fraction} of {config.num_iterations} iterations leaves no "
                "iteration after pre-training; raise total_steps or lower the fraction")
