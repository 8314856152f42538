"""Pytree plumbing shared by every method: leaf paths, the prunable filter,
masks with ``None`` leaves, and density summaries.

Everything here works on ANY pytree (flax linen param dicts, ``nnx.State``,
equinox modules, plain dicts/lists/tuples). A *mask* has the structure of the
params it belongs to; each leaf is a boolean array of the leaf's shape
(``True`` = kept) or ``None`` where the leaf is not prunable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Patterns = str | Iterable[str] | None


def is_none(x: Any) -> bool:
    """``is_leaf`` predicate that makes ``None`` mask leaves visible to tree maps."""
    return x is None


def path_str(path: tuple) -> str:
    """A key path as a ``/``-joined string, e.g. ``params/Dense_0/kernel``."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def leaf_paths(tree: PyTree) -> list[str]:
    """The ``/``-joined path of every leaf (``None`` counts as a leaf)."""
    return [path_str(p) for p, _ in jax.tree.leaves_with_path(tree, is_leaf=is_none)]


def check_same_structure(a: PyTree, b: PyTree, name_a: str = "params", name_b: str = "mask") -> None:
    """Raise ``ValueError`` if ``a`` and ``b`` are not the same tree (``None``
    leaves count as leaves), naming the paths that differ."""
    if jax.tree.structure(a, is_leaf=is_none) == jax.tree.structure(b, is_leaf=is_none):
        return
    pa, pb = leaf_paths(a), leaf_paths(b)
    only_a = [p for p in pa if p not in set(pb)][:5]
    only_b = [p for p in pb if p not in set(pa)][:5]
    detail = []
    if only_a:
        detail.append(f"only in {name_a}: {only_a}")
    if only_b:
        detail.append(f"only in {name_b}: {only_b}")
    if not detail:
        detail.append(f"{name_a} has {len(pa)} leaves, {name_b} has {len(pb)} (container types differ)")
    raise ValueError(f"{name_b} does not match the structure of {name_a}; " + "; ".join(detail))


def check_mask_shapes(params: PyTree, mask: PyTree, name: str = "mask") -> None:
    """Raise ``ValueError`` unless ``mask`` has the structure of ``params`` and
    every non-``None`` mask leaf has its param leaf's shape (naming the path)."""
    check_same_structure(params, mask, "params", name)
    flat = jax.tree.leaves_with_path(params, is_leaf=is_none)
    for (path, w), m in zip(flat, jax.tree.leaves(mask, is_leaf=is_none), strict=True):
        if m is not None and (w is None or jnp.shape(m) != jnp.shape(w)):
            raise ValueError(
                f"{name} leaf at {path_str(path) or '<root>'} has shape {jnp.shape(m)}, expected the "
                f"param shape {None if w is None else jnp.shape(w)}"
            )


def _compile(patterns: Patterns, name: str) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        return [re.compile(p) for p in patterns]
    except (re.error, TypeError) as err:
        raise ValueError(f"{name}={patterns!r} is not a regex or list of regexes: {err}") from None


def prunable(params: PyTree, include: Patterns = None, exclude: Patterns = None) -> PyTree:
    """Which leaves a method may prune: a pytree of Python ``bool`` (one per leaf).

    Default: every array leaf with ``ndim >= 2`` (dense and conv kernels),
    so biases and normalization scales stay dense. ``include`` (regex or list
    of regexes, ``re.search`` on the ``/``-joined path) replaces that default:
    matching array leaves are prunable. ``exclude`` then removes matches.

    >>> prunable(params, exclude="Dense_2")   # keep the last layer dense
    """
    inc, exc = _compile(include, "include"), _compile(exclude, "exclude")

    def decide(path: tuple, leaf: Any) -> bool:
        if leaf is None or not hasattr(leaf, "ndim"):
            return False
        name = path_str(path)
        chosen = any(p.search(name) for p in inc) if inc else leaf.ndim >= 2
        return chosen and not any(p.search(name) for p in exc)

    return jax.tree.map_with_path(decide, params, is_leaf=is_none)


def resolve_prunable(params: PyTree, prunable_tree: PyTree | None = None) -> PyTree:
    """Normalize a ``prunable`` argument to a pytree of Python bools.

    Accepts ``None`` (the default filter of :func:`prunable`), a pytree of
    bools, or a mask (array or ``None`` leaves: non-``None`` means prunable)."""
    if prunable_tree is None:
        return prunable(params)
    check_same_structure(params, prunable_tree, "params", "prunable")

    def as_bool(flag: Any) -> bool:
        if flag is None:
            return False
        if isinstance(flag, bool | np.bool_):
            return bool(flag)
        if hasattr(flag, "shape"):  # a mask leaf: its presence marks the leaf prunable
            return True
        raise ValueError(f"prunable leaves must be bool, None or mask arrays, got {type(flag).__name__}")

    return jax.tree.map(as_bool, prunable_tree, is_leaf=is_none)


