"""Sparse training on ResNet-20 / CIFAR-10 (a GPU config): the DPF paper's
recipe for ResNet-20 (jaxprune/configs/dpf_paper.py: 300 epochs, batch 128,
SGD + Nesterov 0.9, lr 0.2 / 10 at 50% and 75%, wd 1e-4, all 50k images), every
conv kernel pruned (DPF's set, stem included).

    python -m experiments.run --config jaxprune/configs/sparse_cifar10_resnet20.py:rigl,0.9 --workdir runs/x
    # methods as in jaxprune/configs/sparse_lenet300_fmnist.py
"""

from jaxprune.configs import dpf_paper
from jaxprune.configs.dpf_base import parse_arg
from jaxprune.configs.sparse_lenet300_fmnist import DPF_METHODS, sparse_config


def get_config(arg: str | None = None):
    method, target = parse_arg(arg, "rigl", 0.9)
    dpf_method = method if method in DPF_METHODS else "dense"
    base = dpf_paper.get_config(f"resnet20,{dpf_method},{target}")
    if method in DPF_METHODS:
        return base
    return sparse_config(method, target, base)
