"""Checkpoints with orbax: the whole ``TrainState`` plus optional extra pipeline
state, keeping the last ``keep`` checkpoints and the best one by a validation
metric.

Each checkpoint ``<dir>/<step>/`` holds three items: ``state`` (the TrainState
pytree), ``extra`` (any pytree of arrays a pipeline needs, e.g. init params for
rewinding; optional) and ``meta`` (JSON: data position ``epoch``/``batch``,
pipeline round, the validation ``metric``...). Pytrees may contain ``None``
leaves (pruning masks): they are stored as empty nodes and restored as ``None``
because restoring always follows a target structure.

Integrity: orbax does not checksum what it writes (flipped bytes restore as
wrong numbers), so ``meta["fingerprint"]`` holds two 32-bit sums per leaf of
``state`` and of ``extra`` (of the raw bits and of their squares), checked
after every restore. Restoring the latest (or best) checkpoint falls back to
the newest intact one when a checkpoint cannot be read or fails its
fingerprint: the bad one is moved aside to ``<dir>.corrupt/<step>`` (never
deleted) and a warning names the step, the reason and the checkpoint used.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from jaxprune._validate import check_choice, check_number

PyTree = Any
_METRIC = "metric"
_FINGERPRINT = "fingerprint"
_log = logging.getLogger(__name__)


class CheckpointCorrupted(RuntimeError):
    """A checkpoint could not be restored (unreadable, an item missing, or its
    contents do not match the fingerprint recorded when it was saved)."""


def _host_leaf(x: Any) -> np.ndarray:
    """A leaf as host data; a multi-process replicated array gives its local copy."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return np.asarray(x)


def fingerprint(tree: PyTree) -> list[list[int]]:
    """Per leaf of ``tree``: ``[sum(bits), sum(bits**2)]`` (mod 2^32) of the raw
    bits of its values (each value's bytes read as one unsigned integer), so
    that any flipped bit, and almost any set of them, changes it. Computed on
    the host (the data being saved or just restored)."""
    out = []
    for leaf in jax.tree.leaves(tree):
        x = np.ascontiguousarray(_host_leaf(leaf)).reshape(-1)
        unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize]
        bits = x.view(unsigned)
        if x.dtype.itemsize == 8:
            bits = bits.view(np.uint32)
        bits = bits.astype(np.uint32, copy=False)
        out.append([int(np.sum(bits, dtype=np.uint32)), int(np.sum(bits * bits, dtype=np.uint32))])
    return out


def _to_host(tree: PyTree) -> PyTree:
    """Single-process: a NumPy copy. Saving host arrays skips orbax's per-device
    replica slicing of replicated arrays (one small XLA compile per leaf shape and
    device). Multi-process: the global arrays themselves (not fully addressable)."""
    return jax.device_get(tree) if jax.process_count() == 1 else tree


