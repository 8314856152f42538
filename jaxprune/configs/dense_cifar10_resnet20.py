"""Dense baseline: ResNet-20 on CIFAR-10 with the DPF paper's ResNet recipe
(SGD + Nesterov 0.9, lr 0.2 divided by 10 at 50% and 75%, wd 1e-4, batch 128).

python -m experiments.run --config jaxprune/configs/dense_cifar10_resnet20.py --workdir runs/dense_c10_r20
"""

from jaxprune.configs.common import base_config


def get_config():
    config = base_config()
    config.pipeline = "dense"
    config.data.name = "cifar10"
    config.model.name = "resnet20"
    config.train.epochs = 300
    config.train.batch_size = 128
    config.train.lr = 0.2
    config.train.weight_decay = 1e-4
    config.train.schedule = "multistep"
    config.train.milestones = (0.5, 0.75)
    config.train.lr_decay_factor = 0.1
    config.train.log_every = 100
    config.train.checkpoint_every = 1000
    return config
