"""Iterative pruning with rewinding to initialization (METHODS.md section 1):
SAP, Lottery Ticket and One Shot in one driver; the per-round prune rule is
pluggable (:data:`PRUNE_RULES`, :func:`register_rule`).

Round ``t = 0..T`` (``T = config.method.rounds``):

1. rewind: surviving weights back to their initial values, pruned weights 0,
   every other parameter (biases, BatchNorm) and the BN statistics back to
   init; a fresh optimizer state and learning-rate schedule;
2. train ``config.train.epochs`` epochs with the chain
   ``clip_by_global_norm -> weight decay -> SGD -> masked_update(mask)``
   (clipping sees the full gradient; pruned weights get exactly 0 update);
   the data order is reshuffled every round (seed ``config.seed + 1000 t``);
3. take the round's best checkpoint by VALIDATION accuracy (the authors
   select on test accuracy; we hold out ``config.data.val_fraction`` of the
   training set instead);
4. measure (test accuracy, PQ Index global / per layer / on a (p, q) grid,
   remaining weights), prune with the rule, measure the pruned model's test
   accuracy (the round's best weights under the NEW mask), checkpoint the round.

A rule is ``rule(params, mask, round, context) -> (new_mask, record)``:
``params`` the round's best weights, ``mask`` the mask they were trained
with, ``context`` a :class:`RoundContext`; ``record`` a JSON-able dict.
Built in: ``"sap"`` (:func:`jaxprune.sap.prune_round`), ``"lt"`` (prune the
fraction ``P`` of the remaining weights of each pool by magnitude) and
``"os"`` (prune the round-0 trained dense weights to density ``(1-P)^(t+1)``).

Resume: at the end of every round ``<workdir>/rounds`` gets an orbax
checkpoint of the next round index, the mask, the init variables, the round-0
weights (OS) and all records; within a round the Trainer checkpoints every
epoch under ``<workdir>/round_XX``. ``config.resume`` (``--resume``)
continues a killed run at the round (and epoch) where it stopped.
"""

from __future__ import annotations

import functools
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import masks, sap
from jaxprune._validate import check_choice, check_number
from jaxprune.measures import pq_index
from jaxprune.pipelines import progress, register, run_summary, setup, write_results
from jaxprune.train import Checkpointer, Trainer, replicated_sharding
from jaxprune.transforms import masked_update, set_mask
from jaxprune.tree import PyTree, apply_mask, fresh_copy, full_mask, path_str, resolve_prunable

SCOPES = ("global", "layer", "neuron")


@dataclass
class RoundContext:
    """What a prune rule may use besides the trained weights and the mask.

    ``method``: the ``config.method`` section; ``scope``; ``init_params``: the
    weights at initialization; ``dense_params``: the best weights of round 0
    (dense training), ``None`` during round 0."""

    method: Mapping[str, Any]
    scope: str
    init_params: PyTree
    dense_params: PyTree | None


PruneRule = Callable[[PyTree, PyTree, int, RoundContext], tuple[PyTree, dict]]
PRUNE_RULES: dict[str, PruneRule] = {}


def register_rule(name: str) -> Callable[[PruneRule], PruneRule]:
    """Decorator adding a prune rule to :data:`PRUNE_RULES` under ``name``."""

    def add(fn: PruneRule) -> PruneRule:
        if name in PRUNE_RULES and PRUNE_RULES[name] is not fn:
            raise ValueError(f"prune rule name={name!r} is already registered")
        PRUNE_RULES[name] = fn
        return fn

    return add


def _pool_totals(tree: PyTree) -> int:
    return int(sum(np.sum(np.asarray(x)) for x in jax.tree.leaves(tree)))


def _per_layer(tree: PyTree, fn: Callable[[Any], Any] = float) -> dict[str, Any]:
    """``{path: fn(leaf)}`` over the non-``None`` leaves."""
    return {path_str(p): fn(x) for p, x in jax.tree.leaves_with_path(tree)}


@register_rule("sap")
def sap_rule(params: PyTree, mask: PyTree, round_: int, ctx: RoundContext) -> tuple[PyTree, dict]:
    """SAP: PQI-bound pruning with ``method.p, q, eta_r, gamma, beta`` in ``ctx.scope``."""
    m = ctx.method
    new, rec = sap.prune_round(
        params, mask, p=m["p"], q=m["q"], eta_r=m["eta_r"], gamma=m["gamma"], beta=m["beta"], scope=ctx.scope
    )
    out = {"c": _pool_totals(rec.c), "d": _pool_totals(rec.d)}
    if ctx.scope == "global":
        out.update(r=int(rec.r), pqi_rule=float(rec.pqi))
    elif ctx.scope == "layer":
        out.update(r_layers=_per_layer(rec.r, int), c_layers=_per_layer(rec.c, int))
    else:
        out["r"] = _pool_totals(rec.r)
    return new, out


