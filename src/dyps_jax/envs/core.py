"""The environment protocol, the registry of environment kinds and the scenario presets.

Every environment is a frozen dataclass of static parameters (hashable, so it can be closed over by
`jax.jit`) with two pure methods::

    reset(key)                  -> (state, TimeStep)
    step(key, state, actions)   -> (state, TimeStep)

`state` is any pytree; `TimeStep` is below. `Environment` lists everything the trainer, the rules
and the jumanji adapter read from an environment. Both methods must work under `jax.vmap` over a
batch of environments and must draw randomness only from `key`; `envs.conformance.check_environment`
checks all of it for any environment (docs/architecture.md, "The environment protocol").

Scenario presets are TOML files (`envs/*.toml` in the repository, `dyps_jax/presets/` in the wheel)
with an `[env]` table (the environment kind and its parameters) and an optional `[train]` table (the
paper's Table 6 hyper-parameters for that scenario).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np
from flax import struct

from dyps_jax.envs import params


@struct.dataclass
class TimeStep:
    """What an environment returns after `reset` and `step`.

    Attributes:
      obs: f32[N, obs_dim], one observation per agent.
      reward: f32[N], per-agent reward of the last transition (zeros after `reset`).
      done: bool[], the episode has ended (terminal state or time limit).
      action_mask: bool[N, num_actions], the actions each agent may take now.
      global_state: f32[global_state_dim], the state a centralised critic sees.
      metrics: dict[str, f32[]], scenario metrics of the last transition (summed over an episode by
        the training loop, e.g. food collected, GMV).
    """

    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    action_mask: jax.Array
    global_state: jax.Array
    metrics: dict[str, jax.Array]


ACTION_KINDS = ("categorical", "gaussian", "pointer")


@runtime_checkable
class Environment(Protocol):
    """Structural type of a dyps-jax environment: what the trainer reads, with its shapes.

    N = `num_agents`, A = `num_actions`. The action layout depends on `action_kind`:

    * `"categorical"`: actions int32[N] in [0, A); `action_mask` bool[N, A], the actions allowed now
      (the policy never samples a masked action).
    * `"gaussian"`: actions f32[N, A], one real vector per agent (f32[N] when A = 1, as the trainer
      passes it); `action_mask` bool[N, A] is all True and unused.
    * `"pointer"`: actions int32[N, D], D draws per agent, each the index of one of A slots
      (slot 0 = no choice); `action_mask` bool[N, A + D] = [slot may be drawn (slot 0 always),
      draw d happens], the draws that happen being a prefix (the pointer head samples them in one
      pass). `pointer_layout` says how the pointer network splits an observation.

    `reset` returns `done` False and zero rewards. Every episode ends (`done` True) within
    `max_steps` steps: one training iteration runs exactly `max_steps` steps per environment and
    does not bootstrap past them.
    """

    @property
    def kind(self) -> str:
        """The registry name (`[env] kind` in a preset), set by `register`."""
        ...

    @property
    def num_agents(self) -> int:
        """N, agents per environment (the second axis of every per-agent array)."""
        ...

    @property
    def obs_dim(self) -> int:
        """D, so `TimeStep.obs` is f32[N, D]."""
        ...

    @property
    def num_actions(self) -> int:
        """A: categorical actions, Gaussian action dimensions, or pointer slots."""
        ...

    @property
    def global_state_dim(self) -> int:
        """S, so `TimeStep.global_state` is f32[S] (for a centralised critic)."""
        ...

    @property
    def max_steps(self) -> int:
        """T, the episode length the trainer scans over (an upper bound on every episode)."""
        ...

    @property
    def action_kind(self) -> str:
        """One of `ACTION_KINDS`: how actions look and which policy head the trainer builds."""
        ...

    @property
    def pointer_layout(self) -> tuple[int, int, int] | None:
        """(cell_dim, num_slots, slot_dim) for `"pointer"` (None otherwise): an observation is
        [cell_dim features, num_slots x slot_dim slot features, any extra features], and
        num_slots = A."""
        ...

    @property
    def agent_types(self) -> np.ndarray | None:
        """int32[N], each agent's true hidden type (>= 0) where the scenario has one, else None:
        the grouping diagnostics read it (ARI, purity, role separation) and the type-oracle
        method ps-types uses it as its fixed assignment."""
        ...

    def reset(self, key: jax.Array) -> tuple[Any, TimeStep]: ...

    def step(self, key: jax.Array, state: Any, actions: jax.Array) -> tuple[Any, TimeStep]: ...


_REGISTRY: dict[str, type] = {}


def register(kind: str) -> Callable[[type], type]:
    """Class decorator: makes an environment dataclass constructible as `[env] kind = "<kind>"`."""

    def decorator(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"environment class {cls.__name__} must be a dataclass")
        _REGISTRY[kind] = cls
        setattr(cls, "kind", kind)  # noqa: B010  (a class attribute every instance reads)
        own_checks = cls.__dict__.get("__post_init__")

        def __post_init__(self) -> None:
            params.check_fields(self)  # declared types and ranges first, then the class's own
            if own_checks is not None:
                own_checks(self)

        setattr(cls, "__post_init__", __post_init__)  # noqa: B010
        return cls

    return decorator


def env_kinds() -> list[str]:
    return sorted(_REGISTRY)


def _preset_dirs() -> list[Path]:
    """Where presets live: inside the installed wheel, or `envs/` of a source checkout."""
    dirs = []
    packaged = resources.files("dyps_jax") / "presets"
    if packaged.is_dir():
        dirs.append(Path(str(packaged)))
    checkout = Path(__file__).resolve().parents[3] / "envs"
    if checkout.is_dir():
        dirs.append(checkout)
    return dirs


def preset_names() -> list[str]:
    """Names accepted by `--env` (file stems of the preset TOML files)."""
    return sorted({p.stem for d in _preset_dirs() for p in d.glob("*.toml")})


def resolve_preset(name_or_path: str | Path) -> Path:
    """Maps a preset name (`lbf-1`) or a path to a TOML file onto an existing file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError(f"env: scenario file {text!r} does not exist")
        return path
    for d in _preset_dirs():
        candidate = d / f"{text}.toml"
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"env: unknown scenario {text!r}; allowed: {', '.join(preset_names())} "
        "or a path to a .toml file"
    )


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """Reads a scenario preset: `{"name": str, "env": {...}, "train": {...}}`.

    Raises ValueError naming the file for malformed TOML or a missing/invalid `[env]` table.
    """
    path = resolve_preset(name_or_path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"env: malformed TOML in {path}: {err}") from None
    unknown = set(data) - {"name", "env", "train"}
    if unknown:
        raise ValueError(
            f"env: unknown table(s) {sorted(unknown)} in {path}; allowed: name, [env], [train]"
        )
    env = data.get("env")
    if not isinstance(env, dict) or "kind" not in env:
        raise ValueError(f"env: {path} needs an [env] table with a 'kind' key")
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise ValueError(f"env: [train] in {path} must be a table, got {type(train).__name__}")
    return {"name": str(data.get("name", path.stem)), "env": dict(env), "train": dict(train)}


