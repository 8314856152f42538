"""CPU-scale AP2/AP3 study (issue 10): LeNet-300-100 or the ``mlp``
(in-128-256-10) on Fashion-MNIST, or ``cnn`` on the CIFAR-10 JPEG copy (10k
train subset). 20 training epochs, then 3 methods x 4 sparsities x 3 trials x
20 fine-tuning epochs with the issue's measure settings.

    python -m experiments.run --config jaxprune/configs/ap_cpu.py:lenet300 --workdir runs/ap_cpu/lenet300

``experiments/ap_study.py`` runs all models and passes the reduced CPU budget it
used on the command line.
"""

from __future__ import annotations

from jaxprune.configs.ap_base import ap_config

MODELS = {"lenet300": "fashion_mnist", "mlp": "fashion_mnist", "cnn": "cifar10"}


def get_config(arg: str = "lenet300"):
    model = arg.strip()
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not valid here; expected one of {sorted(MODELS)}")
    lr = 0.05 if model == "cnn" else 0.1
    return ap_config(dataset=MODELS[model], model=model, lr=lr, epochs=20)
