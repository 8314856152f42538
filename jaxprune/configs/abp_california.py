"""ABP study (Yang et al., Section 5, Table 2) on California Housing.

Model: in-64-64-64-1 ReLU MLP (``mlp_regressor``; the paper gives no widths).
Training: Adam 1e-3, batch 256, 40 epochs, MSE, features standardized with
train statistics, target in 100k USD; 20 replications (seeds 0..19), all
16512 training rows (no validation hold-out: the study has no model selection).

python -m experiments.run --config jaxprune/configs/abp_california.py --workdir runs/abp_california
python -m experiments.abp_study   # the same, plus results/abp_california.{json,md,png}
"""

from jaxprune.configs.common import base_config


def get_config():
    config = base_config()
    config.pipeline = "abp"
    config.data.name = "california_housing"
    config.data.val_fraction = 0.0
    config.model.name = "mlp_regressor"
    config.model.kwargs.hidden = (64, 64, 64)
    t = config.train
    t.optimizer = "adam"
    t.lr = 1e-3
    t.schedule = "constant"
    t.weight_decay = 0.0
    t.batch_size = 256
    t.epochs = 40
    m = config.method
    m.replications = 20
    m.abp_l = (1e-3, 1e-4, 1e-5)
    m.abp_m = ((0.3, 0.0), (0.5, 0.0), (0.7, 0.0), (0.5, 0.1), (0.5, 0.2), (0.5, 0.3))  # (q, eta)
    m.mag = (0.3, 0.5, 0.7)
    m.stats_batch_size = 4096
    m.lasso_tol = 1e-6
    m.lasso_max_iter = 5000
    return config
