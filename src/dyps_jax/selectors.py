"""The group selectors of DyPS's representation ablations (paper Table 3).

Each has the call signature of `grouping.GroupSelector` (eq. 13), so the same selector losses
(`grouping.selector_loss`, `grouping.group_advantage_loss`) and the same train loop drive them:

    (embeddings f32[E, N, H], group_embeddings f32[M, Z]) -> (logits f32[E, N, M], value f32[E])

* w/o CVAE, `MLPSelector(with_embedding=True)`: logits = MLP([I_a, h_a]), no group embedding;
* w/o VLSTM, `NoVLSTMSelector`: logits = I_a W z_g, no agent embedding;
* w/o Repr, `MLPSelector(with_embedding=False)`: logits = MLP(I_a), neither.

What a selector does not use it never reads, so its logits cannot depend on it (tests check this).
The value (the baseline of the paper's team-return signal) is an MLP of the mean agent embedding
when the selector sees h_a, else one learned number.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dyps_jax.grouping import GroupSelector
from dyps_jax.nets import MLP


def _identity_rows(num_envs: int, num_agents: int) -> jax.Array:
    """I_a for every agent of every environment: f32[E, N, N]."""
    return jnp.broadcast_to(jnp.eye(num_agents), (num_envs, num_agents, num_agents))


class _ConstantValue(nn.Module):
    @nn.compact
    def __call__(self, num_envs: int) -> jax.Array:
        return jnp.broadcast_to(self.param("value", nn.initializers.zeros, ()), (num_envs,))


class MLPSelector(nn.Module):
    """Table 3, w/o CVAE (`with_embedding`): logits = MLP([I_a, h_a]); w/o Repr: logits = MLP(I_a).

    No group embedding: the M outputs of the MLP name the groups.
    """

    num_agents: int
    with_embedding: bool
    hidden: int = 64

    @nn.compact
    def __call__(self, embeddings: jax.Array, group_embeddings: jax.Array):
        chex.assert_rank(embeddings, 3)
        num_envs, num_groups = embeddings.shape[0], group_embeddings.shape[0]
        x = _identity_rows(num_envs, self.num_agents)
        if not self.with_embedding:
            return MLP((self.hidden, num_groups), name="actor")(x), _ConstantValue(
                name="critic")(num_envs)
        x = jnp.concatenate([x, embeddings], axis=-1)
        logits = MLP((self.hidden, num_groups), name="actor")(x)
        return logits, MLP((self.hidden, 1), name="critic")(embeddings.mean(axis=1))[..., 0]


class NoVLSTMSelector(nn.Module):
    """Table 3, w/o VLSTM: logits = I_a W z_g (eq. 13 without h_a)."""

    num_agents: int

    @nn.compact
    def __call__(self, embeddings: jax.Array, group_embeddings: jax.Array):
        chex.assert_rank(embeddings, 3)
        w_id = self.param("w_id", nn.initializers.lecun_normal(),
                          (self.num_agents, group_embeddings.shape[-1]))
        logits = jnp.broadcast_to(w_id @ group_embeddings.T,
                                  (embeddings.shape[0], self.num_agents, group_embeddings.shape[0]))
        return logits, _ConstantValue(name="critic")(embeddings.shape[0])


def build(selector: str, num_agents: int) -> nn.Module:
    """The selector module of a `MethodSpec.selector` name."""
    modules = {
        "dyps": lambda: GroupSelector(num_agents),
        "no-cvae": lambda: MLPSelector(num_agents, with_embedding=True),
        "no-vlstm": lambda: NoVLSTMSelector(num_agents),
        "no-repr": lambda: MLPSelector(num_agents, with_embedding=False),
    }
    if selector not in modules:
        raise ValueError(f"selector: unknown {selector!r}; allowed: {', '.join(modules)}")
    return modules[selector]()
