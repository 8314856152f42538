"""Sparse training from scratch (METHODS.md section 7): one pipeline for the
``jaxprune.optax`` sparse-training transformations, registered as
``sparse_training``.

``config.method.name`` picks the method:

- ``static``: :func:`jaxprune.optax.static_sparse` (fixed random mask);
- ``set``: :func:`jaxprune.optax.set_sparse` (SET, Mocanu et al. 2018);
- ``rigl``: :func:`jaxprune.optax.rigl` (Evci et al. 2020);
- ``sparse_momentum``: :func:`jaxprune.optax.sparse_momentum` (Dettmers & Zettlemoyer 2019);
- ``dsr``: :func:`jaxprune.optax.dsr` (Mostafa & Wang 2019);
- ``ste``: :func:`jaxprune.optax.ste` (mask recomputed every step) with DPF's
  cubic schedule (0 at step 0, the target at the second lr decay);
- ``acdc``: :func:`jaxprune.optax.acdc` (Peste et al. 2021).

All train on the params of :func:`jaxprune.optax.paper_prunable` (DPF's set,
so that the rows compare with the DPF study) with the optimizer of
``config.train`` wrapped by the method (STE: placed first in the chain). The
forward pass is at ``m * w`` (``jaxprune.optax.sparse_params``) for STE and
AC/DC, which keep dense weights; the others hold every inactive weight at
exactly 0, so their params are masked once at step 0 and the forward pass
reads them as they are (the same numbers, one elementwise pass per step less).
``config.method``
keys: ``name``, ``target_sparsity``, ``update_every`` (0: the method's default,
100 = RigL's Delta T), ``drop_fraction`` (SET/RigL zeta, SM's prune rate; 0:
the method's default), ``distribution`` (``""``: the method's default: ERK for
RigL, uniform otherwise; ``"erk"``/``"uniform"``), ``label``.

The results record has the fields of the DPF study's (``jaxprune/pipelines/dpf.py``):
``method``, ``method_id``, ``model``, ``dataset``, ``seed``, ``target_sparsity``,
``epochs``, ``test_acc``/``test_loss``/``val_acc`` of the final sparse model,
``sparsity_prunable``, ``sparsity_all``, ``wall_s``, per-epoch ``history`` (with
DPF's mask statistics) and ``mask_convergence``.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import masks
from jaxprune import transforms as jpo
from jaxprune._validate import check_choice, check_number
from jaxprune.pipelines import progress, register, run_summary, setup, write_results
from jaxprune.pipelines.dpf import MaskTracker, mask_convergence, schedule_end_step
from jaxprune.train import Trainer, replicated_sharding
from jaxprune.train.optim import make_optimizer
from jaxprune.tree import fresh_copy

METHODS = ("static", "set", "rigl", "sparse_momentum", "dsr", "ste", "acdc")
LABELS = {"static": "Static", "set": "SET", "rigl": "RigL", "sparse_momentum": "Sparse Momentum",
          "dsr": "DSR", "ste": "STE", "acdc": "AC/DC"}
# Methods whose updates keep every inactive weight at exactly 0 (jaxprune/transforms/_sparse.py).
HOLD_ZEROS = ("static", "set", "rigl", "sparse_momentum", "dsr")
METHOD_DEFAULTS: dict[str, Any] = {
    "name": "rigl",
    "target_sparsity": 0.9,
    "update_every": 0,  # 0: 100 steps (RigL's Delta T)
    "drop_fraction": 0.0,  # 0: the method's default (SET/RigL 0.3, SM 0.5)
    "distribution": "",  # "": the method's default (RigL: erk, others: uniform)
    "label": "",
}


def method_options(method: Any) -> dict[str, Any]:
    """``config.method`` over :data:`METHOD_DEFAULTS`, validated (``ValueError``
    naming the key)."""
    given = dict(method or {})
    unknown = sorted(set(given) - set(METHOD_DEFAULTS))
    if unknown:
        raise ValueError(f"config.method has unknown keys {unknown}; valid keys: {sorted(METHOD_DEFAULTS)}")
    m = {**METHOD_DEFAULTS, **given}
    check_choice("config.method.name", m["name"], METHODS)
    check_number("config.method.target_sparsity", m["target_sparsity"], low=0.0, high=1.0, high_open=True)
    check_number("config.method.update_every", m["update_every"], low=0)
    check_number("config.method.drop_fraction", m["drop_fraction"], low=0.0, high=1.0, high_open=True)
    check_choice("config.method.distribution", m["distribution"], ("", "erk", "uniform"))
    return m


def make_transform(m: dict[str, Any], train_cfg: Any, steps_per_epoch: int, seed: int) -> Any:
    """The optimizer of ``train_cfg`` with method ``m`` (validated options)."""
    total = int(train_cfg.epochs) * steps_per_epoch
    key = jax.random.fold_in(jax.random.key(seed), 18)
    target = float(m["target_sparsity"])
    every = int(m["update_every"]) or 100
    common = {"key": key, "update_every": every}
    if m["distribution"]:
        common["distribution"] = m["distribution"]
    drop = {"drop_fraction": float(m["drop_fraction"])} if m["drop_fraction"] else {}
    name = m["name"]
    if name == "ste":
        end = schedule_end_step(train_cfg, steps_per_epoch)
        schedule = masks.polynomial_schedule(target, 0, end, 0.0, power=3)
        return make_optimizer(train_cfg, steps_per_epoch, prepend=[jpo.ste(schedule)])
    inner = make_optimizer(train_cfg, steps_per_epoch)
    if name == "static":
        return jpo.static_sparse(inner, target, key=key, **({"distribution": m["distribution"]}
                                                             if m["distribution"] else {}))
    if name == "set":
        return jpo.set_sparse(inner, target, **common, **drop)
    if name == "rigl":
        return jpo.rigl(inner, target, total, **common, **drop)
    if name == "sparse_momentum":
        prune = {"prune_rate": float(m["drop_fraction"])} if m["drop_fraction"] else {}
        return jpo.sparse_momentum(inner, target, total, **common, **prune)
    if name == "dsr":
        return jpo.dsr(inner, target, **common)
    return jpo.acdc(inner, target, total)  # acdc


@register("sparse_training")
def run(config: Any, workdir: str | pathlib.Path) -> dict:
    """Train ``config.method.name`` (module docstring); writes and returns the record."""
    tic = time.perf_counter()
    m = method_options(config.method)
    root = pathlib.Path(workdir).absolute()
    dataset, model = setup(config)
    seed = int(config.seed)
    probe = Trainer(model, dataset, config.train, seed=seed)
    tx = make_transform(m, config.train, probe.steps_per_epoch, seed)
    tracker = MaskTracker(lambda s: jpo.get_mask(s.opt_state), root / "masks")
    holds_zeros = m["name"] in HOLD_ZEROS
    trainer = Trainer(model, dataset, config.train, tx=tx,
                      forward_params=None if holds_zeros else jpo.sparse_params,
                      hooks=[tracker], workdir=root / "train", seed=seed,
                      mask_update_due=jpo.mask_update_schedule(tx))
    state0 = trainer.init_state()
    if holds_zeros:
        state0 = state0.replace(params=jpo.sparse_params(state0.params, state0.opt_state))
    tracker.save_initial(jpo.get_mask(state0.opt_state))
    state0 = jax.device_put(fresh_copy(state0), replicated_sharding(trainer.mesh))
    state = trainer.fit(state0, resume=bool(config.resume), progress=progress(config))
    mask = jpo.get_mask(state.opt_state)
    test = trainer.evaluate(state, "test")
    leaves = [np.asarray(x) for x in jax.tree.leaves(mask)]
    kept, n_prunable = int(sum(x.sum() for x in leaves)), int(sum(x.size for x in leaves))
    final = jpo.sparse_params(state.params, state.opt_state)
    n_all = int(sum(np.size(w) for w in jax.tree.leaves(state.params)))
    nonzero = int(sum(int(jnp.sum(w != 0)) for w in jax.tree.leaves(final)))
    epochs = int(config.train.epochs)
    record = dict(
        pipeline="sparse_training",
        method_id=m["name"],
        method=m["label"] or LABELS[m["name"]],
        model=config.model.name,
        dataset=config.data.name,
        train_examples=len(dataset.train),
        seed=seed,
        target_sparsity=float(m["target_sparsity"]),
        epochs=epochs,
        finetune_epochs=0,
        test_acc=test["accuracy"],
        test_loss=test["loss"],
        val_acc=trainer.evaluate(state, "val")["accuracy"] if len(dataset.val) else None,
        sparsity_prunable=1.0 - kept / n_prunable,
        sparsity_all=(n_prunable - kept) / n_all,
        nonzero_all=nonzero,
        n_params=n_all,
        n_prunable=n_prunable,
        steps=epochs * probe.steps_per_epoch,
        history=[dict(row) for row in trainer.history],
        mask_convergence=mask_convergence(root / "masks", epochs),
        resumed=bool(config.resume),
        wall_s=time.perf_counter() - tic,
    )
    record["summary"] = run_summary(
        "sparse_training", method=f"{record['method']} {100 * record['target_sparsity']:g}%", test=test,
        params=state.params, mask=mask, model=model, input_shape=getattr(dataset, "input_shape", None),
        batch_stats=state.batch_stats,
    )
    write_results(root, record)
    return record
