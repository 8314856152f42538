"""Statistics of masks during training (DPF, Lin et al. 2020, Figures 4 and 7):
the pruning quality ``delta``, the IoU of two masks and the fraction of flips.

Masks are pytrees of bool arrays with ``None`` on non-prunable leaves; only
the non-``None`` (prunable) leaves enter the statistics. Counts are int32
(exact up to 2^31 - 1 entries). All functions are jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune import _validate
from jaxprune.tree import PyTree, check_mask_shapes, check_same_structure, is_none, path_str


def _mask_pairs(mask_a: PyTree, mask_b: PyTree) -> list[tuple[jax.Array, jax.Array]]:
    """The prunable (non-``None``) leaf pairs of two masks, as bool arrays;
    ``ValueError`` if the trees, their ``None`` positions or shapes differ."""
    check_same_structure(mask_a, mask_b, "mask_a", "mask_b")
    pairs = []
    flat_a = jax.tree.leaves_with_path(mask_a, is_leaf=is_none)
    for (path, a), b in zip(flat_a, jax.tree.leaves(mask_b, is_leaf=is_none), strict=True):
        where = path_str(path) or "<root>"
        if (a is None) != (b is None):
            raise ValueError(f"mask_a and mask_b disagree on whether {where} is prunable (None vs array)")
        if a is None:
            continue
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(f"mask leaves at {where} differ in shape: {jnp.shape(a)} vs {jnp.shape(b)}")
        pairs.append((jnp.asarray(a).astype(bool), jnp.asarray(b).astype(bool)))
    return pairs


@jax.jit
def _iou(pairs):
    inter = sum((jnp.sum(a & b, dtype=jnp.int32) for a, b in pairs), jnp.int32(0))
    union = sum((jnp.sum(a | b, dtype=jnp.int32) for a, b in pairs), jnp.int32(0))
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0).astype(jnp.float32)


def mask_iou(mask_a: PyTree, mask_b: PyTree) -> jax.Array:
    """Intersection over union of the KEPT entries of two masks, over all
    prunable leaves: ``|a & b| / |a | b|`` (float32 scalar; 1 when both keep
    nothing)."""
    return _iou(_mask_pairs(mask_a, mask_b))


@jax.jit
def _flips(pairs):
    flips = sum((jnp.sum(a != b, dtype=jnp.int32) for a, b in pairs), jnp.int32(0))
    size = sum(a.size for a, _ in pairs)
    return (flips / max(size, 1)).astype(jnp.float32)


def mask_flips(mask_a: PyTree, mask_b: PyTree) -> jax.Array:
    """Fraction of the entries of the prunable leaves whose mask value differs
    between ``mask_a`` and ``mask_b`` (float32 scalar in [0, 1]; 0 when no
    leaf is prunable)."""
    return _flips(_mask_pairs(mask_a, mask_b))


@jax.jit
def _quality(pairs):
    # Scale by the max |w| so that sums of squares cannot overflow.
    big = jnp.max(jnp.stack([jnp.max(w, initial=0.0) for w, _ in pairs])) if pairs else jnp.float32(0)
    scale = jnp.where(big > 0, big, 1.0)
    removed = sum((jnp.sum(jnp.where(m, 0.0, jnp.square(w / scale))) for w, m in pairs), jnp.float32(0))
    total = sum((jnp.sum(jnp.square(w / scale)) for w, _ in pairs), jnp.float32(0))
    return jnp.where(total > 0, removed / jnp.where(total > 0, total, 1.0), 0.0)


def pruning_quality(params: PyTree, mask: PyTree) -> jax.Array:
    """DPF's pruning quality ``delta = ||w - m*w||^2 / ||w||^2``: the share of the
    squared weight norm removed by the mask, over the prunable leaves (those
    with a non-``None`` mask leaf). Float32 scalar in [0, 1]; 0 for all-zero
    weights. bf16/float16 weights are computed in float32."""
    check_mask_shapes(params, mask)
    pairs, named = [], {}
    flat = jax.tree.leaves_with_path(params, is_leaf=is_none)
    for (path, w), m in zip(flat, jax.tree.leaves(mask, is_leaf=is_none), strict=True):
        if m is None:
            continue
        named[path_str(path) or "<root>"] = w
        pairs.append((jnp.abs(jnp.asarray(w).astype(jnp.float32)), jnp.asarray(m).astype(bool)))
    _validate.check_finite("params", named)
    return _quality(pairs)
