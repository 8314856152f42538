"""Shared pieces of the DPF study configs (Lin et al., ICLR 2020; METHODS.md
section 5): the method section and the paper's CIFAR/ImageNet recipes.

The pipelines (``config.pipeline``): ``dpf``, ``incremental``, ``one_shot_ft``,
``one_shot_split``, ``snip`` and ``dpf_dense`` (Dense with the same report
fields); see ``jaxprune/pipelines/dpf.py`` for the ``config.method`` keys.

Method names of the configs' argument (:data:`METHODS`): the pipelines' names
(``dense`` for ``dpf_dense``), the "+FT" rows of the paper's Table 2
(``dpf_ft``, ``incremental_ft``: the method, then the config's fine-tuning
epochs with the final mask fixed) and structured DPF (``dpf_filter``: whole
filters by l2 norm, :func:`jaxprune.masks.filter_norm`).
"""

from __future__ import annotations

import ml_collections

from jaxprune.configs.common import base_config

# method name on the command line -> (registered pipeline, whether it fine-tunes, structured)
METHODS = {
    "dense": ("dpf_dense", False, False),
    "dpf": ("dpf", False, False),
    "dpf_ft": ("dpf", True, False),
    "dpf_filter": ("dpf", False, True),
    "incremental": ("incremental", False, False),
    "incremental_ft": ("incremental", True, False),
    "one_shot_ft": ("one_shot_ft", True, False),
    "one_shot_split": ("one_shot_split", False, False),
    "snip": ("snip", False, False),
}
PIPELINES = {name: pipeline for name, (pipeline, _, _) in METHODS.items()}
# Fine-tuning optimizer and lr factor (lr = train.lr * factor) of each fine-tuning row: the winners by
# validation accuracy of the grid in results/dpf_ft_grid.md (LeNet-300-100 / Fashion-MNIST, target 0.95,
# seed 0; `python -m experiments.dpf_study --ft_grid`); the paper tunes them per setting (Appendix A.2).
FINETUNE_DEFAULTS = {
    "one_shot_ft": ("adam", 0.01),
    "dpf_ft": ("adam", 0.01),
    "incremental_ft": ("sgd", 0.01),
}
# The paper's extra fine-tuning: 60 epochs after 300 (ResNet/VGG) or 200 (WideResNet) of training.
PAPER_FINETUNE_EPOCHS = 60


def method_section(target_sparsity: float, finetune_epochs: int = 0) -> ml_collections.ConfigDict:
    """The ``config.method`` section with the paper's defaults: p = 16, the cubic
    schedule stepped once per epoch and ending at the second lr decay, global
    magnitude pruning, mask recomputed until the end; ``finetune_epochs`` of
    fine-tuning (0: none) with SGD + Nesterov at lr / 10; :func:`study_config`
    sets each fine-tuning row's optimizer and lr to the winner of the
    fine-tuning grid (:data:`FINETUNE_DEFAULTS`)."""
    m = ml_collections.ConfigDict()
    m.target_sparsity = float(target_sparsity)
    m.update_every = 16
    m.power = 3.0
    m.end_fraction = 0.0  # 0: the schedule ends at the second lr decay
    m.schedule_every = "epoch"  # Appendix A.2: Delta t = 1 epoch ("step": every step)
    m.freeze_mask = False
    m.scope = "global"
    m.finetune_epochs = int(finetune_epochs)
    m.finetune_optimizer = "sgd"
    m.finetune_lr_factor = 0.1
    m.reuse_workdir = ""
    m.dense_fraction = 0.5
    m.snip_batch_size = 128
    m.label = ""
    return m


def study_config(
    method: str, target_sparsity: float, finetune_epochs: int = PAPER_FINETUNE_EPOCHS
) -> ml_collections.ConfigDict:
    """:func:`jaxprune.configs.common.base_config` with the DPF ``method`` (a key of
    :data:`METHODS`) and SGD + Nesterov 0.9 with a multistep lr schedule;
    ``finetune_epochs``: the fine-tuning budget of the methods that fine-tune
    (One-shot P+FT and the "+FT" rows)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; expected one of {sorted(METHODS)}")
    pipeline, finetunes, structured = METHODS[method]
    c = base_config()
    c.pipeline = pipeline
    c.method = method_section(target_sparsity, finetune_epochs if finetunes else 0)
    if structured:
        c.method.scope = "filter"
    if method in FINETUNE_DEFAULTS:
        c.method.finetune_optimizer, c.method.finetune_lr_factor = FINETUNE_DEFAULTS[method]
    t = c.train
    t.optimizer = "sgd"
    t.momentum = 0.9
    t.nesterov = True
    t.schedule = "multistep"
    t.lr_decay_factor = 0.1
    t.milestones = (0.5, 0.75)
    t.batch_size = 128
    return c


def parse_arg(arg: str | None, default_method: str, default_target: float) -> tuple[str, float]:
    """``"method,target"`` (either part optional) -> ``(method, target)``."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    method = parts[0] if parts else default_method
    target = float(parts[1]) if len(parts) > 1 else default_target
    return method, target
