"""dyps-jax: DyPS (Dynamic Parameter Sharing, KDD'24) and its baselines in pure JAX.

    config = dyps_jax.make_config(env="lbf-1", method="dyps", total_steps=200_000)
    # any of METHODS (psa, seps, dyps-no-cvae, role-as-state, ...) under any of ALGOS:
    config = dyps_jax.make_config(env="ridehailing-1", method="psa", algo="mappo")
    train = dyps_jax.make_train(config)
    state, metrics = jax.jit(train)(jax.random.key(0))
    policy = dyps_jax.make_policy(config, state, greedy=True)  # actions = policy(key, obs, mask)
"""

from dyps_jax import envs
from dyps_jax.algos import ALGOS
from dyps_jax.config import METHODS, TrainConfig, make_config

_LAZY = {"TrainState": "train", "group_probabilities": "train", "make_train": "train",
         "make_train_fns": "train", "Policy": "policy", "make_policy": "policy"}


def __getattr__(name: str):
    # Imported on first use so that `python -m dyps_jax.train` does not find the module already
    # loaded by the package (runpy warns about that).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"dyps_jax.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dyps_jax' has no attribute {name!r}")


__all__ = ["ALGOS", "METHODS", "Policy", "TrainConfig", "TrainState", "envs", "group_probabilities",
           "make_config", "make_policy", "make_train", "make_train_fns"]
__version__ = "0.1.0"
