"""dyps-jax: DyPS (Dynamic Parameter Sharing, KDD'24) and its baselines in pure JAX.

    config = dyps_jax.make_config(env="lbf-1", method="dyps", total_steps=200_000)
    train = dyps_jax.make_train(config)
    state, metrics = jax.jit(train)(jax.random.key(0))
"""

from dyps_jax import envs
from dyps_jax.config import METHODS, TrainConfig, make_config
from dyps_jax.train import TrainState, make_train, make_train_fns

__all__ = ["METHODS", "TrainConfig", "TrainState", "envs", "make_config", "make_train",
           "make_train_fns"]
__version__ = "0.1.0"
