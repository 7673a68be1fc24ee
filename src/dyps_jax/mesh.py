"""Several devices: a training run's environment batch E (and optionally its agent axis N) split
over a device mesh.

One training run places its E parallel environments over the local devices: a 2-D `Mesh` with
axes ("envs", "agents") of D_e x D_a devices. Every array with a leading environment axis (the
environments' states, the rollout's transitions `[T, E, ...]` along their second axis, the DyPS
agent embeddings h_a and last choices `[E, N, ...]`) is split into equal blocks of E / D_e
environments; where the dimension after the environment axis is the agent axis N and D_a > 1, it
is split into blocks of N / D_a agents as well, so a scenario with few environments and thousands
of agents (medical: E = 2, N = 3,130) can still use more devices than it has environments.
Parameters and optimiser states are replicated. `make_train_fns` only marks these placements
(`jax.lax.with_sharding_constraint`); XLA's SPMD partitioner inserts the collectives (the
all-reduce of gradients, the gathers of PPO minibatches drawn across environments and agents, the
exchanges between agents an environment step needs), so the program computes the same numbers as
on one device, up to the order of floating-point sums.

The agent axis is found by its size: a leaf whose dimension after the environment axis equals N is
split there. A leaf that has N entries there for another reason is split too, which can only cost
communication, never change a result: the constraints say where data lives, not what is computed.

With one device no constraint is added: the program is exactly the single-device one.
docs/architecture.md, "Several devices" describes multi-host use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "envs"
AGENT_AXIS = "agents"


def check_split(num_envs: int, devices: int, agent_devices: int = 1,
                num_agents: int | None = None) -> None:
    """Raises ValueError unless the devices can split the environments (and agents) evenly.

    devices: all devices of the run (0 = every local device, checked by `resolve_devices`);
    agent_devices: how many of them split the agent axis (devices / agent_devices split E).
    """
    if devices < 0:
        raise ValueError(f"devices: must be >= 0 (0 = all local devices), got {devices}")
    if agent_devices < 1:
        raise ValueError(f"agent_devices: must be >= 1 (1 = the agent axis is not split), got "
                         f"{agent_devices}")
    if num_agents is not None and num_agents % agent_devices:
        divisors = [d for d in range(1, min(num_agents, 64) + 1) if num_agents % d == 0]
        raise ValueError(f"agent_devices: {num_agents} agents cannot be split evenly over "
                         f"{agent_devices} devices; allowed: a divisor of {num_agents} "
                         f"({', '.join(map(str, divisors))}, ...)")
    if devices and devices % agent_devices:
        raise ValueError(f"devices: {devices} devices cannot form a mesh with agent_devices = "
                         f"{agent_devices}; devices must be a multiple of {agent_devices}")
    env_devices = devices // agent_devices
    if env_devices and num_envs % env_devices:
        raise ValueError(f"num_envs: {num_envs} environments cannot be split evenly over "
                         f"{env_devices} devices; num_envs must be a multiple of {env_devices}")


def resolve_devices(requested: int, num_envs: int, agent_devices: int = 1,
                    num_agents: int | None = None) -> int:
    """The number of devices a run uses: `requested` (0 = every local device), checked against
    the local devices, `num_envs` and the agent split (`check_split`)."""
    check_split(num_envs, requested, agent_devices, num_agents)
    available = jax.local_device_count()
    if requested > available:
        raise ValueError(f"devices: {requested} requested but only {available} local "
                         f"{jax.default_backend()} device(s); allowed: 0..{available}")
    count = requested or available
    check_split(num_envs, count, agent_devices, num_agents)
    return count


@dataclass(frozen=True)
class EnvSharding:
    """Placement of a run's arrays; `mesh` None (one device) makes every method the identity.

    num_agents: the size of the agent axis split over the mesh's "agents" axis (0: not split).
    """

    mesh: Mesh | None
    num_agents: int = 0

    @staticmethod
    def create(requested: int, num_envs: int, agent_devices: int = 1,
               num_agents: int = 0) -> EnvSharding:
        count = resolve_devices(requested, num_envs, agent_devices, num_agents or None)
        if count == 1:
            return EnvSharding(None)
        grid = np.array(jax.local_devices()[:count]).reshape(count // agent_devices,
                                                             agent_devices)
        return EnvSharding(Mesh(grid, (AXIS, AGENT_AXIS)),
                           num_agents if agent_devices > 1 else 0)

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def _mesh(self) -> Mesh:
        if self.mesh is None:
            raise ValueError("a one-device run has no sharding to give (mesh is None)")
        return self.mesh

    def spec(self, axis: int, shape: tuple[int, ...] = ()) -> NamedSharding:
        """An array of `shape` split along dimension `axis` (the environment axis) over the mesh,
        and along `axis + 1` too when that is the agent axis and the agents are split."""
        parts: list[str | None] = [None] * axis + [AXIS]
        if self.num_agents and len(shape) > axis + 1 and shape[axis + 1] == self.num_agents:
            parts.append(AGENT_AXIS)
        return NamedSharding(self._mesh(), P(*parts))

    def replicated(self) -> NamedSharding:
        return NamedSharding(self._mesh(), P())

    def envs(self, tree: Any, axis: int = 0) -> Any:
        """Marks every leaf of `tree` as split along its environment axis `axis` (and the agent
        axis after it, `spec`) (inside jit)."""
        if self.mesh is None:
            return tree
        return jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, self.spec(axis, x.shape)), tree)

    def put_envs(self, tree: Any, axis: int = 0) -> Any:
        """`envs` for concrete arrays (outside jit): places every leaf of `tree` on the mesh."""
        if self.mesh is None:
            return tree
        return jax.tree.map(lambda x: jax.device_put(x, self.spec(axis, np.shape(x))), tree)

    def same(self, tree: Any) -> Any:
        """Marks every leaf of `tree` as replicated on every device (inside jit)."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.replicated())
