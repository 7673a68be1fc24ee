"""Pure-JAX environments of the paper's four scenarios, the scenario registry and `to_jumanji`."""

from dyps_jax.envs import lbf, medical, ridehailing, rolegame, rware  # noqa: F401  (registers the environment kinds)
from dyps_jax.envs.core import (
    Environment,
    TimeStep,
    build,
    env_kinds,
    load_preset,
    make,
    preset_names,
    register,
    resolve_preset,
)


def __getattr__(name: str):
    # jumanji takes about two seconds to import: load the adapter only when it is asked for.
    if name == "to_jumanji":
        from dyps_jax.envs.jumanji_adapter import to_jumanji

        return to_jumanji
    raise AttributeError(f"module 'dyps_jax.envs' has no attribute {name!r}")


__all__ = [
    "Environment",
    "TimeStep",
    "build",
    "env_kinds",
    "load_preset",
    "make",
    "preset_names",
    "register",
    "resolve_preset",
    "to_jumanji",
]
