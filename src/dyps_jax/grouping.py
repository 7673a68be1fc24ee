"""The Group Selection Module of DyPS (paper §3.3, eq. 13) and its actor-critic update.

For agent n and group m the score is the bilinear form `[I_a[n], h_a[n]] W z_g[m]`, and the
assignment probabilities are its softmax over m (eq. 13). With a one-hot identity I_a, the product
`I_a[n] W_id` is row n of `W_id`, so the one-hot vector is never built: that keeps the selector
cheap with thousands of agents.

Two training signals (`SharingConfig.selector_signal`, docs/grouping.md):

* `team-return`, the paper's: the decision is a one-step MDP per episode whose reward is the sum of
  all agents' episode returns, trained by REINFORCE with a critic V(s_g) on the mean agent embedding as
  baseline; rewards are standardised by running statistics.
* `group-advantage`, ours: for every agent n and every group m, the estimated advantage of agent n
  acting with group m's policy instead of its own during the last episode (`group_advantages`), and the
  selector ascends the expected value sum_m a_g[m, n] A[n, m] exactly, over all groups at once.
"""

from __future__ import annotations

from typing import cast

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from dyps_jax.nets import MLP


class GroupSelector(nn.Module):
    """Eq. 13 logits and the selector's critic."""

    num_agents: int
    hidden: int = 64

    @nn.compact
    def __call__(self, embeddings: jax.Array, group_embeddings: jax.Array):
        """Args:
          embeddings: f32[E, N, H], agent role embeddings h_a.
          group_embeddings: f32[M, Z], group role embeddings z_g.

        Returns:
          (logits f32[E, N, M], value f32[E]).
        """
        chex.assert_rank(embeddings, 3)
        z_dim = group_embeddings.shape[-1]
        init = nn.initializers.lecun_normal()
        w_id = self.param("w_id", init, (self.num_agents, z_dim))
        w_h = self.param("w_h", init, (embeddings.shape[-1], z_dim))
        agent_keys = w_id[None] + embeddings @ w_h  # [I_a, h_a] W, shape [E, N, Z]
        logits = agent_keys @ group_embeddings.T
        value = MLP((self.hidden, 1), name="critic")(embeddings.mean(axis=1))[..., 0]
        return logits, value


@struct.dataclass
class RunningStats:
    """Mean and variance of a scalar stream (Chan et al.'s parallel update)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls) -> RunningStats:
        return cls(jnp.zeros(()), jnp.ones(()), jnp.asarray(1e-4))

    def update(self, x: jax.Array) -> RunningStats:
        batch_mean, batch_var, n = x.mean(), x.var(), x.size
        delta = batch_mean - self.mean
        total = self.count + n
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + jnp.square(delta) * self.count * n / total
        return RunningStats(mean, m2 / total, total)

    def standardise(self, x: jax.Array) -> jax.Array:
        return (x - self.mean) / jnp.sqrt(self.var + 1e-8)


def sample_groups(key: jax.Array, logits: jax.Array) -> jax.Array:
    """g[e, n] ~ softmax_m(logits[e, n, :]) (Algorithm 1, line 5). Returns int32[E, N]."""
    return distrax.Categorical(logits=logits).sample(seed=key).astype(jnp.int32)


def selector_loss(
    model: GroupSelector,
    params,
    embeddings: jax.Array,
    group_embeddings: jax.Array,
    groups: jax.Array,
    target: jax.Array,
    ent_coef: float,
    fit: jax.Array | None = None,
    posterior: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Actor-critic loss of the one-step group-selection MDP.

    Args:
      embeddings: f32[E, N, H]; group_embeddings: f32[M, Z] (both held constant: their gradients
        come from their own ELBOs).
      groups: int32[E, N], the sampled assignment.
      target: f32[E], the standardised team episode return r_g.
      fit: f32[E, N, M] or None, a known value of every group for every agent (the group-response
        fit), whose expectation under a_g is added to the objective exactly.
      posterior: f32[E, N, M] or None, weighted targets for a_g (`posterior_cross_entropy`).

    Returns:
      scalar loss -sum_n log a_g[g_n, n] (r_g - V) + (V - r_g)^2 / 2 - ent_coef * H
      - sum_n sum_m a_g[m, n] fit[n, m] - sum_n sum_m posterior[n, m] log a_g[m, n], mean over envs.
    """
    logits, value = cast(tuple[jax.Array, jax.Array], model.apply(
        params, jax.lax.stop_gradient(embeddings), jax.lax.stop_gradient(group_embeddings)
    ))
    dist = distrax.Categorical(logits=logits)
    log_prob = dist.log_prob(groups).sum(axis=-1)
    advantage = jax.lax.stop_gradient(target - value)
    entropy = dist.entropy().mean(axis=-1)
    actor = -(log_prob * advantage).mean()
    critic = 0.5 * jnp.square(value - target).mean()
    loss = actor + critic - ent_coef * entropy.mean()
    if fit is not None:
        chex.assert_equal_shape([logits, fit])
        probs = jax.nn.softmax(logits, axis=-1)
        loss -= (probs * jax.lax.stop_gradient(fit)).sum(-1).sum(-1).mean()
    if posterior is not None:
        loss += posterior_cross_entropy(logits, posterior) * logits.shape[1]
    return loss, {"selector_loss": actor, "selector_value_loss": critic}


