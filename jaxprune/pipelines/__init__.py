"""Experiment pipelines, looked up by name (``config.pipeline``).

A pipeline is ``run(config, workdir) -> dict`` (results, also written to
``<workdir>/results.json``). Modules of this package register theirs with
``@register("name")``; every module here is imported on first use of the
registry, so a new pipeline needs no edit of this file.

Shared helpers: :func:`setup` (dataset + model from a config) and
:func:`write_results`.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np

Pipeline = Callable[[Any, str], dict]
PIPELINES: dict[str, Pipeline] = {}


def register(name: str) -> Callable[[Pipeline], Pipeline]:
    """Decorator adding ``run(config, workdir)`` to :data:`PIPELINES` under ``name``."""

    def add(fn: Pipeline) -> Pipeline:
        if name in PIPELINES and PIPELINES[name] is not fn:
            raise ValueError(f"pipeline name={name!r} is already registered")
        PIPELINES[name] = fn
        return fn

    return add


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

    d = config.data
    common = dict(data_dir=d.data_dir or None, val_fraction=d.val_fraction, seed=config.seed,
                  train_limit=d.train_limit or None, test_limit=d.test_limit or None)
    if d.streaming:
        source = "auto" if d.source == "auto" else d.source
        if source not in ("auto", "folder", "tfds"):
            raise ValueError(f"config.data.source={d.source!r} is not valid with config.data.streaming=True; "
                             "expected one of ['auto', 'folder', 'tfds']")
        return load_streaming_dataset(d.name, source=source, image_size=d.image_size, workers=d.workers,
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
