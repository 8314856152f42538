"""Shared "reduce by scope" machinery for the pytree measures.

A measure pools the entries of the prunable leaves in one of three ways:

- ``"global"``: all prunable leaves as one vector -> one scalar;
- ``"layer"``: each prunable leaf is a pool -> a pytree of scalars (``None``
  for non-prunable leaves);
- ``"neuron"``: each output unit (axis ``out_axis``, default the LAST axis;
  ``0`` for equinox/PyTorch ``(out, in, ...)`` layouts; see
  :func:`jaxprune.tree.neuron_view`) of each prunable leaf is a pool -> a
  pytree of vectors of length ``units``.

:func:`gather` validates the arguments and returns the prunable leaves with
their masks, :func:`pool_view` lays one out as pools (reduction always over
axis 0, plus summing over leaves for ``"global"``); :func:`scatter` puts one value per prunable leaf back
into the params' tree structure.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _validate
from jaxprune.tree import (
    PyTree,
    check_out_axis,
    check_same_structure,
    is_none,
    neuron_view,
    path_str,
    resolve_prunable,
)

SCOPES = ("global", "layer", "neuron")


class Pools(NamedTuple):
    """Prunable leaves of a pytree in pool layout.

    ``values``: the prunable leaves as given (see :func:`pool_view` for the
    pool layout). ``masks``: matching mask arrays, or ``None`` where the leaf
    is unmasked. ``treedef``/``flags``: enough to rebuild the
    params' structure with :func:`scatter`."""

    values: list[jax.Array]
    masks: list[jax.Array | None]
    treedef: Any
    flags: list[bool]


def is_array(x: Any) -> bool:
    """A single array (JAX, NumPy or a tracer), as opposed to a container pytree."""
    return isinstance(x, jax.Array | np.ndarray | np.generic | jax.core.Tracer)


def _flatten(tree: PyTree) -> tuple[list[tuple], list[Any], Any]:
    pairs, treedef = jax.tree.flatten_with_path(tree, is_leaf=is_none)
    return [p for p, _ in pairs], [x for _, x in pairs], treedef


def gather(
    params: PyTree,
    mask: PyTree | None,
    prunable: PyTree | None,
    scope: str,
    *,
    name: str = "params",
    check_finite: bool = True,
    out_axis: int = -1,
) -> Pools:
    """Validate ``(params, mask, prunable, scope)`` and lay the prunable leaves out as pools.

    - A plain array ``params`` is a one-leaf pytree that is prunable whatever
      its ``ndim`` (so a vector works); ``mask`` is then an array or ``None``.
    - ``prunable=None`` with a ``mask`` given: the leaves whose mask is not
      ``None`` are prunable; with no mask either: the default filter
      (``ndim >= 2``) of :func:`jaxprune.tree.prunable`.
    - A prunable leaf whose mask leaf is ``None`` counts all its entries.

    Raises ``ValueError`` for an unknown scope, mismatched mask/prunable
    trees, mask leaves of the wrong shape, an ``out_axis`` that a prunable
    leaf lacks (neuron scope; ``TypeError`` if not an int), and (on concrete
    inputs only) NaN/inf in the prunable leaves."""
    _validate.check_choice("scope", scope, SCOPES)
    if isinstance(out_axis, bool) or not isinstance(out_axis, int | np.integer):
        raise TypeError(f"out_axis must be a Python int (the axis of output units), got {out_axis!r}")
    if is_array(params):
        if mask is not None and not (is_array(mask) or isinstance(mask, bool)):
            raise ValueError(f"mask must be an array or None for an array params, got {type(mask).__name__}")
        paths, leaves, treedef = [()], [params], jax.tree.structure(params)
        flags = [True] if prunable is None else [bool(resolve_prunable(params, prunable))]
        mask_leaves = [mask]
    else:
        paths, leaves, treedef = _flatten(params)
        if mask is not None:
            check_same_structure(params, mask, name, "mask")
        flag_tree = resolve_prunable(params, prunable if prunable is not None else mask)
        flags = jax.tree.leaves(flag_tree, is_leaf=is_none)
        mask_leaves = [None] * len(leaves) if mask is None else jax.tree.leaves(mask, is_leaf=is_none)

    values, masks, named = [], [], {}
    for path, leaf, flag, m in zip(paths, leaves, flags, mask_leaves, strict=True):
        if not flag:
            continue
        where = path_str(path) or "<root>"
        if not hasattr(leaf, "shape"):
            raise TypeError(f"{name} leaf {where} is prunable but not an array: {type(leaf).__name__}")
        if m is not None and tuple(jnp.shape(m)) != tuple(jnp.shape(leaf)):
            raise ValueError(
                f"mask leaf {where} has shape {tuple(jnp.shape(m))}, expected {tuple(jnp.shape(leaf))}"
            )
        if m is not None:
            _validate.check_mask_values(f"mask leaf {where}", m)
        _validate.check_real_dtype(f"{name} leaf {where}", leaf)
        if check_finite:
            _check_float32_range(f"{name} leaf {where}", leaf)
        if scope == "neuron" and jnp.ndim(leaf):
            check_out_axis(out_axis, tuple(jnp.shape(leaf)), where)
        named[where] = leaf
        values.append(jnp.asarray(leaf))
        masks.append(None if m is None else jnp.asarray(m))
    if check_finite:
        check_all_finite(name, named)
    return Pools(values, masks, treedef, list(flags))