def response_posterior(logits: jax.Array, evidence: jax.Array, centred: bool = True) -> jax.Array:
    """Each agent's posterior over groups: softmax_m(log a_g[e, n, m] + evidence[e, n, m]).

    evidence is log p_m(the agent's sampled transitions), the group response's log-likelihood. With
    `centred` the evidence is taken relative to its mean over agents for each group (e, n): a group
    whose model explains everyone better (it was trained on more agents) would otherwise draw every
    agent in, the collapse of an unbalanced mixture of experts.

    Args:
      logits: f32[E, N, M], the selector's (a_g's prior); evidence: f32[E, N, M].
    Returns:
      f32[E, N, M], rows summing to 1.
    """
    chex.assert_equal_shape([logits, evidence])
    if centred:
        evidence = evidence - evidence.mean(axis=(0, 1))
    return jax.nn.softmax(jax.nn.log_softmax(logits, axis=-1) + evidence, axis=-1)


def posterior_cross_entropy(logits: jax.Array, posterior: jax.Array) -> jax.Array:
    """-mean_{e,n} sum_m posterior[e, n, m] log softmax(logits[e, n])_m.

    The gating network's M-step in EM for a mixture of experts (Jordan & Jacobs 1994):
    the selector learns to predict each agent's posterior group, whose prior was its own a_g, so
    the evidence of every iteration accumulates in it. `posterior` is held constant and may carry a
    weight (it need not sum to 1).

    Args:
      logits: f32[E, N, M]; posterior: f32[E, N, M].
    """
    chex.assert_equal_shape([logits, posterior])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -(jax.lax.stop_gradient(posterior) * log_probs).sum(-1).mean()


def group_advantages(
    group_log_prob: jax.Array,
    log_prob: jax.Array,
    advantages: jax.Array,
    valid: jax.Array,
    max_ratio: float = 2.0,
) -> jax.Array:
    """Per agent and group, the estimated gain of acting with group m's policy over the episode.

    A[e, n, m] = sum_t v_t (min(rho_t, max_ratio) - 1) adv_t / sum_t v_t, with
    rho_t = pi_m(a_t | o_t) / pi_g(a_t | o_t) where g is the group agent n acted with: the first-order
    estimate of the change of agent n's return if it followed pi_m (the surrogate of Kakade & Langford
    2002 and TRPO, Schulman et al. 2015, eq. 14), with the importance ratio truncated as in V-trace
    (Espeholt et al. 2018). It is 0 for the agent's own group.

    Args:
      group_log_prob: f32[T, E, N, M], log pi_m of each taken action under every group's policy.
      log_prob: f32[T, E, N], log-probability of the action under the policy that took it.
      advantages: f32[T, E, N], the agent's advantage estimates (e.g. GAE), standardised.
      valid: f32[T, E, N], 1 while the episode runs.

    Returns:
      f32[E, N, M].
    """
    chex.assert_rank(group_log_prob, 4)
    chex.assert_equal_shape([log_prob, advantages, valid])
    ratio = jnp.exp(jnp.minimum(group_log_prob - log_prob[..., None], jnp.log(max_ratio)))
    gain = ((ratio - 1.0) * (advantages * valid)[..., None]).sum(axis=0)
    return gain / jnp.maximum(valid.sum(axis=0), 1.0)[..., None]


def group_advantage_loss(
    model: GroupSelector,
    params,
    embeddings: jax.Array,
    group_embeddings: jax.Array,
    gains: jax.Array,
    ent_coef: float,
    balance_coef: float,
    posterior: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The selector's loss for the `group-advantage` signal.

    Every group's value for every agent is estimated (`group_advantages`), so the gradient of the
    expected value is exact rather than a sampled score function (the all-action policy gradient of
    Mean Actor-Critic, Allen et al. 2017):
    loss = -mean_{e,n} sum_m a_g[e, n, m] gains[e, n, m] - ent_coef * mean H(a_g[e, n])
           - balance_coef * H(mean_{e,n} a_g[e, n]) [+ posterior_cross_entropy(logits, posterior)].

    The last term keeps every group in use (the importance loss of mixtures of experts, Shazeer et
    al. 2017; the marginal entropy of information-maximising clustering, Krause et al. 2010): a group
    nobody joins keeps its untrained policy, which `group_advantages` rates below any trained one,
    so without it two roles can share a group for good while another stays empty.

    Args:
      embeddings: f32[E, N, H]; group_embeddings: f32[M, Z] (held constant).
      gains: f32[E, N, M], from `group_advantages`.
      posterior: f32[E, N, M] or None, weighted targets for a_g (the group response's posterior).
    """
    logits, _ = model.apply(
        params, jax.lax.stop_gradient(embeddings), jax.lax.stop_gradient(group_embeddings)
    )
    chex.assert_equal_shape([logits, gains])
    probs = jax.nn.softmax(logits, axis=-1)
    value = (probs * jax.lax.stop_gradient(gains)).sum(-1).mean()
    entropy = distrax.Categorical(logits=logits).entropy().mean()
    usage = probs.reshape(-1, probs.shape[-1]).mean(axis=0)
    balance = -(usage * jnp.log(usage + 1e-8)).sum()
    loss = -value - ent_coef * entropy - balance_coef * balance
    if posterior is not None:
        loss += posterior_cross_entropy(logits, posterior)
    return loss, {"selector_loss": -value, "group_usage_entropy": balance}

