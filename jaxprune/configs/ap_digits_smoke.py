"""CI smoke run of the AP2/AP3 study on scikit-learn digits: the ``mlp``, 3
training epochs, 1 trial, lowest-magnitude pruning at sparsity 0.5, 2
fine-tuning epochs, 10k Student-t draws (seconds on a CPU).

    python -m experiments.run --config jaxprune/configs/ap_digits_smoke.py --workdir runs/ap_smoke
"""

from __future__ import annotations

from jaxprune.configs.ap_base import ap_config


def get_config():
    c = ap_config(dataset="digits", model="mlp", lr=0.05, epochs=3, batch_size=64)
    c.train.eval_batch_size = 256
    c.train.log_every = 10
    c.method.methods = ("lowest",)
    c.method.sparsities = (0.5,)
    c.method.trials = 1
    c.method.finetune_train.epochs = 2
    c.method.t_samples = 10_000
    c.method.t_samples_epoch = 10_000
    return c