def _abstract(tree: PyTree) -> PyTree:
    """Shape/dtype/sharding skeleton of ``tree`` (the restore target)."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """``save(step, state, extra=None, meta=None, metric=None)``; ``restore(target,
    ...)`` of the latest or best checkpoint.

    ``keep``: how many of the most recent checkpoints survive; additionally the
    best checkpoint by ``metric`` (``mode`` "max" or "min") is kept forever.
    Saving is asynchronous; call ``wait()`` before reading files, ``close()`` at
    the end."""

    def __init__(self, directory: str | pathlib.Path, *, keep: int = 2, mode: str = "max"):
        check_number("keep", keep, low=1)
        check_choice("mode", mode, ("max", "min"))
        self.directory = pathlib.Path(directory).absolute()
        self.mode = mode
        policy = cm.AnyPreservationPolicy(
            [
                cm.LatestN(n=int(keep)),
                cm.BestN(
                    get_metric_fn=lambda m: m[_METRIC],
                    reverse=mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "extra", "meta")
        )

    def save(
        self,
        step: int,
        state: PyTree,
        *,
        extra: PyTree | None = None,
        meta: dict | None = None,
        metric: float | None = None,
    ) -> None:
        """Save at ``step`` (asynchronously). ``metric``: the validation value the
        best checkpoint is chosen by (kept in ``meta["metric"]`` too)."""
        meta = dict(meta or {})
        if metric is not None:
            meta[_METRIC] = float(metric)
        state, extra = _to_host(state), None if extra is None else _to_host(extra)
        meta[_FINGERPRINT] = {"state": fingerprint(state),
                              "extra": None if extra is None else fingerprint(extra)}
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if extra is not None:
            items["extra"] = ocp.args.StandardSave(extra)
        metrics = None if metric is None else {_METRIC: float(metric)}
        self._manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best saved ``metric`` (ties: the earliest), or None.
        Steps whose ``meta`` cannot be read are skipped (with a warning)."""
        best = None
        for step in sorted(self.steps()):
            try:
                value = self.meta(step).get(_METRIC)
            except Exception as err:
                _log.warning("checkpoint step %d in %s: meta unreadable (%s)",
                             step, self.directory, _reason(err))
                continue
            if value is None:
                continue
            better = best is None or (value > best[1] if self.mode == "max" else value < best[1])
            if better:
                best = (step, value)
        return None if best is None else best[0]

    def meta(self, step: int) -> dict:
        """The JSON ``meta`` item of ``step``."""
        return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def restore(
        self,
        target: PyTree,
        *,
        step: int | None = None,
        best: bool = False,
        extra_target: PyTree | None = None,
    ) -> tuple[PyTree, PyTree | None, dict]:
        """``(state, extra, meta)`` of ``step`` (default: latest, or best with
        ``best=True``). ``target`` / ``extra_target`` are pytrees with the saved
        structure (e.g. a freshly created state); their shardings are reused.

        Without ``step``, a corrupted checkpoint (:class:`CheckpointCorrupted`)
        is moved aside to ``<dir>.corrupt/`` with a warning and the next newest
        (or next best) one is tried; ``FileNotFoundError`` when none is left.
        With ``step``, its corruption raises :class:`CheckpointCorrupted`."""
        self.wait()
        if step is not None:
            return self._restore_step(step, target, extra_target)
        while True:
            step = self.best_step() if best else self.latest_step()
            if step is None:
                aside = self._corrupt_dir()
                note = f" (the unreadable ones are in {aside})" if aside.exists() else ""
                raise FileNotFoundError(f"no {'best ' if best else ''}checkpoint in {self.directory}{note}")
            try:
                return self._restore_step(step, target, extra_target)
            except CheckpointCorrupted as err:
                where = self._set_aside(step)
                _log.warning("%s; moved it to %s and trying the previous checkpoint", err, where)

    def _restore_step(self, step: int, target: PyTree, extra_target: PyTree | None) -> tuple:
        """Restore ``step`` and check its fingerprint; any failure is :class:`CheckpointCorrupted`."""
        items = {"state": ocp.args.StandardRestore(_abstract(target)), "meta": ocp.args.JsonRestore()}
        if extra_target is not None:
            items["extra"] = ocp.args.StandardRestore(_abstract(extra_target))
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:  # orbax / tensorstore / json errors, often pages long
            raise CheckpointCorrupted(
                f"checkpoint step {step} in {self.directory / str(step)} cannot be restored: {_reason(err)}"
            ) from None
        extra = out["extra"] if extra_target is not None else None
        meta = dict(out["meta"])
        saved = meta.pop(_FINGERPRINT, None) or {}
        damaged = saved.get("state") is not None and fingerprint(out["state"]) != saved["state"]
        if extra is not None and saved.get("extra") is not None:
            damaged |= fingerprint(extra) != saved["extra"]
        if damaged:
            raise CheckpointCorrupted(
                f"checkpoint step {step} in {self.directory / str(step)} does not match the fingerprint "
                "recorded when it was saved (its files were changed or damaged)"
            )
        return out["state"], extra, meta

    def _corrupt_dir(self) -> pathlib.Path:
        return self.directory.with_name(self.directory.name + ".corrupt")

    def _set_aside(self, step: int) -> pathlib.Path:
        """Move ``<dir>/<step>`` to ``<dir>.corrupt/<step>-<time>`` (process 0 of a
        multi-process job) and make the manager forget it."""
        dest = self._corrupt_dir() / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxprune_checkpoint_set_aside_{step}")
        self._manager.reload()
        return dest

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def _reason(err: BaseException) -> str:
    """The first line of an error, with its type (no traceback)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"
