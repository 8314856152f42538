"""Shared pieces of the SiPP pipeline configs (Baykal, Liebenwein et al.,
Section 6): the ``method`` section read by ``jaxprune.pipelines.sipp``, and the
paper's CIFAR-10 recipes (Table S1, :data:`TABLE_S1`, :func:`paper_config`).
Not a runnable config itself; see ``sipp_cpu.py`` and ``sipp_resnet20.py``,
``sipp_resnet56.py``, ``sipp_resnet110.py``, ``sipp_vgg16.py``,
``sipp_wrn16_8.py``.

``method`` keys:
  name: "sipp_det" | "sipp_rand" | "sipp_hybrid" | "wt" | "snip"
    (iterative_prune_retrain: sipp_det | wt | snip);
  sparsity: pruned fraction of the prunable weights (random_init_prune_train);
  alpha, rounds: per-round density alpha^t, t = 1..rounds (iterative);
  densities: explicit per-round densities overriding alpha/rounds (() = off);
  patch_reduce: "max" | "mean" (sensitivity over conv patches; the paper
    configs use "mean" for sipp_det, as the authors' code (torchprune), and
    "max" (Def. 1) for the other variants);
  c, delta: SiPP's constants C = 3, delta = 1e-16 (Table S1; sample size |S|);
  snip_batch_size: SNIP's batch (0 = train.batch_size);
  keep_round_checkpoints: keep each finished round's Trainer checkpoints.
"""

from __future__ import annotations

import ml_collections

from jaxprune.configs.common import base_config

PIPELINES = {"rand": "random_init_prune_train", "iter": "iterative_prune_retrain"}
METHODS = ("sipp_det", "sipp_rand", "sipp_hybrid", "wt", "snip")

# Table S1 of the paper (CIFAR-10): epochs, batch size, peak lr, lr decay factor
# and the epochs it applies at, Nesterov, weight decay. Every network: SGD,
# momentum 0.9, cross-entropy, 5 warm-up epochs (linear from 0), delta = 1e-16,
# alpha = 0.85; retraining repeats the training recipe. VGG16 decays every 30
# epochs ({30, ...}), WRN-16-8 every 60. DenseNet22 is not in the model zoo.
TABLE_S1 = {
    "resnet20": {"epochs": 182, "batch_size": 128, "lr": 0.1, "decay": 0.1, "decay_epochs": (91, 136),
                 "nesterov": False, "weight_decay": 1e-4},
    "resnet56": {"epochs": 182, "batch_size": 128, "lr": 0.1, "decay": 0.1, "decay_epochs": (91, 136),
                 "nesterov": False, "weight_decay": 1e-4},
    "resnet110": {"epochs": 182, "batch_size": 128, "lr": 0.1, "decay": 0.1, "decay_epochs": (91, 136),
                  "nesterov": False, "weight_decay": 1e-4},
    "vgg16": {"epochs": 300, "batch_size": 256, "lr": 0.05, "decay": 0.5,
              "decay_epochs": tuple(range(30, 300, 30)), "nesterov": False, "weight_decay": 5e-4},
    "wrn16_8": {"epochs": 200, "batch_size": 128, "lr": 0.1, "decay": 0.2, "decay_epochs": (60, 120, 180),
                "nesterov": True, "weight_decay": 5e-4},
}  # fmt: skip


def sipp_config(pipeline: str, method: str, sparsity: float = 0.9) -> ml_collections.ConfigDict:
    """Base config with ``pipeline`` ("rand" | "iter" or the full name) and the
    ``method`` section at the paper's values (alpha = 0.85, delta = 1e-16)."""
    c = base_config()
    c.pipeline = PIPELINES.get(pipeline, pipeline)
    c.train.progress_bar = False
    c.train.keep_checkpoints = 1
    m = c.method = ml_collections.ConfigDict()
    m.name = method
    m.sparsity = float(sparsity)
    m.alpha = 0.85
    m.rounds = 24  # 0.85^24 = 0.02: the paper's prune ratios reach ~98%
    m.densities = ()
    m.patch_reduce = "max"
    m.c = 3.0
    m.delta = 1e-16
    m.snip_batch_size = 0
    m.keep_round_checkpoints = False
    return c


def parse_arg(arg: str) -> tuple[str, str, float]:
    """``"pipeline,method[,sparsity]"`` -> (pipeline, method, sparsity); pipeline
    ``rand`` | ``iter`` (or the full names), method one of :data:`METHODS`,
    sparsity in [0, 1) (default 0.9). ``ValueError`` naming the bad part."""
    parts = [s.strip() for s in arg.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError(f"config argument {arg!r} must be 'pipeline,method[,sparsity]'")
    pipeline, method = parts[0], parts[1]

    def bad(name: str, value: str, valid: str) -> ValueError:
        return ValueError(f"config argument {arg!r}: {name}={value!r} is not valid; expected {valid}")

    if pipeline not in [*PIPELINES, *PIPELINES.values()]:
        raise bad("pipeline", pipeline, f"one of {[*PIPELINES, *PIPELINES.values()]}")
    if method not in METHODS:
        raise bad("method", method, f"one of {list(METHODS)}")
    if len(parts) == 2:
        return pipeline, method, 0.9
    try:
        sparsity = float(parts[2])
    except ValueError:
        raise bad("sparsity", parts[2], "a number in [0, 1)") from None
    if not 0.0 <= sparsity < 1.0:
        raise bad("sparsity", parts[2], "a number in [0, 1)")
    return pipeline, method, sparsity


def paper_config(model: str, arg: str) -> ml_collections.ConfigDict:
    """SiPP on ``model`` / CIFAR-10 with the paper's Table S1 recipe
    (:data:`TABLE_S1`; milestones as fractions of the training epochs) and
    Det's patch reduction "mean"; ``arg`` as :func:`parse_arg`.

    >>> c = paper_config("wrn16_8", "iter,sipp_det")
    >>> c.train.epochs, c.train.nesterov, c.train.milestones, c.method.patch_reduce
    (200, True, (0.3, 0.6, 0.9), 'mean')
    """
    if model not in TABLE_S1:
        raise ValueError(f"model={model!r} is not valid; expected one of {list(TABLE_S1)}")
    pipeline, method, sparsity = parse_arg(arg)
    r = TABLE_S1[model]
    c = sipp_config(pipeline, method, sparsity)
    c.data.name = "cifar10"
    c.model.name = model
    t = c.train
    t.epochs = r["epochs"]
    t.batch_size = r["batch_size"]
    t.eval_batch_size = 1000
    t.optimizer = "sgd"
    t.lr = r["lr"]
    t.momentum = 0.9
    t.nesterov = r["nesterov"]
    t.weight_decay = r["weight_decay"]
    t.schedule = "multistep"
    t.milestones = tuple(e / r["epochs"] for e in r["decay_epochs"])
    t.lr_decay_factor = r["decay"]
    t.warmup_epochs = 5.0
    c.method.patch_reduce = "mean" if method == "sipp_det" else "max"
    return c
