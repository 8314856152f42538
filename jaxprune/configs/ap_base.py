"""Shared pieces of the AP2/AP3 study configs (Mozafarinia & Yasaei Sekeh;
METHODS.md section 3): the ``ap_study`` pipeline's ``method`` section with the
issue's values, and the paper's optimizer (SGD, momentum 0.9, no weight
decay, an annealed learning rate). Not a runnable config itself; see
``ap_cpu.py``, ``ap_paper.py`` and ``ap_digits_smoke.py``.

``method`` keys (read by ``jaxprune.pipelines.ap_study``):
  methods: subset of ("lowest", "highest", "random") magnitude pruning;
  sparsities: fractions of the last layer pruned; trials: number of trials
  (trial t uses seed ``config.seed + t``), trial_offset: first trial index;
  layer: path of the kernel to prune ("" = the last nn.Dense of the forward pass);
  pretrained_checkpoint: "" or an .npz of variables (``ap_study.save_variables``
  format); train_from_checkpoint: False = the checkpoint IS the trained
  classifier, True = it is the initialization and the model trains
  ``config.train.epochs`` first; skip_mismatch: keep the fresh init for leaves
  whose checkpoint shape differs (a new head);
  finetune: what the fine-tuning trains: "pruned_layer" (the default, as the
  paper's official code: only the pruned layer's kernel and bias; every other
  layer frozen, its BatchNorm statistics too) or "all" (every parameter);
  finetune_train: overrides of ``config.train`` for the fine-tuning phase (epochs = 20);
  sigma2: isotropic AP3 covariance sigma^2 I; nondiag_beta, nondiag_seed:
  the non-diagonal covariance beta V diag(lambda) V^T; nondiag_max_dim: skip
  the non-diagonal AP3 (record None) above this many last-layer weights (a
  dense k x k matrix); t_df, t_groups, t_seed: AP3 Student-t; t_samples: its
  Monte Carlo draws at the final epoch, t_samples_epoch: at the other epochs.
"""

from __future__ import annotations

import ml_collections

from jaxprune.configs.common import base_config


def ap_config(*, dataset: str, model: str, lr: float, epochs: int, batch_size: int = 128):
    """The study on ``model`` / ``dataset``: SGD (momentum 0.9) at ``lr`` with
    cosine annealing for ``epochs`` epochs, then 20 fine-tuning epochs with the
    same recipe, training the pruned layer only; 3 methods x 4 sparsities x 3
    trials; 600k Student-t draws."""
    c = base_config()
    c.pipeline = "ap_study"
    c.data.name = dataset
    c.data.val_fraction = 0.0  # no model selection: the final weights are the trained model
    c.model.name = model
    t = c.train
    t.epochs = epochs
    t.batch_size = batch_size
    t.eval_batch_size = 1000
    t.optimizer = "sgd"
    t.lr = lr
    t.momentum = 0.9
    t.nesterov = False
    t.weight_decay = 0.0
    t.schedule = "cosine"
    t.progress_bar = False

    m = c.method = ml_collections.ConfigDict()
    m.methods = ("lowest", "highest", "random")
    m.sparsities = (0.1, 0.3, 0.5, 0.8)
    m.trials = 3
    m.trial_offset = 0
    m.layer = ""
    m.pretrained_checkpoint = ""
    m.train_from_checkpoint = False
    m.skip_mismatch = False
    m.finetune = "pruned_layer"
    m.finetune_train = ml_collections.ConfigDict({"epochs": 20})
    m.sigma2 = 1.0
    m.nondiag_beta = 1.0
    m.nondiag_seed = 0
    m.nondiag_max_dim = 25_000
    m.t_df = 4.0
    m.t_groups = 100
    m.t_seed = 0
    m.t_samples = 600_000
    m.t_samples_epoch = 600_000
    return c
