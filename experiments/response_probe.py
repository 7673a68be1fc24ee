"""Does the group response tell apart two kinds of agent whose actions act in opposite directions?

The planted problem of `tests/test_roles.py`: the next state is s + a for kind 0 and s - a for kind 1.
Every group's response model is fitted to the samples of its own kind (`response_nll` with one-hot
responsibilities, Adam), from several initialisations; printed is the share of samples that their own
group's model explains better than the other group's does (1.0: the models tell the kinds apart).

    python experiments/response_probe.py [--model forward|inverse] [--lrs 3e-3,1e-2]
        [--steps 400,800] [--inits 8]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

from dyps_jax.roles.response import (
    GroupResponse,
    ResponseData,
    init_response,
    response_log_likelihood,
    response_nll,
)


def separation(init: int, steps: int, lr: float, kind_of_model: str = "forward",
               samples: int = 512) -> float:
    model = GroupResponse(num_groups=2, outcome_dim=2, num_actions=2, kind=kind_of_model)
    kind = jnp.arange(samples) % 2
    states = jax.random.normal(jax.random.key(1), (samples, 2))
    action = jax.random.randint(jax.random.key(2), (samples,), 0, 2)
    encoded = jax.nn.one_hot(action, 2)
    outcomes = states + jnp.where(kind[:, None] == 0, 1.0, -1.0) * encoded
    data = ResponseData(states, action, encoded, outcomes, jnp.ones((samples, 2), bool))
    tx = optax.adam(lr)

    def step(carry, _):
        params, opt = carry
        grads = jax.grad(lambda p: response_nll(model, p, jax.nn.one_hot(kind, 2), data,
                                                jnp.ones(samples)))(params)
        updates, opt = tx.update(grads, opt)
        return (optax.apply_updates(params, updates), opt), None

    params = init_response(model, jax.random.key(init), 2)
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    ll = response_log_likelihood(model, params, data)
    own = jnp.take_along_axis(ll, kind[:, None], axis=1)[:, 0]
    other = jnp.take_along_axis(ll, 1 - kind[:, None], axis=1)[:, 0]
    return float((own > other).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default="3e-3,1e-2")
    parser.add_argument("--steps", default="400,800")
    parser.add_argument("--inits", type=int, default=8)
    parser.add_argument("--model", choices=("forward", "inverse"), default="forward")
    args = parser.parse_args()
    for lr in map(float, args.lrs.split(",")):
        for steps in map(int, args.steps.split(",")):
            shares = [separation(i, steps, lr, args.model) for i in range(args.inits)]
            print(f"lr {lr:g}, {steps} steps: own group better for "
                  f"{', '.join(f'{s:.2f}' for s in shares)} of samples (min {min(shares):.2f})",
                  flush=True)


if __name__ == "__main__":
    main()
