"""Scorers: pytrees of importance scores with the params' structure.

A score leaf has the param leaf's shape (one score per weight) except for
:func:`filter_norm`, which returns one score per output unit (the LAST axis, or ``out_axis``).
``None`` leaves pass through as ``None``. Larger score = more important; the
selection in :mod:`jaxprune.masks.select` keeps the largest scores.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxprune import _validate
from jaxprune.measures.sparsity import _abs_bits, _ldexp, _scaled, _top_exponent
from jaxprune.tree import PyTree, check_out_axis, check_same_structure, is_none, neuron_view, path_str


def magnitude(params: PyTree) -> PyTree:
    """``|w|`` on every leaf (same shapes and dtypes).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> jp.masks.magnitude({"kernel": jnp.array([-2.0, 1.0]), "bias": None})
    {'bias': None, 'kernel': Array([2., 1.], dtype=float32)}
    """
    return jax.tree.map(lambda w: None if w is None else jnp.abs(w), params, is_leaf=is_none)


def random(key: jax.Array, params: PyTree) -> PyTree:
    """Uniform ``[0, 1)`` float32 scores of each leaf's shape, one independent
    stream per leaf (``jax.random.split(key, num_leaves)`` in leaf order).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import jax
    >>> scores = jp.masks.random(jax.random.key(0), {"a": jnp.ones((2, 3)), "b": jnp.ones(4)})
    >>> scores["a"].shape, scores["b"].shape, bool(jnp.all((scores["a"] >= 0) & (scores["a"] < 1)))
    ((2, 3), (4,), True)
    """
    leaves, treedef = jax.tree.flatten(params, is_leaf=is_none)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [
        None if w is None else jax.random.uniform(k, jnp.shape(w), jnp.float32)
        for k, w in zip(keys, leaves, strict=False)
    ]
    return jax.tree.unflatten(treedef, out)


def snip(params: PyTree, grads: PyTree) -> PyTree:
    """SNIP connection sensitivity ``|w * dL/dw|`` (Lee et al. 2019), leafwise.

    ``grads`` must have the params' structure (e.g. ``jax.grad(loss)(params, batch)``).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.array([-2.0, 1.0])}
    >>> grads = {"kernel": jnp.array([0.5, -3.0])}
    >>> jp.masks.snip(params, grads)["kernel"].tolist()    # |w * g|
    [1.0, 3.0]
    """
    check_same_structure(params, grads, "params", "grads")

    def one(w: Any, g: Any) -> Any:
        if w is None or g is None:
            return None
        if jnp.shape(w) != jnp.shape(g):
            raise ValueError(f"grads leaf of shape {jnp.shape(g)} does not match param shape {jnp.shape(w)}")
        return jnp.abs(w * g)

    return jax.tree.map(one, params, grads, is_leaf=is_none)


def filter_norm(params: PyTree, *, out_axis: int = -1) -> PyTree:
    """The l2 norm of each output unit: a leaf with ``out`` units on axis
    ``out_axis`` (default the last, flax ``(..., out)``; ``0`` for
    equinox/PyTorch ``(out, in, ...)``) gives a float32 vector of shape
    ``(out,)`` (the norm over all other axes, accumulated in float32; exact to float32
    rounding for any finite entries, subnormal or near the float32 max). Scalar
    (0-d) leaves have no output axis and give ``None``; a leaf without the
    axis ``out_axis`` is a ``ValueError`` naming it.

    Use with ``topk(scores, s, scope="filter", params=params, out_axis=...)``
    (same ``out_axis``) to keep or drop whole filters (DPF's structured variant).

    >>> import jax.numpy as jnp
    >>> filter_norm({"k": jnp.array([[3., 0.], [4., 1.]])})["k"].tolist()
    [5.0, 1.0]
    >>> filter_norm({"k": jnp.array([[3., 4.], [0., 1.]])}, out_axis=0)["k"].tolist()
    [5.0, 1.0]
    """

    def one(path: tuple, w: Any) -> Any:
        if w is None or jnp.ndim(w) == 0:
            return None
        where = path_str(path) or "<root>"
        _validate.check_real_dtype(f"params leaf {where}", w)
        check_out_axis(out_axis, tuple(jnp.shape(w)), where)
        return _unit_norms(neuron_view(jnp.asarray(w), out_axis).astype(jnp.float32))

    return jax.tree.map_with_path(one, params, is_leaf=is_none)


@jax.jit
def _unit_norms(v: jax.Array) -> jax.Array:
    """l2 norm of each column of ``v`` (fan_in, units), exact to float32 rounding
    for any finite entries. The one-pass ``sqrt(sum v^2)`` is kept when every
    column's sum is finite and at least ``2^24 fan_in tiny`` (then the terms
    lost to FTZ/DAZ, each below ``tiny``, change it by less than ``2^-24``);
    otherwise (a norm near the float32 max, subnormal entries, an all-zero or
    NaN/inf column) a ``lax.cond`` branch recomputes ``2^E sqrt(sum (v/2^E)^2)``
    with ``2^E <= max |v| < 2^(E+1)`` per column, ``v/2^E`` formed exactly from
    the bits (no flush, no overflow). NaN/inf columns give NaN/inf."""
    s = jnp.sum(v * v, axis=0)
    safe = jnp.all((s < jnp.inf) & (s >= 2.0**24 * v.shape[0] * float(jnp.finfo(jnp.float32).tiny)))

    def exact(v: jax.Array) -> jax.Array:
        bits = _abs_bits(v)
        top = jnp.max(bits, axis=0, initial=jnp.uint32(0))
        e_top, finite = _top_exponent(top)
        c = _scaled(jnp.where(finite, bits, jnp.uint32(0)), e_top)
        root = jnp.sqrt(jnp.sum(c * c, axis=0))  # in [1, 2 sqrt(fan_in)) for a nonzero column
        norm = _ldexp(jnp.where(top > 0, root, 1.0), e_top)
        return jnp.where(finite, jnp.where(top > 0, norm, 0.0), jnp.sqrt(jnp.sum(v * v, axis=0)))

    return lax.cond(safe, lambda v: jnp.sqrt(s), exact, v)
