"""The DPF study (Lin et al., ICLR 2020; METHODS.md section 5): Dynamic Pruning
with Feedback and the baselines of its Tables 1-2, one driver for six pipelines.

Registered names (``config.pipeline``) and what they train:

- ``dpf``: one pass with :func:`jaxprune.optax.dpf` (forward and gradient at
  ``m * w``, the gradient applied to the dense ``w``); the model is ``m_T * w_T``.
- ``incremental``: the same schedule with ``feedback=False`` (Zhu & Gupta: the
  mask only shrinks, pruned weights are set to 0 and stay 0).
- ``one_shot_ft`` (the paper's One-shot P+FT): the dense model trained for the
  full ``train.epochs``, pruned by global magnitude to the target, then
  ``method.finetune_epochs`` (>= 1; the paper: 60) extra epochs with the mask
  fixed (:func:`jaxprune.optax.masked_update`).
- ``one_shot_split``: the former protocol, one budget split: dense for
  ``round(method.dense_fraction * epochs)`` epochs, fine-tuning for the rest.
- ``snip``: SNIP mask (``|w * dL/dw|``, Lee et al. 2019) at initialization from
  one batch of ``method.snip_batch_size`` examples, training with that mask fixed.
- ``dpf_dense``: the Dense baseline with the same report fields (the engine's
  ``dense`` pipeline reports only accuracies).

Sparsity schedule (``dpf``/``incremental``): the cubic schedule of Zhu & Gupta
from 0 at step 0 to ``method.target_sparsity`` at the SECOND learning-rate decay
(``train.milestones[1]``; ``method.end_fraction > 0`` overrides it), then
constant. ``method.schedule_every = "epoch"`` (the paper, Appendix A.2: pruning
frequency Delta t = 1 epoch) steps the target once per epoch and ends the
schedule at the start of the decay epoch; ``"step"`` moves it at every step.
Either way the mask is recomputed every ``method.update_every`` steps at the
current target until the end, or until the first update at or after the end of
the schedule with ``method.freeze_mask``.

Fine-tuning: ``method.finetune_epochs > 0`` adds that many epochs with the final
mask fixed (DPF + FT, Incremental + FT of Table 2; the record keeps the accuracy
before fine-tuning as ``test_acc_before_ft``). Every fine-tuning phase (also
One-shot's) starts a fresh ``method.finetune_optimizer`` (``"sgd"``: SGD with
``train.momentum`` and Nesterov as in training; ``"adam"``) at
``train.lr * method.finetune_lr_factor``, with the ``train`` schedule over the
fine-tuning epochs. The paper tunes this optimizer and lr on a grid: see
``experiments/dpf_study.py --ft_grid``. ``method.reuse_workdir`` (a finished run
of the same config) skips the training phase before fine-tuning: a ``dpf_dense``
run for ``one_shot_ft``, a run of the same method for ``dpf``/``incremental``
with fine-tuning; its config must match in every data/model/train key and every
method key that shapes that phase.

Pruned set and structure: :func:`jaxprune.optax.paper_prunable` (all conv
kernels; for MLPs every dense kernel but the last). Unstructured selection is
global unless ``method.scope`` says ``"layer"``/``"neuron"``;
``method.scope = "filter"`` is structured DPF (and structured One-shot / SNIP /
Incremental): whole filters (output units) scored by their l2 norm
(:func:`jaxprune.masks.filter_norm`; SNIP: the summed ``|w * dL/dw|`` of the
filter), kept or dropped globally across layers. The structured methods train
and evaluate with the mask extended to each pruned filter's structure group
(its bias and BatchNorm scale and shift: :func:`jaxprune.compress.structure_groups`),
so the model they report is the one :func:`jaxprune.compress.compact` keeps.

Every pipeline writes ``<workdir>/results.json`` with one record: ``method``,
``model``, ``dataset``, ``seed``, ``target_sparsity``, ``epochs`` (total,
fine-tuning included), ``test_acc``/``test_loss``/``val_acc`` of the final sparse
model, ``sparsity_prunable`` (pruned fraction of the prunable weights) and
``sparsity_all`` (pruned weights over ALL parameters, biases and BN included),
``wall_s`` (this session's wall time), ``history`` (per epoch: train/val
metrics, ``delta`` = ``||w - m*w||^2 / ||w||^2`` of the dense weights,
``mask_flips`` and ``mask_iou`` against the previous epoch's mask,
``mask_sparsity``, ``pruned_abs_max`` = largest ``|w|`` of a pruned dense weight)
and ``mask_convergence`` (paper's Figure 4: entry ``e`` is the fraction of
prunable mask entries that still change after epoch ``e``, from epoch-end masks).

Resume: each phase checkpoints under ``<workdir>/<phase>/checkpoints`` (exact
resume by the engine) and the epoch-end masks are kept as packed bits under
``<workdir>/masks``; ``config.resume`` continues a killed run.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import masks
from jaxprune._validate import check_choice, check_number
from jaxprune.compress import structure_groups
from jaxprune.measures import mask_flips, mask_iou, pruning_quality
from jaxprune.pipelines import (
    ConfigError,
    config_changes,
    first_batch,
    make_model,
    progress,
    register,
    run_summary,
    setup,
    write_results,
)
from jaxprune.train import Hook, Trainer, per_example_loss, replicated_sharding
from jaxprune.train.optim import _get
from jaxprune.train.state import TrainState
from jaxprune.transforms import (
    dpf,
    get_mask,
    mask_update_schedule,
    masked_update,
    paper_prunable,
    sparse_params,
)
from jaxprune.tree import PyTree, apply_mask, fresh_copy, full_mask, is_none, neuron_view

METHODS = ("dense", "dpf", "incremental", "one_shot_ft", "one_shot_split", "snip")
PIPELINE_NAMES = {"dense": "dpf_dense", "dpf": "dpf", "incremental": "incremental",
                  "one_shot_ft": "one_shot_ft", "one_shot_split": "one_shot_split", "snip": "snip"}
LABELS = {"dense": "Dense", "dpf": "DPF", "incremental": "Incremental",
          "one_shot_ft": "One-shot P+FT", "one_shot_split": "One-shot+FT (split budget)", "snip": "SNIP"}
SCOPES = ("global", "layer", "neuron", "filter")
FINETUNE_OPTIMIZERS = ("sgd", "adam")
SCHEDULE_EVERY = ("epoch", "step")
# method keys that shape the training phase a fine-tuning run may reuse (besides data/model/train/seed)
_TRAIN_PHASE_KEYS = ("target_sparsity", "update_every", "power", "end_fraction", "freeze_mask", "scope",
                     "schedule_every", "snip_batch_size")

# config.method keys of these pipelines, with their defaults
METHOD_DEFAULTS: dict[str, Any] = {
    "target_sparsity": 0.9,
    "update_every": 16,  # DPF's reparametrization period p
    "power": 3.0,  # Zhu & Gupta's cubic schedule
    "end_fraction": 0.0,  # 0: the schedule ends at the second lr decay (train.milestones[1])
    "freeze_mask": False,
    "scope": "global",
    "schedule_every": "epoch",  # the target moves once per epoch (paper) | "step"
    "finetune_epochs": 0,  # > 0: DPF + FT / Incremental + FT; One-shot P+FT's fine-tuning (>= 1)
    "finetune_optimizer": "sgd",  # sgd (Nesterov, train.momentum) | adam
    "finetune_lr_factor": 0.1,  # fine-tuning lr = train.lr * this
    "reuse_workdir": "",  # a finished run whose training phase this run starts from
    "dense_fraction": 0.5,  # one_shot_split: share of the epochs trained dense
    "snip_batch_size": 128,
    "label": "",
}


def method_options(method: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config.method`` merged over :data:`METHOD_DEFAULTS`, validated: unknown
    keys and out-of-range values raise ``ValueError`` naming the key."""
    given = dict(method or {})
    unknown = sorted(set(given) - set(METHOD_DEFAULTS))
    if unknown:
        raise ValueError(f"config.method has unknown keys {unknown}; valid keys: {sorted(METHOD_DEFAULTS)}")
    m = {**METHOD_DEFAULTS, **given}
    check_number("config.method.target_sparsity", m["target_sparsity"], low=0.0, high=1.0, high_open=True)
    if isinstance(m["update_every"], bool) or not isinstance(m["update_every"], int):
        raise TypeError(f"config.method.update_every must be an int >= 1, got {m['update_every']!r}")
    check_number("config.method.update_every", m["update_every"], low=1)
    check_number("config.method.power", m["power"], low=0.0, low_open=True)
    check_number("config.method.end_fraction", m["end_fraction"], low=0.0, high=1.0)
    check_choice("config.method.freeze_mask", m["freeze_mask"], (True, False))
    check_choice("config.method.scope", m["scope"], SCOPES)
    check_choice("config.method.schedule_every", m["schedule_every"], SCHEDULE_EVERY)
    check_number("config.method.finetune_epochs", m["finetune_epochs"], low=0)
    check_choice("config.method.finetune_optimizer", m["finetune_optimizer"], FINETUNE_OPTIMIZERS)
    if not isinstance(m["reuse_workdir"], str):
        raise ValueError(f"config.method.reuse_workdir must be a path string, got {m['reuse_workdir']!r}")
    check_number("config.method.finetune_lr_factor", m["finetune_lr_factor"], low=0.0, low_open=True)
    check_number("config.method.dense_fraction", m["dense_fraction"], low=0.0, high=1.0,
                 low_open=True, high_open=True)
    check_number("config.method.snip_batch_size", m["snip_batch_size"], low=1)
    return m


