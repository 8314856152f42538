"""The training loop: epochs of jitted steps with hooks, evaluation,
checkpoints with exact resume, metric logging and a progress bar.

Data: a dataset's splits are read through ``split.batches(...)`` (the
in-memory ``Split`` and the streaming ``StreamSplit`` alike), moved to the
devices a few batches ahead by :func:`~jaxprune.train.mesh.prefetch_to_mesh`;
a dataset with ``device_normalize`` (streaming: uint8 images) is normalized
inside the jitted step. The data position (epoch, batch) and the partial
metrics of the interrupted epoch are saved in every checkpoint, so a resumed
run reads exactly the batches, and logs exactly the epoch metrics, of the
uninterrupted one.

The loop knows nothing about pruning. A pipeline hands the :class:`Trainer`
optax transforms (``prepend``/``append`` around the optimizer), a
``forward_params`` function (DPF: ``m * w``) and :class:`Hook` objects; a hook
may return a replaced ``TrainState`` (e.g. new params after a mask update).
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from jaxprune._validate import check_number
from jaxprune.train.checkpoint import Checkpointer
from jaxprune.train.mesh import make_mesh, prefetch_to_mesh
from jaxprune.train.metrics import MetricsWriter, progress_bar
from jaxprune.train.optim import _get, make_optimizer, make_schedule
from jaxprune.train.state import TrainState, make_init_fn
from jaxprune.train.step import ForwardParams, make_carried_train_step, make_eval_step, make_train_step
from jaxprune.tree import fresh_copy, is_none, prunable

PyTree = Any
HookResult = TrainState | None
_log = logging.getLogger(__name__)


def _host_entries(batch: dict) -> dict:
    """Remove and return a batch's host-side entries (keys starting with ``_``,
    e.g. the streaming pipeline's ``_skipped`` count): the step sees arrays only."""
    return {k: batch.pop(k) for k in [k for k in batch if k.startswith("_")]}


def _host_floats(window: list[dict]) -> list[dict]:
    """Step metrics (device or NumPy scalars) as JSON floats; every metric of
    the step is a float32 scalar, so ``np.float32`` restores them exactly."""
    return [{k: float(v) for k, v in m.items()} for m in jax.device_get(window)]


class TrainingDiverged(FloatingPointError):
    """The mean training loss of a logging window, or the state about to be
    checkpointed, is NaN or infinite.

    Raised by :meth:`Trainer.fit` at the first logging window (every
    ``train.log_every`` steps, and at each epoch end) whose loss is not finite,
    or at a checkpoint whose params / BatchNorm statistics / optimizer state
    are not all finite (``state_finite`` False): the run stops instead of
    finishing at chance, and no checkpoint holds a non-finite state, so the
    latest one (if any) precedes the divergence. Attributes: ``step`` (global
    step), ``epoch`` (0-based), ``loss`` (the mean loss of the window ending
    there), ``lr``, ``state_finite``."""

    def __init__(self, step: int, epoch: int, loss: float, lr: float, *, state_finite: bool = True):
        self.step, self.epoch, self.loss, self.lr = step, epoch, loss, lr
        self.state_finite = state_finite
        what = (f"mean train loss is {loss} in the window ending at step {step}" if state_finite else
                f"the training state is not finite at step {step} (mean train loss of the window: {loss})")
        super().__init__(
            f"training diverged: {what} (epoch {epoch}, lr {lr:.4g}); lower train.lr, add warm-up, "
            "or set train.clip_norm > 0"
        )


@jax.jit
def _all_finite(state: TrainState) -> jax.Array:
    """Whether every float entry of the params, BatchNorm statistics and optimizer state is finite."""
    leaves = jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
    checks = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def evaluate(state: TrainState, eval_step: Callable, split: Any, batch_size: int, mesh: Mesh) -> dict:
    """Exact metrics of ``split`` (anything with ``batches``: an in-memory
    ``Split`` or a ``StreamSplit``; padded rows carry weight 0): classification
    ``{"loss": mean cross-entropy, "accuracy"}``, regression ``{"loss": MSE,
    "mse"}``. Sums accumulate on device; one host transfer at the end."""
    total = None
    with prefetch_to_mesh(split.batches(batch_size, shuffle=False), mesh) as batches:
        for batch in batches:
            _host_entries(batch)
            sums = eval_step(state, batch)
            total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if total is None:
        raise ValueError("evaluate: split is empty (0 examples)")
    total = jax.device_get(total)
    count = max(float(total["count"]), 1.0)
    out = {"loss": float(total["loss_sum"]) / count}
    if "correct" in total:
        out["accuracy"] = float(total["correct"]) / count
    else:
        out["mse"] = out["loss"]
    return out


