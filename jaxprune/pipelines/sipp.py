"""SiPP's two pruning pipelines (Baykal, Liebenwein et al., Section 6;
METHODS.md section 4) with the SiPP variants and the WT / SNIP baselines.

``random_init_prune_train`` (Section 6.3): initialize; score the random
weights; prune to ``1 - config.method.sparsity`` of the prunable weights;
train ``config.train.epochs`` epochs with the mask fixed
(:func:`jaxprune.optax.masked_update` last in the chain: pruned weights stay
exactly 0).

``iterative_prune_retrain`` (Section 6.2): round 0 trains the dense network to
completion; round ``t >= 1`` prunes the previous round's trained weights to
density ``d_t`` (``alpha ** t``, alpha = 0.85, or ``config.method.densities``)
and RETRAINS FROM THOSE PRUNED WEIGHTS (no rewinding: biases and BatchNorm
statistics stay trained) with a fresh optimizer and the full training schedule
(its linear warm-up included). Each round's final weights are evaluated and
pruned (the paper trains "to completion"; no checkpoint selection).

Methods (``config.method.name``), all global over the prunable leaves
(:func:`jaxprune.tree.prunable`: dense and conv kernels):

- ``sipp_det`` / ``sipp_rand`` / ``sipp_hybrid``: empirical sensitivity on a
  sample S of ``|S| = sample_size(...)`` points of the VALIDATION split
  (:mod:`jaxprune.sipp`); Rand / Hybrid reweight the kept weights and reach
  the budget in expectation only; the iterative pipeline offers ``sipp_det``
  alone, as the paper uses there (Section 6.2).
- ``wt``: global weight magnitude ``|w|``.
- ``snip``: global ``|w * dL/dw|`` on one training batch
  (``method.snip_batch_size``; 0 = ``train.batch_size``).

The iterative prune rules have the signature of
:data:`jaxprune.pipelines.iterative.PruneRule` but need a
:class:`SippContext` (the model and data); they live in :data:`RULES`.

Resume (``config.resume``): the Trainer checkpoints every epoch under
``<workdir>`` (random-init) or ``<workdir>/round_XX`` (iterative); the
iterative pipeline also saves, at the end of every round, the round's trained
weights, BatchNorm statistics, mask and records under ``<workdir>/rounds``,
so a killed run continues at the next round.
"""

from __future__ import annotations

import functools
import itertools
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import masks, sipp
from jaxprune._validate import check_choice, check_number
from jaxprune.measures.cost import cost
from jaxprune.pipelines import first_batch, progress, register, run_summary, setup, write_results
from jaxprune.pipelines.iterative import RoundContext, rewind
from jaxprune.train import Checkpointer, Trainer, per_example_loss, replicated_sharding
from jaxprune.transforms import masked_update
from jaxprune.tree import PyTree, apply_mask, full_mask, is_none, resolve_prunable

METHODS = ("sipp_det", "sipp_rand", "sipp_hybrid", "wt", "snip")
ITERATIVE_METHODS = ("sipp_det", "wt", "snip")


# ----------------------------------------------------------------------------- scores
def _apply_fn(model: nn.Module, batch_stats: PyTree) -> Callable[[PyTree, jax.Array], jax.Array]:
    """``f(params, x) -> logits`` in inference mode with fixed BN statistics."""
    extra = {"batch_stats": batch_stats} if batch_stats else {}
    return lambda p, x: model.apply({"params": p, **extra}, x, train=False)


@functools.partial(jax.jit, static_argnames=("model", "task"))
def _loss_grads(model: nn.Module, params: PyTree, batch_stats: PyTree, batch: dict, task: str) -> PyTree:
    """Gradient of the weighted mean loss on ``batch``; BN models use the
    batch's statistics (train mode, updates discarded), as SNIP does."""

    def loss(p: PyTree) -> jax.Array:
        if batch_stats:
            out, _ = model.apply({"params": p, "batch_stats": batch_stats}, batch["x"], train=True,
                                 mutable=["batch_stats"])
        else:
            out = model.apply({"params": p}, batch["x"], train=False)
        w = batch["weight"]
        return jnp.sum(w * per_example_loss(out, batch["y"], task)) / jnp.maximum(jnp.sum(w), 1.0)

    return jax.grad(loss)(params)


