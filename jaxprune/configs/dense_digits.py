"""Dense baseline: the PQ paper's MLP (in-128-256-10) on scikit-learn digits.

python -m experiments.run --config jaxprune/configs/dense_digits.py --workdir runs/dense_digits
"""

from jaxprune.configs.common import base_config


def get_config():
    config = base_config()
    config.pipeline = "dense"
    config.data.name = "digits"
    config.model.name = "mlp"
    config.train.epochs = 20
    config.train.batch_size = 64
    config.train.lr = 0.05
    config.train.log_every = 10
    return config
