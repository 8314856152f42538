"""jaxprune: neural-network pruning in JAX/Flax.

The tree helpers and :func:`prune` (one-shot pruning) are imported eagerly;
the method modules load on first use (``jp.measures``, ``jp.masks``,
``jp.sap``, ``jp.abp``, ``jp.sipp``, ``jp.optax``, ``jp.compress``), so ``import jaxprune``
stays cheap.
"""

import importlib
from typing import Any

from jaxprune.prune import prune  # `jaxprune.prune` is this function (it shadows its module)
from jaxprune.tree import apply_mask, prunable, summarize

__all__ = ["abp", "apply_mask", "compress", "masks", "measures", "optax", "prunable", "prune", "sap", "sipp",
           "summarize"]
__version__ = "0.1.0"

# Public namespace -> module implementing it (``jp.optax`` is ``jaxprune.transforms``).
_SUBMODULES = {
    "measures": "jaxprune.measures",
    "masks": "jaxprune.masks",
    "sap": "jaxprune.sap",
    "abp": "jaxprune.abp",
    "sipp": "jaxprune.sipp",
    "optax": "jaxprune.transforms",
    "compress": "jaxprune.compress",
    "train": "jaxprune.train",
    "pipelines": "jaxprune.pipelines",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(_SUBMODULES[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'jaxprune' has no attribute {name!r}")
