"""Shared pieces of the DPF study configs (Lin et al., ICLR 2020; METHODS.md
section 5): the method section and the paper's CIFAR/ImageNet recipes.

The pipelines (``config.pipeline``): ``dpf``, ``incremental``, ``one_shot_ft``,
``snip`` and ``dpf_dense`` (Dense with the same report fields); see
``jaxprune/pipelines/dpf.py`` for the ``config.method`` keys.
"""

from __future__ import annotations

import ml_collections

from jaxprune.configs.common import base_config

# method name on the command line -> registered pipeline
PIPELINES = {
    "dense": "dpf_dense",
    "dpf": "dpf",
    "incremental": "incremental",
    "one_shot_ft": "one_shot_ft",
    "snip": "snip",
}


def method_section(target_sparsity: float) -> ml_collections.ConfigDict:
    """The ``config.method`` section with the paper's defaults (p = 16, cubic
    schedule ending at the second lr decay, global magnitude pruning, mask
    recomputed until the end, no extra fine-tuning; One-shot+FT splits the
    epochs half dense, half fine-tuning at lr / 10)."""
    m = ml_collections.ConfigDict()
    m.target_sparsity = float(target_sparsity)
    m.update_every = 16
    m.power = 3.0
    m.end_fraction = 0.0  # 0: the schedule ends at the second lr decay
    m.freeze_mask = False
    m.scope = "global"
    m.finetune_epochs = 0
    m.finetune_lr_factor = 0.1
    m.dense_fraction = 0.5
    m.snip_batch_size = 128
    m.label = ""
    return m


def study_config(method: str, target_sparsity: float) -> ml_collections.ConfigDict:
    """:func:`jaxprune.configs.common.base_config` with the DPF ``method`` (a key of
    :data:`PIPELINES`) and SGD + Nesterov 0.9 with a multistep lr schedule."""
    if method not in PIPELINES:
        raise ValueError(f"method={method!r} is not valid; expected one of {sorted(PIPELINES)}")
    c = base_config()
    c.pipeline = PIPELINES[method]
    c.method = method_section(target_sparsity)
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
