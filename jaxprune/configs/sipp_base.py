"""Shared pieces of the SiPP pipeline configs (Baykal, Liebenwein et al.,
Section 6): the ``method`` section read by ``jaxprune.pipelines.sipp``. Not a
runnable config itself; see ``sipp_cpu.py`` and ``sipp_resnet20.py``.

``method`` keys:
  name: "sipp_det" | "sipp_rand" | "sipp_hybrid" | "wt" | "snip"
    (iterative_prune_retrain: sipp_det | wt | snip);
  sparsity: pruned fraction of the prunable weights (random_init_prune_train);
  alpha, rounds: per-round density alpha^t, t = 1..rounds (iterative);
  densities: explicit per-round densities overriding alpha/rounds (() = off);
  patch_reduce: "max" | "mean" (sensitivity over conv patches);
  c, delta: SiPP's constants C = 3, delta = 1e-16 (Table S1; sample size |S|);
  snip_batch_size: SNIP's batch (0 = train.batch_size);
  keep_round_checkpoints: keep each finished round's Trainer checkpoints.
"""

from __future__ import annotations

import ml_collections

from jaxprune.configs.common import base_config

PIPELINES = {"rand": "random_init_prune_train", "iter": "iterative_prune_retrain"}


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
    """``"pipeline,method[,sparsity]"`` -> (pipeline, method, sparsity)."""
    parts = [s.strip() for s in arg.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError(f"config argument {arg!r} must be 'pipeline,method[,sparsity]'")
    return parts[0], parts[1], float(parts[2]) if len(parts) == 3 else 0.9
