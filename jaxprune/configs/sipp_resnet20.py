"""SiPP on ResNet-20 / CIFAR-10 with the paper's recipe (Table S1): SGD lr 0.1,
momentum 0.9 (no Nesterov), weight decay 1e-4, batch 128, 182 epochs with a
5-epoch linear warm-up and x0.1 at epochs 91 and 136; alpha = 0.85,
delta = 1e-16; SiPPDet's patch reduction "mean" (the authors' code).

    python -m experiments.run --config jaxprune/configs/sipp_resnet20.py:rand,snip,0.98 \\
        --workdir runs/sipp/r20

Argument ``pipeline,method[,sparsity]`` as in ``sipp_cpu.py``; the recipe is
``jaxprune.configs.sipp_base.TABLE_S1["resnet20"]``.
"""

from __future__ import annotations

from jaxprune.configs.sipp_base import paper_config


def get_config(arg: str = "rand,sipp_hybrid,0.9"):
    return paper_config("resnet20", arg)
