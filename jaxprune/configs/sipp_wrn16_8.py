"""SiPP on WRN-16-8 / CIFAR-10 with the paper's recipe (Table S1): SGD lr 0.1,
momentum 0.9 with Nesterov, weight decay 5e-4, batch 128, 200 epochs with a
5-epoch linear warm-up and x0.2 at epochs 60, 120 and 180; alpha = 0.85,
delta = 1e-16; SiPPDet's patch reduction "mean".

    python -m experiments.run --config jaxprune/configs/sipp_wrn16_8.py:iter,wt \\
        --workdir runs/sipp/wrn16_8

Argument ``pipeline,method[,sparsity]`` as in ``sipp_cpu.py``; the recipe is
``jaxprune.configs.sipp_base.TABLE_S1["wrn16_8"]``.
"""

from __future__ import annotations

from jaxprune.configs.sipp_base import paper_config


def get_config(arg: str = "rand,sipp_hybrid,0.9"):
    return paper_config("wrn16_8", arg)
