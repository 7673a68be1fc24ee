"""Every sharing method as a row of one table: an assignment, an input, role models, a critic.

One rollout loop and one PPO update serve them all (docs/methods.md); `train.py` reads a method's
`MethodSpec` and never tests its name.

| method        | G          | assignment                                   | policy input    | extra      |
|---------------|------------|----------------------------------------------|-----------------|------------|
| nops          | N          | arange(N), fixed                             | o               |            |
| ps            | 1          | zeros, fixed                                 | o               |            |
| ps-id         | 1          | zeros, fixed                                 | o + one-hot id  |            |
| psa           | N          | arange(N), fixed                             | o               | shared V(o)|
| seps          | num_groups | zeros while pre-training, then k-means of ids| o               |            |
| dyps          | num_groups | sampled per episode, eq. 13                  | o               | VLSTM, CVAE|
| dyps-no-cvae  | num_groups | sampled, logits MLP([I_a, h_a])              | o               | VLSTM      |
| dyps-no-vlstm | num_groups | sampled, logits I_a W z_g                    | o               | CVAE       |
| dyps-no-repr  | num_groups | sampled, logits MLP(I_a)                     | o               |            |
| role-as-state | 1          | zeros, fixed                                 | o + h_a         | VLSTM      |
| ps-types      | K types    | the agent's true type, fixed (an oracle)     | o               |            |
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

ASSIGNMENTS = ("identity", "shared", "selector", "clusters", "types")
SELECTORS = ("dyps", "no-cvae", "no-vlstm", "no-repr")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What distinguishes a sharing method.

    Attributes:
      assignment: "identity" (agent n uses set n, G = N), "shared" (all use set 0, G = 1),
        "selector" (sampled every iteration from an eq. 13 selector, G = num_groups) or "clusters"
        (SePS: set 0 while pre-training, then a fixed clustering of agent ids, G = num_groups) or
        "types" (agent n uses the set of its true type `env.agent_types[n]`, G = the number of
        types: the grouping DyPS should find, given by an oracle, on scenarios that define types).
      selector: which eq. 13 selector scores the groups (`selectors.py`); None without one.
      agent_id: the policy input carries the agent's one-hot id (PS-id).
      role_embedding: the policy input carries h_a, the agent's VLSTM embedding (role-as-state).
      shared_critic: one critic shared by all agents besides each agent's own (PSA).
    """

    assignment: str
    selector: str | None = None
    agent_id: bool = False
    role_embedding: bool = False
    shared_critic: bool = False

    @property
    def trains_vlstm(self) -> bool:
        """h_a is used: by the selector (all but the w/o-VLSTM and w/o-Repr ablations) or as input."""
        return self.role_embedding or self.selector in ("dyps", "no-cvae")

    @property
    def trains_cvae(self) -> bool:
        """z_g is used by the selector (eq. 13 and the w/o-VLSTM ablation)."""
        return self.selector in ("dyps", "no-vlstm")

    @property
    def has_roles(self) -> bool:
        """The train state carries `RoleState` (VLSTM, CVAE, selector)."""
        return self.selector is not None or self.role_embedding

    def num_param_sets(self, num_agents: int, num_groups: int, num_types: int = 0) -> int:
        return {"identity": num_agents, "shared": 1, "types": num_types}.get(self.assignment,
                                                                            num_groups)


METHOD_SPECS: dict[str, MethodSpec] = {
    "dyps": MethodSpec("selector", selector="dyps"),
    "nops": MethodSpec("identity"),
    "ps": MethodSpec("shared"),
    "ps-id": MethodSpec("shared", agent_id=True),
    "psa": MethodSpec("identity", shared_critic=True),
    "seps": MethodSpec("clusters"),
    "dyps-no-cvae": MethodSpec("selector", selector="no-cvae"),
    "dyps-no-vlstm": MethodSpec("selector", selector="no-vlstm"),
    "dyps-no-repr": MethodSpec("selector", selector="no-repr"),
    "role-as-state": MethodSpec("shared", role_embedding=True),
    "ps-types": MethodSpec("types"),
}


def num_types(agent_types) -> int:
    """K, the number of true agent types of `env.agent_types` (int[N] or None: 0)."""
    return 0 if agent_types is None else int(max(agent_types)) + 1


def fixed_assignment(spec: MethodSpec, num_envs: int, num_agents: int,
                     agent_types=None) -> jax.Array:
    """int32[E, N] for the assignments that never change (SePS: the one of its pre-training).

    `agent_types` (int[N], the environment's) is what the "types" assignment uses.
    """
    if spec.assignment == "identity":
        row = jnp.arange(num_agents, dtype=jnp.int32)
    elif spec.assignment in ("shared", "clusters"):
        row = jnp.zeros(num_agents, jnp.int32)
    elif spec.assignment == "types":
        if agent_types is None:
            raise ValueError("assignment: 'types' needs the environment's agent_types")
        row = jnp.asarray(agent_types, jnp.int32)
    else:
        raise ValueError(f"assignment: {spec.assignment!r} is sampled, not fixed")
    return jnp.broadcast_to(row, (num_envs, num_agents))


def feature_dim(spec: MethodSpec, obs_dim: int, num_agents: int, embedding_dim: int) -> int:
    return (obs_dim + (num_agents if spec.agent_id else 0)
            + (embedding_dim if spec.role_embedding else 0))


def policy_features(spec: MethodSpec, obs: jax.Array, embedding: jax.Array | None) -> jax.Array:
    """The policy input of every agent.

    Args:
      obs: f32[..., N, D].
      embedding: f32[..., N, H], h_a (used by role-as-state only; None otherwise).

    Returns:
      f32[..., N, feature_dim]: [o, one-hot id (PS-id), h_a (role-as-state)].
    """
    parts = [obs]
    if spec.agent_id:
        num_agents = obs.shape[-2]
        parts.append(jnp.broadcast_to(jnp.eye(num_agents, dtype=obs.dtype),
                                      obs.shape[:-1] + (num_agents,)))
    if spec.role_embedding:
        assert embedding is not None, "role-as-state needs the agent embeddings"
        parts.append(jnp.broadcast_to(embedding, obs.shape[:-1] + embedding.shape[-1:]))
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else obs
