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


def setup(config: Any) -> tuple[Any, Any]:
    """``(dataset, model)`` from ``config.data`` / ``config.model`` / ``config.seed``."""
    from jaxprune.train import get_model, load_dataset

    d = config.data
    dataset = load_dataset(
        d.name,
        val_fraction=d.val_fraction,
        seed=config.seed,
        source=d.source,
        train_limit=d.train_limit or None,
    )
    model = get_model(config.model.name, dataset.num_outputs, **dict(config.model.kwargs))
    return dataset, model


def write_results(workdir: str | pathlib.Path, results: dict, name: str = "results.json") -> pathlib.Path:
    """Write ``results`` as indented JSON to ``<workdir>/<name>``; returns the path."""
    path = pathlib.Path(workdir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


_discover()