class Hook:
    """Base class of loop callbacks; override what you need. Every method may
    return a replacement ``TrainState`` (or ``None`` to keep the state).

    ``every_n_steps``: period of :meth:`every_n` (0 = never), counted in
    optimizer steps (``state.step`` after the step)."""

    every_n_steps: int = 0

    def before_step(self, trainer: Trainer, state: TrainState) -> HookResult:
        return None

    def after_step(self, trainer: Trainer, state: TrainState, metrics: dict) -> HookResult:
        """``metrics``: the step's device scalars (fetching them syncs the host)."""
        return None

    def every_n(self, trainer: Trainer, state: TrainState) -> HookResult:
        return None

    def end_of_epoch(self, trainer: Trainer, state: TrainState, epoch: int, logs: dict) -> HookResult:
        """``logs``: this epoch's train/val metrics (host floats); a hook may add keys."""
        return None


@dataclass
class FunctionHook(Hook):
    """A :class:`Hook` from plain functions (any may be ``None``)."""

    before: Callable[[Trainer, TrainState], HookResult] | None = None
    after: Callable[[Trainer, TrainState, dict], HookResult] | None = None
    periodic: Callable[[Trainer, TrainState], HookResult] | None = None
    every_n_steps: int = 0
    epoch_end: Callable[[Trainer, TrainState, int, dict], HookResult] | None = None

    def before_step(self, trainer, state):
        return None if self.before is None else self.before(trainer, state)

    def after_step(self, trainer, state, metrics):
        return None if self.after is None else self.after(trainer, state, metrics)

    def every_n(self, trainer, state):
        return None if self.periodic is None else self.periodic(trainer, state)

    def end_of_epoch(self, trainer, state, epoch, logs):
        return None if self.epoch_end is None else self.epoch_end(trainer, state, epoch, logs)


def _sparsity_fn(params: PyTree) -> Callable[[PyTree], jax.Array]:
    """Jitted fraction of exactly-zero entries over the default prunable leaves
    (kernels, ``ndim >= 2``): the sparsity shown while training."""
    flags = jax.tree.leaves(prunable(params), is_leaf=is_none)

    @jax.jit
    def sparsity(p: PyTree) -> jax.Array:
        leaves = [x for x, f in zip(jax.tree.leaves(p, is_leaf=is_none), flags, strict=True) if f]
        if not leaves:
            return jnp.zeros(())
        zeros = sum(jnp.sum(x == 0) for x in leaves)
        return zeros / sum(x.size for x in leaves)

    return sparsity


