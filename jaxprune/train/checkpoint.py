"""Checkpoints with orbax: the whole ``TrainState`` plus optional extra pipeline
state, keeping the last ``keep`` checkpoints and the best one by a validation
metric.

Each checkpoint ``<dir>/<step>/`` holds three items: ``state`` (the TrainState
pytree), ``extra`` (any pytree of arrays a pipeline needs, e.g. init params for
rewinding; optional) and ``meta`` (JSON: data position ``epoch``/``batch``,
pipeline round, the validation ``metric``...). Pytrees may contain ``None``
leaves (pruning masks): they are stored as empty nodes and restored as ``None``
because restoring always follows a target structure.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from jaxprune._validate import check_choice, check_number

PyTree = Any
_METRIC = "metric"


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
        items = {"state": ocp.args.StandardSave(_to_host(state)), "meta": ocp.args.JsonSave(meta)}
        if extra is not None:
            items["extra"] = ocp.args.StandardSave(_to_host(extra))
        metrics = None if metric is None else {_METRIC: float(metric)}
        self._manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best saved ``metric`` (ties: the earliest), or None."""
        best = None
        for step in sorted(self.steps()):
            value = self.meta(step).get(_METRIC)
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
        structure (e.g. a freshly created state); their shardings are reused."""
        self.wait()
        if step is None:
            step = self.best_step() if best else self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no {'best ' if best else ''}checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(_abstract(target)), "meta": ocp.args.JsonRestore()}
        if extra_target is not None:
            items["extra"] = ocp.args.StandardRestore(_abstract(extra_target))
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        extra = out["extra"] if extra_target is not None else None
        return out["state"], extra, dict(out["meta"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