def parse_params(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """Parameter values (from TOML, the command line or `make`) converted to the types the
    environment kind declares: `"False"`/`"no"` are False, `"3"` is 3 for an integer parameter."""
    if kind not in _REGISTRY:
        raise ValueError(f"env.kind: unknown environment kind {kind!r}; allowed: {env_kinds()}")
    return params.parse_params(_REGISTRY[kind], values)


def build(kind: str, values: dict[str, Any]) -> Environment:
    """Constructs an environment of a registered kind; parses and validates every parameter (type,
    range, then the kind's own checks, which read any file input) before anything is compiled."""
    return _REGISTRY[kind](**parse_params(kind, values))


def make(name_or_path: str | Path, **overrides: Any) -> Environment:
    """Builds the environment of a scenario preset, e.g. `make("lbf-1", num_agents=9)`.

    Args:
      name_or_path: a preset name (see `preset_names()`) or a path to a scenario TOML file.
      **overrides: replace parameters of the preset's `[env]` table.
    """
    spec = load_preset(name_or_path)["env"]
    kind = spec.pop("kind")
    spec.update(overrides)
    return build(kind, spec)


def check_positive(owner: str, **values: int | float) -> None:
    """Raises ValueError naming the first value that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{owner}.{name}: must be > 0, got {value!r}")

