"""Dense baseline: LeNet-300-100 on MNIST (SGD + Nesterov, cosine, 20 epochs).

python -m experiments.run --config jaxprune/configs/dense_mnist_lenet300.py --workdir runs/dense_mnist
"""

from jaxprune.configs.common import base_config


def get_config():
    config = base_config()
    config.pipeline = "dense"
    config.data.name = "mnist"
    config.model.name = "lenet300"
    config.train.epochs = 20
    config.train.batch_size = 128
    config.train.lr = 0.1
    config.train.weight_decay = 1e-4
    return config
