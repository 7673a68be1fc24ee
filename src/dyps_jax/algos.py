"""The base algorithms under any sharing method: IPPO, MAPPO, CoPO (paper Table 4).

Each is a reward, a critic input and an advantage for the one PPO update (docs/methods.md):

* ippo: per-agent reward, each group's critic sees the agent's own policy input;
* mappo (Yu et al. 2022): team reward r_team = mean_n r_n given to every agent; each group's critic
  sees the agent's input concatenated with the environment's global state (the agent-specific global
  state of MAPPO), the actor still sees the agent's input only;
* copo (Peng et al. 2021): the actor ascends the coordinated advantage
  A^C = cos(phi) A^I + sin(phi) A^N (CoPO eq. 8), A^I the agent's own advantage and A^N that of a
  neighbourhood critic trained on the neighbourhood reward (`neighbourhoods.py`); phi, the local
  coordination factor, is drawn per agent and episode from N(mu, sigma) clipped to [-pi/2, pi/2],
  and (mu, log sigma) are meta-updated to raise the global return (CoPO eq. 10, `lcf_meta_loss`)
  using a global critic trained on the team reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

ALGOS = ("ippo", "mappo", "copo")
LCF_INIT_STD = 0.1  # radians


def team_reward(reward: jax.Array) -> jax.Array:
    """r_team = mean over agents, given to every agent. reward: f32[..., N] -> f32[..., N].

    The mean rather than the sum keeps the critics' targets at the per-agent scale (PPO's clipped
    value loss moves values by at most clip_eps per step); the normalised advantages are the same.
    """
    return jnp.broadcast_to(reward.mean(axis=-1, keepdims=True), reward.shape)


def init_lcf() -> dict[str, jax.Array]:
    """CoPO's LCF distribution, starting selfish (mean 0)."""
    return {"mean": jnp.zeros(()), "log_std": jnp.log(jnp.asarray(LCF_INIT_STD))}


def lcf_angle(params: dict[str, jax.Array], noise: jax.Array) -> jax.Array:
    """phi = clip(mean + std * noise, -pi/2, pi/2), differentiable in `params`. noise: f32[...]."""
    phi = params["mean"] + jnp.exp(params["log_std"]) * noise
    return jnp.clip(phi, -jnp.pi / 2, jnp.pi / 2)


def coordinated_advantage(phi: jax.Array, individual: jax.Array, neighbourhood: jax.Array):
    """CoPO eq. 8: cos(phi) A^I + sin(phi) A^N (all of one shape)."""
    return jnp.cos(phi) * individual + jnp.sin(phi) * neighbourhood


def lcf_meta_loss(
    lcf_params: dict[str, jax.Array],
    noise: jax.Array,
    surrogate: Callable[[Any, jax.Array], jax.Array],
    policy_params: Any,
    inner_lr: float,
    individual: jax.Array,
    neighbourhood: jax.Array,
    global_advantage: jax.Array,
) -> jax.Array:
    """Minus the global objective after one policy step on the coordinated objective (CoPO eq. 10).

    theta'(phi) = theta + inner_lr grad_theta S(theta, A^C(phi)) and the loss is -S(theta', A^G),
    with S(theta, A) = mean(pi_theta / pi_old * A), the surrogate. Its gradient in the LCF parameters
    is CoPO's meta-gradient (grad_theta' S(., A^G)) . (d theta' / d phi), taken exactly by automatic
    differentiation instead of CoPO's first-order product.

    Args:
      noise: f32[B, N], the standard normal draws that made each sample's phi.
      surrogate: (policy params, advantages f32[B, N]) -> scalar.
      individual, neighbourhood, global_advantage: f32[B, N], normalised advantages.
    """
    coordinated = coordinated_advantage(lcf_angle(lcf_params, noise), individual, neighbourhood)
    step = jax.grad(surrogate)(policy_params, coordinated)
    updated = jax.tree.map(lambda p, g: p + inner_lr * g, policy_params, step)
    return -surrogate(updated, global_advantage)
