"""Group response models: how the environment answers each group's agents (ours, docs/grouping.md).

A role shows in how the environment answers an agent's actions, whatever its policy: a warehouse
robot's colour rotates its actions, so the same action moves robots of different colours
differently; a role-game type changes which action pays. Every group m has a model of that answer,
and the groups and their models form a mixture fitted by EM: `response_log_likelihood` scores every
agent under every group (the E-step's evidence, and the selector's fit), `response_nll` fits every
model to the agents in proportion to their responsibilities (the M-step). Two kinds of model:

* `forward`: p_m(e_{t+1} | s_t, a_t), a diagonal Gaussian of e_{t+1} = (s_{t+1}, r_{t+1}) (the
  VLSTM's target, paper eq. 7, for a whole group instead of one agent's history) or s_{t+1} alone.
* `inverse`: p_m(a_t | s_t, e_{t+1}), the action that produced the observed outcome (an inverse
  dynamics model, as in Pathak et al. 2017's curiosity module), in the policy's own action
  distribution. The outcome is an input, so features of s_{t+1} that no action decides (other
  agents, new requests, the next cue) add no noise to the evidence; what is scored is only which
  action this group would have needed to get there.

Each group has its own network, parameters stacked on a leading [M] axis (flax `nn.vmap`), as the
experts of a mixture. One network conditioned on the CVAE's z_g served every group until git
2f34bd3; on the planted two-kind problem (`experiments/response_probe.py`) it explained its own
kind better for as few as 47 % of the samples, depending on the initialisation; one network per
group, for all. The models have their own optimiser and take `SharingConfig.response_updates`
steps per training iteration (the M-step).
"""

from __future__ import annotations

from typing import NamedTuple, cast

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from dyps_jax.nets import MLP
from dyps_jax.ppo import action_distribution, head_size

RESPONSE_MODELS = ("forward", "inverse")


class ResponseData(NamedTuple):
    """B transitions of agents, what either kind of response model reads or predicts."""

    states: jax.Array  # f32[B, D], s_t
    actions: jax.Array  # a_t as the environment takes it: int32[B], f32[B, A] or int32[B, draws]
    encoded: jax.Array  # f32[B, A], a_t one-hot / multi-hot / real (the VLSTM's encoding)
    outcomes: jax.Array  # f32[B, R], e_{t+1}
    action_mask: jax.Array  # bool[B, ...], the policy's action mask at s_t (`ppo.action_distribution`)


class GroupResponse(nn.Module):
    """M two-layer MLPs (64 tanh units each): every group's forward or inverse model."""

    num_groups: int
    outcome_dim: int  # R, the size of e_{t+1}
    num_actions: int
    action_kind: str = "categorical"
    kind: str = "forward"  # RESPONSE_MODELS
    hidden: int = 64

    @property
    def scored_numbers(self) -> int:
        """How many numbers one transition's log-likelihood is a sum over: R (forward), 1."""
        return self.outcome_dim if self.kind == "forward" else 1

    @nn.compact
    def head(self, states: jax.Array, given: jax.Array) -> jax.Array:
        """states: f32[B, D]; given: the encoded a_t (forward) or e_{t+1} (inverse) -> every
        group's output, f32[M, B, 2 R] (a mean and a log-std per outcome) or [M, B, head_size]."""
        width = (2 * self.outcome_dim if self.kind == "forward"
                 else head_size(self.action_kind, self.num_actions))
        experts = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=None, out_axes=0, axis_size=self.num_groups)
        return experts((self.hidden, self.hidden, width))(jnp.concatenate([states, given], -1))

    def __call__(self, data: ResponseData):
        """Every group's distribution, batch shape [M, B]: of e_{t+1} (forward), of a_t (inverse)."""
        out = self.head(data.states, data.encoded if self.kind == "forward" else data.outcomes)
        if self.kind == "forward":  # the Gaussian policy head's distribution (its mask is unused)
            return action_distribution("gaussian", out, out)
        mask = jnp.broadcast_to(data.action_mask, (self.num_groups,) + data.action_mask.shape)
        return action_distribution(self.action_kind, out, mask)


def init_response(model: GroupResponse, key: jax.Array, state_dim: int):
    given = model.num_actions if model.kind == "forward" else model.outcome_dim
    return model.init(key, jnp.zeros((1, state_dim)), jnp.zeros((1, given)),
                      method=GroupResponse.head)


def response_log_likelihood(model: GroupResponse, params, data: ResponseData) -> jax.Array:
    """log p_m per scored number (`GroupResponse.scored_numbers`) under every group m: f32[B, M].

    forward: log p_m(e_{t+1} | s_t, a_t) / R; inverse: log p_m(a_t | s_t, e_{t+1}).
    """
    chex.assert_axis_dimension(data.outcomes, -1, model.outcome_dim)
    dist = cast(distrax.Distribution, model.apply(params, data))
    target = data.outcomes if model.kind == "forward" else data.actions
    ll = cast(jax.Array, dist.log_prob(jnp.broadcast_to(target, (model.num_groups,) + target.shape)))
    return ll.T / model.scored_numbers


def response_nll(
    model: GroupResponse, params, responsibilities: jax.Array, data: ResponseData,
    weights: jax.Array,
) -> jax.Array:
    """-sum_m r[b, m] log p_m per scored number, the weighted mean over b.

    The M-step of EM for a mixture of regressions: every group's model is fitted to every sample in
    proportion to the responsibility r[b, m] of group m for the sample's agent (in training, the
    posterior of its group). A one-hot r trains each sample under one group only.

    Args:
      responsibilities: f32[B, M], rows summing to 1; data: B transitions; weights: f32[B].
    """
    chex.assert_rank(responsibilities, 2)
    chex.assert_axis_dimension(responsibilities, 1, model.num_groups)
    chex.assert_equal_shape_prefix([responsibilities, weights], 1)
    ll = response_log_likelihood(model, params, data)
    nll = -(responsibilities * ll).sum(axis=-1)
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)
