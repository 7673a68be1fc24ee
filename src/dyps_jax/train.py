"""A whole training run as pure JAX: `make_train(config)` returns `train(key)`.

One iteration (Algorithm 1 of the paper, vectorised over E environments):

1. assignment: DyPS samples g[e, n] from eq. 13; the other methods use a fixed one (sharing.py);
2. rollout: `lax.scan` over one episode of T steps, each agent acting with its group's parameters
   (DyPS also records every taken action's log-probability under every group's policy);
3. GAE advantages, shared by the selector and PPO;
4. DyPS only: one group-selector step (group-advantage or team-return signal, docs/grouping.md),
   VLSTM ELBO step (eq. 12), CVAE ELBO step (eq. 4), and the grouping diagnostics;
5. per-group PPO: epochs x minibatches of the clipped objective, per-group optimiser state.

The assignment is a traced int32 array, so nothing recompiles when groups change. `train` is
`jax.jit`- and `jax.vmap`-able over keys. Run `python -m dyps_jax.train --help` for the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from dyps_jax import group_metrics, sharing
from dyps_jax.config import TrainConfig
from dyps_jax.grouping import (
    GroupSelector,
    RunningStats,
    group_advantage_loss,
    group_advantages,
    sample_groups,
    selector_loss,
)
from dyps_jax.nets import (
    ActorCritic,
    PointerActorCritic,
    apply_all_groups,
    grouped_apply,
    init_stacked,
    segment_mean,
    select_group,
)
from dyps_jax.ppo import action_distribution, gae, head_size, normalize_per_group, ppo_terms
from dyps_jax.roles.cvae import (
    CVAE,
    cvae_elbo,
    group_embeddings,
    init_cvae,
    response_log_likelihood,
    response_nll,
)
from dyps_jax.roles.vlstm import VLSTM, init_vlstm, vlstm_elbo


@struct.dataclass
class Learner:
    """Parameters and optimiser state of one trained model."""

    params: Any
    opt_state: Any


@struct.dataclass
class RoleState:
    """DyPS's role models and group selector (absent for the fixed-assignment methods)."""

    vlstm: Learner
    cvae: Learner
    selector: Learner
    return_stats: RunningStats
    agent_embedding: jax.Array  # f32[E, N, H], h_a from each environment's previous episode
    previous_choice: jax.Array  # int32[E, N], most likely groups of the last iteration (-1: none)


@struct.dataclass
class TrainState:
    policy: Learner  # leaves [G, ...], optimiser state per group
    roles: RoleState | None
    key: jax.Array
    iteration: jax.Array
    env_steps: jax.Array


class Transition(NamedTuple):
    """One rollout step of E environments; leaves `[E, N, ...]` (`done` is `[E]`)."""

    obs: jax.Array
    action_mask: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    valid: jax.Array
    metrics: dict[str, jax.Array]
    group_log_prob: jax.Array | None  # DyPS: f32[E, N, M], log pi_m(action) under every group


class TrainFns(NamedTuple):
    """The pieces of a run: `init(key) -> state`; `iterate(state, n) -> (state, metrics[n])`.

    `iterate` runs n iterations in one `lax.scan` (n static); host loops call it every few
    iterations to draw progress and write logs, keeping the hot path free of host round trips.
    """

    init: Callable[[jax.Array], TrainState]
    iterate: Callable[[TrainState, int], tuple[TrainState, dict[str, jax.Array]]]


class RoleModels(NamedTuple):
    """DyPS's networks for a config: the VLSTM (agent roles), the CVAE (group roles), the selector."""

    vlstm: VLSTM
    cvae: CVAE
    selector: GroupSelector
    group_embedding: Callable[[Any], jax.Array]  # CVAE params -> f32[M, Z], what eq. 13 multiplies


def role_models(config: TrainConfig, env) -> RoleModels:
    share = config.sharing
    cvae_net = CVAE(config.num_param_sets, env.num_actions, latent=share.cvae_latent,
                    action_kind=env.action_kind,
                    response_dim=env.obs_dim + 1 if share.group_response_coef > 0 else 0)

    def embed(cvae_params) -> jax.Array:
        z = group_embeddings(cvae_net, cvae_params)
        if share.group_embedding == "unit":
            # The direction of z_g names the group; its length only says how far the KL term has
            # pulled it towards the prior, which must not decide how sharp the assignment is.
            z = z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-8)
        return z

    return RoleModels(
        vlstm=VLSTM(target_dim=env.obs_dim + 1, hidden=share.vlstm_hidden, latent=share.vlstm_latent),
        cvae=cvae_net,
        selector=GroupSelector(env.num_agents),
        group_embedding=embed,
    )