def sensitivity_sample(model: nn.Module, params: PyTree, dataset: Any, *, seed: int, c: float = 3.0,
                       delta: float = 1e-16, batch_stats: PyTree | None = None) -> tuple[np.ndarray, int]:
    """``(S, |S|)``: ``|S| = sipp.sample_size`` points drawn without replacement
    from the validation split (all of it if it is smaller; ``|S|`` is then the
    size the theory asks for, ``len(S)`` what was used). ``batch_stats``: the
    BatchNorm statistics of models that have them (the model runs in eval mode)."""
    x_val = dataset.val.x
    if not len(x_val):
        raise ValueError("SiPP needs a validation split for its sample S: set config.data.val_fraction > 0")
    apply = _apply_fn(model, batch_stats or {})
    n = sipp.sample_size(sipp.layer_output_sizes(apply, params, jnp.asarray(x_val[:1])), c=c, delta=delta)
    idx = np.random.default_rng(seed).permutation(len(x_val))[: min(n, len(x_val))]
    return x_val[np.sort(idx)], n


@dataclass
class SippContext(RoundContext):
    """:class:`~jaxprune.pipelines.iterative.RoundContext` plus what the SiPP /
    SNIP rules need: the model, the current BN statistics, the sample S,
    the SNIP batch, the task and the target densities (``densities[t]``: the
    density after pruning round ``t``'s trained weights, i.e. of round ``t + 1``)."""

    model: nn.Module | None = None
    batch_stats: PyTree = field(default_factory=dict)
    sample: np.ndarray | None = None
    batch: dict | None = None
    task: str = "classification"
    densities: tuple[float, ...] = ()


def scores(name: str, params: PyTree, ctx: SippContext) -> PyTree:
    """Importance scores of ``name`` (a :data:`METHODS` entry; the three SiPP
    variants share the sensitivity) on the prunable kernels, ``None`` elsewhere."""
    check_choice("config.method.name", name, METHODS)
    flags = resolve_prunable(params)
    if name == "wt":
        s = masks.magnitude(params)
    elif name == "snip":
        s = masks.snip(params, _loss_grads(ctx.model, params, ctx.batch_stats, ctx.batch, ctx.task))
    else:
        s = sipp.sensitivity(_apply_fn(ctx.model, ctx.batch_stats), params, jnp.asarray(ctx.sample),
                             patch_reduce=ctx.method["patch_reduce"], prunable=flags)
    return jax.tree.map(lambda v, f: v if f else None, s, flags, is_leaf=is_none)


def _density(mask: PyTree) -> float:
    """Kept fraction of the prunable weights (the mask's non-``None`` leaves)."""
    leaves = [np.asarray(m) for m in jax.tree.leaves(mask)]
    return float(sum(m.sum() for m in leaves) / sum(m.size for m in leaves))


def _cost_fields(model: nn.Module, params: PyTree, batch_stats: PyTree, mask: PyTree, dataset: Any) -> dict:
    """``params_kept`` / ``params_total`` and ``macs_kept`` / ``macs_total`` (one
    example) of ``model`` under ``mask``, from its jaxpr (:func:`jaxprune.measures.cost`)."""
    report = cost(model, {"params": params, "batch_stats": batch_stats}, mask, tuple(dataset.input_shape))
    return {"params_kept": report["params_kept"], "params_total": report["params"],
            "macs_kept": report["macs_kept"], "macs_total": report["macs"]}


def _summary(pipeline: str, method: str, rec: dict) -> dict:
    """The results' ``summary`` (the command line's last line) from a record."""
    out = run_summary(pipeline, method=method, test={"accuracy": rec["test_acc"]})
    out.update({k: rec[k] for k in ("params_kept", "params_total", "macs_kept", "macs_total") if k in rec})
    out["sparsity_prunable"] = 1.0 - rec["density"]
    return out


