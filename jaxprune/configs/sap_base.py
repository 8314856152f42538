"""Shared pieces of the PQ Index / SAP configs (Diao et al., ICLR 2023):
the iterative pipeline's ``method`` section and the paper's training recipe
(appendix Table 3). Not a runnable config itself; see ``sap_paper.py`` and
``sap_cpu.py``.

``method`` keys (read by ``jaxprune.pipelines.iterative``):
  rule: "sap" | "lt" | "os"; label: name used in results ("" = rule);
  scope: "global" | "layer" | "neuron"; rounds: T (rounds t = 0..T);
  p, q, eta_r, gamma, beta: SAP; prune_ratio: P of LT / One Shot;
  stop: {enabled, rise_rounds, min_ratio} (StopRule; reported even when off);
  grid_p, grid_q: the (p, q) grid of recorded global PQ Indices (pairs p < q);
  keep_round_checkpoints: keep each finished round's Trainer checkpoints.
"""

from __future__ import annotations

import ml_collections

from jaxprune.configs.common import base_config

# name -> (rule, p, q): the paper's compared methods.
METHODS = {
    "sap": ("sap", 0.5, 1.0),
    "sap_1_2": ("sap", 1.0, 2.0),
    "lt": ("lt", 0.5, 1.0),
    "os": ("os", 0.5, 1.0),
}


def sap_config(method: str = "sap", *, dataset: str, model: str, epochs: int, rounds: int):
    """A locked-ready config for the iterative pipeline with the paper's
    optimizer (SGD 0.1, momentum 0.9, Nesterov, wd 5e-4, cosine, batch 250,
    global-norm clipping at 1)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; expected one of {sorted(METHODS)}")
    rule, p, q = METHODS[method]
    c = base_config()
    c.pipeline = "iterative"
    c.data.name = dataset
    c.model.name = model
    t = c.train
    t.epochs = epochs
    t.batch_size = 250
    t.eval_batch_size = 1000
    t.optimizer = "sgd"
    t.lr = 0.1
    t.momentum = 0.9
    t.nesterov = True
    t.weight_decay = 5e-4
    t.schedule = "cosine"
    t.clip_norm = 1.0
    t.keep_checkpoints = 1
    t.progress_bar = False

    mth = c.method = ml_collections.ConfigDict()
    mth.rule = rule
    mth.label = method
    mth.scope = "global"
    mth.rounds = rounds
    mth.p, mth.q, mth.eta_r, mth.gamma, mth.beta = p, q, 0.0, 1.0, 0.9
    mth.prune_ratio = 0.2
    mth.stop = ml_collections.ConfigDict({"enabled": False, "rise_rounds": 3, "min_ratio": 0.0})
    mth.grid_p = (0.1, 0.25, 0.5, 0.75, 1.0)
    mth.grid_q = (1.0, 1.5, 2.0, 3.0)
    mth.keep_round_checkpoints = False
    return c