def _selector_logits(models: RoleModels, roles: RoleState) -> jax.Array:
    logits, _ = models.selector.apply(
        roles.selector.params, roles.agent_embedding, models.group_embedding(roles.cvae.params)
    )
    return logits


def group_probabilities(config: TrainConfig, state: TrainState) -> jax.Array:
    """The assignment probabilities a_g of eq. 13 for a train state: f32[E, N, M].

    Row [e, n] is the distribution over groups that agent n of environment e draws its group from
    in the next iteration. For the fixed-assignment methods it is the one-hot of their assignment
    (M = 1 for PS and PS-id, M = N for NoPS).
    """
    env = config.env.build()
    if config.method != "dyps":
        groups = sharing.fixed_assignment(config.method, config.num_envs, env.num_agents)
        return jax.nn.one_hot(groups, config.num_param_sets)
    return jax.nn.softmax(_selector_logits(role_models(config, env), state.roles), axis=-1)


def policy_network(config: TrainConfig, env) -> ActorCritic | PointerActorCritic:
    """The actor-critic every parameter group applies (one row of the stacked parameters)."""
    if env.action_kind == "pointer":
        return PointerActorCritic(*env.pointer_layout, hidden_size=config.ppo.hidden_size)
    return ActorCritic(head_size(env.action_kind, env.num_actions), config.ppo.hidden_size)


