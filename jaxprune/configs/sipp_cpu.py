"""CPU-scale SiPP study (issue 9): LeNet-300-100 on MNIST, SGD lr 0.01,
momentum 0.9, weight decay 1e-4, batch 64, 10 epochs (1 of linear warm-up,
then x0.1 at 50% and 75% of training, the ResNet recipe of Table S1 in
proportion); iterative rounds on a geometric ladder of 10 densities from 0.8
to 0.02 (the paper: alpha = 0.85 per round; reduced to fit a CPU).

    python -m experiments.run --config jaxprune/configs/sipp_cpu.py:rand,sipp_hybrid,0.9 --workdir runs/sipp/x
    python -m experiments.run --config jaxprune/configs/sipp_cpu.py:iter,wt --workdir runs/sipp/y

Argument ``pipeline,method[,sparsity]``: pipeline rand | iter; method sipp_det |
sipp_rand | sipp_hybrid | wt | snip. ``experiments/sipp_study.py`` runs the grid.
"""

from __future__ import annotations

import numpy as np

from jaxprune.configs.sipp_base import parse_arg, sipp_config


def get_config(arg: str = "rand,sipp_hybrid,0.9"):
    pipeline, method, sparsity = parse_arg(arg)
    c = sipp_config(pipeline, method, sparsity)
    c.data.name = "mnist"
    c.model.name = "lenet300"
    t = c.train
    t.epochs = 10
    t.batch_size = 64
    t.eval_batch_size = 1000
    t.lr = 0.01
    t.momentum = 0.9
    t.nesterov = False
    t.weight_decay = 1e-4
    t.schedule = "multistep"
    t.milestones = (0.5, 0.75)
    t.lr_decay_factor = 0.1
    t.warmup_epochs = 1.0
    t.log_every = 200
    c.method.densities = tuple(float(d) for d in np.geomspace(0.8, 0.02, 10))
    return c