def _nonzero_outside(params: PyTree, mask: PyTree) -> int:
    """Number of nonzero weights at pruned coordinates (0 when the mask held)."""
    pairs = zip(jax.tree.leaves(params, is_leaf=is_none), jax.tree.leaves(mask, is_leaf=is_none), strict=True)
    return int(sum(np.count_nonzero(np.asarray(w)[~np.asarray(k)]) for w, k in pairs if k is not None))


# ----------------------------------------------------------------------------- rules
def _global_rule(name: str) -> Callable[[PyTree, PyTree, int, SippContext], tuple[PyTree, dict]]:
    def rule(params: PyTree, mask: PyTree, round_: int, ctx: SippContext) -> tuple[PyTree, dict]:
        density = float(ctx.densities[round_])  # the density of round ``round_ + 1``
        s = scores(name, params, ctx)
        new = masks.topk(s, 1.0 - density, scope="global", mask=mask)
        return new, {"density_target": density}

    rule.__name__ = f"{name}_rule"
    rule.__doc__ = (f"Keep the ``round(d_t n)`` prunable weights of largest {name} score "
                    "among those still unpruned (``n``: all prunable weights).")
    return rule


RULES = {name: _global_rule(name) for name in ITERATIVE_METHODS}


# ----------------------------------------------------------------------------- shared
def _check_common(m: Mapping[str, Any], methods: tuple[str, ...]) -> None:
    check_choice("config.method.name", m["name"], methods)
    check_choice("config.method.patch_reduce", m["patch_reduce"], sipp.PATCH_REDUCES)
    check_number("config.method.c", m["c"], low=0.0, low_open=True)
    check_number("config.method.delta", m["delta"], low=0.0, high=1.0, low_open=True, high_open=True)
    check_number("config.method.snip_batch_size", m["snip_batch_size"], low=0)


def _context(config: Any, model: nn.Module, dataset: Any, params: PyTree, batch_stats: PyTree) -> SippContext:
    """The scoring context at ``params`` (and BN ``batch_stats``, ``{}`` without
    BN): S only for SiPP, the batch only for SNIP."""
    m, seed = config.method, int(config.seed)
    ctx = SippContext(method=m, scope="global", init_params=params, dense_params=None, model=model,
                      task=dataset.task, batch_stats=batch_stats)
    if m["name"].startswith("sipp"):
        ctx.sample, n = sensitivity_sample(model, params, dataset, seed=seed, c=m["c"], delta=m["delta"],
                                           batch_stats=batch_stats)
        ctx.method = {**m, "sample_size": n}
    if m["name"] == "snip":
        ctx.batch = first_batch(dataset, int(m["snip_batch_size"]) or int(config.train.batch_size), seed=seed)
    return ctx


def _masked_trainer(
    config: Any, model: nn.Module, dataset: Any, workdir: pathlib.Path | None
) -> tuple[Trainer, Any]:
    """A Trainer whose chain ends in ``masked_update`` (mask in the optimizer
    state) and its fresh initial state (the init depends on the seed only)."""
    state = Trainer(model, dataset, config.train, seed=config.seed).init_state()
    tx = masked_update(full_mask(state.params, resolve_prunable(state.params)))
    trainer = Trainer(model, dataset, config.train, seed=config.seed, append=[tx], workdir=workdir)
    return trainer, state


def _check_fresh(root: pathlib.Path, resume: bool, marker: str) -> None:
    if not resume and (root / marker).exists():
        raise ValueError(f"{root} holds a previous run; resume it (--resume) or use a new workdir")


def _label(config: Any, pipeline: str) -> dict:
    return {"pipeline": pipeline, "method": config.method["name"], "model": config.model.name,
            "dataset": config.data.name, "seed": int(config.seed)}


