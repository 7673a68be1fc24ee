"""A whole training run as pure JAX: `make_train(config)` returns `train(key)`.

One iteration (Algorithm 1 of the paper, vectorised over E environments), the same for every
sharing method and base algorithm; a method is a row of `sharing.METHOD_SPECS`, an algorithm a
reward, a critic input and an advantage (`algos.py`); docs/methods.md lists them:

1. assignment: the selector methods (DyPS and its ablations) sample g[e, n] from eq. 13; the others
   use a fixed one (SePS: after clustering at the end of its pre-training, `seps.py`);
2. rollout: `lax.scan` over one episode of T steps, each agent acting with its group's parameters
   (selector methods also record every taken action's log-probability under every group's policy);
3. GAE advantages of each critic: the groups' own critics and the shared ones (PSA's shared critic,
   CoPO's neighbourhood and global critics); the actor's advantage combines them;
4. role models, where the method has them: one group-selector step (group-advantage or team-return
   signal, docs/grouping.md), VLSTM ELBO step (eq. 12), CVAE ELBO step (eq. 4), diagnostics;
5. per-group PPO: epochs x minibatches of the clipped objective, per-group optimiser state, and the
   shared critics' value losses; CoPO then meta-updates its coordination factor.

The assignment is a traced int32 array, so nothing recompiles when groups change. `train` is
`jax.jit`- and `jax.vmap`-able over keys. Run `python -m dyps_jax.train --help` for the command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from dyps_jax import algos, group_metrics, neighbourhoods, selectors, sharing
from dyps_jax import seps as seps_lib
from dyps_jax.config import TrainConfig
from dyps_jax.grouping import (
    RunningStats,
    group_advantage_loss,
    group_advantages,
    response_posterior,
    sample_groups,
    selector_loss,
)
from dyps_jax.mesh import EnvSharding
from dyps_jax.nets import (
    MLP,
    ActorCritic,
    PointerActorCritic,
    apply_all_groups,
    grouped_apply,
    init_stacked,
    select_group,
)
from dyps_jax.ppo import (
    accumulated_grad,
    action_distribution,
    chunk_count,
    clipped_value_loss,
    gae,
    head_size,
    normalize_per_group,
    ppo_terms,
)
from dyps_jax.roles.cvae import CVAE, cvae_elbo, group_embeddings, init_cvae
from dyps_jax.roles.response import (
    GroupResponse,
    ResponseData,
    init_response,
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
    """Role models and group selector of the methods that use them (`MethodSpec.has_roles`)."""

    vlstm: Learner
    cvae: Learner
    selector: Learner
    return_stats: RunningStats
    agent_embedding: jax.Array  # f32[E, N, H], h_a from each environment's previous episode
    previous_choice: jax.Array  # int32[E, N], most likely groups of the last iteration (-1: none)
    response: Learner | None = None  # the groups' response models (`group_response_coef` > 0)


@struct.dataclass
class TrainState:
    policy: Learner  # leaves [G, ...], optimiser state per group
    roles: RoleState | None
    key: jax.Array
    iteration: jax.Array
    env_steps: jax.Array
    critics: Learner | None = None  # shared critics, leaves [C, ...] (PSA; CoPO's two)
    lcf: Learner | None = None  # CoPO's coordination-factor distribution
    seps: seps_lib.SePSState | None = None


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
    group_log_prob: jax.Array | None  # selector methods: f32[E, N, M], log pi_m(action) per group
    global_state: jax.Array | None  # MAPPO: f32[E, S], what the critics see besides the input
    shared_value: jax.Array | None  # f32[E, N, C], the shared critics' values
    neighbour_reward: jax.Array | None  # CoPO: f32[E, N], r^N of the transition


class TrainFns(NamedTuple):
    """The pieces of a run: `init(key) -> state`; `iterate(state, n) -> (state, metrics[n])`.

    `iterate` runs n iterations in one `lax.scan` (n static); host loops call it every few
    iterations to draw progress and write logs, keeping the hot path free of host round trips.
    `place(state)` puts a state made outside `init` (a restored checkpoint) on the run's devices,
    as `init` and `iterate` lay it out (`mesh.py`; the identity on one device).
    """

    init: Callable[[jax.Array], TrainState]
    iterate: Callable[[TrainState, int], tuple[TrainState, dict[str, jax.Array]]]
    place: Callable[[TrainState], TrainState]


class RoleModels(NamedTuple):
    """The role networks of a config: the VLSTM (agent roles), the CVAE (group roles), and the
    selector (eq. 13, or an ablation's, `selectors.py`)."""

    vlstm: VLSTM
    cvae: CVAE
    selector: Any  # grouping.GroupSelector, or an ablation's (selectors.py)
    group_embedding: Callable[[Any], jax.Array]  # CVAE params -> f32[M, Z], what eq. 13 multiplies
    response: GroupResponse | None  # the groups' response models; None without them (the paper)


def role_models(config: TrainConfig, env) -> RoleModels:
    share = config.sharing
    cvae_net = CVAE(config.num_param_sets, env.num_actions, latent=share.cvae_latent,
                    action_kind=env.action_kind)
    response = None
    if share.group_response_coef > 0 and config.method_spec.trains_cvae:
        response = GroupResponse(config.num_param_sets,
                                 env.obs_dim + (share.response_target == "state-reward"),
                                 env.num_actions, env.action_kind, share.response_model)

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
        selector=selectors.build(config.method_spec.selector or "dyps", env.num_agents),
        group_embedding=embed,
        response=response,
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
    (M = 1 for PS and PS-id, M = N for NoPS, SePS's clusters once pre-training has ended).
    """
    env = config.env.build()
    spec = config.method_spec
    if spec.selector is None:
        groups = sharing.fixed_assignment(spec, config.num_envs, env.num_agents,
                                          getattr(env, "agent_types", None))
        if state.seps is not None:
            groups = jnp.broadcast_to(state.seps.assignment, groups.shape)
        return jax.nn.one_hot(groups, config.num_param_sets)
    assert state.roles is not None, "a selector method's state carries its role models"
    return jax.nn.softmax(_selector_logits(role_models(config, env), state.roles), axis=-1)


def policy_network(config: TrainConfig, env) -> ActorCritic | PointerActorCritic:
    """The actor-critic every parameter group applies (one row of the stacked parameters).

    Its input is the method's features (`sharing.feature_dim`), followed under MAPPO by the global
    state, which only the critic reads (`actor_dim`).
    """
    feat_dim = sharing.feature_dim(config.method_spec, env.obs_dim, env.num_agents,
                                   config.sharing.vlstm_hidden)
    actor_dim = feat_dim if config.algo == "mappo" else None
    hidden = config.ppo.hidden_size
    if env.action_kind == "pointer":
        cell_dim, num_slots, slot_dim = env.pointer_layout
        return PointerActorCritic(cell_dim, num_slots, slot_dim, hidden_size=hidden,
                                  actor_dim=actor_dim)
    return ActorCritic(head_size(env.action_kind, env.num_actions), hidden, actor_dim=actor_dim)


def make_train_fns(config: TrainConfig) -> TrainFns:
    env = config.env.build()
    spec = config.method_spec
    n_envs, n_agents, horizon = config.num_envs, env.num_agents, env.max_steps
    shard = EnvSharding.create(config.devices, n_envs, config.agent_devices, n_agents)
    n_sets = config.num_param_sets
    per_agent = spec.assignment == "identity"
    ppo, share = config.ppo, config.sharing
    selecting = spec.selector is not None
    clusters = spec.assignment == "clusters"
    central, copo = config.algo == "mappo", config.algo == "copo"
    agent_types = getattr(env, "agent_types", None)
    num_types = sharing.num_types(agent_types)
    # Shared critics (one parameter set each, stacked [C, ...]) and the reward each one predicts.
    shared_signals = (("individual",) if spec.shared_critic else ()) + (
        ("neighbourhood", "team") if copo else ())
    n_shared = len(shared_signals)
    neighbourhood = neighbourhoods.neighbourhood(env) if copo else None

    feat_dim = sharing.feature_dim(spec, env.obs_dim, n_agents, share.vlstm_hidden)
    critic_dim = feat_dim + (env.global_state_dim if central else 0)
    kind = env.action_kind
    policy_net = policy_network(config, env)
    critic_net = MLP((ppo.hidden_size, ppo.hidden_size, 1))
    policy_tx = optax.chain(
        optax.clip_by_global_norm(ppo.max_grad_norm), optax.adam(ppo.lr, eps=1e-5)
    )
    lcf_tx = optax.adam(ppo.lcf_lr)
    # VLSTM input (s_t, a_t, r_{t+1}) and target e_{t+1} = (s_{t+1}, r_{t+1}); a_t one-hot when
    # categorical, the slots drawn (multi-hot) for the pointer head, the real vector when Gaussian.
    models = role_models(config, env)
    vlstm_net, cvae_net, selector_net = models.vlstm, models.cvae, models.selector
    response_net = models.response
    vlstm_input_dim = env.obs_dim + env.num_actions + 1
    decoder_input_dim = env.num_actions if share.vlstm_decoder == "action" else 0
    seps_pretrain = config.seps_pretrain_iterations if clusters else 0
    seps_per_iteration = min(share.seps_samples, -(-share.seps_samples // max(seps_pretrain, 1)))

    def encode_action(action: jax.Array) -> jax.Array:
        if kind == "categorical":
            return jax.nn.one_hot(action, env.num_actions)
        if kind == "pointer":
            # Which slots the draws took: f32[..., A]. A scatter, not one_hot(...).max(-2), which
            # XLA materialises as [..., D, A] (14.7 GB for one day of a 10,000-cell city).
            rows = action.reshape(-1, action.shape[-1])
            taken = jnp.zeros((rows.shape[0], env.num_actions)).at[
                jnp.arange(rows.shape[0])[:, None], rows].set(1.0)
            return taken.reshape(action.shape[:-1] + (env.num_actions,))
        return action

    def env_action(action: jax.Array) -> jax.Array:
        # Environments with one real number per agent (medical) take f32[N], not f32[N, 1].
        return action[..., 0] if kind == "gaussian" and env.num_actions == 1 else action
    role_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(share.role_lr))
    selector_tx = optax.adam(share.selector_lr)
    response_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(share.response_lr))

    def inputs(obs: jax.Array, embedding: jax.Array | None,
               global_state: jax.Array | None) -> jax.Array:
        """What the policy network sees: f32[B, N, critic_dim] for obs f32[B, N, D].

        The method's features (`sharing.policy_features`), then under MAPPO the global state
        f32[B, S] of every agent's environment, which only the critic reads (`actor_dim`).
        """
        x = sharing.policy_features(spec, obs, embedding)
        if central:
            assert global_state is not None, "MAPPO's critic input carries the global state"
            extra = jnp.broadcast_to(global_state[:, None], x.shape[:-1] + global_state.shape[-1:])
            x = jnp.concatenate([x, extra], axis=-1)
        return x

    def shared_values(params: Any, x: jax.Array) -> jax.Array:
        """The shared critics on every agent: f32[B, N, C] for x f32[B, N, critic_dim]."""
        values = cast(jax.Array, jax.vmap(critic_net.apply, in_axes=(0, None))(params, x))
        return jnp.moveaxis(values[..., 0], 0, -1)

    def init(key: jax.Array) -> TrainState:
        k_policy, k_vlstm, k_cvae, k_sel, key = jax.random.split(key, 5)
        params = init_stacked(policy_net, k_policy, n_sets, jnp.zeros((1, critic_dim)))
        policy = Learner(params, jax.vmap(policy_tx.init)(params))
        roles = critics = lcf = seps_state = None
        if spec.has_roles:
            vlstm_params = init_vlstm(vlstm_net, k_vlstm, env.obs_dim, vlstm_input_dim,
                                      decoder_input_dim)
            cvae_params = init_cvae(cvae_net, k_cvae, env.obs_dim)
            embedding = jnp.zeros((n_envs, n_agents, share.vlstm_hidden))
            sel_params = selector_net.init(
                k_sel, embedding, jnp.zeros((n_sets, share.cvae_latent))
            )
            response = None
            if response_net is not None:
                resp_params = init_response(response_net, jax.random.fold_in(k_cvae, 1),
                                            env.obs_dim)
                response = Learner(resp_params, response_tx.init(resp_params))
            roles = RoleState(
                vlstm=Learner(vlstm_params, role_tx.init(vlstm_params)),
                cvae=Learner(cvae_params, role_tx.init(cvae_params)),
                selector=Learner(sel_params, selector_tx.init(sel_params)),
                return_stats=RunningStats.create(),
                agent_embedding=embedding,
                previous_choice=jnp.full((n_envs, n_agents), -1, jnp.int32),
                response=response,
            )
        if n_shared:
            critic_params = init_stacked(critic_net, jax.random.fold_in(k_policy, 1), n_shared,
                                         jnp.zeros((1, critic_dim)))
            critics = Learner(critic_params, jax.vmap(policy_tx.init)(critic_params))
        if copo:
            lcf_params = algos.init_lcf()
            lcf = Learner(lcf_params, lcf_tx.init(lcf_params))
        if clusters:
            seps_state = seps_lib.SePSState(
                buffer=seps_lib.Buffer.create(share.seps_samples, env.obs_dim, env.num_actions),
                assignment=jnp.zeros(n_agents, jnp.int32),
            )
        zero = jnp.zeros((), jnp.int32)
        return lay_out(TrainState(policy, roles, key, zero, zero, critics, lcf, seps_state),
                       shard.same, shard.envs)

    def place(state: TrainState) -> TrainState:
        if shard.mesh is None:
            return state
        return lay_out(state, lambda t: jax.device_put(t, shard.replicated()),
                       shard.put_envs)

    def rollout(key: jax.Array, params: Any, critic_params: Any, groups: jax.Array,
                embedding: jax.Array | None):
        """One episode in each of E environments; returns transitions [T, E, ...] and final obs."""
        k_reset, k_steps = jax.random.split(key)
        env_state, ts = shard.envs(jax.vmap(env.reset)(jax.random.split(k_reset, n_envs)))

        def step(carry, key):
            env_state, ts, ended = carry
            k_act, k_env = jax.random.split(key)
            x = inputs(ts.obs, embedding, ts.global_state)
            if selecting:
                # Every group's actor scores the action (the selector's evidence); only the own
                # group's critic is needed, so each call's unused half is compiled away.
                every_head = apply_all_groups(policy_net.apply, params, x)[0]
                head = select_group(every_head, groups)
                value = grouped_apply(policy_net.apply, params, x, groups, per_agent)[1]
            else:
                head, value = grouped_apply(policy_net.apply, params, x, groups, per_agent)
            dist = action_distribution(kind, head, ts.action_mask)
            action = dist.sample(seed=k_act)
            if kind == "categorical":
                action = action.astype(jnp.int32)
            group_log_prob = None
            if selecting:
                stacked = lambda x: jnp.broadcast_to(x, (n_sets,) + x.shape)  # noqa: E731
                log_probs = action_distribution(
                    kind, every_head, stacked(ts.action_mask)
                ).log_prob(stacked(action))
                group_log_prob = jnp.moveaxis(log_probs, 0, -1)
            near = None if neighbourhood is None else jax.vmap(neighbourhood)(env_state)
            env_state, next_ts = jax.vmap(env.step)(
                jax.random.split(k_env, n_envs), env_state, env_action(action)
            )
            alive = (~ended).astype(jnp.float32)
            reward = next_ts.reward * alive[:, None]
            transition = Transition(
                obs=ts.obs,
                action_mask=ts.action_mask,
                action=action,
                log_prob=dist.log_prob(action),
                value=value,
                reward=reward,
                done=next_ts.done,
                valid=jnp.broadcast_to(alive[:, None], (n_envs, n_agents)),
                metrics=jax.tree.map(lambda m: m * alive, next_ts.metrics),
                group_log_prob=group_log_prob,
                global_state=ts.global_state if central else None,
                shared_value=shared_values(critic_params, x) if n_shared else None,
                neighbour_reward=(None if near is None
                                  else jax.vmap(neighbourhoods.neighbour_reward)(*near, reward)),
            )
            return shard.envs(((env_state, next_ts, ended | next_ts.done), transition))

        carry = shard.envs((env_state, ts, jnp.zeros(n_envs, bool)))
        (_, final_ts, _), traj = jax.lax.scan(step, carry, jax.random.split(k_steps, horizon))
        return shard.envs(traj, axis=1), final_ts.obs

    def flat(x: jax.Array) -> jax.Array:
        """[T, E, ...] -> [T * E, ...], the PPO sample axis."""
        return x.reshape((horizon * n_envs,) + x.shape[2:])

    def ppo_batch(traj: Transition, groups: jax.Array, embedding: jax.Array | None):
        """The rollout as PPO samples (one (step, env) pair holding all N agents each)."""
        over_time = lambda x: flat(jnp.broadcast_to(x, (horizon,) + x.shape))  # noqa: E731
        batch = {"obs": flat(traj.obs), "mask": flat(traj.action_mask),
                 "action": flat(traj.action), "old_logp": flat(traj.log_prob),
                 "old_value": flat(traj.value), "weight": flat(traj.valid),
                 "group": over_time(groups)}
        if spec.role_embedding:
            batch["embedding"] = over_time(embedding)
        if central:
            assert traj.global_state is not None, "MAPPO's rollout records the global state"
            batch["global_state"] = flat(traj.global_state)
        return batch

    def policy_head(params: Any, mb: dict[str, jax.Array]):
        x = inputs(mb["obs"], mb.get("embedding"), mb.get("global_state"))
        head, value = grouped_apply(policy_net.apply, params, x, mb["group"], per_agent)
        return action_distribution(kind, head, mb["mask"]), value, x

    def ppo_update(key: jax.Array, policy: Learner, critics: Learner | None,
                   batch: dict[str, jax.Array]):
        valid = batch["weight"]
        batch = {**batch, "adv": normalize_per_group(batch["adv"], batch["group"], valid, n_sets)}
        size = horizon * n_envs
        mb_size = min(ppo.batch_size, size)
        n_mb = size // mb_size
        n_chunks = chunk_count(mb_size, n_agents, ppo.chunk_rows)

        def loss_fn(params, mb, count, total):
            """A sum over the samples of mb: count f32[G] (each group's weight) and total (all
            weight) are the minibatch's, so `accumulated_grad` may split it into chunks."""
            policy_params, critic_params = params
            dist, value, x = policy_head(policy_params, mb)
            terms = ppo_terms(dist, value, mb["action"], mb["old_logp"], mb["old_value"],
                              mb["adv"], mb["ret"], ppo.clip_eps)
            weight, grp = mb["weight"], mb["group"]
            per_group = jax.tree.map(
                lambda t: jax.ops.segment_sum((t * weight).ravel(), grp.ravel(), n_sets) / count,
                terms)
            loss = (per_group.policy_loss + ppo.vf_coef * per_group.value_loss
                    - ppo.ent_coef * per_group.entropy).sum()
            mean = jax.tree.map(lambda t: (t * weight).sum() / total, terms)._asdict()
            if n_shared:
                shared = clipped_value_loss(shared_values(critic_params, x), mb["old_shared"],
                                            mb["shared_ret"], ppo.clip_eps)
                shared = (shared * weight[..., None]).sum((0, 1)) / total  # [C]
                loss = loss + ppo.vf_coef * shared.sum()
                mean["shared_value_loss"] = shared.mean()
            return loss, mean

        def minibatch_step(learners, mb):
            weight = mb["weight"]
            count = jnp.maximum(jax.ops.segment_sum(weight.ravel(), mb["group"].ravel(), n_sets),
                                1.0)
            grads, info = accumulated_grad(
                lambda p, chunk: loss_fn(p, chunk, count, jnp.maximum(weight.sum(), 1.0)),
                tuple(None if lr is None else lr.params for lr in learners), mb, n_chunks)
            return tuple(None if lr is None else _apply(policy_tx, lr, g, per_set=True)
                         for lr, g in zip(learners, grads)), info

        def epoch(learners, key):
            order = jax.random.permutation(key, size)[: n_mb * mb_size].reshape(n_mb, mb_size)
            return jax.lax.scan(minibatch_step, learners, jax.tree.map(lambda x: x[order], batch))

        (policy, critics), info = jax.lax.scan(epoch, (policy, critics),
                                               jax.random.split(key, ppo.update_epochs))
        return policy, critics, jax.tree.map(jnp.mean, info)

    def lcf_update(key: jax.Array, lcf: Learner, policy: Learner, batch: dict[str, jax.Array]):
        """CoPO's meta-step of the coordination factor on one random minibatch (`algos.py`)."""
        size = horizon * n_envs
        rows = jax.random.permutation(key, size)[: ppo.batch_size]
        mb = jax.tree.map(lambda x: x[rows], batch)

        def surrogate(params, adv):
            dist, _, _ = policy_head(params, mb)
            ratio = jnp.exp(dist.log_prob(mb["action"]) - mb["old_logp"])
            return (ratio * adv * mb["weight"]).sum() / jnp.maximum(mb["weight"].sum(), 1.0)

        loss, grads = jax.value_and_grad(algos.lcf_meta_loss)(
            lcf.params, mb["lcf_noise"], surrogate, policy.params, ppo.lr, mb["adv_individual"],
            mb["adv_neighbourhood"], mb["adv_team"])
        lcf = _apply(lcf_tx, lcf, grads)
        return lcf, {"lcf_meta_loss": loss, "lcf_mean_deg": jnp.rad2deg(lcf.params["mean"]),
                     "lcf_std_deg": jnp.rad2deg(jnp.exp(lcf.params["log_std"]))}

    def advantages_and_returns(key: jax.Array, traj: Transition, lcf: Learner | None):
        """GAE of the groups' critics and of the shared ones, and the actor's advantage.

        Returns (actor advantages f32[T, E, N], returns f32[T, E, N], shared returns f32[T, E, N, C]
        or None, CoPO's meta-update inputs or {}).
        """
        # Every episode ends within max_steps (the environments' time limit): nothing to bootstrap.
        done = traj.done[..., None]
        own_reward = algos.team_reward(traj.reward) if central else traj.reward
        advantages, returns = gae(own_reward, traj.value, done, jnp.zeros_like(traj.value[0]),
                                  ppo.gamma, ppo.gae_lambda)
        if not n_shared:
            return advantages, returns, None, {}
        assert traj.shared_value is not None, "the rollout records the shared critics' values"
        signals = {"individual": own_reward, "team": algos.team_reward(traj.reward)}
        if traj.neighbour_reward is not None:  # only CoPO's rollout records r^N
            signals["neighbourhood"] = traj.neighbour_reward
        shared_adv, shared_ret = gae(
            jnp.stack([signals[name] for name in shared_signals], axis=-1), traj.shared_value,
            done[..., None], jnp.zeros_like(traj.shared_value[0]), ppo.gamma, ppo.gae_lambda)
        of = {name: shared_adv[..., i] for i, name in enumerate(shared_signals)}
        if spec.shared_critic:  # PSA: the mean of the agent's own and the shared critic's
            advantages = 0.5 * (advantages + of["individual"])
        if not copo:
            return advantages, returns, shared_ret, {}
        assert lcf is not None, "CoPO's state carries its coordination factor"
        normal = lambda a: _standardise(a, traj.valid)  # noqa: E731
        noise = jax.random.normal(key, (n_envs, n_agents))  # one phi per agent and episode
        meta = {"adv_individual": normal(advantages), "adv_neighbourhood": normal(of["neighbourhood"]),
                "adv_team": normal(of["team"]), "lcf_noise": jnp.broadcast_to(noise, traj.valid.shape)}
        coordinated = algos.coordinated_advantage(algos.lcf_angle(lcf.params, noise),
                                                  meta["adv_individual"], meta["adv_neighbourhood"])
        return coordinated, returns, shared_ret, meta

    def selector_update(roles: RoleState, traj: Transition, groups: jax.Array,
                        team_return: jax.Array, advantages: jax.Array, fit: jax.Array,
                        posterior: jax.Array | None):
        """fit: f32[E, N, M], the group-response fit of every agent under every group, weighted;
        posterior: f32[E, N, M] or None, weighted targets for a_g from the group response."""
        z_groups = models.group_embedding(roles.cvae.params)
        stats = roles.return_stats.update(team_return)
        if share.selector_signal == "team-return":
            def loss(params):
                return selector_loss(selector_net, params, roles.agent_embedding, z_groups, groups,
                                     stats.standardise(team_return), share.selector_ent_coef, fit,
                                     posterior)
        else:
            assert traj.group_log_prob is not None, "selector methods record it"
            gains = group_advantages(traj.group_log_prob, traj.log_prob,
                                     _standardise(advantages, traj.valid), traj.valid)
            # Which group suits every agent better is the groups' policies' business (PPO trains
            # the laggard); the selector only needs which agents suit a group more than others do.
            # Uncentred, that common part drew every warehouse robot into one group for a while.
            gains = gains - gains.mean(axis=(0, 1))

            def loss(params):
                return group_advantage_loss(selector_net, params, roles.agent_embedding, z_groups,
                                            gains + fit, share.selector_ent_coef,
                                            share.group_balance_coef, posterior)

        def step(learner: Learner, _):
            grads, info = jax.grad(loss, has_aux=True)(learner.params)
            return _apply(selector_tx, learner, grads), info

        # Several steps on this iteration's batch; by default one per episode, as Algorithm 1
        # (at most AUTO_SELECTOR_STEPS: each step reads the whole batch).
        # One step per iteration of 16 episodes left a_g unsure (entropy 0.55 of ln 2 on rware-1)
        # while the response models had long told the colours apart (docs/grouping.md).
        selector, infos = jax.lax.scan(step, roles.selector, None,
                                       length=config.selector_steps)
        info = jax.tree.map(lambda x: x[0], infos)  # the loss before this iteration's steps
        if n_sets > 1:
            # Eq. 13 can only tell groups apart as far as their z_g point in different directions.
            unit = z_groups / (jnp.linalg.norm(z_groups, axis=-1, keepdims=True) + 1e-8)
            cosine = unit @ unit.T
            info["group_embedding_cosine"] = (
                (cosine.sum() - jnp.trace(cosine)) / (n_sets * (n_sets - 1)))
        return selector, stats, info

    def role_update(key: jax.Array, roles: RoleState, traj: Transition, final_obs: jax.Array,
                    groups: jax.Array, team_return: jax.Array, advantages: jax.Array,
                    choice: jax.Array, logits: jax.Array | None):
        """One step of each role model the method uses (`MethodSpec.trains_*`).

        logits: f32[E, N, M], the selector's logits the groups were drawn from (None without one).
        """
        k_vlstm, k_cvae, k_idx, k_resp = jax.random.split(key, 4)
        action = encode_action(traj.action)

        def response_rows(t: jax.Array, e: jax.Array, n: jax.Array) -> tuple[ResponseData,
                                                                              jax.Array]:
            """The transitions of agents n in environments e at steps t (int32[B] each), and
            valid f32[B]. Only these rows are gathered: s_{t+1} of the last step is the state
            after the rollout."""
            following = traj.obs[jnp.minimum(t + 1, horizon - 1), e, n]
            outcome = jnp.where((t + 1 < horizon)[:, None], following, final_obs[e, n])
            if share.response_target == "state-reward":
                outcome = jnp.concatenate([outcome, traj.reward[t, e, n][:, None]], axis=-1)
            data = ResponseData(traj.obs[t, e, n], traj.action[t, e, n], action[t, e, n],
                                outcome, traj.action_mask[t, e, n])
            return data, traj.valid[t, e, n]

        fit, posterior = jnp.zeros((n_envs, n_agents, n_sets)), None
        response = roles.response
        response_info: dict[str, jax.Array] = {}
        if response_net is not None:
            assert response is not None, "the response models are in the role state"
            k_estep, k_mstep = jax.random.split(k_resp)
            # E-step: a few time steps of every agent scored under every group's model as it was
            # before this iteration's M-step.
            steps = jax.random.randint(k_estep, (share.response_steps,), 0, horizon)
            grid = (share.response_steps, n_envs, n_agents)
            resp_data, resp_valid = response_rows(
                *(jnp.broadcast_to(i, grid).reshape(-1) for i in
                  (steps[:, None, None], jnp.arange(n_envs)[:, None], jnp.arange(n_agents))))
            ll = response_log_likelihood(response_net, response.params, resp_data)
            resp_valid = resp_valid.reshape(grid)
            ll = ll.reshape(grid + (n_sets,)) * resp_valid[..., None]
            mean_ll = ll.sum(0) / jnp.maximum(resp_valid.sum(0), 1.0)[..., None]
            # EM's responsibilities: the posterior of each agent's group given its sampled
            # transitions, with a_g (`response_prior="selector"`) or a uniform prior. Fitting under
            # a_g itself failed: while a_g is near uniform every group's model sees the same mix
            # of agents, the models converge to one another and the fit they give the selector
            # fades (rware-1, 1M steps).
            prior = (jnp.zeros(mean_ll.shape) if logits is None or share.response_prior == "uniform"
                     else logits)
            evidence = ll.sum(0) * response_net.scored_numbers / share.response_temperature
            responsibilities = response_posterior(prior, evidence, centred=False)
            response_info = {"response_spread": mean_ll.std(axis=-1).mean(),
                             "response_confidence": responsibilities.max(-1).mean()}
            if agent_types is not None:
                # Whether the response models alone tell the types apart (each agent to the group
                # whose model explains it best relative to the other agents), whatever a_g does.
                best = jnp.argmax(mean_ll - mean_ll.mean(axis=(0, 1)), axis=-1)
                response_info["response_type_ari"] = group_metrics.adjusted_rand_index(
                    best, jnp.asarray(agent_types), n_sets, num_types).mean()
            smoothing = share.response_smoothing
            weights = (1.0 - smoothing) * responsibilities + smoothing / n_sets  # [E, N, M]
            # M-step: `response_updates` Adam steps, each on as many random transitions as the
            # E-step scored, at most response_batch (its cost must not grow with the number of
            # agents); an agent's responsibilities hold for all its steps.
            rows = min(share.response_steps * n_envs * n_agents, share.response_batch)

            def m_step(learner: Learner, k: jax.Array):
                t, e, n = jnp.unravel_index(
                    jax.random.randint(k, (rows,), 0, horizon * n_envs * n_agents),
                    (horizon, n_envs, n_agents))
                data, valid = response_rows(t, e, n)
                nll, grads = jax.value_and_grad(
                    lambda p: response_nll(response_net, p, weights[e, n], data, valid)
                )(learner.params)
                return _apply(response_tx, learner, grads), nll

            fitted, nlls = jax.lax.scan(m_step, response,
                                        jax.random.split(k_mstep, share.response_updates))
            response = fitted
            response_info["response_loss"] = nlls.mean()
            # The selector sees only how much better a group explains this agent than the others:
            # centred over agents (`response_posterior`).
            if share.response_selector == "posterior":
                posterior = share.group_response_coef * response_posterior(prior, evidence)
            else:
                fit = share.group_response_coef * (mean_ll - mean_ll.mean(axis=(0, 1)))

        info = {}
        selector, stats = roles.selector, roles.return_stats
        if selecting:
            selector, stats, info = selector_update(roles, traj, groups, team_return, advantages,
                                                    fit, posterior)

        batch = horizon * n_envs * n_agents
        vlstm, embedding = roles.vlstm, roles.agent_embedding
        if spec.trains_vlstm:
            to_batch = lambda x: x.reshape((horizon, n_envs * n_agents) + x.shape[3:])  # noqa: E731
            (info["vlstm_loss"], embedding), vlstm_grads = jax.value_and_grad(
                lambda p: vlstm_elbo(vlstm_net, p, k_vlstm, to_batch(traj.obs), to_batch(action),
                                     to_batch(traj.reward), final_obs.reshape(-1, env.obs_dim),
                                     to_batch(traj.valid), share.agent_embedding,
                                     share.vlstm_decoder == "action", share.vlstm_grad_sequences,
                                     grad_steps=share.vlstm_grad_steps),
                has_aux=True,
            )(roles.vlstm.params)
            vlstm = _apply(role_tx, roles.vlstm, vlstm_grads)
            embedding = jax.lax.stop_gradient(embedding.reshape(n_envs, n_agents, -1))

        cvae = roles.cvae
        if spec.trains_cvae:
            # The CVAE sees a random subset of (state, action, group) triples: its cost must not
            # grow with N x T x E (3130 agents in the medical scenario). A batch of at most
            # aux_samples triples is taken whole, once each: the mean the draws would estimate,
            # without holding aux_samples copies (4096 draws of rolegame's 256 triples).
            idx = (jnp.arange(batch) if batch <= share.aux_samples
                   else jax.random.randint(k_idx, (share.aux_samples,), 0, batch))
            take = lambda x: x.reshape((batch,) + x.shape[3:])[idx]  # noqa: E731
            all_groups = jnp.broadcast_to(groups, (horizon,) + groups.shape)

            info["cvae_loss"], cvae_grads = jax.value_and_grad(
                lambda p: cvae_elbo(cvae_net, p, k_cvae, take(all_groups), take(traj.obs),
                                    take(traj.action), take(traj.valid), share.cvae_beta,
                                    action_mask=take(traj.action_mask))
            )(roles.cvae.params)
            cvae = _apply(role_tx, roles.cvae, cvae_grads)

        new_roles = RoleState(
            vlstm=vlstm, cvae=cvae, selector=selector, return_stats=stats,
            agent_embedding=embedding, previous_choice=choice, response=response,
        )
        info.update(response_info)
        return new_roles, info

    def assignment_metrics(choice: jax.Array) -> dict[str, jax.Array]:
        """Group sizes of an assignment int32[E, N] and, with true agent types, ARI and purity."""
        sizes = jax.nn.one_hot(choice, n_sets).sum(axis=1).mean(axis=0)  # [M]
        out = {f"group_size_{m}": sizes[m] for m in range(n_sets)}
        if agent_types is not None:
            types = jnp.asarray(agent_types)
            out["type_ari"] = group_metrics.adjusted_rand_index(
                choice, types, n_sets, num_types).mean()
            out["type_purity"] = group_metrics.purity(choice, types, n_sets, num_types).mean()
        return out

    def grouping_metrics(logits: jax.Array, previous: jax.Array,
                         embedding: jax.Array) -> tuple[jax.Array, dict]:
        """What the selector's assignment looks like this iteration (docs/grouping.md)."""
        choice = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        changed = jnp.where(previous >= 0, choice != previous, False)
        out = {
            "selector_entropy": distrax.Categorical(logits=logits).entropy().mean(),
            "selector_top_prob": jax.nn.softmax(logits, axis=-1).max(-1).mean(),
            "group_changes": changed.mean(),
            **assignment_metrics(choice),
        }
        if agent_types is not None:
            out["role_separation"] = group_metrics.separation(
                embedding, jnp.asarray(agent_types), num_types).mean()
        return choice, out

    def seps_switch(key: jax.Array, state: TrainState) -> TrainState:
        """End of SePS's pre-training: cluster the ids and copy the shared network into every set."""
        assert state.seps is not None, "SePS's state carries its buffer"
        assignment = seps_lib.cluster(key, state.seps.buffer, n_agents, n_sets)
        copy = lambda x: jnp.broadcast_to(x[:1], x.shape)  # noqa: E731
        return dataclasses.replace(state, policy=jax.tree.map(copy, state.policy),
                                   seps=dataclasses.replace(state.seps, assignment=assignment))

    def seps_record(key: jax.Array, state: TrainState, traj: Transition, final_obs: jax.Array):
        """Records transitions of the pre-training iterations (after them the buffer is kept)."""
        assert state.seps is not None, "SePS's state carries its buffer"
        next_obs = jnp.concatenate([traj.obs[1:], final_obs[None]], axis=0)
        recorded = seps_lib.record(state.seps.buffer, key, state.iteration * seps_per_iteration,
                                   seps_per_iteration, traj.obs, encode_action(traj.action),
                                   next_obs, traj.reward, traj.valid)
        pretraining = state.iteration < seps_pretrain
        buffer = jax.tree.map(lambda new, old: jnp.where(pretraining, new, old), recorded,
                              state.seps.buffer)
        return dataclasses.replace(state.seps, buffer=buffer)

    def iteration(state: TrainState, _) -> tuple[TrainState, dict[str, jax.Array]]:
        key, k_assign, k_roll, k_ppo, k_roles = jax.random.split(state.key, 5)
        k_seps, k_record, k_phi, k_lcf = (jax.random.fold_in(k_assign, i) for i in range(1, 5))
        if clusters:
            # The iteration counter is never batched by vmap over keys, so this stays a branch.
            state = jax.lax.cond(state.iteration == seps_pretrain,
                                 lambda s: seps_switch(k_seps, s), lambda s: s, state)
        # `init` gives the state the optional parts its method has: the asserts only say which.
        roles = state.roles
        embedding = None
        if spec.role_embedding:
            assert roles is not None
            embedding = roles.agent_embedding
        if selecting:
            assert roles is not None
            logits = _selector_logits(models, roles)
            groups = shard.envs(sample_groups(k_assign, logits))
        else:
            groups = sharing.fixed_assignment(spec, n_envs, n_agents, agent_types)
            if clusters:
                assert state.seps is not None
                groups = jnp.broadcast_to(state.seps.assignment, groups.shape)
        critic_params = None
        if n_shared:
            assert state.critics is not None
            critic_params = state.critics.params
        traj, final_obs = rollout(k_roll, state.policy.params, critic_params, groups, embedding)
        advantages, returns, shared_returns, meta = advantages_and_returns(k_phi, traj, state.lcf)
        team_return = traj.reward.sum(axis=(0, 2))  # [E]
        metrics = {
            "episode_return": team_return.mean(),
            "episode_length": traj.valid[:, :, 0].sum(axis=0).mean(),
            **{k: v.sum(axis=0).mean() for k, v in traj.metrics.items()},
        }
        if spec.has_roles:
            assert roles is not None
            choice = roles.previous_choice
            if selecting:
                choice, group_info = grouping_metrics(logits, roles.previous_choice,
                                                      roles.agent_embedding)
                metrics.update(group_info)
            roles, role_info = role_update(k_roles, roles, traj, final_obs, groups, team_return,
                                           advantages, choice, logits if selecting else None)
            metrics.update(role_info)
        seps_state = state.seps
        if clusters:
            seps_state = seps_record(k_record, state, traj, final_obs)
            metrics.update(assignment_metrics(groups))
        batch = {**ppo_batch(traj, groups, embedding), "adv": flat(advantages),
                 "ret": flat(returns), **{k: flat(v) for k, v in meta.items()}}
        if n_shared:
            batch.update(old_shared=flat(traj.shared_value), shared_ret=flat(shared_returns))
        policy, critics, ppo_info = ppo_update(k_ppo, state.policy, state.critics, batch)
        metrics.update(ppo_info)
        lcf = state.lcf
        if copo:
            assert lcf is not None
            lcf, lcf_info = lcf_update(k_lcf, lcf, policy, batch)
            metrics.update(lcf_info)
        new_state = TrainState(
            policy=policy, roles=roles, key=key, iteration=state.iteration + 1,
            env_steps=state.env_steps + n_envs * horizon, critics=critics, lcf=lcf,
            seps=seps_state,
        )
        return lay_out(new_state, shard.same, shard.envs), metrics

    def iterate(state: TrainState, n: int):
        return jax.lax.scan(iteration, state, None, length=n)

    return TrainFns(init=init, iterate=iterate, place=place)


def lay_out(state: TrainState, replicated: Callable[[Any], Any],
            per_env: Callable[[Any], Any]) -> TrainState:
    """Applies `per_env` to the leaves with a leading environment axis (the DyPS agent embeddings
    f32[E, N, H] and last choices int32[E, N]) and `replicated` to every other leaf."""
    out = replicated(state)
    if state.roles is None:
        return out
    roles = state.roles
    return out.replace(roles=out.roles.replace(
        agent_embedding=per_env(roles.agent_embedding),
        previous_choice=per_env(roles.previous_choice)))


def _standardise(x: jax.Array, valid: jax.Array) -> jax.Array:
    """(x - mean) / std over the entries with valid = 1 (x, valid of one shape)."""
    count = jnp.maximum(valid.sum(), 1.0)
    mean = (x * valid).sum() / count
    std = jnp.sqrt((jnp.square(x - mean) * valid).sum() / count)
    return (x - mean) / (std + 1e-8)


def _apply(tx: optax.GradientTransformation, learner: Learner, grads: Any,
           per_set: bool = False) -> Learner:
    """One optimiser step; `per_set`: leaves carry a leading axis of independent parameter sets
    with an optimiser state each."""
    update = jax.vmap(tx.update) if per_set else tx.update
    updates, opt_state = update(grads, learner.opt_state, learner.params)
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
