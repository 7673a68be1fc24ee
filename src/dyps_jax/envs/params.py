"""Declared, typed environment parameters, checked by one mechanism for every environment.

An environment dataclass declares each parameter's type by its annotation and its range with
`param`::

    num_agents: int = param(6, ge=1)
    penalty: float = param(0.0, ge=0.0)
    force_coop: bool = False

`parse_params(cls, params)` turns values read from TOML, the command line or `envs.make` into the
declared types (so `"False"`, `"no"` and `"0"` are the boolean False, never a truthy string) and
`check_fields(env)` rejects a value of the wrong type or out of its range, naming the parameter,
the value and what is allowed. `envs.register` runs `check_fields` before an environment's own
`__post_init__`, which is left with the checks that relate several parameters.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def param(default: Any, *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with a declared range: `ge`/`gt` lower and `le` upper bounds, or the
    allowed `choices` of a string."""
    limits = {"ge": ge, "gt": gt, "le": le, "choices": choices}
    return dataclasses.field(default=default,
                             metadata={k: v for k, v in limits.items() if v is not None})


def _declared(cls: type) -> dict[str, tuple[tuple[type, ...], dict[str, Any]]]:
    """name -> (allowed types, range metadata) of each init field of an environment class."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        out[f.name] = (tuple(type(None) if a is None else a for a in allowed), dict(f.metadata))
    return out


def _type_name(allowed: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             type(None): "none"}
    return " or ".join(names.get(t, t.__name__) for t in allowed)


def _parse_one(value: Any, allowed: tuple[type, ...]) -> Any:
    """`value` converted to the first allowed type it unambiguously denotes, else unchanged."""
    if isinstance(value, str):
        text = value.strip().lower()
        if bool in allowed:
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        if int in allowed:
            try:
                return int(text)
            except ValueError:
                pass
        if float in allowed:
            try:
                return float(text)
            except ValueError:
                pass
        if type(None) in allowed and text in ("none", ""):
            return None
        return value
    if float in allowed and int not in allowed and isinstance(value, int) \
            and not isinstance(value, bool):
        return float(value)
    return value


def parse_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """Converts raw parameter values to the types `cls` declares; unknown names raise ValueError."""
    declared = _declared(cls)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"env: unknown parameter(s) {unknown} for kind {getattr(cls, 'kind', '?')!r}; "
                         f"allowed: {sorted(declared)}")
    return {name: _parse_one(value, declared[name][0]) for name, value in params.items()}


def _type_ok(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed
    if isinstance(value, float):
        return float in allowed and math.isfinite(value)
    return any(isinstance(value, t) for t in allowed)


def check_fields(env: Any) -> None:
    """Raises ValueError for the first parameter of `env` of the wrong type or out of range."""
    for name, (allowed, limits) in _declared(type(env)).items():
        value = getattr(env, name)
        if not _type_ok(value, allowed):
            finite = " (finite)" if float in allowed else ""
            raise ValueError(f"env.{name}: must be {_type_name(allowed)}{finite}, got {value!r}")
        if value is None:
            continue
        for key, ok, words in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                               ("le", lambda v, b: v <= b, "<=")):
            if key in limits and not ok(value, limits[key]):
                raise ValueError(f"env.{name}: must be {words} {limits[key]}, got {value!r}")
        if "choices" in limits and value not in limits["choices"]:
            shown = ", ".join(c if c else "''" for c in limits["choices"])
            raise ValueError(f"env.{name}: unknown {value!r}; allowed: {shown}")