# ----------------------------------------------------------------------------- pipelines
@register("random_init_prune_train")
def run_random_init(config: Any, workdir: str | pathlib.Path) -> dict:
    """Prune at initialization to ``1 - config.method.sparsity``, then train with
    the mask fixed. Returns (and writes to ``<workdir>/results.json``) a record
    with ``pipeline, method, model, dataset, sparsity, seed, test_acc`` (final
    weights), ``val_acc``, ``density`` (kept fraction of the prunable weights),
    ``pruned_nonzero`` (nonzero weights outside the mask after training: 0), ``params_kept`` /
    ``params_total`` / ``macs_kept`` / ``macs_total`` (one example, under the mask), ``sample_size``,
    the SiPP ``report`` (per layer: kept, eps, sign complexity Delta, kappa; the
    network's error bound) and the training ``history``."""
    m = config.method
    _check_common(m, METHODS)
    check_number("config.method.sparsity", m["sparsity"], low=0.0, high=1.0, high_open=True)
    root = pathlib.Path(workdir).absolute()
    _check_fresh(root, bool(config.resume), "checkpoints")
    tic = time.perf_counter()
    dataset, model = setup(config)
    trainer, state0 = _masked_trainer(config, model, dataset, root)
    params = state0.params
    ctx = _context(config, model, dataset, params, state0.batch_stats)
    density = 1.0 - float(m["sparsity"])
    rec = {**_label(config, "random_init_prune_train"), "sparsity": float(m["sparsity"])}
    if m["name"].startswith("sipp"):
        variant = m["name"].split("_", 1)[1]
        key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 1)
        stats = sipp.layer_stats(_apply_fn(model, state0.batch_stats), params, jnp.asarray(ctx.sample))
        params, mask, report = sipp.prune(params, scores(m["name"], params, ctx), density, variant=variant,
                                          key=key, c=m["c"], delta=m["delta"], stats=stats)
        rec["sample_size"], rec["sample_used"] = ctx.method["sample_size"], len(ctx.sample)
        rec["report"] = report
    else:
        mask = masks.topk(scores(m["name"], params, ctx), 1.0 - density, scope="global",
                          prunable=resolve_prunable(params))
    mask = jax.device_put(mask, replicated_sharding(trainer.mesh))
    rec["density"] = _density(mask)
    rec.update(_cost_fields(model, params, state0.batch_stats, mask, dataset))
    rec["prune_time_s"] = time.perf_counter() - tic
    start = rewind(state0, params, state0.batch_stats, mask, trainer.tx)
    state = trainer.fit(start, resume=bool(config.resume), progress=progress(config))
    rec["pruned_nonzero"] = _nonzero_outside(state.params, mask)
    rec["test_acc"] = trainer.evaluate(state, "test")["accuracy"]
    rec["val_acc"] = trainer.evaluate(state, "val")["accuracy"] if len(dataset.val.y) else None
    rec["history"] = trainer.history
    rec["time_s"] = time.perf_counter() - tic
    rec["config"] = config.to_dict()
    rec["summary"] = _summary(rec["pipeline"],
                              f"{m['name']} {float(m['sparsity']):g}", rec)
    write_results(root, rec)
    return rec


def round_densities(m: Mapping[str, Any]) -> tuple[float, ...]:
    """Target densities of rounds 1..T: ``config.method.densities`` if given,
    else ``alpha ** t`` for ``t = 1..rounds``."""
    given = tuple(float(d) for d in m["densities"])
    if given:
        for d in given:
            check_number("config.method.densities[i]", d, low=0.0, high=1.0, low_open=True)
        if any(b > a for a, b in itertools.pairwise(given)):
            raise ValueError(f"config.method.densities={list(given)} must be non-increasing")
        return given
    check_number("config.method.alpha", m["alpha"], low=0.0, high=1.0, low_open=True)
    check_number("config.method.rounds", m["rounds"], low=0)
    return tuple(masks.geometric_density(float(m["alpha"]), t) for t in range(1, int(m["rounds"]) + 1))