@functools.partial(jax.jit, static_argnames=("scope",))
def _lt_prune(params: PyTree, mask: PyTree, ratio: jax.Array, *, scope: str) -> tuple[PyTree, PyTree, PyTree]:
    d = sap.unmasked_counts(mask, scope)
    c = jax.tree.map(lambda n: jnp.round(ratio * n).astype(jnp.int32), d)
    return sap.prune_smallest(params, mask, c, scope=scope), c, d


@register_rule("lt")
def lt_rule(params: PyTree, mask: PyTree, round_: int, ctx: RoundContext) -> tuple[PyTree, dict]:
    """Lottery Ticket: prune ``round(P d)`` smallest-magnitude weights of each pool."""
    new, c, d = _lt_prune(params, mask, float(ctx.method["prune_ratio"]), scope=ctx.scope)
    return new, {"c": _pool_totals(c), "d": _pool_totals(d)}


@functools.partial(jax.jit, static_argnames=("scope",))
def _os_prune(dense: PyTree, mask: PyTree, sparsity: jax.Array, *, scope: str) -> PyTree:
    return masks.topk(masks.magnitude(dense), sparsity, scope=scope, prunable=mask)


@register_rule("os")
def os_rule(params: PyTree, mask: PyTree, round_: int, ctx: RoundContext) -> tuple[PyTree, dict]:
    """One Shot: the round-0 dense weights pruned by magnitude to density
    ``(1 - P)^(round + 1)`` of every pool (the next round's density)."""
    dense = params if ctx.dense_params is None else ctx.dense_params
    density = (1.0 - float(ctx.method["prune_ratio"])) ** (round_ + 1)
    return _os_prune(dense, mask, jnp.float32(1.0 - density), scope=ctx.scope), {"density": density}


def _remaining(mask: PyTree) -> tuple[float, dict[str, float]]:
    kept = [np.asarray(m) for m in jax.tree.leaves(mask)]
    total = sum(k.size for k in kept)
    return float(sum(k.sum() for k in kept) / total), _per_layer(mask, lambda m: float(np.mean(m)))


@functools.partial(jax.jit, static_argnames=("pq_grid",))
def _pqi_all(params: PyTree, mask: PyTree, pq_grid: tuple[tuple[float, float], ...]) -> dict:
    return {
        "pqi": pq_index(params, 0.5, 1.0, mask=mask),
        "pqi_layers": pq_index(params, 0.5, 1.0, mask=mask, scope="layer"),
        "pqi_grid": [pq_index(params, p, q, mask=mask) for p, q in pq_grid],
    }


def _measures(params: PyTree, mask: PyTree, pq_grid: tuple[tuple[float, float], ...]) -> dict:
    """PQ Index (p=0.5, q=1) global and per layer, plus global on the (p, q) grid
    (one compiled computation, one host transfer)."""
    out = jax.device_get(_pqi_all(params, mask, pq_grid))
    return {
        "pqi": float(out["pqi"]),
        "pqi_layers": _per_layer(out["pqi_layers"]),
        "pqi_grid": {f"{p:g},{q:g}": float(v) for (p, q), v in zip(pq_grid, out["pqi_grid"], strict=True)},
    }


def rewind(template: Any, init_params: PyTree, init_batch_stats: PyTree, mask: PyTree, tx: Any) -> Any:
    """The state a round starts from: ``template`` (a ``TrainState``) with params
    ``m * w_init`` (pruned weights exactly 0, every unmasked leaf such as biases
    at its init value), the init BatchNorm statistics, step 0 and a fresh
    ``tx`` state whose :func:`~jaxprune.optax.masked_update` holds ``mask``.
    All arrays are new buffers (the train step donates its input)."""
    params = apply_mask(init_params, mask)
    state = template.replace(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=init_batch_stats,
        opt_state=set_mask(tx.init(params), mask),
    )
    return fresh_copy(state)


def _check_method(m: Mapping[str, Any]) -> None:
    check_choice("config.method.rule", m["rule"], tuple(PRUNE_RULES))
    check_choice("config.method.scope", m["scope"], SCOPES)
    check_number("config.method.rounds", m["rounds"], low=0)
    check_number("config.method.prune_ratio", m["prune_ratio"], low=0.0, high=1.0)
    for key in ("rise_rounds", "min_ratio"):
        check_number(f"config.method.stop.{key}", m["stop"][key], low=0.0)


