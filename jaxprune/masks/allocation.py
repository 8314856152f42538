"""Per-leaf sparsities from one global budget: uniform and ERK.

The result is a pytree with the params' structure holding a Python float
sparsity on every prunable leaf and ``None`` elsewhere; pass it to
``topk(scores, allocation, scope="layer")``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import jax

from jaxprune._validate import check_choice, check_number
from jaxprune.tree import PyTree, is_none, path_str, resolve_prunable


def erk_densities(shapes: list[tuple[int, ...]], density: float, power_scale: float = 1.0) -> list[float]:
    """Erdos-Renyi-Kernel densities (Evci et al. 2020, RigL).

    The density of leaf ``l`` is ``eps * raw_l`` with ``raw_l =
    (sum(shape_l) / prod(shape_l)) ** power_scale``; ``eps`` is solved so that
    ``sum_l density_l * size_l == density * sum_l size_l``. Leaves whose
    density would exceed 1 are made dense and ``eps`` is re-solved over the
    rest (``eps`` only grows when a leaf is made dense, so all offenders can
    be moved at once)."""
    sizes = [math.prod(s) for s in shapes]
    raw = [(sum(s) / math.prod(s)) ** power_scale for s in shapes]
    budget = density * sum(sizes)
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        rest = budget - sum(sizes[i] for i in dense)
        denom = sum(raw[i] * sizes[i] for i in free)
        eps = rest / denom if denom > 0 else 0.0
        over = {i for i in free if raw[i] * eps > 1.0}
        if not over:
            return [1.0 if i in dense else raw[i] * eps for i in range(len(shapes))]
        dense |= over


def allocate(
    params: PyTree,
    sparsity: float,
    *,
    method: str = "uniform",
    prunable: PyTree | None = None,
    overrides: Mapping[str, float] | None = None,
    power_scale: float = 1.0,
) -> PyTree:
    """Per-leaf sparsities for a target ``sparsity`` of the prunable leaves.

    Args:
      params: pytree of arrays (only shapes are used).
      sparsity: target fraction pruned, in ``[0, 1]``.
      method: ``"uniform"`` (every leaf gets ``sparsity``) or ``"erk"``
        (:func:`erk_densities`: total kept count over the leaves matches
        ``(1 - sparsity) * size``).
      prunable: which leaves get a sparsity (default :func:`jaxprune.tree.prunable`).
      overrides: ``{regex: sparsity}``; a prunable leaf whose ``/``-joined path
        matches a regex (``re.search``, first match wins) gets that sparsity
        and is left out of the budget, which then applies to the other leaves
        (as in JaxPruner's custom sparsity map).
      power_scale: ERK exponent on ``sum/prod`` (1.0 = ERK as published).

    Returns:
      Pytree of Python floats (prunable leaves) / ``None`` (others).
    """
    check_number("sparsity", sparsity, low=0.0, high=1.0)
    check_choice("method", method, ("uniform", "erk"))
    check_number("power_scale", power_scale, low=0.0)
    compiled = []
    for pattern, value in (overrides or {}).items():
        try:
            compiled.append((re.compile(pattern), value))
        except (re.error, TypeError) as err:
            raise ValueError(f"overrides key {pattern!r} is not a regex: {err}") from None
        check_number(f"overrides[{pattern!r}]", value, low=0.0, high=1.0)
    flags = resolve_prunable(params, prunable)
    flat, treedef = jax.tree.flatten_with_path(params, is_leaf=is_none)
    out: list[Any] = [None] * len(flat)
    free = []
    for i, ((path, leaf), flag) in enumerate(zip(flat, treedef.flatten_up_to(flags), strict=True)):
        if not flag:
            continue
        name = path_str(path)
        hit = next((float(v) for rx, v in compiled if rx.search(name)), None)
        if hit is not None:
            out[i] = hit
        else:
            free.append((i, tuple(int(d) for d in leaf.shape)))
    if method == "uniform":
        for i, _ in free:
            out[i] = float(sparsity)
    elif free:
        densities = erk_densities([s for _, s in free], 1.0 - float(sparsity), power_scale)
        for (i, _), d in zip(free, densities, strict=True):
            out[i] = min(max(1.0 - d, 0.0), 1.0)
    return jax.tree.unflatten(treedef, out)
