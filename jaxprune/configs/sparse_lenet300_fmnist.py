"""Sparse training study at CPU scale: LeNet-300-100 on Fashion-MNIST at the
budget of the DPF study (jaxprune/configs/dpf_lenet300_fmnist.py: 60 epochs,
batch 128, SGD + Nesterov 0.9, lr 0.1 divided by 10 at 50% and 75%, wd 1e-4).
Pruned: both hidden kernels (the last layer and the biases stay dense).

    python -m experiments.run --config jaxprune/configs/sparse_lenet300_fmnist.py:rigl,0.9 --workdir runs/x
    # methods: static | set | rigl | sparse_momentum | dsr | ste | acdc (pipeline sparse_training),
    # and dense | dpf | incremental (the DPF study's config, unchanged); default rigl,0.9

``static`` uses ERK densities here (the study's "Static (ERK)" row).
"""

from jaxprune.configs import dpf_lenet300_fmnist
from jaxprune.configs.common import base_config
from jaxprune.configs.dpf_base import parse_arg

DPF_METHODS = ("dense", "dpf", "incremental")


def sparse_config(method: str, target: float, base):
    """The ``sparse_training`` config of ``method`` with the ``data``, ``model``
    and ``train`` sections of ``base`` (a DPF study config)."""
    c = base_config()
    c.pipeline = "sparse_training"
    c.data, c.model, c.train = base.data, base.model, base.train
    c.method.name = method
    c.method.target_sparsity = float(target)
    c.method.update_every = 0
    c.method.drop_fraction = 0.0
    c.method.distribution = "erk" if method == "static" else ""
    c.method.label = "Static (ERK)" if method == "static" else ""
    return c


def get_config(arg: str | None = None):
    method, target = parse_arg(arg, "rigl", 0.9)
    base = dpf_lenet300_fmnist.get_config(f"{method if method in DPF_METHODS else 'dense'},{target}")
    if method in DPF_METHODS:
        return base
    return sparse_config(method, target, base)