class Trainer:
    """Trains ``model`` on ``dataset`` (a ``jaxprune.train.data.Dataset``) with the
    ``config.train`` section ``cfg`` (see ``jaxprune/configs/common.py``).

    ``tx`` replaces the optimizer built from ``cfg`` (then ``prepend``/``append``
    are ignored); ``forward_params(params, opt_state)`` gives the weights of the
    forward pass (train and eval); ``hooks`` run in order; ``workdir`` enables
    metrics (``metrics.jsonl``, ``tb/``) and checkpoints (``checkpoints/``).
    Batches must be divisible by the number of devices of ``mesh`` (default:
    all devices).

    ``mask_update_due(t) -> bool`` (jittable; from
    :func:`jaxprune.optax.mask_update_schedule`): the steps at which the
    pruning transformation in ``tx`` (DPF, SET, RigL, ...) may change its
    mask. The other steps
    then run a second compiled step traced with ``may_update_mask=False``,
    which has no mask-update branch (same results; on XLA:CPU the untaken
    branch's conditional, its mask copies and its scratch memory cost ~5% of
    an MLP step, see BENCHMARKS.md). It requires that ``tx.update`` runs once
    per training step from step 0 (its update count equals ``state.step``)."""

    def __init__(
        self,
        model: nn.Module,
        dataset: Any,
        cfg: Any,
        *,
        mesh: Mesh | None = None,
        tx: optax.GradientTransformation | None = None,
        prepend: Sequence[optax.GradientTransformation] = (),
        append: Sequence[optax.GradientTransformation] = (),
        forward_params: ForwardParams | None = None,
        hooks: Sequence[Hook] = (),
        workdir: str | pathlib.Path | None = None,
        seed: int = 0,
        mask_update_due: Callable[[jax.Array], jax.Array] | None = None,
    ):
        self.model, self.dataset, self.cfg = model, dataset, cfg
        self.mesh = make_mesh() if mesh is None else mesh
        self.forward_params = forward_params
        self.hooks = list(hooks)
        self.workdir = None if workdir is None else pathlib.Path(workdir)
        self.seed = int(seed)
        n_dev = self.mesh.devices.size
        self.batch_size = int(_get(cfg, "batch_size"))
        self.eval_batch_size = int(_get(cfg, "eval_batch_size"))
        sizes = (("train.batch_size", self.batch_size), ("train.eval_batch_size", self.eval_batch_size))
        for name, bs in sizes:
            if bs < 1 or bs % n_dev:
                raise ValueError(f"{name}={bs} must be a positive multiple of the {n_dev} devices")
        n_train = len(dataset.train)
        # drop_remainder: every training batch is full (static shapes, unbiased BN
        # statistics); otherwise the last batch is padded with weight-0 rows.
        self.drop_remainder = bool(_get(cfg, "drop_remainder"))
        steps = n_train // self.batch_size if self.drop_remainder else math.ceil(n_train / self.batch_size)
        if steps < 1:
            raise ValueError(
                f"train.batch_size={self.batch_size} exceeds the {n_train} training examples "
                "with drop_remainder=True"
            )
        self.steps_per_epoch = steps
        self.epochs = int(_get(cfg, "epochs"))
        self.schedule = make_schedule(cfg, steps)
        self._lr = jax.jit(self.schedule)  # logged lr: one compile instead of one per eager op
        self.tx = tx if tx is not None else make_optimizer(cfg, steps, prepend=prepend, append=append)
        augment = None
        if getattr(dataset, "augment", None) == "cifar":
            from jaxprune.train.data import augment_cifar

            augment = augment_cifar
        task = dataset.task
        self.task = task
        prepare = getattr(dataset, "device_normalize", None)  # streaming: uint8 -> normalized float32
        common = dict(task=task, mesh=self.mesh, augment=augment, prepare=prepare)
        self.train_step = make_train_step(model, self.tx, forward_params=forward_params, **common)
        # fit() runs the carried form of the same step (bitwise equal, no separate masking pass)
        self._carried = None
        if forward_params is not None:
            self._carried = make_carried_train_step(model, self.tx, forward_params=forward_params, **common)
        # The steps without the mask-update branch, for the steps where mask_update_due is False.
        if mask_update_due is not None and not callable(mask_update_due):
            raise TypeError(
                f"mask_update_due must be a jittable function of the step (t -> bool), e.g. "
                f"jaxprune.optax.mask_update_schedule(tx), or None; got {mask_update_due!r}"
            )
        self._mask_update_due = mask_update_due
        self._quiet_step = self._quiet_carried = None
        if mask_update_due is not None:
            quiet = {"may_update_mask": False}
            self._quiet_step = make_train_step(
                model, self.tx, forward_params=forward_params, tx_kwargs=quiet, **common
            )
            if forward_params is not None:
                self._quiet_carried = make_carried_train_step(
                    model, self.tx, forward_params=forward_params, tx_kwargs=quiet, **common
                )[1]
        self.eval_step = make_eval_step(
            model, task=task, mesh=self.mesh, forward_params=forward_params, prepare=prepare
        )
        self._init_fn = make_init_fn(model, self.tx, dataset.input_shape, mesh=self.mesh)
        self._sparsity = _sparsity_fn(jax.eval_shape(self._init_fn, jax.random.PRNGKey(0)).params)
        self.history: list[dict] = []
        self.resumed_extra: PyTree | None = None
        self.resumed_meta: dict = {}

    # -- state ---------------------------------------------------------------
    def init_state(self, key: jax.Array | None = None) -> TrainState:
        """A fresh replicated state (``key`` default: ``PRNGKey(seed)``)."""
        key = jax.random.PRNGKey(self.seed) if key is None else key
        return self._init_fn(key)

    def forward(self, state: TrainState) -> PyTree:
        """The weights the model runs with (``forward_params`` applied)."""
        if self.forward_params is None:
            return state.params
        return self.forward_params(state.params, state.opt_state)

    # -- evaluation ----------------------------------------------------------
    def evaluate(self, state: TrainState, split: Any = "val") -> dict:
        """Metrics of a split (by name: train/val/test, or a split object)."""
        if isinstance(split, str):
            split = getattr(self.dataset, split)
        return evaluate(state, self.eval_step, split, self.eval_batch_size, self.mesh)

    @property
    def _select_mode(self) -> str:
        return "max" if self.task == "classification" else "min"

    def _select_metric(self, logs: dict) -> float | None:
        key = "val_accuracy" if self.task == "classification" else "val_loss"
        return logs.get(key)

    # -- checkpoints ---------------------------------------------------------
    def checkpointer(self) -> Checkpointer:
        """The manager of ``<workdir>/checkpoints`` (close it after use)."""
        if self.workdir is None:
            raise ValueError("this Trainer has no workdir, so it has no checkpoints")
        keep = int(_get(self.cfg, "keep_checkpoints"))
        return Checkpointer(self.workdir / "checkpoints", keep=keep, mode=self._select_mode)

    def restore(self, target: TrainState, *, best: bool = False) -> tuple[TrainState, int]:
        """``(state, step)`` of the latest or (``best=True``) best-by-validation
        checkpoint; ``target`` gives the structure (e.g. the final state)."""
        ckpt = self.checkpointer()
        try:
            step = ckpt.best_step() if best else ckpt.latest_step()
            state, _, _ = ckpt.restore(target, step=step)
        finally:
            ckpt.close()
        return state, step

    # -- hooks ---------------------------------------------------------------
    def _run_hooks(self, state: TrainState, method: str, *args) -> TrainState:
        for hook in self.hooks:
            new = getattr(hook, method)(self, state, *args)
            if new is not None:
                state = new
        return state

    # -- training ------------------------------------------------------------
    def fit(
        self,
        state: TrainState | None = None,
        *,
        resume: bool = False,
        extra: PyTree | None = None,
        meta: dict | None = None,
        progress: bool | None = None,
    ) -> TrainState:
        """Train ``cfg.epochs`` epochs from ``state`` (default: :meth:`init_state`).

        With ``workdir``: checkpoints every ``cfg.checkpoint_every`` steps (0: only
        at epoch ends) and at each epoch end (scored by validation accuracy, or
        loss for regression), keeping ``cfg.keep_checkpoints`` recent ones plus the
        best. ``extra`` (pytree) and ``meta`` (JSON dict) are saved with every
        checkpoint. ``resume=True`` continues from the latest checkpoint exactly
        (same data order, same per-step randomness); the restored ``extra`` and
        ``meta`` land in ``self.resumed_extra`` / ``self.resumed_meta``.
        ``self.history`` (the epoch logs) starts empty, or from the checkpoint
        on resume. ``progress``: show a tqdm bar (default: when stderr is a TTY). The given
        ``state`` is not consumed (fit works on a copy). Raises
        :class:`TrainingDiverged` at the first logging window whose mean train
        loss is NaN or infinite (checked on the host-side window means, so it
        adds no device sync)."""
        # The steps donate their input state; copying once here keeps the caller's
        # arrays (e.g. params shared with a mask or a rewinding point) valid.
        state = self.init_state() if state is None else fresh_copy(state)
        log_every = int(_get(self.cfg, "log_every"))
        ckpt_every = int(_get(self.cfg, "checkpoint_every"))
        check_number("train.log_every", log_every, low=1)
        check_number("train.checkpoint_every", ckpt_every, low=0)
        user_meta = dict(meta or {})

        ckpt = writer = None
        self.history = []
        data = self._data_state(0, 0)
        epoch_metrics: list[dict] = []  # the logged windows of the current epoch (host floats)
        window: list[dict] = []  # step metrics since the last logged window (device scalars)
        if self.workdir is not None:
            ckpt = self.checkpointer()
            if not resume and ckpt.latest_step() is not None:
                ckpt.close()
                raise ValueError(
                    f"{self.workdir} holds checkpoints of a previous run (latest step {ckpt.latest_step()}); "
                    "continue it with resume=True (--resume) or use a new workdir"
                )
            if resume and ckpt.latest_step() is not None:
                state, self.resumed_extra, self.resumed_meta = ckpt.restore(state, extra_target=extra)
                data = self._check_data_state(self.resumed_meta["data"])
                self.history = list(self.resumed_meta.get("history", []))
                epoch_metrics = list(self.resumed_meta.get("epoch_rows", []))
                saved_window = self.resumed_meta.get("window", [])
                window = [{k: np.float32(v) for k, v in m.items()} for m in saved_window]
                if self.resumed_extra is not None:
                    extra = self.resumed_extra
            resume_step = int(state.step) if resume else None
            writer = MetricsWriter(self.workdir, resume_step=resume_step, enabled=jax.process_index() == 0)
        sparsity = self._sparsity
        start_epoch, start_batch = data["epoch"], data["batch"]

        def save(step: int, epoch: int, batch: int, skipped: int, metric: float | None = None) -> None:
            if ckpt is None:
                return
            if not bool(_all_finite(state)):  # one scalar per checkpoint: never save a diverged state
                losses = [float(m["loss"]) for m in jax.device_get(window)]
                loss = float(np.mean(losses)) if losses else math.nan
                lr = float(self._lr(max(step - 1, 0)))
                raise TrainingDiverged(step, epoch, loss, lr, state_finite=False)
            m = {**user_meta, "data": self._data_state(epoch, batch, skipped), "history": self.history,
                 "epoch_rows": epoch_metrics, "window": _host_floats(window)}
            ckpt.save(step, state, extra=extra, meta=m, metric=metric)

        step = int(state.step)  # host-side step counter: no device sync per step
        carried = carried_for = None  # forward weights of the carried step, and the state they belong to
        total = self.epochs * self.steps_per_epoch
        due = None  # host copy of mask_update_due over all steps
        if self._mask_update_due is not None:
            due = np.asarray(jax.jit(jax.vmap(self._mask_update_due))(jnp.arange(total + 1)))
        bar = progress_bar(total, initial=start_epoch * self.steps_per_epoch + start_batch, enabled=progress)
        batches = None
        try:
            for epoch in range(start_epoch, self.epochs):
                first = start_batch if epoch == start_epoch else 0
                stream = self.dataset.train.batches(
                    self.batch_size, seed=self.seed, epoch=epoch, start_batch=first,
                    stop_batch=self.steps_per_epoch,
                )
                batches = prefetch_to_mesh(stream, self.mesh)
                skipped = data["skipped"] if epoch == start_epoch else 0
                for b, batch in zip(range(first, self.steps_per_epoch), batches, strict=True):
                    skipped += _host_entries(batch).get("_skipped", 0)
                    state = self._run_hooks(state, "before_step")
                    quiet = due is not None and step < len(due) and not due[step]
                    if self._carried is None:
                        state, metrics = (self._quiet_step if quiet else self.train_step)(state, batch)
                    else:
                        start, carried_step = self._carried
                        if carried_for is not state:  # new, restored, or replaced by a hook
                            carried = start(state)
                        carried_step = self._quiet_carried if quiet else carried_step
                        state, carried, metrics = carried_step(state, carried, batch)
                        carried_for = state
                    step += 1
                    state = self._run_hooks(state, "after_step", metrics)
                    for hook in self.hooks:
                        if hook.every_n_steps and step % hook.every_n_steps == 0:
                            new = hook.every_n(self, state)
                            state = state if new is None else new
                    window.append(metrics)
                    bar.update(1)
                    if step % log_every == 0:
                        row = self._log_window(writer, step, epoch, window, sparsity(self.forward(state)))
                        epoch_metrics.append(row)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "_n"})
                        window = []
                    if ckpt_every and step % ckpt_every == 0 and b + 1 < self.steps_per_epoch:
                        save(step, epoch, b + 1, skipped)
                batches.close()
                if window:
                    epoch_metrics.append(self._log_window(writer, step, epoch, window, None))
                    window = []
                logs = self._end_epoch(state, step, epoch, epoch_metrics, sparsity, writer, skipped)
                epoch_metrics = []
                state = self._run_hooks(state, "end_of_epoch", epoch, logs)
                self.history.append(logs)
                save(step, epoch + 1, 0, 0, self._select_metric(logs))
        finally:
            if batches is not None:
                batches.close()
            bar.close()
            if writer is not None:
                writer.close()
            if ckpt is not None:
                ckpt.wait()
                ckpt.close()
        return state

    def _log_window(
        self, writer, step: int, epoch: int, window: list[dict], sparsity: jax.Array | None
    ) -> dict:
        """Mean of the window's step metrics (one host transfer); logged as
        ``train``. Raises :class:`TrainingDiverged` (after logging the row) when
        the mean loss is not finite."""
        host = jax.device_get(window)
        row = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        row["_n"] = len(host)
        if sparsity is not None:
            row["sparsity"] = float(sparsity)
        row["lr"] = float(self._lr(max(step - 1, 0)))
        if writer is not None:
            writer.write(step, "train", {k: v for k, v in row.items() if k != "_n"})
        if not math.isfinite(row["loss"]):
            raise TrainingDiverged(step, epoch, row["loss"], row["lr"])
        return row

    def _data_state(self, epoch: int, batch: int, skipped: int = 0) -> dict:
        """The data iterator's state as saved in checkpoints: the next batch
        ``batch`` of epoch ``epoch`` (each epoch's order is a function of the seed
        and the epoch alone), the unreadable images skipped so far in that epoch,
        and what the position means (seed, global batch size, train examples)."""
        return {"epoch": int(epoch), "batch": int(batch), "skipped": int(skipped), "seed": self.seed,
                "batch_size": self.batch_size, "train_examples": len(self.dataset.train)}

    def _check_data_state(self, saved: dict) -> dict:
        """``saved`` if this Trainer reads the same batches at that position,
        else ``ValueError``."""
        now = self._data_state(saved["epoch"], saved["batch"], saved.get("skipped", 0))
        keys = ("seed", "batch_size", "train_examples")
        changed = {k: (saved[k], now[k]) for k in keys if saved[k] != now[k]}
        if changed:
            what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            raise ValueError(
                f"cannot resume exactly: the checkpoint's data position assumes other data ({what}); "
                "resume with the original seed, train.batch_size and dataset, or start a new workdir"
            )
        return now

    def _end_epoch(self, state, step, epoch, epoch_metrics, sparsity, writer, skipped: int = 0) -> dict:
        """Epoch summary: step-weighted train means, validation metrics,
        sparsity, and (when any) the count of unreadable images skipped."""
        logs: dict = {"epoch": epoch + 1, "step": step}
        n = sum(r["_n"] for r in epoch_metrics)
        for key in ("loss", "accuracy"):
            if epoch_metrics and key in epoch_metrics[0]:
                logs[f"train_{key}"] = sum(r[key] * r["_n"] for r in epoch_metrics) / n
        if skipped:
            logs["data_skipped"] = int(skipped)
            _log.warning("epoch %d: %d unreadable training images were skipped (weight 0)",
                         epoch + 1, skipped)
        if len(self.dataset.val):
            for key, value in self.evaluate(state, "val").items():
                logs[f"val_{key}"] = value
        logs["sparsity"] = float(sparsity(self.forward(state)))
        if writer is not None:
            writer.write(step, "epoch", logs)
            writer.flush()
        return logs