# --------------------------------------------------------------------------- schedule


def schedule_end_step(train_cfg: Any, steps_per_epoch: int, end_fraction: float = 0.0) -> int:
    """The step where the sparsity schedule reaches its target: the step of the
    second learning-rate decay (``round(milestones[1] * total_steps)``, the same
    rounding as the lr schedule) or ``round(end_fraction * total_steps)`` when
    ``end_fraction > 0``; at least 1."""
    total = int(_get(train_cfg, "epochs")) * int(steps_per_epoch)
    if end_fraction > 0:
        return max(round(end_fraction * total), 1)
    milestones = tuple(_get(train_cfg, "milestones"))
    if _get(train_cfg, "schedule") != "multistep" or len(milestones) < 2:
        raise ValueError(
            f"the sparsity schedule ends at the second lr decay, but train.schedule="
            f"{_get(train_cfg, 'schedule')!r} with milestones={list(milestones)} has none; "
            "use a multistep schedule with >= 2 milestones or set config.method.end_fraction in (0, 1]"
        )
    return max(round(float(milestones[1]) * total), 1)


def last_update_step(end_step: int, update_every: int) -> int:
    """The first mask-update step ``t`` (a multiple of ``update_every``) with
    ``t >= end_step``: the first update at the target sparsity."""
    return math.ceil(end_step / update_every) * update_every


