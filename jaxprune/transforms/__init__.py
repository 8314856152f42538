"""Optax gradient transformations for pruning: the ``jaxprune.optax`` namespace.

- :func:`masked_update`: fine-tuning / retraining with a FIXED mask.
- :func:`dpf`: Dynamic Pruning with Feedback (Lin et al., ICLR 2020, Algorithm 1)
  and, with ``feedback=False``, the Incremental baseline (Zhu & Gupta 2017).
- :func:`sparse_params`, :func:`get_mask`, :func:`dpf_diagnostics`: read the
  pruning state wherever it sits inside an optax state (``optax.chain``,
  ``named_chain``, ``inject_hyperparams``, ``MultiSteps``, ``masked``,
  ``multi_transform``, chains of chains, ...).
- :func:`mask_update_schedule`: on which updates DPF or a sparse-training
  method (SET, RigL, ...) may change its mask, so that a training loop can run the
  other steps without the mask-update branch (``may_update_mask=False``).

Composition: both transformations work inside ``optax.inject_hyperparams``
(``init`` and ``update`` under ``jit``; the factory is re-run on traced
hyperparameters, so a sparsity given as a hyperparameter is a traced scalar)
and as a branch of ``optax.multi_transform`` / inside ``optax.masked`` (the
leaves the branch does not own arrive as ``optax.MaskedNode`` placeholders;
they are never pruned by that branch and hold ``None`` in its mask, where a
``None`` may stand for a whole sub-tree when the label was given for one).
:func:`get_mask` / :func:`sparse_params` combine the masks of several branches.

The train step with DPF (gradient at the pruned weights, applied unmasked to
the dense weights: error feedback)::

    tx = optax.chain(jp.optax.dpf(schedule), optax.add_decayed_weights(wd),
                     optax.sgd(lr, momentum=0.9, nesterov=True))
    def step(params, opt_state, batch):
        w_tilde = jp.optax.sparse_params(params, opt_state)   # m * w
        grads = jax.grad(loss)(w_tilde, batch)                 # g(m * w), NOT masked
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

The same step, faster where XLA cannot fuse the masking into the matmul (CPU:
~15-20% of an MLP step, see ``experiments/benchmarks/bench_dpf.py``): compute
``m * w`` for the NEXT forward pass at the end of the step, where it fuses
into the parameter update, and carry it (bitwise equal results; the engine's
``Trainer`` does this via ``jaxprune.train.make_carried_train_step``)::

    def step(params, w_tilde, opt_state, batch):            # w_tilde = m * w, carried
        grads = jax.grad(loss)(w_tilde, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, jp.optax.sparse_params(params, opt_state), opt_state

All states are plain pytrees (NamedTuples of arrays; masks hold ``None`` on
non-prunable leaves): they jit with donation, shard with the params and
checkpoint with orbax.
"""

from jaxprune.transforms._common import default_prunable, mask_update_schedule, paper_prunable
from jaxprune.transforms.acdc import ACDCState, acdc, acdc_phases
from jaxprune.transforms.dpf import DPFState, dpf
from jaxprune.transforms.dsr import DSRState, dsr
from jaxprune.transforms.masked import MaskedState, masked_update
from jaxprune.transforms.rigl import RigLState, rigl, rigl_drop_fraction
from jaxprune.transforms.set_sparse import SETState, set_sparse
from jaxprune.transforms.sparse_momentum import SparseMomentumState, sparse_momentum
from jaxprune.transforms.state import MASK_STATES, dpf_diagnostics, get_mask, set_mask, sparse_params
from jaxprune.transforms.static import StaticSparseState, static_sparse
from jaxprune.transforms.ste import STEState, ste

__all__ = [
    "MASK_STATES",
    "ACDCState",
    "DPFState",
    "DSRState",
    "MaskedState",
    "RigLState",
    "SETState",
    "STEState",
    "SparseMomentumState",
    "StaticSparseState",
    "acdc",
    "acdc_phases",
    "default_prunable",
    "dpf",
    "dpf_diagnostics",
    "dsr",
    "get_mask",
    "mask_update_schedule",
    "masked_update",
    "paper_prunable",
    "rigl",
    "rigl_drop_fraction",
    "set_mask",
    "set_sparse",
    "sparse_momentum",
    "sparse_params",
    "static_sparse",
    "ste",
]
