"""CI smoke run of the ABP study: scikit-learn diabetes, one replication, a
tiny grid, a small MLP and a few epochs.

python -m experiments.run --config jaxprune/configs/abp_diabetes_smoke.py --workdir runs/abp_smoke
"""

from jaxprune.configs.abp_california import get_config as california


def get_config():
    config = california()
    config.data.name = "diabetes"
    config.model.kwargs.hidden = (16, 16)
    config.train.batch_size = 32
    config.train.epochs = 5
    config.train.lr = 1e-2
    m = config.method
    m.replications = 1
    m.abp_l = (1e-2,)
    m.abp_m = ((0.5, 0.0),)
    m.mag = (0.5,)
    m.stats_batch_size = 100
    return config