# --------------------------------------------------------------------------- masks


def _prunable_only(tree: PyTree, flags: PyTree) -> PyTree:
    """``tree`` with ``None`` where ``flags`` (Python bools, or a mask whose
    ``None`` leaves are not prunable) says not prunable."""
    return jax.tree.map(lambda f, x: None if f is None or f is False else x, flags, tree, is_leaf=is_none)


def structure_group_mask(
    model: Any, state: TrainState, input_shape: tuple[int, ...]
) -> Callable[[PyTree], PyTree]:
    """The structured methods' mask extension (jittable): a pruned filter's bias
    and BatchNorm scale and shift go with it (:func:`jaxprune.compress.structure_groups`
    of the model traced at ``state``'s shapes: a ``jax.eval_shape`` of the
    state is enough)."""
    variables = {"params": state.params}
    if jax.tree.leaves(state.batch_stats):
        variables["batch_stats"] = state.batch_stats
    return structure_groups(model, variables, input_shape=tuple(input_shape))


def magnitude_mask(params: PyTree, sparsity: float, flags: PyTree, scope: str = "global") -> PyTree:
    """One-shot magnitude pruning: keep the ``round((1 - sparsity) n)`` largest
    ``|w|`` of the prunable leaves per ``scope`` pool; ``scope="filter"``: the
    output units with the largest l2 norm, globally (structured). ``flags``:
    Python bools or a mask (``None`` = not prunable; its values are ignored)."""
    prunable_params = _prunable_only(params, flags)
    if scope == "filter":
        return masks.topk(masks.filter_norm(prunable_params), sparsity, scope="filter", prunable=flags,
                          params=params)
    return masks.topk(masks.magnitude(prunable_params), sparsity, scope=scope, prunable=flags)