def full_mask(params: PyTree, prunable_tree: PyTree | None = None) -> PyTree:
    """An all-kept mask: ``True`` arrays on prunable leaves, ``None`` elsewhere."""
    flags = resolve_prunable(params, prunable_tree)
    return jax.tree.map(
        lambda w, f: jnp.ones(jnp.shape(w), bool) if f else None, params, flags, is_leaf=is_none
    )


def map_masked(fn: Callable[..., Any], mask: PyTree, *trees: PyTree) -> PyTree:
    """``fn(mask_leaf, *leaves)`` on every non-``None`` mask leaf; ``None`` elsewhere.

    The trees must have the mask's structure (checked)."""
    for i, tree in enumerate(trees):
        check_same_structure(tree, mask, f"tree[{i}]", "mask")
    return jax.tree.map(
        lambda m, *xs: None if m is None else fn(m, *xs), mask, *trees, is_leaf=is_none
    )


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """``m * w`` leaf by leaf: pruned entries become exactly 0, ``None`` mask
    leaves (and ``None`` params) pass through unchanged. Jittable."""
    check_same_structure(params, mask)

    def one(w: Any, m: Any) -> Any:
        if m is None or w is None:
            return w
        if jnp.shape(m) != jnp.shape(w):
            raise ValueError(f"mask leaf of shape {jnp.shape(m)} does not match param shape {jnp.shape(w)}")
        return jnp.where(m, w, jnp.zeros((), jnp.result_type(w)))

    return jax.tree.map(one, params, mask, is_leaf=is_none)


def fresh_copy(tree: PyTree) -> PyTree:
    """New buffers for every array leaf (``None`` stays ``None``): what to hand a
    step that donates its input while the caller keeps using the original."""
    return jax.tree.map(jnp.copy, tree)


def neuron_view(x: jax.Array) -> jax.Array:
    """A leaf as ``(fan_in, units)``: one column per output unit (the LAST axis).

    A dense kernel ``(in, out)`` is unchanged; a conv kernel ``(kh, kw, in, out)``
    becomes ``(kh*kw*in, out)``; a vector of length n is ``(1, n)``."""
    return jnp.reshape(x, (-1, jnp.shape(x)[-1]))


def summarize(params_or_mask: PyTree, prunable: PyTree | None = None) -> dict[str, Any]:
    """Density report of params (nonzero entries) or a mask (``True`` entries).

    Returns ``{"leaves": {path: {"shape", "size", "nonzero", "density", "prunable"}},
    "prunable": {"size", "nonzero", "density"}, "all": {...}}``. For a mask,
    ``None`` leaves are skipped (their size is unknown); for params, the
    prunable set is ``prunable`` (default filter if ``None``). Host-side
    (NumPy) report, not meant for ``jit``."""
    tree = params_or_mask
    flags = None if prunable is None else resolve_prunable(tree, prunable)
    flat = jax.tree.leaves_with_path(tree, is_leaf=is_none)
    flag_list = [None] * len(flat) if flags is None else jax.tree.leaves(flags, is_leaf=is_none)
    leaves: dict[str, dict[str, Any]] = {}
    totals = {"prunable": [0, 0], "all": [0, 0]}
    for (path, leaf), flag in zip(flat, flag_list, strict=True):
        if leaf is None or not hasattr(leaf, "shape"):
            continue
        arr = np.asarray(leaf)
        is_mask_leaf = arr.dtype == np.bool_
        nonzero = int(np.count_nonzero(arr))
        is_prunable = bool(flag) if flag is not None else (is_mask_leaf or arr.ndim >= 2)
        leaves[path_str(path)] = {
            "shape": tuple(arr.shape),
            "size": int(arr.size),
            "nonzero": nonzero,
            "density": nonzero / arr.size if arr.size else 1.0,
            "prunable": is_prunable,
        }
        for key in ("all", "prunable") if is_prunable else ("all",):
            totals[key][0] += int(arr.size)
            totals[key][1] += nonzero
    out: dict[str, Any] = {"leaves": leaves}
    for key, (size, nonzero) in totals.items():
        out[key] = {"size": size, "nonzero": nonzero, "density": nonzero / size if size else 1.0}
    return out