@register("iterative_prune_retrain")
def run_iterative(config: Any, workdir: str | pathlib.Path) -> dict:
    """Train, then prune to ``d_t`` and retrain from the pruned weights, for
    ``t = 1..T``. Returns ``{"records": [...], "config": ...}``, one record per
    round (round 0 = dense) with ``density`` (kept fraction of the prunable
    weights), ``sparsity = 1 - density``, ``params_kept`` / ``params_total`` /
    ``macs_kept`` / ``macs_total`` (one example), ``acc_pruned`` (test accuracy right
    after pruning), ``test_acc`` / ``val_acc`` (after (re)training)."""
    m = config.method
    _check_common(m, ITERATIVE_METHODS)
    densities = round_densities(m)
    root = pathlib.Path(workdir).absolute()
    _check_fresh(root, bool(config.resume), "rounds")
    dataset, model = setup(config)
    trainer, state0 = _masked_trainer(config, model, dataset, None)
    replicated = replicated_sharding(trainer.mesh)
    mask = jax.device_put(full_mask(state0.params, resolve_prunable(state0.params)), replicated)
    params, stats = state0.params, state0.batch_stats
    rule = RULES[m["name"]]
    label = _label(config, "iterative_prune_retrain")
    rounds_ckpt = Checkpointer(root / "rounds", keep=1)
    records: list[dict] = []
    try:
        done = rounds_ckpt.latest_step()
        if done is not None:
            saved, _, meta = rounds_ckpt.restore({"params": params, "batch_stats": stats, "mask": mask})
            params, stats, mask = saved["params"], saved["batch_stats"], saved["mask"]
            records = list(meta["records"])
        for t in range(len(records), len(densities) + 1):
            tic = time.perf_counter()
            rec = {**label, "round": t}
            if t > 0:  # prune the previous round's trained weights (BN statistics as trained)
                ctx = _context(config, model, dataset, params, stats)
                ctx.densities, ctx.init_params = densities, state0.params
                new_mask, rec["prune"] = rule(params, mask, t - 1, ctx)
                mask = jax.device_put(new_mask, replicated)
                params = apply_mask(params, mask)
                rec["acc_pruned"] = trainer.evaluate(state0.replace(params=params, batch_stats=stats),
                                                     "test")["accuracy"]
            rec["density"] = _density(mask)
            rec["sparsity"] = 1.0 - rec["density"]
            rec.update(_cost_fields(model, params, stats, mask, dataset))
            start = jax.device_put(rewind(state0, params, stats, mask, trainer.tx), replicated)
            round_dir = root / f"round_{t:02d}"
            trainer.workdir, trainer.seed = round_dir, int(config.seed) + 1000 * t
            state = trainer.fit(start, resume=bool(config.resume), progress=progress(config))
            params, stats = state.params, state.batch_stats
            rec["test_acc"] = trainer.evaluate(state, "test")["accuracy"]
            rec["val_acc"] = trainer.evaluate(state, "val")["accuracy"] if len(dataset.val.y) else None
            rec["time_s"] = time.perf_counter() - tic
            records.append(rec)
            rounds_ckpt.save(t + 1, {"params": params, "batch_stats": stats, "mask": mask},
                             meta={"records": records})
            rounds_ckpt.wait()
            if not m["keep_round_checkpoints"]:
                shutil.rmtree(round_dir / "checkpoints", ignore_errors=True)
            print(f"[{label['method']}] round {t}: density {rec['density']:.4f} "
                  f"acc {rec['test_acc']:.4f} ({rec['time_s']:.1f}s)", flush=True)
    finally:
        rounds_ckpt.close()
    results = {"pipeline": "iterative_prune_retrain", "records": records, "config": config.to_dict()}
    if records:
        results["summary"] = _summary("iterative_prune_retrain", f"{label['method']}, {len(records)} rounds",
                                      records[-1])
    write_results(root, results)
    return results


__all__ = ["ITERATIVE_METHODS", "METHODS", "RULES", "SippContext", "round_densities", "scores",
           "sensitivity_sample"]
