"""Pure-JAX environments of the paper's four scenarios and the scenario registry."""

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
]
