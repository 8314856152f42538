"""CPU-scale PQ Index / SAP study on Fashion-MNIST (issue 7): Linear and MLP,
the paper's optimizer with batch 250, 20 epochs per round, T = 30, 2 seeds.

    python -m experiments.run --config jaxprune/configs/sap_cpu.py:mlp,sap,global \\
        --workdir runs/sap_cpu/mlp_sap

Argument ``model,method,scope`` with model linear | mlp, method sap | sap_1_2 |
lt | os, scope global | layer | neuron. ``experiments/sap_study.py`` runs the
whole grid (and passes the reduced budget it used on the command line).
"""

from __future__ import annotations

from jaxprune.configs.sap_base import sap_config


def get_config(arg: str = "mlp,sap,global"):
    parts = [s.strip() for s in arg.split(",")]
    if len(parts) != 3:
        raise ValueError(f"config argument {arg!r} must be 'model,method,scope'")
    model, method, scope = parts
    if model not in ("linear", "mlp"):
        raise ValueError(f"model={model!r} is not valid here; expected one of ['linear', 'mlp']")
    config = sap_config(method, dataset="fashion_mnist", model=model, epochs=20, rounds=30)
    config.method.scope = scope
    return config
