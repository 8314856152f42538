"""SiPP on ResNet-20 / CIFAR-10 with the paper's recipe (Table S1): SGD lr 0.1,
momentum 0.9 (no Nesterov), weight decay 1e-4, batch 128, 182 epochs with a
5-epoch linear warm-up and x0.1 at epochs 91 and 136; alpha = 0.85,
delta = 1e-16.

    python -m experiments.run --config jaxprune/configs/sipp_resnet20.py:rand,snip,0.98 \\
        --workdir runs/sipp/r20

Argument ``pipeline,method[,sparsity]`` as in ``sipp_cpu.py``.
"""

from __future__ import annotations

from jaxprune.configs.sipp_base import parse_arg, sipp_config


def get_config(arg: str = "rand,sipp_hybrid,0.9"):
    pipeline, method, sparsity = parse_arg(arg)
    c = sipp_config(pipeline, method, sparsity)
    c.data.name = "cifar10"
    c.model.name = "resnet20"
    t = c.train
    t.epochs = 182
    t.batch_size = 128
    t.eval_batch_size = 1000
    t.lr = 0.1
    t.momentum = 0.9
    t.nesterov = False
    t.weight_decay = 1e-4
    t.schedule = "multistep"
    t.milestones = (91 / 182, 136 / 182)
    t.lr_decay_factor = 0.1
    t.warmup_epochs = 5.0
    return c