def make_train_fns(config: TrainConfig) -> TrainFns:
    env = config.env.build()
    method = config.method
    n_envs, n_agents, horizon = config.num_envs, env.num_agents, env.max_steps
    n_sets = config.num_param_sets
    per_agent = sharing.is_per_agent(method)
    ppo, share = config.ppo, config.sharing
    dyps = method == "dyps"
    agent_types = getattr(env, "agent_types", None)

    kind = env.action_kind
    policy_net = policy_network(config, env)
    policy_tx = optax.chain(
        optax.clip_by_global_norm(ppo.max_grad_norm), optax.adam(ppo.lr, eps=1e-5)
    )
    feat_dim = sharing.feature_dim(method, env.obs_dim, n_agents)
    # VLSTM input (s_t, a_t, r_{t+1}) and target e_{t+1} = (s_{t+1}, r_{t+1}); a_t one-hot when
    # categorical, the slots drawn (multi-hot) for the pointer head, the real vector when Gaussian.
    models = role_models(config, env)
    vlstm_net, cvae_net, selector_net = models.vlstm, models.cvae, models.selector
    vlstm_input_dim = env.obs_dim + env.num_actions + 1
    decoder_input_dim = env.num_actions if share.vlstm_decoder == "action" else 0

    def encode_action(action: jax.Array) -> jax.Array:
        if kind == "categorical":
            return jax.nn.one_hot(action, env.num_actions)
        if kind == "pointer":
            return jax.nn.one_hot(action, env.num_actions).max(axis=-2)
        return action

    def env_action(action: jax.Array) -> jax.Array:
        # Environments with one real number per agent (medical) take f32[N], not f32[N, 1].
        return action[..., 0] if kind == "gaussian" and env.num_actions == 1 else action
    role_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(share.role_lr))
    selector_tx = optax.adam(share.selector_lr)

    def init(key: jax.Array) -> TrainState:
        k_policy, k_vlstm, k_cvae, k_sel, key = jax.random.split(key, 5)
        params = init_stacked(policy_net, k_policy, n_sets, jnp.zeros((1, feat_dim)))
        policy = Learner(params, jax.vmap(policy_tx.init)(params))
        roles = None
        if dyps:
            vlstm_params = init_vlstm(vlstm_net, k_vlstm, env.obs_dim, vlstm_input_dim,
                                      decoder_input_dim)
            cvae_params = init_cvae(cvae_net, k_cvae, env.obs_dim)
            embedding = jnp.zeros((n_envs, n_agents, share.vlstm_hidden))
            sel_params = selector_net.init(
                k_sel, embedding, jnp.zeros((n_sets, share.cvae_latent))
            )
            roles = RoleState(
                vlstm=Learner(vlstm_params, role_tx.init(vlstm_params)),
                cvae=Learner(cvae_params, role_tx.init(cvae_params)),
                selector=Learner(sel_params, selector_tx.init(sel_params)),
                return_stats=RunningStats.create(),
                agent_embedding=embedding,
                previous_choice=jnp.full((n_envs, n_agents), -1, jnp.int32),
            )
        zero = jnp.zeros((), jnp.int32)
        return TrainState(policy, roles, key, zero, zero)

    def rollout(key: jax.Array, params: Any, groups: jax.Array):
        """One episode in each of E environments; returns transitions [T, E, ...] and final obs."""
        k_reset, k_steps = jax.random.split(key)
        env_state, ts = jax.vmap(env.reset)(jax.random.split(k_reset, n_envs))

        def step(carry, key):
            env_state, ts, ended = carry
            k_act, k_env = jax.random.split(key)
            feats = sharing.policy_features(method, ts.obs)
            if dyps:
                every_group = apply_all_groups(policy_net.apply, params, feats)
                head, value = select_group(every_group, groups)
            else:
                head, value = grouped_apply(policy_net.apply, params, feats, groups, per_agent)
            dist = action_distribution(kind, head, ts.action_mask)
            action = dist.sample(seed=k_act)
            if kind == "categorical":
                action = action.astype(jnp.int32)
            group_log_prob = None
            if dyps:
                stacked = lambda x: jnp.broadcast_to(x, (n_sets,) + x.shape)  # noqa: E731
                log_probs = action_distribution(
                    kind, every_group[0], stacked(ts.action_mask)
                ).log_prob(stacked(action))
                group_log_prob = jnp.moveaxis(log_probs, 0, -1)
            env_state, next_ts = jax.vmap(env.step)(
                jax.random.split(k_env, n_envs), env_state, env_action(action)
            )
            alive = (~ended).astype(jnp.float32)
            transition = Transition(
                obs=ts.obs,
                action_mask=ts.action_mask,
                action=action,
                log_prob=dist.log_prob(action),
                value=value,
                reward=next_ts.reward * alive[:, None],
                done=next_ts.done,
                valid=jnp.broadcast_to(alive[:, None], (n_envs, n_agents)),
                metrics=jax.tree.map(lambda m: m * alive, next_ts.metrics),
                group_log_prob=group_log_prob,
            )
            return (env_state, next_ts, ended | next_ts.done), transition

        carry = (env_state, ts, jnp.zeros(n_envs, bool))
        (_, final_ts, _), traj = jax.lax.scan(step, carry, jax.random.split(k_steps, horizon))
        return traj, final_ts.obs

    def ppo_update(key: jax.Array, policy: Learner, traj: Transition, groups: jax.Array,
                   advantages: jax.Array, returns: jax.Array):
        flat = lambda x: x.reshape((horizon * n_envs,) + x.shape[2:])  # noqa: E731
        groups_b = flat(jnp.broadcast_to(groups, (horizon,) + groups.shape))
        valid = flat(traj.valid)
        advantages = normalize_per_group(flat(advantages), groups_b, valid, n_sets)
        batch = (flat(traj.obs), flat(traj.action_mask), flat(traj.action), flat(traj.log_prob),
                 flat(traj.value), advantages, flat(returns), valid, groups_b)
        size = horizon * n_envs
        mb_size = min(ppo.batch_size, size)
        n_mb = size // mb_size

        def loss_fn(params, mb):
            obs, mask, action, old_logp, old_value, adv, ret, weight, grp = mb
            head, value = grouped_apply(
                policy_net.apply, params, sharing.policy_features(method, obs), grp, per_agent
            )
            dist = action_distribution(kind, head, mask)
            terms = ppo_terms(dist, value, action, old_logp, old_value, adv, ret, ppo.clip_eps)
            per_group = jax.tree.map(lambda t: segment_mean(t, grp, weight, n_sets), terms)
            loss = (per_group.policy_loss + ppo.vf_coef * per_group.value_loss
                    - ppo.ent_coef * per_group.entropy).sum()
            mean = jax.tree.map(lambda t: (t * weight).sum() / jnp.maximum(weight.sum(), 1.0), terms)
            return loss, mean._asdict()

        def minibatch_step(policy, mb):
            grads, info = jax.grad(loss_fn, has_aux=True)(policy.params, mb)
            updates, opt_state = jax.vmap(policy_tx.update)(grads, policy.opt_state, policy.params)
            return Learner(optax.apply_updates(policy.params, updates), opt_state), info

        def epoch(policy, key):
            order = jax.random.permutation(key, size)[: n_mb * mb_size].reshape(n_mb, mb_size)
            return jax.lax.scan(minibatch_step, policy, jax.tree.map(lambda x: x[order], batch))

        policy, info = jax.lax.scan(epoch, policy, jax.random.split(key, ppo.update_epochs))
        return policy, jax.tree.map(jnp.mean, info)

    def selector_update(roles: RoleState, traj: Transition, groups: jax.Array,
                        team_return: jax.Array, advantages: jax.Array, fit: jax.Array):
        """fit: f32[E, N, M], the group-response fit of every agent under every group, weighted."""
        z_groups = models.group_embedding(roles.cvae.params)
        stats = roles.return_stats.update(team_return)
        if share.selector_signal == "team-return":
            grads, info = jax.grad(selector_loss, argnums=1, has_aux=True)(
                selector_net, roles.selector.params, roles.agent_embedding, z_groups, groups,
                stats.standardise(team_return), share.selector_ent_coef, fit,
            )
        else:
            valid = traj.valid
            mean = (advantages * valid).sum() / jnp.maximum(valid.sum(), 1.0)
            std = jnp.sqrt((jnp.square(advantages - mean) * valid).sum() / jnp.maximum(valid.sum(), 1.0))
            gains = group_advantages(traj.group_log_prob, traj.log_prob,
                                     (advantages - mean) / (std + 1e-8), valid)
            grads, info = jax.grad(group_advantage_loss, argnums=1, has_aux=True)(
                selector_net, roles.selector.params, roles.agent_embedding, z_groups, gains + fit,
                share.selector_ent_coef, share.group_balance_coef,
            )
        return _apply(selector_tx, roles.selector, grads), stats, info

    def role_update(key: jax.Array, roles: RoleState, traj: Transition, final_obs: jax.Array,
                    groups: jax.Array, team_return: jax.Array, advantages: jax.Array,
                    choice: jax.Array):
        k_vlstm, k_cvae, k_idx, k_resp = jax.random.split(key, 4)
        batch = horizon * n_envs * n_agents
        to_batch = lambda x: x.reshape((horizon, n_envs * n_agents) + x.shape[3:])  # noqa: E731
        next_obs = jnp.concatenate([traj.obs[1:], final_obs[None]], axis=0)
        reward = traj.reward[..., None]
        action = encode_action(traj.action)
        lstm_in = jnp.concatenate([traj.obs, action, reward], axis=-1)
        decoder_in = action if share.vlstm_decoder == "action" else None
        target = jnp.concatenate([next_obs, reward], axis=-1)

        # The same few time steps of every agent score it under every group's response model
        # (before this iteration's update) and train that model.
        steps = jax.random.randint(k_resp, (share.response_steps,), 0, horizon)
        flat_k = lambda x: x[steps].reshape((-1,) + x.shape[3:])  # noqa: E731
        resp_data = (flat_k(traj.obs), flat_k(action), flat_k(target))
        resp_valid = traj.valid[steps]
        resp_groups = flat_k(jnp.broadcast_to(groups, (horizon,) + groups.shape))
        fit = jnp.zeros((n_envs, n_agents, n_sets))
        if cvae_net.response_dim:
            ll = response_log_likelihood(cvae_net, roles.cvae.params, *resp_data)
            ll = ll.reshape(resp_valid.shape + (n_sets,)) * resp_valid[..., None]
            fit = ll.sum(0) / jnp.maximum(resp_valid.sum(0), 1.0)[..., None]
            # Only how much better a group explains this agent than the others counts: a group
            # whose model is better for everyone (it was trained on more agents) would otherwise
            # draw every agent in, the collapse of an unbalanced mixture of experts.
            fit = share.group_response_coef * (fit - fit.mean(axis=(0, 1)))
        selector, stats, sel_info = selector_update(roles, traj, groups, team_return, advantages,
                                                    fit)
        (vlstm_loss, embedding), vlstm_grads = jax.value_and_grad(
            lambda p: vlstm_elbo(vlstm_net, p, k_vlstm, to_batch(traj.obs), to_batch(lstm_in),
                                 to_batch(target), to_batch(traj.valid), share.agent_embedding,
                                 None if decoder_in is None else to_batch(decoder_in)),
            has_aux=True,
        )(roles.vlstm.params)
        vlstm = _apply(role_tx, roles.vlstm, vlstm_grads)

        # The CVAE sees a random subset of (state, action, group) triples: its cost must not grow
        # with N x T x E (3130 agents in the medical scenario).
        idx = jax.random.randint(k_idx, (share.aux_samples,), 0, batch)
        take = lambda x: x.reshape((batch,) + x.shape[3:])[idx]  # noqa: E731
        all_groups = jnp.broadcast_to(groups, (horizon,) + groups.shape)
        def cvae_loss_fn(p):
            loss = cvae_elbo(cvae_net, p, k_cvae, take(all_groups), take(traj.obs),
                             take(traj.action), take(traj.valid), share.cvae_beta,
                             action_mask=take(traj.action_mask))
            response = jnp.zeros(())
            if cvae_net.response_dim:
                response = response_nll(cvae_net, p, resp_groups, *resp_data, resp_valid.reshape(-1))
            return loss + response, response

        (cvae_loss, response_loss), cvae_grads = jax.value_and_grad(cvae_loss_fn, has_aux=True)(
            roles.cvae.params)
        cvae = _apply(role_tx, roles.cvae, cvae_grads)

        new_roles = RoleState(
            vlstm=vlstm, cvae=cvae, selector=selector, return_stats=stats,
            agent_embedding=jax.lax.stop_gradient(embedding.reshape(n_envs, n_agents, -1)),
            previous_choice=choice,
        )
        info = {"vlstm_loss": vlstm_loss, "cvae_loss": cvae_loss - response_loss, **sel_info}
        if cvae_net.response_dim:
            info["response_loss"] = response_loss
        return new_roles, info

    def grouping_metrics(logits: jax.Array, previous: jax.Array,
                         embedding: jax.Array) -> tuple[jax.Array, dict]:
        """What the selector's assignment looks like this iteration (docs/grouping.md)."""
        choice = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        changed = jnp.where(previous >= 0, choice != previous, False)
        sizes = jax.nn.one_hot(choice, n_sets).sum(axis=1).mean(axis=0)  # [M]
        out = {
            "selector_entropy": distrax.Categorical(logits=logits).entropy().mean(),
            "selector_top_prob": jax.nn.softmax(logits, axis=-1).max(-1).mean(),
            "group_changes": changed.mean(),
            **{f"group_size_{m}": sizes[m] for m in range(n_sets)},
        }
        if agent_types is not None:
            num_types = int(agent_types.max()) + 1
            types = jnp.asarray(agent_types)
            out["type_ari"] = group_metrics.adjusted_rand_index(
                choice, types, n_sets, num_types).mean()
            out["type_purity"] = group_metrics.purity(choice, types, n_sets, num_types).mean()
            out["role_separation"] = group_metrics.separation(embedding, types, num_types).mean()
        return choice, out

    def iteration(state: TrainState, _) -> tuple[TrainState, dict[str, jax.Array]]:
        key, k_assign, k_roll, k_ppo, k_roles = jax.random.split(state.key, 5)
        if dyps:
            logits = _selector_logits(models, state.roles)
            groups = sample_groups(k_assign, logits)
        else:
            groups = sharing.fixed_assignment(method, n_envs, n_agents)
        traj, final_obs = rollout(k_roll, state.policy.params, groups)
        # Every episode ends within max_steps (the environments' time limit), so nothing to bootstrap.
        advantages, returns = gae(
            traj.reward, traj.value, traj.done[..., None], jnp.zeros_like(traj.value[0]),
            ppo.gamma, ppo.gae_lambda,
        )
        team_return = traj.reward.sum(axis=(0, 2))  # [E]
        metrics = {
            "episode_return": team_return.mean(),
            "episode_length": traj.valid[:, :, 0].sum(axis=0).mean(),
            **{k: v.sum(axis=0).mean() for k, v in traj.metrics.items()},
        }
        roles = state.roles
        if dyps:
            choice, group_info = grouping_metrics(logits, roles.previous_choice,
                                                  roles.agent_embedding)
            roles, role_info = role_update(k_roles, roles, traj, final_obs, groups, team_return,
                                           advantages, choice)
            metrics.update(role_info, **group_info)
        policy, ppo_info = ppo_update(k_ppo, state.policy, traj, groups, advantages, returns)
        metrics.update(ppo_info)
        new_state = TrainState(
            policy=policy, roles=roles, key=key, iteration=state.iteration + 1,
            env_steps=state.env_steps + n_envs * horizon,
        )
        return new_state, metrics

    def iterate(state: TrainState, n: int):
        return jax.lax.scan(iteration, state, None, length=n)

    return TrainFns(init=init, iterate=iterate)


def _apply(tx: optax.GradientTransformation, learner: Learner, grads: Any) -> Learner:
    updates, opt_state = tx.update(grads, learner.opt_state, learner.params)
    return Learner(optax.apply_updates(learner.params, updates), opt_state)


def make_train(config: TrainConfig) -> Callable[[jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns the pure function `train(key) -> (final TrainState, metrics)`.

    `metrics` maps names to f32[num_iterations] arrays (`episode_return` is the mean over the
    parallel environments of the team return, the sum of all agents' rewards in an episode).
    `jax.jit(train)(key)` runs the whole budget as one compiled program; `jax.vmap(train)(keys)`
    trains several seeds in one call.
    """
    fns = make_train_fns(config)
    n = config.num_iterations

    def train(key: jax.Array):
        return fns.iterate(fns.init(key), n)

    return train


if __name__ == "__main__":
    from dyps_jax.cli import main

    main()
