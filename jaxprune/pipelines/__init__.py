"""Experiment pipelines, looked up by name (``config.pipeline``).

A pipeline is ``run(config, workdir) -> dict`` (results, also written to
``<workdir>/results.json``). Modules of this package register theirs with
``@register("name")``; every module here is imported on first use of the
registry, so a new pipeline needs no edit of this file.

Shared helpers: :func:`setup` (dataset + model from a config),
:func:`write_results`, :func:`run_summary` (the ``summary`` entry of the
results, printed by the command line as one line), :func:`progress`.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import pkgutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np

Pipeline = Callable[[Any, str], dict]
PIPELINES: dict[str, Pipeline] = {}
CHECKS: dict[str, Callable[[Any], Any]] = {}


class ConfigError(ValueError):
    """A config value a pipeline cannot run with (the message names the key and
    the valid values). The command line prints it as one line and exits 2."""


def register(name: str, *, check: Callable[[Any], Any] | None = None) -> Callable[[Pipeline], Pipeline]:
    """Decorator adding ``run(config, workdir)`` to :data:`PIPELINES` under ``name``.
    ``check(config)``: the pipeline's own config validation, run by
    :func:`check_config` before anything is written (raises ``ValueError`` /
    ``TypeError`` naming the key)."""

    def add(fn: Pipeline) -> Pipeline:
        if name in PIPELINES and PIPELINES[name] is not fn:
            raise ValueError(f"pipeline name={name!r} is already registered")
        PIPELINES[name] = fn
        if check is not None:
            CHECKS[name] = check
        return fn

    return add


def check_config(config: Any) -> None:
    """Run the registered check of ``config.pipeline`` (if any); its
    ``ValueError`` / ``TypeError`` is re-raised as :class:`ConfigError`."""
    check = CHECKS.get(config.pipeline)
    if check is None:
        return
    try:
        check(config)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err


def progress(config: Any) -> bool | None:
    """The ``progress`` argument of ``Trainer.fit`` for ``config``: ``None`` (a bar
    when stderr is a terminal) unless ``config.train.progress_bar`` is off."""
    return None if config.train.get("progress_bar", True) else False


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_pipeline(name: str) -> Pipeline:
    """The pipeline registered as ``name``; unknown names raise ``ValueError``
    listing the valid ones."""
    if name not in PIPELINES:
        raise ValueError(f"pipeline={name!r} is not valid; expected one of {sorted(PIPELINES)}")
    return PIPELINES[name]


def load_data(config: Any) -> Any:
    """The dataset of ``config.data``: the streaming pipeline when
    ``config.data.streaming`` (``StreamingDataset``), else the in-memory one."""
    from jaxprune.train import load_dataset, load_streaming_dataset
    from jaxprune.train.data import STREAM_SOURCES

    d = config.data
    common = dict(data_dir=d.data_dir or None, val_fraction=d.val_fraction, seed=config.seed,
                  train_limit=d.train_limit or None, test_limit=d.test_limit or None)
    if d.streaming:
        if d.source not in STREAM_SOURCES:
            raise ValueError(f"config.data.source={d.source!r} is not valid with config.data.streaming=True; "
                             f"expected one of {list(STREAM_SOURCES)}")
        return load_streaming_dataset(d.name, source=d.source, image_size=d.image_size, workers=d.workers,
                                      threads=d.threads, **common)
    if d.source == "folder":
        raise ValueError("config.data.source='folder' needs config.data.streaming=True")
    return load_dataset(d.name, source=d.source, **common)


def make_model(config: Any, dataset: Any) -> Any:
    """``config.model`` (name, ``dtype``, ``kwargs``) with ``dataset``'s number of outputs."""
    from jaxprune.train import get_model

    return get_model(config.model.name, dataset.num_outputs, dtype=config.model.dtype,
                     **dict(config.model.kwargs))


def setup(config: Any) -> tuple[Any, Any]:
    """``(dataset, model)`` from ``config.data`` / ``config.model`` / ``config.seed``."""
    dataset = load_data(config)
    return dataset, make_model(config, dataset)


def first_batch(dataset: Any, batch_size: int, *, seed: int) -> dict:
    """The first shuffled training batch of epoch 0, whole on every process
    (e.g. SNIP's gradient batch): ``{"x", "y", "weight"}`` with ``x`` the model
    input (streaming uint8 images normalized as the train step does)."""
    stream = dataset.train.batches(batch_size, seed=seed, epoch=0, stop_batch=1, process_index=0,
                                   process_count=1)
    batch = dict(next(iter(stream)))
    getattr(stream, "close", lambda: None)()
    batch = {k: v for k, v in batch.items() if not k.startswith("_")}  # host-side entries
    normalize = getattr(dataset, "device_normalize", None)
    if normalize is not None:
        batch["x"] = np.asarray(normalize(batch["x"]))
    return batch


class WorkdirError(ValueError):
    """A run directory cannot be used as asked: it holds a previous run (and
    ``resume`` is off), or resuming would change the run's config."""


