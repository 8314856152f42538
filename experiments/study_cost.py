""""params kept" and "MACs kept" of a study run, for the study reports (issue 19).

A run record gives them in one of two ways:

1. its ``summary`` holds ``params_kept`` / ``params_total`` and ``macs_kept``
   / ``macs_total`` (counted from the final mask by
   :func:`jaxprune.measures.cost` when the run ended): used as they are;
2. otherwise only the number of pruned weights is known (e.g. the records of
   the CPU studies, whose masks were not kept). Params kept follow from it
   exactly; MACs kept too when every prunable kernel does one
   multiply-accumulate per weight and example (fully connected models: the
   dense cost of the model is read from its jaxpr and this is checked), since
   then each pruned weight removes exactly one MAC. For convolutional models
   the MACs kept depend on how the pruned weights spread over layers of
   different resolutions, which such records do not say: ``None``.
"""

from __future__ import annotations

import functools
from typing import Any

# One example's shape and the class count of the datasets the studies use.
DATASETS: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "imagenet": ((224, 224, 3), 1000),
}


@functools.cache
def dense_cost(model: str, dataset: str) -> dict[str, Any] | None:
    """Dense ``params`` / ``macs`` of the zoo ``model`` on ``dataset``, the size of
    its default prunable set (``n_prunable``: leaves with ndim >= 2) and whether
    each of those leaves is a kernel doing one MAC per weight and example
    (``one_mac_per_weight``); ``None`` for an unknown dataset."""
    import jax
    import jax.numpy as jnp

    from jaxprune.measures.cost import cost
    from jaxprune.train.models import get_model
    from jaxprune.tree import path_str

    if dataset not in DATASETS:
        return None
    shape, classes = DATASETS[dataset]
    net = get_model(model, classes)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    variables = jax.eval_shape(lambda k, x: net.init(k, x, train=False), jax.random.key(0), x)
    report = cost(net, variables, None, shape)
    kernels = {
        "params/" + path_str(p): leaf.size
        for p, leaf in jax.tree.leaves_with_path(variables["params"])
        if leaf.ndim >= 2
    }
    layers = report["layers"]
    one_mac = "(no parameter)" not in layers and all(
        path in layers and layers[path]["macs"] == size for path, size in kernels.items()
    )
    return {
        "params": report["params"],
        "macs": report["macs"],
        "n_prunable": sum(kernels.values()),
        "one_mac_per_weight": one_mac,
    }


def kept_fractions(
    model: str, dataset: str, pruned: int | None, summary: dict[str, Any] | None = None
) -> tuple[float | None, float | None]:
    """(params kept, MACs kept) as fractions of the dense model's; ``None`` where
    the record does not determine them (module docstring). ``pruned``: pruned
    weights, all in the default prunable set (kernels)."""
    summary = summary or {}
    params = macs = None
    if summary.get("params_total"):
        params = summary["params_kept"] / summary["params_total"]
    if summary.get("macs_total"):
        macs = summary["macs_kept"] / summary["macs_total"]
    if (params is not None and macs is not None) or pruned is None:
        return params, macs
    dense = dense_cost(model, dataset)
    if dense is None:
        return params, macs
    if params is None:
        params = (dense["params"] - pruned) / dense["params"]
    if macs is None and dense["one_mac_per_weight"]:
        macs = (dense["macs"] - pruned) / dense["macs"]
    return params, macs


def cell(values: dict[str, tuple[float | None, float | None]], which: int) -> str:
    """A report cell: the percentage kept (``which`` 0: params, 1: MACs) when all
    methods agree to 0.01 pp, their range when they agree to 0.1 pp (e.g. a
    sampling variant keeps a few weights more), else one ``method pct`` per
    method; ``n/a`` when unknown."""
    known = {m: 100 * v[which] for m, v in values.items() if v[which] is not None}
    if not known:
        return "n/a"
    missing = "" if len(known) == len(values) else " (others n/a)"
    low, high = min(known.values()), max(known.values())
    if high - low < 0.01:
        return f"{low:.2f}%{missing}"
    if high - low < 0.1:
        return f"{low:.2f}-{high:.2f}%{missing}"
    return ", ".join(f"{m} {p:.2f}%" for m, p in known.items()) + missing
