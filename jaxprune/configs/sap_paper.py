"""Paper-scale PQ Index / SAP experiments (Diao et al., ICLR 2023), for GPUs.

    python -m experiments.run --config jaxprune/configs/sap_paper.py:cifar10,resnet18,sap \\
        --config.seed=0 --workdir runs/sap/cifar10_resnet18_sap_s0

The argument is ``dataset,model,method[,scope]``:
  dataset/model: fashion_mnist with linear | mlp | cnn | resnet18;
    cifar10 with linear | mlp | cnn | resnet18; cifar100 with wrn28_8.
    (TinyImageNet / ResNet50 is not available: the engine has no TinyImageNet
    loader.) ResNet18 uses the 3x3 CIFAR stem.
  method: sap (p=0.5, q=1) | sap_1_2 (p=1, q=2) | lt | os;
  scope: global (default) | layer | neuron.
The paper runs 4 seeds (``--config.seed=0..3``), 200 epochs per round and
T = 30 rounds (Linear/MLP/CNN) or 15 (ResNets). Ablation grids (appendix D.4,
D.5), each on top of ``...,sap``:
  --config.method.p in ABLATIONS["p"] (q = 1); --config.method.q in
  ABLATIONS["q"] (p = 1); --config.method.eta_r in ABLATIONS["eta_r"];
  --config.method.gamma in ABLATIONS["gamma"].
"""

from __future__ import annotations

from jaxprune.configs.sap_base import sap_config

PAPER_MODELS = {
    "fashion_mnist": ("linear", "mlp", "cnn", "resnet18"),
    "cifar10": ("linear", "mlp", "cnn", "resnet18"),
    "cifar100": ("wrn28_8",),
}
ABLATIONS = {
    "p": (0.2, 0.4, 0.6, 0.8),
    "q": (1.2, 1.4, 1.6, 1.8),
    "eta_r": (0.001, 0.01, 0.1, 1.0),
    "gamma": (3.0, 5.0, 7.0, 9.0),
}


def get_config(arg: str = "fashion_mnist,mlp,sap"):
    parts = [s.strip() for s in arg.split(",")]
    if len(parts) not in (3, 4):
        raise ValueError(f"config argument {arg!r} must be 'dataset,model,method[,scope]'")
    dataset, model, method = parts[:3]
    if dataset not in PAPER_MODELS or model not in PAPER_MODELS[dataset]:
        raise ValueError(f"dataset,model={dataset},{model} is not a paper setting; valid: {PAPER_MODELS}")
    small = model in ("linear", "mlp", "cnn")
    config = sap_config(method, dataset=dataset, model=model, epochs=200, rounds=30 if small else 15)
    if model == "resnet18":
        config.model.kwargs.cifar_stem = True
    if len(parts) == 4:
        config.method.scope = parts[3]
    config.data.val_fraction = 0.1  # best-of-round is selected on validation (authors: on test)
    return config
