"""SiPP on VGG16 (with BatchNorm) / CIFAR-10 with the paper's recipe (Table S1): SGD lr 0.05,
momentum 0.9 (no Nesterov), weight decay 5e-4, batch 256, 300 epochs with a
5-epoch linear warm-up and x0.5 every 30 epochs; alpha = 0.85,
delta = 1e-16; SiPPDet's patch reduction "mean".

    python -m experiments.run --config jaxprune/configs/sipp_vgg16.py:rand,sipp_rand,0.95 \\
        --workdir runs/sipp/vgg16

Argument ``pipeline,method[,sparsity]`` as in ``sipp_cpu.py``; the recipe is
``jaxprune.configs.sipp_base.TABLE_S1["vgg16"]``.
"""

from __future__ import annotations

from jaxprune.configs.sipp_base import paper_config


def get_config(arg: str = "rand,sipp_hybrid,0.9"):
    return paper_config("vgg16", arg)