def snip_mask(
    model: Any,
    state: TrainState,
    batch: Mapping[str, np.ndarray],
    sparsity: float,
    flags: PyTree,
    *,
    task: str,
    scope: str = "global",
) -> PyTree:
    """SNIP (Lee et al. 2019): keep the largest ``|w * dL/dw|`` of the prunable
    leaves, the gradient of the weighted mean training loss on ``batch`` at the
    params of ``state`` (train mode: BN uses batch statistics)."""
    x, y = jnp.asarray(batch["x"]), jnp.asarray(batch["y"])
    weight = jnp.asarray(batch["weight"], jnp.float32)
    rngs = {"dropout": jax.random.fold_in(state.rng, 0)}

    def loss(params: PyTree) -> jax.Array:
        variables = {"params": params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
            out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        else:
            out = model.apply(variables, x, train=True, rngs=rngs)
        return jnp.sum(weight * per_example_loss(out, y, task)) / jnp.maximum(jnp.sum(weight), 1.0)

    grads = jax.jit(jax.grad(loss))(state.params)
    scores = masks.snip(_prunable_only(state.params, flags), _prunable_only(grads, flags))
    if scope == "filter":  # a filter's score: the sum of its weights' scores
        unit_scores = jax.tree.map(lambda s: None if s is None else jnp.sum(neuron_view(s), axis=0), scores,
                                   is_leaf=is_none)
        return masks.topk(unit_scores, sparsity, scope="filter", prunable=flags, params=state.params)
    return masks.topk(scores, sparsity, scope=scope, prunable=flags)


def _mask_counts(mask: PyTree) -> tuple[int, int]:
    """``(kept, total)`` entries over the prunable (non-``None``) leaves."""
    leaves = [np.asarray(m) for m in jax.tree.leaves(mask)]
    return int(sum(m.sum() for m in leaves)), int(sum(m.size for m in leaves))


# --------------------------------------------------------------------------- per-epoch tracking


def _pack(mask: PyTree) -> np.ndarray:
    """The prunable mask entries, flattened in leaf order, as packed bits."""
    leaves = jax.device_get([m for m in jax.tree.leaves(mask)])
    return np.packbits(np.concatenate([np.ravel(m) for m in leaves]))


def _save_mask(path: pathlib.Path, mask: PyTree) -> None:
    """``path`` (.npz): ``bits`` (packed prunable entries) and ``n`` (their count).
    In a multi-process job only process 0 writes (the mask is replicated)."""
    n = sum(int(np.size(m)) for m in jax.tree.leaves(mask))
    bits = _pack(mask)
    if jax.process_index() == 0:
        np.savez(path, bits=bits, n=n)


def _load_bits(path: pathlib.Path, unpack: bool = False) -> np.ndarray:
    """The packed bits of a stored mask, or (``unpack``) its ``n`` bool entries."""
    with np.load(path) as f:
        return np.unpackbits(f["bits"], count=int(f["n"])).astype(bool) if unpack else f["bits"]


def _unpack(bits: np.ndarray, template: PyTree) -> PyTree:
    """Inverse of :func:`_pack` with the mask structure of ``template``."""
    leaves, treedef = jax.tree.flatten(template, is_leaf=is_none)
    total = sum(m.size for m in leaves if m is not None)
    flat = np.unpackbits(bits, count=total).astype(bool)
    out, i = [], 0
    for m in leaves:
        if m is None:
            out.append(None)
            continue
        out.append(jnp.asarray(flat[i:i + m.size].reshape(m.shape)))
        i += m.size
    return jax.tree.unflatten(treedef, out)


@jax.jit
def _epoch_stats(params: PyTree, mask: PyTree, prev: PyTree) -> dict[str, jax.Array]:
    """The epoch-end scalars of :class:`MaskTracker` in one compiled pass."""
    pruned = [jnp.max(jnp.where(m, 0.0, jnp.abs(w)), initial=0.0)
              for w, m in zip(jax.tree.leaves(_prunable_only(params, mask)), jax.tree.leaves(mask),
                              strict=True)]
    kept = sum(jnp.sum(m, dtype=jnp.int32) for m in jax.tree.leaves(mask))
    total = sum(m.size for m in jax.tree.leaves(mask))
    return {
        "delta": pruning_quality(params, mask),
        "mask_flips": mask_flips(prev, mask),
        "mask_iou": mask_iou(prev, mask),
        "mask_sparsity": (total - kept) / total,
        "pruned_abs_max": jnp.max(jnp.stack(pruned)).astype(jnp.float32),
    }


class MaskTracker(Hook):
    """End of every epoch: adds ``delta``, ``mask_flips``, ``mask_iou`` (against
    the previous epoch-end mask), ``mask_sparsity``, ``pruned_abs_max`` and
    ``global_epoch`` to the epoch logs, and stores the mask as packed bits in
    ``<directory>/epoch_XXXX.npz`` (global epoch number; ``epoch_0000`` is the
    mask before training; ``bits`` = packed entries, ``n`` = their count).
    ``mask_fn(state)`` gives the current mask;
    ``offset`` is the number of epochs of earlier phases."""

    def __init__(self, mask_fn: Callable[[TrainState], PyTree], directory: pathlib.Path, offset: int = 0):
        self.mask_fn, self.directory, self.offset = mask_fn, pathlib.Path(directory), int(offset)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prev: PyTree | None = None

    def path(self, epoch: int) -> pathlib.Path:
        return self.directory / f"epoch_{epoch:04d}.npz"

    def save_initial(self, mask: PyTree) -> None:
        """Store the mask before training (epoch 0) unless present."""
        if not self.path(0).exists():
            _save_mask(self.path(0), mask)

    def end_of_epoch(self, trainer: Trainer, state: TrainState, epoch: int, logs: dict) -> None:
        e = self.offset + epoch + 1
        mask = self.mask_fn(state)
        prev = self._prev if self._prev is not None else _unpack(_load_bits(self.path(e - 1)), mask)
        stats = jax.device_get(_epoch_stats(state.params, mask, prev))
        logs.update({k: float(v) for k, v in stats.items()}, global_epoch=e)
        _save_mask(self.path(e), mask)
        self._prev = jax.tree.map(lambda x: jnp.array(x, copy=True), mask)  # the step donates the state
        return None


def mask_convergence(directory: str | pathlib.Path, epochs: int) -> list[float]:
    """Paper's Figure 4 from the stored epoch-end masks ``0..epochs``: entry ``e``
    is the fraction of prunable entries whose mask value changes at some epoch
    end after ``e`` (``last_change > e``). Flips that revert within one epoch
    are not seen at this granularity."""
    directory = pathlib.Path(directory)
    prev = _load_bits(directory / "epoch_0000.npz", unpack=True)
    last = np.zeros(prev.shape, np.int32)
    for e in range(1, epochs + 1):
        cur = _load_bits(directory / f"epoch_{e:04d}.npz", unpack=True)
        last[cur != prev] = e
        prev = cur
    counts = np.bincount(last, minlength=epochs + 1)  # how many entries last changed at each epoch
    later = counts[::-1].cumsum()[::-1]  # later[e] = #entries with last >= e
    n = last.size
    return [float(later[e + 1]) / n if e + 1 <= epochs else 0.0 for e in range(epochs + 1)]


# --------------------------------------------------------------------------- the driver


@dataclass
class Outcome:
    """What :func:`train_method` returns: the final ``state`` (of the last
    phase), its ``trainer``, the final ``mask`` and the results ``record``."""

    state: TrainState
    trainer: Trainer
    mask: PyTree
    record: dict


def _train_cfg(cfg: Any, **changes: Any) -> dict:
    base = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {**base, **changes}



def check_method(config: Any, method: str) -> dict[str, Any]:
    """:func:`method_options` plus the rules that tie keys to ``method``; returns
    the merged options. Raises ``ValueError`` naming the key."""
    check_choice("method", method, METHODS)
    m = method_options(config.method)
    ft = int(m["finetune_epochs"])
    if method == "one_shot_ft" and ft < 1:
        raise ValueError("config.method.finetune_epochs=0 is not valid for one_shot_ft (One-shot P+FT "
                         "fine-tunes the pruned dense model): expected >= 1 (the paper: 60)")
    if m["reuse_workdir"] and not (method == "one_shot_ft" or (method in ("dpf", "incremental") and ft)):
        raise ValueError(
            f"config.method.reuse_workdir={m['reuse_workdir']!r} is only valid for one_shot_ft (a finished "
            "dpf_dense run) and for dpf/incremental with finetune_epochs >= 1 (a finished run of the method)"
        )
    return m


def _fit(trainer: Trainer, state0: TrainState | None, resume: bool, progress: bool | None) -> TrainState:
    if state0 is not None:
        state0 = jax.device_put(fresh_copy(state0), replicated_sharding(trainer.mesh))
    return trainer.fit(state0, resume=resume, progress=progress)


def _per_epoch(schedule: Callable[[Any], jax.Array], steps_per_epoch: int) -> Callable[[Any], jax.Array]:
    """``schedule`` over epochs as a function of the step: constant within each epoch."""

    def stepped(step: Any) -> jax.Array:
        return schedule(step // steps_per_epoch)

    stepped.in_unit_interval = getattr(schedule, "in_unit_interval", False)  # same values, same range
    return stepped


def sparsity_schedule(
    m: Mapping[str, Any], train_cfg: Any, steps_per_epoch: int
) -> tuple[Callable[[Any], jax.Array], int]:
    """``(schedule, end_step)``: the cubic Zhu & Gupta schedule of the options
    ``m`` as a function of the step, and the first step at the target. With
    ``schedule_every="epoch"`` the target moves once per epoch and reaches
    ``target_sparsity`` at the first step of the decay epoch."""
    target, power = float(m["target_sparsity"]), float(m["power"])
    if m["schedule_every"] == "step":
        end = schedule_end_step(train_cfg, steps_per_epoch, float(m["end_fraction"]))
        return masks.polynomial_schedule(target, 0, end, 0.0, power=power), end
    end_epoch = max(schedule_end_step(train_cfg, 1, float(m["end_fraction"])), 1)
    per_epoch = masks.polynomial_schedule(target, 0, end_epoch, 0.0, power=power)
    return _per_epoch(per_epoch, steps_per_epoch), end_epoch * steps_per_epoch


def _comparable(config_json: Mapping[str, Any], method_keys: Sequence[str]) -> dict[str, Any]:
    """The parts of a config (as JSON) a reused training phase depends on."""
    out = {k: config_json.get(k) for k in ("seed", "data", "model", "train")}
    out["method"] = {k: (config_json.get("method") or {}).get(k, METHOD_DEFAULTS[k]) for k in method_keys}
    return out


def _check_reusable(reuse: pathlib.Path, config: Any, pipeline: str, method_keys: Sequence[str]) -> dict:
    """The finished record in ``reuse`` (its ``results.json``) after checking that
    its config (the record's ``config``) matches ``config`` where the reused
    phase depends on it; raises :class:`~jaxprune.pipelines.ConfigError` listing
    the differences."""
    saved_results = reuse / "results.json"
    if not saved_results.is_file():
        raise ConfigError(f"config.method.reuse_workdir={str(reuse)!r} holds no finished run "
                          "(no results.json)")
    saved = json.loads(saved_results.read_text())
    old = saved.get("config") or {}
    if old.get("pipeline") != pipeline:
        raise ConfigError(f"config.method.reuse_workdir={str(reuse)!r} is a {old.get('pipeline')!r} run; "
                          f"expected a finished {pipeline!r} run")
    new = json.loads(config.to_json_best_effort())
    changes = config_changes(_comparable(old, method_keys), _comparable(new, method_keys))
    if changes:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ConfigError(f"config.method.reuse_workdir={str(reuse)!r} was trained with a different config: "
                          f"{listed}")
    return saved


def _restore_final(trainer: Trainer, template: TrainState, phase_dir: pathlib.Path, steps: int) -> TrainState:
    """The final state of a finished phase whose checkpoints are in ``phase_dir``."""
    trainer.workdir = phase_dir
    state, step = trainer.restore(template)
    if step != steps:
        raise ConfigError(f"{phase_dir} ends at step {step}, not at the {steps} steps of this config")
    return state


def _copy_masks(src: pathlib.Path, dst: pathlib.Path, epochs: int) -> None:
    """The reused run's epoch-end masks ``0..epochs`` (for the mask statistics)."""
    dst.mkdir(parents=True, exist_ok=True)
    for e in range(epochs + 1):
        name = f"epoch_{e:04d}.npz"
        if (src / name).exists() and not (dst / name).exists() and jax.process_index() == 0:
            shutil.copyfile(src / name, dst / name)


def _finetune_cfg(train_cfg: Any, m: Mapping[str, Any], epochs: int) -> dict:
    """The train section of a fine-tuning phase (module docstring)."""
    return _train_cfg(train_cfg, epochs=epochs, optimizer=m["finetune_optimizer"],
                      lr=float(_get(train_cfg, "lr")) * float(m["finetune_lr_factor"]))


def train_method(
    config: Any,
    workdir: str | pathlib.Path,
    method: str,
    *,
    hooks: Sequence[Hook] = (),
    dataset: Any | None = None,
) -> Outcome:
    """Train ``method`` (one of :data:`METHODS`) with ``config`` (see
    ``jaxprune/configs/dpf_base.py``); ``hooks`` run after the tracker in every phase;
    ``dataset``: an already loaded ``config.data`` dataset (a study reuses it
    across runs of one seed). Writes ``<workdir>/results.json`` and returns an
    :class:`Outcome`. Config values this method cannot run with raise
    :class:`~jaxprune.pipelines.ConfigError`."""
    tic = time.perf_counter()
    try:
        m = check_method(config, method)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err
    root = pathlib.Path(workdir).absolute()
    resume = bool(config.resume)
    phases = ("dense", "train", "finetune")
    if not resume and any((root / p / "checkpoints").exists() for p in phases):
        raise ValueError(
            f"{root} holds a previous run; resume it (config.resume / --resume) or use a new workdir"
        )
    if dataset is None:
        dataset, model = setup(config)
    else:
        model = make_model(config, dataset)
    seed, target, scope = int(config.seed), float(m["target_sparsity"]), m["scope"]
    probe = Trainer(model, dataset, config.train, seed=seed)  # steps per epoch; compiles nothing
    spe = probe.steps_per_epoch
    group = None  # structured methods: the mask extended to each pruned filter's structure group
    if scope == "filter":
        group = structure_group_mask(model, jax.eval_shape(probe.init_state), dataset.input_shape)

    def masked(params: PyTree, mask: PyTree) -> PyTree:
        return apply_mask(params, mask if group is None else group(mask))

    forward = sparse_params if group is None else lambda params, opt_state: masked(
        params, get_mask(opt_state, params)
    )
    tracker_dir = root / "masks"
    epochs = int(config.train.epochs)
    ft_epochs = int(m["finetune_epochs"])
    reuse = pathlib.Path(m["reuse_workdir"]).absolute() if m["reuse_workdir"] else None
    bar = progress(config)
    mask_of = lambda s: get_mask(s.opt_state)
    record: dict[str, Any] = {}

    def make(cfg: Any, phase: str, offset: int = 0, **kw) -> tuple[Trainer, MaskTracker]:
        tracker = MaskTracker(mask_of, tracker_dir, offset)
        trainer = Trainer(model, dataset, cfg, hooks=[tracker, *hooks], workdir=root / phase,
                          seed=seed + (1000 if phase == "finetune" else 0), **kw)
        return trainer, tracker

    def dense(cfg: Any, phase: str) -> tuple[Trainer, TrainState, PyTree]:
        trainer, tracker = make(cfg, phase)
        state0 = trainer.init_state()
        mask0 = full_mask(state0.params, paper_prunable(state0.params))
        tracker.mask_fn = lambda s: mask0
        if reuse is not None:  # the finished dpf_dense run's final state
            record["reused"] = _check_reusable(reuse, config, "dpf_dense", ())["history"]
            _copy_masks(reuse / "masks", tracker_dir, epochs)
            return trainer, _restore_final(trainer, state0, reuse / "train", epochs * spe), mask0
        tracker.save_initial(mask0)
        return trainer, _fit(trainer, state0, resume, bar), mask0

    def finetune(state: TrainState, mask: PyTree, n: int, offset: int) -> tuple[Trainer, TrainState]:
        trainer, _ = make(_finetune_cfg(config.train, m, n), "finetune", offset, append=[masked_update(mask)],
                          forward_params=forward)
        state0 = state.replace(step=jnp.zeros((), jnp.int32), params=apply_mask(state.params, mask),
                               opt_state=trainer.tx.init(state.params))
        return trainer, _fit(trainer, state0, resume, bar)

    histories: list[list[dict]] = []
    if method == "dense":
        trainer, state, mask = dense(config.train, "train")
        histories.append(trainer.history)
    elif method in ("dpf", "incremental"):
        schedule, end = sparsity_schedule(m, config.train, spe)
        total = epochs * spe
        first_full = last_update_step(end, int(m["update_every"]))
        if first_full > total - 1:
            raise ConfigError(
                f"no mask update reaches the target: the schedule ends at step {end}, the first update at "
                f"or after it is step {first_full}, but training has {total} steps (0..{total - 1}); "
                "use more train.epochs, a smaller config.method.update_every or end_fraction"
            )
        scorer = masks.filter_norm if scope == "filter" else masks.magnitude
        tx = dpf(schedule, update_every=int(m["update_every"]), scorer=scorer, scope=scope,
                 feedback=method == "dpf", freeze_after=first_full if m["freeze_mask"] else None)
        # DPF sees the raw gradients; Incremental must see the FINAL updates (it zeroes pruned weights)
        placement = {"prepend": [tx]} if method == "dpf" else {"append": [tx]}
        trainer, tracker = make(config.train, "train", forward_params=forward,
                                mask_update_due=mask_update_schedule(tx), **placement)
        state0 = trainer.init_state()
        if reuse is not None:
            reused = _check_reusable(reuse, config, PIPELINE_NAMES[method], _TRAIN_PHASE_KEYS)
            histories.append(reused["history"][: epochs])
            _copy_masks(reuse / "masks", tracker_dir, epochs)
            state = _restore_final(trainer, state0, reuse / "train", total)
            record["reused_workdir"] = str(reuse)
        else:
            tracker.save_initial(get_mask(state0.opt_state))
            state = _fit(trainer, state0, resume, bar)
            histories.append(trainer.history)
        mask = get_mask(state.opt_state)
        record.update(schedule_end_step=end, last_target_update_step=first_full)
        if ft_epochs:
            record["test_acc_before_ft"] = trainer.evaluate(state, "test")["accuracy"]
            if len(dataset.val):
                record["val_acc_before_ft"] = trainer.evaluate(state, "val")["accuracy"]
            trainer, state = finetune(state, mask, ft_epochs, epochs)
            histories.append(trainer.history)
    elif method in ("one_shot_ft", "one_shot_split"):
        if method == "one_shot_ft":
            dense_epochs = epochs
        else:
            dense_epochs = round(float(m["dense_fraction"]) * epochs)
            ft_epochs = epochs - dense_epochs  # the fine-tuning is part of the equal-epoch budget
            if not 1 <= dense_epochs <= epochs - 1:
                raise ConfigError(
                    f"one_shot_split splits train.epochs={epochs} into dense and fine-tuning epochs with "
                    f"config.method.dense_fraction={m['dense_fraction']}: both must be >= 1 "
                    f"(got {dense_epochs} dense)"
                )
        trainer, state, full = dense(_train_cfg(config.train, epochs=dense_epochs), "dense")
        if "reused" in record:
            histories.append(record.pop("reused"))
            record["reused_workdir"] = str(reuse)
        else:
            histories.append(trainer.history)
        record["dense_epochs"] = dense_epochs
        record["test_acc_dense"] = trainer.evaluate(state, "test")["accuracy"]
        mask = jax.jit(magnitude_mask, static_argnames=("scope",))(state.params, target, full, scope=scope)
        record["test_acc_pruned"] = trainer.evaluate(state.replace(params=masked(state.params, mask)),
                                                     "test")["accuracy"]
        trainer, state = finetune(state, mask, ft_epochs, dense_epochs)
        histories.append(trainer.history)
        if method == "one_shot_split":
            ft_epochs = 0  # reported epochs = the shared budget
    else:  # snip
        init = probe.init_state()
        batch = first_batch(dataset, int(m["snip_batch_size"]), seed=seed)
        mask = snip_mask(model, init, batch, target, paper_prunable(init.params), task=dataset.task,
                         scope=scope)
        trainer, tracker = make(config.train, "train", append=[masked_update(mask)],
                                forward_params=forward)
        tracker.save_initial(mask)
        params0 = apply_mask(init.params, mask)
        state = _fit(trainer, init.replace(params=params0, opt_state=trainer.tx.init(params0)), resume, bar)
        histories.append(trainer.history)

    test = trainer.evaluate(state, "test")
    kept, n_prunable = _mask_counts(mask)
    n_all = int(sum(np.size(w) for w in jax.tree.leaves(state.params)))
    total_epochs = epochs + ft_epochs
    history = [dict(row) for h in histories for row in h]
    label = m["label"] or LABELS[method] + (" + FT" if ft_epochs and method in ("dpf", "incremental") else "")
    record.update(
        pipeline=PIPELINE_NAMES[method],
        method_id=method,
        method=label,
        model=config.model.name,
        dataset=config.data.name,
        train_examples=len(dataset.train),
        seed=seed,
        target_sparsity=0.0 if method == "dense" else target,
        scope=scope,
        epochs=total_epochs,
        finetune_epochs=ft_epochs,
        finetune_optimizer=m["finetune_optimizer"] if ft_epochs else None,
        finetune_lr=float(config.train.lr) * float(m["finetune_lr_factor"]) if ft_epochs else None,
        test_acc=test["accuracy"],
        test_loss=test["loss"],
        val_acc=trainer.evaluate(state, "val")["accuracy"] if len(dataset.val) else None,
        sparsity_prunable=1.0 - kept / n_prunable,
        sparsity_all=(n_prunable - kept) / n_all,
        n_params=n_all,
        n_prunable=n_prunable,
        steps=total_epochs * spe,
        history=history,
        mask_convergence=mask_convergence(tracker_dir, total_epochs),
        resumed=resume,
        wall_s=time.perf_counter() - tic,
        config={k: v for k, v in json.loads(config.to_json_best_effort()).items() if k != "resume"},
    )
    record["summary"] = run_summary(
        record["pipeline"], method=f"{label} {100 * target:g}%" if method != "dense" else label, test=test,
        params=state.params, mask=mask, model=model,  # None on the leaves outside paper_prunable
        input_shape=_example_shape(dataset), batch_stats=state.batch_stats,
    )
    write_results(root, record)
    return Outcome(state=state, trainer=trainer, mask=mask, record=record)


def _example_shape(dataset: Any) -> tuple[int, ...] | None:
    """The shape of one model input (no batch axis), when the dataset says it."""
    shape = getattr(dataset, "input_shape", None)
    return tuple(shape) if shape is not None else None


def _register(method: str) -> None:
    def run(config: Any, workdir: str | pathlib.Path) -> dict:
        return train_method(config, workdir, method).record

    run.__name__ = f"run_{method}"
    run.__doc__ = f"The ``{method}`` pipeline of the DPF study (module docstring); returns the record."
    register(PIPELINE_NAMES[method], check=lambda config: check_method(config, method))(run)


for _method in METHODS:
    _register(_method)
