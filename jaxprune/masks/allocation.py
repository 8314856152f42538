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
import jax.numpy as jnp

from jaxprune._validate import check_choice, check_finite_number, check_number
from jaxprune.tree import PyTree, is_none, path_str, resolve_prunable


def erk_densities(shapes: list[tuple[int, ...]], density: float, power_scale: float = 1.0) -> list[float]:
    """Erdos-Renyi-Kernel densities (Evci et al. 2020, RigL).

    The density of leaf ``l`` is ``eps * raw_l`` with ``raw_l =
    (sum(shape_l) / prod(shape_l)) ** power_scale``; ``eps`` is solved so that
    ``sum_l density_l * size_l == density * sum_l size_l``. Leaves whose
    density would exceed 1 are made dense and ``eps`` is re-solved over the
    rest (``eps`` only grows when a leaf is made dense, so all offenders can
    be moved at once). ``raw`` is handled in log space, so no
    ``power_scale`` over- or underflows.

    Args:
      shapes: leaf shapes (sequences of non-negative ints). A leaf with no
        entries (a 0 in its shape) has nothing to prune: it gets density 1.0
        and no share of the budget. A 0-d leaf counts as shape ``(1,)``.
      density: target fraction kept over all leaves, in ``[0, 1]``.
      power_scale: exponent ``>= 0`` (finite) on ``sum/prod``.

    Returns:
      One density in ``[0, 1]`` per leaf; the kept counts sum to
      ``density * sum(sizes)`` (up to float rounding).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> shapes = [(3, 3, 16, 32), (512, 10)]
    >>> [round(d, 4) for d in jp.masks.erk_densities(shapes, 0.1)]    # kept fractions ~ sum(shape) / size
    [0.0198, 0.1722]
    >>> dens = jp.masks.erk_densities(shapes, 0.1)
    >>> round(sum(d * s for d, s in zip(dens, [4608, 5120])) / (4608 + 5120), 4)   # the overall density
    0.1
    """
    check_finite_number("density", density, low=0.0, high=1.0)
    check_finite_number("power_scale", power_scale, low=0.0)
    dims = []
    for i, shape in enumerate(shapes):
        try:
            dims.append(tuple(int(d) for d in shape) if all(int(d) == d for d in shape) else None)
        except (TypeError, ValueError, OverflowError):
            dims.append(None)
        if dims[-1] is None or min(dims[-1], default=0) < 0:
            raise ValueError(f"shapes[{i}]={shape!r} must be a tuple of non-negative ints")
    dims = [s if s else (1,) for s in dims]
    sizes = [math.prod(s) for s in dims]
    live = [i for i, n in enumerate(sizes) if n > 0]
    if not live:
        return [1.0] * len(shapes)
    log_raw = {i: float(power_scale) * (math.log(sum(dims[i])) - math.log(sizes[i])) for i in live}
    budget = float(density) * sum(sizes)
    dense: set[int] = set()
    while True:
        free = [i for i in live if i not in dense]
        # raw_l relative to the largest free one (eps absorbs the shift): no over/underflow
        top = max((log_raw[i] for i in free), default=0.0)
        raw = {i: math.exp(log_raw[i] - top) for i in free}
        rest = budget - sum(sizes[i] for i in dense)
        denom = sum(raw[i] * sizes[i] for i in free)
        eps = rest / denom if denom > 0 else 0.0
        over = {i for i in free if raw[i] * eps > 1.0}
        if not over:
            out = [1.0] * len(shapes)  # dense and zero-size leaves
            for i in free:
                out[i] = min(max(raw[i] * eps, 0.0), 1.0)
            return out
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

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"conv": {"kernel": jnp.ones((3, 3, 16, 32))}, "dense": {"kernel": jnp.ones((512, 10)),
    ...           "bias": jnp.ones(10)}}
    >>> jp.masks.allocate(params, 0.9)                       # uniform: the same sparsity everywhere
    {'conv': {'kernel': 0.9}, 'dense': {'bias': None, 'kernel': 0.9}}
    >>> erk = jp.masks.allocate(params, 0.9, method="erk")  # ERK: density ~ sum(shape) / size
    >>> round(erk["conv"]["kernel"], 4), round(erk["dense"]["kernel"], 4)
    (0.9802, 0.8278)
    """
    check_number("sparsity", sparsity, low=0.0, high=1.0)
    check_choice("method", method, ("uniform", "erk"))
    check_finite_number("power_scale", power_scale, low=0.0)
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
            free.append((i, tuple(int(d) for d in jnp.shape(leaf))))
    if method == "uniform":
        for i, _ in free:
            out[i] = float(sparsity)
    elif free:
        densities = erk_densities([s for _, s in free], 1.0 - float(sparsity), power_scale)
        for (i, _), d in zip(free, densities, strict=True):
            out[i] = min(max(1.0 - d, 0.0), 1.0)
    return jax.tree.unflatten(treedef, out)