def _pq_grid(m: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    return tuple((float(p), float(q)) for p in m["grid_p"] for q in m["grid_q"] if p < q)


@register("iterative")
def run(config: Any, workdir: str | pathlib.Path) -> dict:
    """Iterative pruning with rewinding; returns ``{"records": [...], "config": ...}``
    (one record per round) and writes it to ``<workdir>/results.json``."""
    m = config.method
    _check_method(m)
    root = pathlib.Path(workdir).absolute()
    dataset, model = setup(config)
    trainer = Trainer(model, dataset, config.train, seed=config.seed)
    fresh_state = trainer.init_state()
    init_params, init_stats = fresh_state.params, fresh_state.batch_stats
    flags = resolve_prunable(init_params)
    replicated = replicated_sharding(trainer.mesh)
    mask = jax.device_put(full_mask(init_params, flags), replicated)
    # one tx for the whole run (the mask lives in its state): the step compiles once
    tx = masked_update(mask)
    trainer = Trainer(model, dataset, config.train, seed=config.seed, append=[tx])
    ctx = RoundContext(method=m, scope=m["scope"], init_params=init_params, dense_params=None)
    rule = PRUNE_RULES[m["rule"]]
    stop = m["stop"]
    stop_rule = sap.StopRule(rise_rounds=int(stop["rise_rounds"]), min_ratio=float(stop["min_ratio"]))
    pq_grid = _pq_grid(m)
    label = {"method": m["label"] or m["rule"], "rule": m["rule"], "scope": m["scope"],
             "model": config.model.name, "dataset": config.data.name, "seed": int(config.seed)}

    if not config.resume and (root / "rounds").exists():
        raise ValueError(f"{root} holds a previous run; resume it (--resume) or use a new workdir")
    rounds_ckpt = Checkpointer(root / "rounds", keep=1)
    records: list[dict] = []
    start = 0
    try:
        done = rounds_ckpt.latest_step()
        if done is not None:
            meta = rounds_ckpt.meta(done)
            target = {"mask": mask, "init_params": init_params, "init_batch_stats": init_stats}
            if meta["has_dense"]:
                target["dense_params"] = init_params
            saved, _, meta = rounds_ckpt.restore(target, step=done)
            mask, init_params, init_stats = saved["mask"], saved["init_params"], saved["init_batch_stats"]
            ctx.init_params, ctx.dense_params = init_params, saved.get("dense_params")
            records, start = list(meta["records"]), done
            if meta.get("stopped"):
                start = int(m["rounds"]) + 1

        for t in range(start, int(m["rounds"]) + 1):
            tic = time.perf_counter()
            state0 = rewind(fresh_state, init_params, init_stats, mask, trainer.tx)
            state0 = jax.device_put(state0, replicated)
            round_dir = root / f"round_{t:02d}"
            # each round: its own checkpoints, and a new data order (as a reshuffling loader)
            trainer.workdir, trainer.seed = round_dir, int(config.seed) + 1000 * t
            state = trainer.fit(state0, resume=bool(config.resume), progress=progress(config))
            best = state
            if len(dataset.val.y):
                best, _ = trainer.restore(state, best=True)
            rec = {**label, "round": t, "epochs": int(config.train.epochs)}
            rec["remaining"], rec["remaining_layers"] = _remaining(mask)
            rec["acc_retrained"] = trainer.evaluate(best, "test")["accuracy"]
            rec["val_acc"] = trainer.evaluate(best, "val")["accuracy"] if len(dataset.val.y) else None
            rec.update(_measures(best.params, mask, pq_grid))
            if t == 0:
                ctx.dense_params = fresh_copy(best.params)
            new_mask, rec["prune"] = rule(best.params, mask, t, ctx)
            rec["remaining_after"], rec["remaining_layers_after"] = _remaining(new_mask)
            pruned = best.replace(params=apply_mask(best.params, new_mask))
            rec["acc_pruned"] = trainer.evaluate(pruned, "test")["accuracy"]
            rec["ratio"] = 1.0 - rec["remaining_after"] / rec["remaining"] if rec["remaining"] else 0.0
            reason = stop_rule.check([r["pqi"] for r in records] + [rec["pqi"]],
                                     [r["ratio"] for r in records] + [rec["ratio"]])
            rec["would_stop"], rec["stop_reason"] = reason is not None, reason
            rec["time_s"] = time.perf_counter() - tic
            records.append(rec)
            mask = jax.device_put(new_mask, replicated)
            stopped = bool(m["stop"]["enabled"]) and reason is not None
            items = {"mask": mask, "init_params": init_params, "init_batch_stats": init_stats}
            if ctx.dense_params is not None:
                items["dense_params"] = ctx.dense_params
            meta = {"records": records, "has_dense": ctx.dense_params is not None, "stopped": stopped}
            rounds_ckpt.save(t + 1, items, meta=meta)
            rounds_ckpt.wait()
            if not m["keep_round_checkpoints"]:
                shutil.rmtree(round_dir / "checkpoints", ignore_errors=True)
            print(f"[{label['method']}/{label['scope']}] round {t}: remaining {rec['remaining']:.4f} "
                  f"acc {rec['acc_retrained']:.4f} pruned-acc {rec['acc_pruned']:.4f} pqi {rec['pqi']:.4f} "
                  f"({rec['time_s']:.1f}s)", flush=True)
            if stopped:
                break
    finally:
        rounds_ckpt.close()
    results = {"pipeline": "iterative", "records": records, "config": config.to_dict()}
    if records:  # the last retrained model, before the round's pruning
        last = records[-1]
        results["summary"] = run_summary("iterative", method=f"{label['method']}, {len(records)} rounds",
                                         test={"accuracy": last["acc_retrained"]})
        results["summary"]["sparsity_prunable"] = 1.0 - last["remaining"]
    write_results(root, results)
    return results
