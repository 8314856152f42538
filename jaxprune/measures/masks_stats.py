"""Statistics of masks during training (DPF, Lin et al. 2020, Figures 4 and 7):
the pruning quality ``delta``, the IoU of two masks and the fraction of flips.

Masks are pytrees of bool arrays with ``None`` on non-prunable leaves; only
the non-``None`` (prunable) leaves enter the statistics. Integer or float mask
leaves are accepted only when every entry is exactly 0 or 1: otherwise (NaN,
0.5, -1, ...) a ``ValueError`` names the leaf, and under ``jit`` (where values
cannot be inspected) the statistic is NaN. Likewise NaN/inf weights in
:func:`pruning_quality`. Counts are int32 (exact up to 2^31 - 1 entries). All
functions are jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _validate
from jaxprune.measures.sparsity import _abs_bits, _scaled, _top_exponent
from jaxprune.tree import PyTree, check_mask_shapes, check_same_structure, is_none, path_str


def _as_mask(name: str, where: str, m) -> tuple[jax.Array, jax.Array]:
    """``(bool mask, valid)``: a bool leaf as is; an integer/float leaf must
    hold only 0 and 1 (``ValueError`` when concrete, ``valid`` False when
    traced); other dtypes raise ``TypeError``."""
    m = jnp.asarray(m)
    if m.dtype == jnp.bool_:
        return m, jnp.bool_(True)
    if not (jnp.issubdtype(m.dtype, jnp.integer) or jnp.issubdtype(m.dtype, jnp.floating)):
        raise TypeError(f"{name} leaf at {where} must be a bool (or 0/1 numeric) array, got dtype {m.dtype}")
    valid = jnp.all((m == 0) | (m == 1))
    if _validate.is_concrete(valid) and not bool(valid):
        bad = np.asarray(m)[~np.isin(np.asarray(m), (0, 1))].flat[0].item()
        raise ValueError(f"{name} leaf at {where} has the value {bad!r}; mask entries must be bool or 0/1")
    return m != 0, valid


def _mask_pairs(mask_a: PyTree, mask_b: PyTree) -> tuple[list[tuple[jax.Array, jax.Array]], jax.Array]:
    """The prunable (non-``None``) leaf pairs of two masks, as bool arrays, and
    whether every numeric leaf held only 0/1 (always True when concrete:
    ``ValueError`` otherwise, as when the trees, their ``None`` positions or
    shapes differ)."""
    check_same_structure(mask_a, mask_b, "mask_a", "mask_b")
    pairs, valid = [], jnp.bool_(True)
    flat_a = jax.tree.leaves_with_path(mask_a, is_leaf=is_none)
    for (path, a), b in zip(flat_a, jax.tree.leaves(mask_b, is_leaf=is_none), strict=True):
        where = path_str(path) or "<root>"
        if (a is None) != (b is None):
            raise ValueError(f"mask_a and mask_b disagree on whether {where} is prunable (None vs array)")
        if a is None:
            continue
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(f"mask leaves at {where} differ in shape: {jnp.shape(a)} vs {jnp.shape(b)}")
        (ba, va), (bb, vb) = _as_mask("mask_a", where, a), _as_mask("mask_b", where, b)
        pairs.append((ba, bb))
        valid = valid & va & vb
    return pairs, valid


@jax.jit
def _iou(pairs, valid):
    inter = sum((jnp.sum(a & b, dtype=jnp.int32) for a, b in pairs), jnp.int32(0))
    union = sum((jnp.sum(a | b, dtype=jnp.int32) for a, b in pairs), jnp.int32(0))
    iou = jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0).astype(jnp.float32)
    return jnp.where(valid, iou, jnp.nan)


def mask_iou(mask_a: PyTree, mask_b: PyTree) -> jax.Array:
    """Intersection over union of the KEPT entries of two masks, over all
    prunable leaves: ``|a & b| / |a | b|`` (float32 scalar; 1 when both keep
    nothing).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> a = {"kernel": jnp.array([True, True, False, False]), "bias": None}
    >>> b = {"kernel": jnp.array([True, False, True, False]), "bias": None}
    >>> round(float(jp.measures.mask_iou(a, b)), 4)    # 1 kept by both / 3 kept by either
    0.3333
    """
    return _iou(*_mask_pairs(mask_a, mask_b))


@jax.jit
def _flips(pairs, valid):
    flips = sum((jnp.sum(a != b, dtype=jnp.int32) for a, b in pairs), jnp.int32(0))
    size = sum(a.size for a, _ in pairs)
    return jnp.where(valid, (flips / max(size, 1)).astype(jnp.float32), jnp.nan)


def mask_flips(mask_a: PyTree, mask_b: PyTree) -> jax.Array:
    """Fraction of the entries of the prunable leaves whose mask value differs
    between ``mask_a`` and ``mask_b`` (float32 scalar in [0, 1]; 0 when no
    leaf is prunable).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> a = {"kernel": jnp.array([True, True, False, False]), "bias": None}
    >>> b = {"kernel": jnp.array([True, False, True, False]), "bias": None}
    >>> round(float(jp.measures.mask_flips(a, b)), 4)  # 2 of 4 entries changed
    0.5
    """
    return _flips(*_mask_pairs(mask_a, mask_b))


@jax.jit
def _quality(pairs, valid):
    # Divide by 2^E <= max |w| < 2^(E+1), exactly from the bit patterns: no overflow of the
    # squares, and subnormal weights (read as 0 by XLA:CPU's float arithmetic) still count.
    bits = [_abs_bits(w) for w, _ in pairs]
    top = jnp.max(jnp.stack([jnp.max(b, initial=jnp.uint32(0)) for b in bits])) if pairs else jnp.uint32(0)
    e_top, finite = _top_exponent(top)
    scaled = [_scaled(jnp.where(finite, b, jnp.uint32(0)), e_top) for b in bits]
    removed = sum((jnp.sum(jnp.where(m, 0.0, c * c)) for c, (_, m) in zip(scaled, pairs, strict=True)),
                  jnp.float32(0))
    total = sum((jnp.sum(c * c) for c in scaled), jnp.float32(0))
    delta = jnp.where(total > 0, removed / jnp.where(total > 0, total, 1.0), 0.0)
    return jnp.where(valid & finite, delta, jnp.nan)  # traced NaN/inf weights or non-0/1 masks: NaN


def pruning_quality(params: PyTree, mask: PyTree) -> jax.Array:
    """DPF's pruning quality ``delta = ||w - m*w||^2 / ||w||^2``: the share of the
    squared weight norm removed by the mask, over the prunable leaves (those
    with a non-``None`` mask leaf). Float32 scalar in [0, 1]; 0 for all-zero
    weights. bf16/float16 weights are computed in float32. NaN/inf weights
    raise ``ValueError`` (under ``jit``: the result is NaN).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.array([[3.0, 4.0]]), "bias": jnp.zeros(2)}
    >>> mask = {"kernel": jnp.array([[False, True]]), "bias": None}
    >>> round(float(jp.measures.pruning_quality(params, mask)), 4)   # 3^2 / (3^2 + 4^2) of the norm removed
    0.36
    """
    check_mask_shapes(params, mask)
    pairs, named, valid = [], {}, jnp.bool_(True)
    flat = jax.tree.leaves_with_path(params, is_leaf=is_none)
    for (path, w), m in zip(flat, jax.tree.leaves(mask, is_leaf=is_none), strict=True):
        if m is None:
            continue
        where = path_str(path) or "<root>"
        _validate.check_real_dtype(f"params leaf at {where}", w)
        named[where] = w
        m, ok = _as_mask("mask", where, m)
        valid = valid & ok
        pairs.append((jnp.abs(jnp.asarray(w).astype(jnp.float32)), m))
    _validate.check_finite("params", named)
    return _quality(pairs, valid)