def _check_float32_range(name: str, leaf: Any) -> None:
    """A concrete float64 leaf (a NumPy array) must fit float32, where the measures
    compute: a finite value beyond the float32 maximum would become inf, and a
    nonzero one below its smallest subnormal (~1.4e-45) would become 0."""
    if isinstance(leaf, jax.core.Tracer) or np.dtype(getattr(leaf, "dtype", np.float32)) != np.float64:
        return
    a = np.abs(np.asarray(leaf))
    finite = a[np.isfinite(a)]
    top = finite.max(initial=0.0)
    if top > np.finfo(np.float32).max:
        raise ValueError(
            f"{name} has the finite value {top:.6g} beyond the float32 range (max 3.40282e+38), in which the "
            "measures compute; rescale the input (every measure but lq_norm is scale invariant)"
        )
    nonzero = finite[finite > 0]
    if nonzero.size and nonzero.min().astype(np.float32) == 0:
        raise ValueError(
            f"{name} has the nonzero value {nonzero.min():.6g} below the float32 range (smallest subnormal "
            "1.4e-45), in which the measures compute, so it would count as 0; rescale the input (every "
            "measure but lq_norm is scale invariant)"
        )


def check_all_finite(name: str, tree: PyTree) -> None:
    """:func:`jaxprune._validate.check_finite` that also covers bfloat16 leaves
    (whose NumPy dtype is not of kind ``"f"``): ``ValueError`` on a NaN/inf
    in a concrete leaf; traced leaves are skipped."""

    def host(x: Any) -> Any:
        if isinstance(x, jax.core.Tracer) or getattr(x, "dtype", None) != jnp.bfloat16:
            return x
        return np.asarray(x).astype(np.float32)

    _validate.check_finite(name, jax.tree.map(host, tree))


def pool_view(
    x: jax.Array, m: jax.Array | None, scope: str, out_axis: int = -1
) -> tuple[jax.Array, jax.Array | None]:
    """``x`` in float32 and its bool mask in pool layout: ``(n,)`` for layer /
    global, ``(fan_in, units)`` for neuron (units on axis ``out_axis`` of
    ``x``; reduce over axis 0). Call it inside ``jit`` so that the cast and
    reshape fuse into the reduction. A numeric (non-bool) mask entry other than
    0/1, which only reaches here traced (concrete ones are refused by
    :func:`gather`), leaves its entry unmasked with the value NaN, so that its
    pool gives NaN rather than a value for a guessed mask."""
    a = x.astype(jnp.float32)
    if m is not None and m.dtype != jnp.bool_:
        a = jnp.where((m == 0) | (m == 1), a, jnp.nan)
        m = m != 0
    if scope != "neuron":
        return a.reshape(-1), None if m is None else m.astype(bool).reshape(-1)
    if not a.ndim:
        return a.reshape(1, 1), None if m is None else m.astype(bool).reshape(1, 1)
    return neuron_view(a, out_axis), None if m is None else neuron_view(m.astype(bool), out_axis)


def scatter(pools: Pools, per_leaf: list[Any]) -> PyTree:
    """One value per prunable leaf back into the params' structure (``None`` elsewhere)."""
    it = iter(per_leaf)
    out = [next(it) if flag else None for flag in pools.flags]
    return jax.tree.unflatten(pools.treedef, out)
