"""Several devices: the environment batch E of a training run split over a device mesh.

One training run places its E parallel environments over the local devices (a 1-D `Mesh` with
one axis, "envs"): every array with a leading environment axis (the environments' states, the
rollout's transitions `[T, E, ...]` along their second axis, the DyPS agent embeddings h_a and
last choices `[E, N, ...]`) is split into equal blocks of E / D environments, one per device;
parameters and optimiser states are replicated. `make_train_fns` only marks these placements
(`jax.lax.with_sharding_constraint`); XLA's SPMD partitioner inserts the collectives (the
all-reduce of gradients, the gathers of PPO minibatches drawn across environments), so the
program computes the same numbers as on one device, up to the order of floating-point sums.

With one device no constraint is added: the program is exactly the single-device one.
docs/architecture.md, "Several devices" describes multi-host use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "envs"


def check_split(num_envs: int, devices: int) -> None:
    """Raises ValueError unless `devices` >= 0 and (when > 0) divides `num_envs`."""
    if devices < 0:
        raise ValueError(f"devices: must be >= 0 (0 = all local devices), got {devices}")
    if devices and num_envs % devices:
        raise ValueError(f"num_envs: {num_envs} environments cannot be split evenly over "
                         f"{devices} devices; num_envs must be a multiple of {devices}")


def resolve_devices(requested: int, num_envs: int) -> int:
    """The number of devices a run uses: `requested` (0 = every local device), checked against
    the local devices and `num_envs` (each device holds num_envs / devices environments)."""
    check_split(num_envs, requested)
    available = jax.local_device_count()
    if requested > available:
        raise ValueError(f"devices: {requested} requested but only {available} local "
                         f"{jax.default_backend()} device(s); allowed: 0..{available}")
    count = requested or available
    check_split(num_envs, count)
    return count


@dataclass(frozen=True)
class EnvSharding:
    """Placement of a run's arrays; `mesh` None (one device) makes every method the identity."""

    mesh: Mesh | None

    @staticmethod
    def create(requested: int, num_envs: int) -> EnvSharding:
        count = resolve_devices(requested, num_envs)
        if count == 1:
            return EnvSharding(None)
        return EnvSharding(Mesh(jax.local_devices()[:count], (AXIS,)))

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def _mesh(self) -> Mesh:
        if self.mesh is None:
            raise ValueError("a one-device run has no sharding to give (mesh is None)")
        return self.mesh

    def spec(self, axis: int) -> NamedSharding:
        """Arrays split along dimension `axis` (the environment axis) over the mesh."""
        return NamedSharding(self._mesh(), P(*([None] * axis), AXIS))

    def replicated(self) -> NamedSharding:
        return NamedSharding(self._mesh(), P())

    def envs(self, tree: Any, axis: int = 0) -> Any:
        """Marks every leaf of `tree` as split along its environment axis `axis` (inside jit)."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.spec(axis))

    def same(self, tree: Any) -> Any:
        """Marks every leaf of `tree` as replicated on every device (inside jit)."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.replicated())