RUN_MARKERS = ("config.json", "results.json", "metrics.jsonl")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b": leaf}`` (lists and tuples are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` where the JSON forms of two configs differ
    (``resume`` ignored); a key present in one only shows ``None`` on the other side."""
    a, b = _flat(old), _flat(new)
    keys = sorted((set(a) | set(b)) - {"resume"})
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def start_run(config: Any, workdir: str | pathlib.Path, *, allow_config_change: bool = False) -> pathlib.Path:
    """Check ``workdir`` against ``config`` BEFORE anything is written, then
    write ``<workdir>/config.json`` (process 0). The same rule for every pipeline:

    - a fresh run (``config.resume`` off) refuses a directory that holds a
      previous run (``config.json``, ``results.json``, ``metrics.jsonl`` or
      checkpoints anywhere below it): resume it or pick a new directory;
    - a resumed run refuses a config that differs from the saved
      ``config.json``, listing the changed keys, unless ``allow_config_change``;
      then the previous config is kept as ``config.<time>.json`` beside the new one.

    Raises :class:`WorkdirError`; returns the path of ``config.json``."""
    import jax

    workdir = pathlib.Path(workdir)
    saved_path = workdir / "config.json"
    new = json.loads(config.to_json_best_effort())
    if not config.resume:
        found = [m for m in RUN_MARKERS if (workdir / m).exists()]
        found += [str(p.relative_to(workdir)) for p in workdir.rglob("checkpoints") if p.is_dir()][:3]
        if found:
            raise WorkdirError(
                f"workdir {workdir} holds a previous run ({', '.join(found)}); continue it with --resume "
                "or choose a new --workdir"
            )
    elif saved_path.exists():
        changes = config_changes(json.loads(saved_path.read_text()), new)
        if changes and not allow_config_change:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
            raise WorkdirError(
                f"--resume with a config that differs from {saved_path} in {len(changes)} key(s): {listed}. "
                "Resume with the same config, or pass --allow_config_change to continue with the new one "
                "(the old config is kept)"
            )
        if changes and jax.process_index() == 0:
            saved_path.rename(workdir / f"config.{time.strftime('%Y%m%d-%H%M%S')}.json")
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(config.to_json_best_effort(indent=2) + "\n")
    return saved_path


def run_summary(
    pipeline: str,
    *,
    method: str | None = None,
    test: dict | None = None,
    params: Any = None,
    mask: Any = None,
    model: Any = None,
    input_shape: tuple[int, ...] | None = None,
    batch_stats: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``summary`` entry of a pipeline's results: what the run's last line says.

    ``test``: the test-split metrics (``accuracy`` or ``loss``). With ``params``
    and ``mask`` (``None`` leaves: not prunable; ``mask=None``: dense): the
    achieved sparsity over the prunable weights and over all weights, and the
    parameters kept; with ``model`` and ``input_shape`` (one example, no batch
    axis) also the multiply-accumulates kept, counted from the jaxpr
    (:func:`jaxprune.measures.cost`; ``batch_stats``: the model's BatchNorm
    statistics, if it has any), and the ``input_shape`` itself (what
    ``experiments.compress`` rebuilds the model with). ``extra``: more
    ``name=value`` fields."""
    import jax

    from jaxprune.tree import full_mask, is_none

    out: dict[str, Any] = {"pipeline": pipeline, "method": method or pipeline}
    if test:
        out["test_accuracy"] = test.get("accuracy")
        out["test_loss"] = test.get("loss")
    if params is not None:
        mask_tree = full_mask(params) if mask is None else mask
        leaves = jax.tree.leaves(params)
        masks = jax.tree.leaves(mask_tree, is_leaf=is_none)
        n_all = sum(int(np.size(w)) for w in leaves)
        n_prunable = sum(int(np.size(m)) for m in masks if m is not None)
        kept_prunable = sum(int(np.count_nonzero(np.asarray(m))) for m in masks if m is not None)
        pruned = n_prunable - kept_prunable
        out.update(sparsity_prunable=pruned / n_prunable if n_prunable else 0.0,
                   sparsity_all=pruned / n_all if n_all else 0.0,
                   params_kept=n_all - pruned, params_total=n_all)
        if model is not None and input_shape is not None:
            variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
            out.update(_macs(model, variables, mask, input_shape))
    if input_shape is not None:
        out["input_shape"] = [int(d) for d in input_shape]
    out["extra"] = {k: v for k, v in extra.items() if v is not None}
    return out


def _macs(model: Any, variables: Any, mask: Any, input_shape: tuple[int, ...]) -> dict[str, float]:
    """``macs_kept`` / ``macs_total`` of one example, read from the jaxpr."""
    from jaxprune.measures.cost import cost

    report = cost(model, variables, mask, input_shape)
    return {"macs_kept": float(report["macs_kept"]), "macs_total": float(report["macs"])}


def write_results(workdir: str | pathlib.Path, results: dict, name: str = "results.json") -> pathlib.Path:
    """Write ``results`` as indented JSON to ``<workdir>/<name>``; returns the path.
    In a multi-process job only process 0 writes (the others return the path)."""
    import jax

    path = pathlib.Path(workdir) / name
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


_discover()
