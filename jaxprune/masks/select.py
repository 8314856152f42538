"""Exact, sort-free top-k selection: scores pytree -> boolean mask pytree.

``topk`` keeps exactly ``k = round((1 - sparsity) * n)`` entries of every pool
(``round`` = round half to even), where ``n`` counts ALL entries of the pool,
including those already masked out by ``mask``: masked entries count as pruned
and never come back, so the ``k`` kept entries are chosen among the unmasked
ones (all unmasked entries are kept if fewer than ``k`` remain). Pools:

- ``"global"``: all prunable leaves as one pool;
- ``"layer"``: each prunable leaf (``sparsity`` may be a per-leaf pytree,
  e.g. from :func:`jaxprune.masks.allocate`);
- ``"neuron"``: each output unit (a column of :func:`jaxprune.tree.neuron_view`,
  i.e. each index of the axis ``out_axis`` of the leaf, default the LAST axis);
- ``"filter"``: whole output units ranked globally across leaves; score leaves
  are per-unit vectors ``(out,)`` (see :func:`jaxprune.masks.filter_norm`) and
  the mask is expanded to the full leaf shape; ``n`` = number of units;
- ``"N:M"`` (e.g. ``"2:4"``, ``"1:4"``, ``"4:8"``; ``1 <= N <= M``): N:M
  structured sparsity (METHODS.md section 7): every group of ``M`` consecutive
  entries along the INPUT (contracting) axis of each leaf keeps exactly its
  ``N`` largest scores (all its unmasked ones if fewer than ``N`` remain).
  The input axis is the neighbour of ``out_axis``: ``ndim - 2`` when
  ``out_axis`` is the last axis (flax: Dense ``(in, out)`` -> axis 0, Conv
  ``(kh, kw, in, out)`` -> the in-channel axis -2), else ``out_axis + 1``
  (equinox/PyTorch with ``out_axis=0``: Linear ``(out, in)`` and Conv
  ``(out, in, kh, kw)`` -> axis 1). Groups are ``[0, M)``, ``[M, 2M)``, ...
  of that axis, for every index of the other axes; leaves need ``ndim >= 2``
  and an input axis divisible by ``M``. The sparsity is ``1 - N/M`` by
  construction: pass ``sparsity=None`` (or that value, see :func:`topk`).

Ties are broken deterministically: the lower flat index wins, where the flat
index is the row-major position inside the pool (for the global scopes, in the
concatenation of the leaves in ``jax.tree.leaves`` order; for neuron pools,
over the other axes in their order; for N:M, the lower index along the input
axis). Results are thus identical across runs, devices and shardings.

Algorithm (no sort, no host round trip, jittable, dynamic ``k``): scores are
mapped to order-preserving ``uint32`` keys (float32 bit pattern with the sign
bit flipped for positives, all bits inverted for negatives, -0.0 read as +0.0;
bf16/float16 and integer scores are upcast to float32 first (integers beyond
2**24 in magnitude are thus rounded); masked entries get key 0 and NaN
key 1, i.e. NaN is the lowest score). The k-th largest key ``t`` is found
without concatenating the leaves (sharded leaves stay sharded: XLA inserts the
reductions' collectives): for a pool that is whole leaves (global, filter,
layer) by two 16-bit radix-histogram passes (scatter-adds into 65,536 bins,
each searched in two levels of 256); for many pools per leaf (neuron, N:M
groups of more than 32) by 32 rounds of bisection on its bits, each one fused
pass ``sum(keys >= cand)``. If ``count(keys >= t) == k`` the mask is
``keys >= t``; otherwise the first ``need`` ties at ``t`` in flat order are
kept: for whole-leaf pools the flat index of the last one is found from
per-block tie counts (blocks of ~sqrt(n) entries) and one block's cumulative
count, per column by a cumulative count. N:M groups of ``M <= 32`` entries
rank each key against the ``M`` of its group (``M`` fused compare passes, in
the leaf's own layout: no transpose) and keep ranks below ``N``.

The keys come from integer operations on the float32 bit pattern only, so
the ranking is exact for every float32 score, subnormals included (XLA:CPU
flushes subnormals to zero in float arithmetic and comparisons; a key never
goes through either): ``1e-40`` ranks above ``0``.

NaN scores raise ``ValueError`` on concrete inputs (also concrete arrays
captured by a jitted function: the check runs on the host); under ``jit``
(where a data-dependent error is impossible) NaN ranks below every other
score. A sparsity outside ``[0, 1]`` (or NaN) raises ``ValueError`` when it is
a concrete number; a traced one cannot raise, and then keeps every unmasked
entry of its pool (prunes nothing, the mask is returned unchanged) rather than
clipping to a plausible-looking mask.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxprune._validate import check_mask_values, check_number, check_real_dtype
from jaxprune.tree import (
    PyTree,
    check_out_axis,
    check_same_structure,
    is_none,
    neuron_unview,
    neuron_view,
    path_str,
    resolve_prunable,
)

#: The named scopes; ``"N:M"`` strings (e.g. ``"2:4"``) are accepted too (:func:`check_scope`).
SCOPES = ("global", "layer", "neuron", "filter")
_NM = re.compile(r"(\d+):(\d+)")
# A traced sparsity within this distance of 1 - N/M selects the N:M pattern (float32 rounding of N/M).
_NM_TOL = 1e-6

_TOP_BIT = np.uint32(0x80000000)
_INF_BITS = np.uint32(0x7F800000)


@partial(jax.jit, static_argnames="largest")
def score_keys(x: jax.Array, valid: jax.Array | None = None, *, largest: bool = True) -> jax.Array:
    """Order-preserving ``uint32`` keys of scores (any shape, float/int/bool).

    Non-NaN float32 values map to ``[0x007FFFFF, 0xFF800000]`` monotonically
    (decreasingly if ``largest=False``); NaN maps to 1 and entries where
    ``valid`` is False to 0, so both rank below every real score.

    Only integer operations on the bit pattern: no float comparison, which
    XLA:CPU evaluates with subnormals flushed to zero (FTZ/DAZ), so e.g.
    ``1e-40`` ranks above ``0`` and below ``2e-40``. ``-0.0`` ties with ``+0.0``.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> keys = jp.masks.score_keys(jnp.array([1.0, -2.0, 0.5, jnp.nan]))
    >>> jnp.argsort(keys).tolist()    # keys sort like the scores; NaN ranks lowest
    [3, 1, 2, 0]
    """
    f = jnp.asarray(x).astype(jnp.float32)
    bits = lax.bitcast_convert_type(f, jnp.uint32)
    bits = jnp.where(bits == _TOP_BIT, jnp.uint32(0), bits)  # -0.0 -> +0.0
    key = jnp.where(bits >= _TOP_BIT, ~bits, bits | _TOP_BIT)
    if not largest:
        key = ~key
    key = jnp.where((bits & ~_TOP_BIT) > _INF_BITS, jnp.uint32(1), key)  # NaN
    if valid is not None:
        key = jnp.where(valid, key, jnp.uint32(0))
    return key


def _count_ge(key: jax.Array, t: jax.Array, axis: int | None = None) -> jax.Array:
    return jnp.sum(key >= t, axis=axis, dtype=jnp.int32)


def _bit(i: jax.Array) -> jax.Array:
    return jnp.right_shift(jnp.uint32(_TOP_BIT), i.astype(jnp.uint32))


_NB = 1 << 16  # bins of one 16-bit radix pass


def _find_bin(counts: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The bin ``b`` of the histogram ``counts`` (``_NB`` bins, digit order)
    holding the ``r``-th largest entry (``1 <= r <= counts.sum()``; ``r <= 0``
    gives the last bin), with the numbers of entries in bins ``>= b`` and
    ``> b``. Two levels of 256: block totals, then the one block, so only two
    256-long cumulative sums (a 65536-long one costs ~1 ms on CPU)."""
    blocks = counts.reshape(256, 256)
    blk = jnp.sum(blocks, axis=1, dtype=jnp.int32)
    blk_ge = jnp.cumsum(blk[::-1])[::-1]  # entries in blocks >= j: non-increasing
    j = jnp.sum(blk_ge >= r, dtype=jnp.int32) - 1
    row = lax.dynamic_index_in_dim(blocks, j, keepdims=False)
    row_ge = jnp.cumsum(row[::-1])[::-1] + (blk_ge[j] - blk[j])
    i = jnp.sum(row_ge >= r, dtype=jnp.int32) - 1
    return j * 256 + i, row_ge[i], row_ge[i] - row[i]


def _radix_kth(keys: list[jax.Array], k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The k-th largest key ``t`` over ``keys`` (``0 <= k <= total size``) with
    ``count(keys >= t)`` and ``count(keys > t)``, by two 16-bit radix passes: a
    65536-bin histogram (scatter-add) of the high halves picks the bucket
    holding the k-th key, a histogram of the low halves of that bucket's
    entries (the others are dropped) pinpoints it. ``k = 0`` gives
    ``t = 2**32 - 1``."""
    counts = jnp.zeros(_NB, jnp.int32)
    for key in keys:
        hi = (key.ravel() >> 16).astype(jnp.int32)
        counts = counts.at[hi].add(1, mode="promise_in_bounds")
    b_hi, _, gt_hi = _find_bin(counts, k)
    counts = jnp.zeros(_NB, jnp.int32)
    for key in keys:
        key = key.ravel()
        lo = jnp.where((key >> 16) == b_hi.astype(jnp.uint32), (key & (_NB - 1)).astype(jnp.int32), _NB)
        counts = counts.at[lo].add(1, mode="drop")
    b_lo, ge_lo, gt_lo = _find_bin(counts, k - gt_hi)
    t = (b_hi.astype(jnp.uint32) << 16) | b_lo.astype(jnp.uint32)
    return t, gt_hi + ge_lo, gt_hi + gt_lo


def _first_ties(keys: list[jax.Array], t: jax.Array, need: jax.Array) -> list[jax.Array]:
    """Masks ``keys > t``, plus the first ``need`` entries equal to ``t`` in the
    flat order of the concatenation (``1 <= need <= count(keys == t)``).

    The flat index of the ``need``-th tie is found without a full-length
    cumulative sum: each leaf is cut into blocks of ``B`` entries, one fused
    pass counts the ties per block, a cumulative sum over the (few) blocks
    picks the block holding it, and a ``B``-long one inside that block its
    position; the masks are then one elementwise pass comparing flat indices."""
    n = sum(int(key.size) for key in keys)
    width = 1 << max(7, min(13, (max(n, 1).bit_length() + 1) // 2))  # ~sqrt(n), in [128, 8192]
    ties, counts, starts = [], [], []
    start = 0
    for key in keys:
        rows = -(-int(key.size) // width)
        tie = jnp.pad(key.ravel() == t, (0, rows * width - key.size)).reshape(rows, width)
        ties.append(tie)
        counts.append(jnp.sum(tie, axis=1, dtype=jnp.int32))
        starts.append(start)
        start += rows
    counts = jnp.concatenate(counts)
    cum = jnp.cumsum(counts)
    g = jnp.sum(cum < need, dtype=jnp.int32)  # global block holding the need-th tie
    r = need - (cum[g] - counts[g])  # its rank among the ties of block g
    leaf = jnp.sum(g >= jnp.asarray(starts, jnp.int32), dtype=jnp.int32) - 1
    pos = jnp.int32(0)
    for i, (tie, s) in enumerate(zip(ties, starts, strict=True)):
        if tie.shape[0] == 0:  # empty leaf: no ties
            continue
        row = lax.dynamic_index_in_dim(tie, jnp.clip(g - s, 0, tie.shape[0] - 1), keepdims=False)
        pos = jnp.where(leaf == i, jnp.sum(jnp.cumsum(row, dtype=jnp.int32) < r, dtype=jnp.int32), pos)
    last = g * width + pos  # index of the need-th tie in the block-padded concatenation
    out = []
    for key, s in zip(keys, starts, strict=True):
        idx = jnp.arange(key.size, dtype=jnp.int32).reshape(key.shape)
        out.append((key > t) | ((key == t) & (idx <= last - s * width)))
    return out


def _select_pool(keys: list[jax.Array], k: jax.Array) -> list[jax.Array]:
    """Keep the ``k`` largest keys over all arrays of ``keys`` (one pool; keys 0
    are never kept, so all nonzero keys are kept when fewer than ``k``; ties ->
    lower flat index in the concatenation order)."""
    n = sum(int(key.size) for key in keys)
    if n == 0:  # e.g. one zero-size leaf in layer scope
        return [jnp.zeros(key.shape, bool) for key in keys]
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, n)
    t, c_ge, c_gt = _radix_kth(keys, k)
    # t == 0: fewer than k nonzero keys, all kept.
    return lax.cond(
        (c_ge == k) | (t == 0),
        lambda: [key >= jnp.maximum(t, 1) for key in keys],
        lambda: _first_ties(keys, t, k - c_gt),
    )


select_global = jax.jit(_select_pool)


@jax.jit
def select_columns(keys: list[jax.Array], ks: list[jax.Array]) -> list[jax.Array]:
    """Per-column top-k: ``keys[l]`` is ``(m_l, P_l)``, every column is its own
    pool keeping ``ks[l]`` (shape ``(P_l,)`` or scalar) entries; ties -> lower
    row. Single-column arrays (layer scope) take the radix path of
    :func:`select_global` each; one bisection loop serves all other arrays."""
    out: list[Any] = [None] * len(keys)
    multi = []
    for i, (key, k) in enumerate(zip(keys, ks, strict=True)):
        if key.shape[1] == 1:
            out[i] = _select_pool([key], jnp.reshape(jnp.asarray(k), ()))[0]
        else:
            multi.append(i)
    if not multi:
        return out
    keys, ks = [keys[i] for i in multi], [ks[i] for i in multi]
    ks = [
        jnp.minimum(jnp.broadcast_to(jnp.asarray(k, jnp.int32), key.shape[1:]), _count_ge(key, 1, 0))
        for key, k in zip(keys, ks, strict=True)
    ]

    def body(i: jax.Array, carry: tuple) -> tuple:
        ts, cs = carry
        new_t, new_c = [], []
        for key, k, t, c_t in zip(keys, ks, ts, cs, strict=True):
            cand = t | _bit(i)
            c = _count_ge(key, cand[None, :], 0)
            ok = c >= k
            new_t.append(jnp.where(ok, cand, t))
            new_c.append(jnp.where(ok, c, c_t))
        return new_t, new_c

    init = (
        [jnp.zeros(key.shape[1:], jnp.uint32) for key in keys],
        [jnp.full(key.shape[1:], key.shape[0], jnp.int32) for key in keys],
    )
    ts, cs = lax.fori_loop(0, 32, body, init)
    for i, key, k, t, c_t in zip(multi, keys, ks, ts, cs, strict=True):

        def with_ties(key: jax.Array = key, k: jax.Array = k, t: jax.Array = t) -> jax.Array:
            tie = key == t[None, :]
            need = k - jnp.sum(key > t[None, :], axis=0, dtype=jnp.int32)
            return (key > t[None, :]) | (tie & (jnp.cumsum(tie, axis=0, dtype=jnp.int32) <= need[None, :]))

        out[i] = lax.cond(jnp.all(c_t == k), lambda key=key, t=t: key >= t[None, :], with_ties)
    return out


def _is_scalar(x: Any) -> bool:
    return isinstance(x, int | float | np.number) or (hasattr(x, "ndim") and x.ndim == 0)


def _num_kept(sparsity: Any, n: int, name: str) -> jax.Array:
    """``round((1 - sparsity) * n)`` as int32: float64 on the host for concrete
    sparsities (``ValueError`` outside ``[0, 1]``), float32 on device for
    traced ones, where an out-of-range or NaN sparsity cannot raise: it keeps
    all ``n`` (prunes nothing) instead of a plausible-looking mask."""
    check_number(name, sparsity, low=0.0, high=1.0)
    if isinstance(sparsity, jax.core.Tracer):
        s = jnp.asarray(sparsity, jnp.float32)
        k = jnp.round((1.0 - jnp.clip(s, 0.0, 1.0)) * n).astype(jnp.int32)
        return jnp.where((s >= 0.0) & (s <= 1.0), k, jnp.int32(n))
    return jnp.int32(round((1.0 - float(sparsity)) * n))


def _check_no_nan(path: tuple, x: Any) -> None:
    """NaN check of a concrete score leaf, on the host (NumPy), so that it also
    works for concrete arrays captured by a function under ``jit``."""
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if arr.dtype.kind not in "fc" and arr.dtype.name not in ("bfloat16", "float16"):
        return
    if np.isnan(arr.astype(np.float32) if arr.dtype.kind != "c" else arr).any():
        raise ValueError(f"scores contain NaN at {path_str(path) or '<root>'}; scores must not be NaN")


def check_scope(scope: Any) -> tuple[int, int] | None:
    """Validate a :func:`topk` scope: one of :data:`SCOPES` (returns ``None``)
    or an ``"N:M"`` string with ``1 <= N <= M`` (returns ``(N, M)``);
    ``ValueError`` otherwise.

    >>> check_scope("2:4"), check_scope("neuron")
    ((2, 4), None)
    """
    if isinstance(scope, str):
        if scope in SCOPES:
            return None
        match = _NM.fullmatch(scope)
        if match:
            n, m = int(match[1]), int(match[2])
            if not 1 <= n <= m:
                raise ValueError(f"scope={scope!r}: N:M sparsity needs 1 <= N <= M, got N={n}, M={m}")
            return n, m
    raise ValueError(
        f"scope={scope!r} is not valid; expected one of {list(SCOPES)} or an 'N:M' string such as '2:4' "
        "(keep N of every M consecutive input entries, 1 <= N <= M)"
    )


def input_axis(ndim: int, out_axis: int) -> int:
    """The input (contracting) axis N:M groups run along, for a leaf with
    ``ndim >= 2`` axes whose output units lie on the non-negative axis
    ``out_axis``: ``ndim - 2`` when ``out_axis`` is last (flax ``(..., in, out)``),
    else ``out_axis + 1`` (equinox/PyTorch ``(out, in, ...)``).

    >>> input_axis(2, 1), input_axis(4, 3), input_axis(2, 0), input_axis(4, 0)
    (0, 2, 1, 1)
    """
    return ndim - 2 if out_axis == ndim - 1 else out_axis + 1


# Up to this group size, N:M ranks each entry against the others of its group
# (m compare passes); larger groups use the 32-round bisection of select_columns.
_NM_PAIRWISE_MAX = 32


@partial(jax.jit, static_argnames=("axis", "m"))
def _nm_pairwise(key: jax.Array, k: jax.Array, *, axis: int, m: int) -> jax.Array:
    """N:M selection in place, for small ``m``: the rank of each key in its group
    (the number of group members with a larger key, or an equal key at a lower
    index) is below ``k``; keys 0 (masked) are never kept. No transpose: the
    leaf is viewed as ``(before, in / m, m, after)`` and reshaped back."""
    shape = key.shape
    g = key.reshape(int(np.prod(shape[:axis])), shape[axis] // m, m, -1)
    pos = lax.broadcasted_iota(jnp.int32, g.shape, 2)
    rank = jnp.zeros(g.shape, jnp.int32)
    for j in range(m):
        other = g[:, :, j : j + 1, :]
        rank += ((other > g) | ((other == g) & (pos > j))).astype(jnp.int32)
    return ((rank < k) & (g > 0)).reshape(shape)


def _nm_view(x: jax.Array, axis: int, m: int) -> jax.Array:
    """``x`` as ``(m, groups)``: one column per group of ``m`` consecutive
    entries along ``axis`` (row = position in the group)."""
    x = jnp.moveaxis(x, axis, 0)
    groups = x.reshape(x.shape[0] // m, m, -1)  # (in / m, m, rest)
    return jnp.swapaxes(groups, 0, 1).reshape(m, -1)


def _nm_unview(cols: jax.Array, shape: tuple[int, ...], axis: int, m: int) -> jax.Array:
    """Inverse of :func:`_nm_view` for a leaf of ``shape``."""
    moved = (shape[axis], *(s for i, s in enumerate(shape) if i != axis))
    groups = jnp.swapaxes(cols.reshape(m, moved[0] // m, -1), 0, 1)
    return jnp.moveaxis(groups.reshape(moved), 0, axis)


def check_nm_sparsity(sparsity: Any, n: int, m: int) -> jax.Array:
    """Entries kept per group for the scope ``"n:m"``: ``n``. ``sparsity`` must be
    ``None`` or ``1 - n/m`` (to ``1e-6``): ``ValueError`` if concrete; a traced
    value that differs keeps all ``m`` (prunes nothing, as for any bad traced
    sparsity).

    >>> int(check_nm_sparsity(None, 2, 4)), int(check_nm_sparsity(0.5, 2, 4))
    (2, 2)
    """
    target = 1.0 - n / m
    if sparsity is None:
        return jnp.int32(n)
    if not _is_scalar(sparsity):
        raise ValueError(f"sparsity must be None or a scalar for an N:M scope, got {type(sparsity).__name__}")
    if isinstance(sparsity, jax.core.Tracer):
        s = jnp.asarray(sparsity, jnp.float32)
        return jnp.where(jnp.abs(s - target) <= _NM_TOL, jnp.int32(n), jnp.int32(m))
    check_number("sparsity", sparsity, low=0.0, high=1.0)
    if abs(float(sparsity) - target) > _NM_TOL:
        raise ValueError(
            f"sparsity={sparsity!r} does not match scope='{n}:{m}', which prunes 1 - N/M = {target:g} "
            "of every group: pass sparsity=None (or that value)"
        )
    return jnp.int32(n)


def as_bool_mask(m: Any) -> jax.Array:
    """A mask leaf as bool: a bool leaf as it is; a numeric one keeps only its
    entries equal to 1 (0/1 is checked where the leaf is concrete; a traced NaN
    or 0.5 entry counts as pruned, never as kept)."""
    m = jnp.asarray(m)
    return m if m.dtype == jnp.bool_ else m == 1


def topk(
    scores: PyTree,
    sparsity: Any,
    *,
    scope: str = "global",
    prunable: PyTree | None = None,
    mask: PyTree | None = None,
    largest: bool = True,
    params: PyTree | None = None,
    out_axis: int = -1,
) -> PyTree:
    """Keep the ``round((1 - sparsity) * n)`` highest-scoring entries of each pool.

    Args:
      scores: pytree of score arrays (param shapes; per-unit ``(out,)`` vectors
        for ``scope="filter"``). ``None`` leaves are not prunable.
      sparsity: fraction in ``[0, 1]`` pruned per pool: a Python/NumPy float or
        a (traced) jnp scalar; for ``scope="layer"`` also a pytree with the
        scores' structure holding one sparsity per prunable leaf. Outside
        ``[0, 1]`` or NaN: ``ValueError`` if concrete; if traced, that pool
        prunes nothing (see the module docstring). For an ``"N:M"`` scope the
        sparsity is implied (``1 - N/M``): pass ``None`` or that value (to
        ``1e-6``; another concrete value is a ``ValueError``, another traced
        value prunes nothing, so e.g. ``jp.optax.dpf(0.5, scope="2:4")``
        applies the 2:4 pattern at every mask update).
      scope: ``"global"`` | ``"layer"`` | ``"neuron"`` | ``"filter"`` | ``"N:M"``
        (module docstring).
      prunable: which leaves to select on (pytree of bools, or a mask); default:
        the non-``None`` leaves of ``mask`` if given, else
        :func:`jaxprune.tree.prunable` of ``params`` (filter) or ``scores``.
      mask: existing mask (bool leaves of the param shapes, ``None`` = not
        prunable); its ``False`` entries count as pruned and stay pruned.
        Numeric leaves must hold only 0/1 (else ``ValueError``; traced, an
        entry other than 1 counts as pruned).
      largest: ``True`` keeps the largest scores (prunes the lowest); ``False``
        keeps the smallest (prunes the highest, as in the AP2/AP3 study).
      params: for ``scope="filter"``: the params, whose leaf shapes the unit
        mask is expanded to (not needed when ``mask`` is given).
      out_axis: the axis of output units in every prunable leaf (Python int,
        default ``-1`` = last, flax layout; ``0`` for equinox/PyTorch layouts
        ``(out, in, ...)``). Used by ``"neuron"`` and ``"filter"`` (the units)
        and ``"N:M"`` (the grouped input axis is its neighbour, see the module
        docstring); no effect on ``"global"`` and ``"layer"``.

    Returns:
      A mask pytree with the scores' structure: bool arrays of the param
      shapes on prunable leaves, ``None`` elsewhere. Jittable (``scope``,
      ``prunable``, ``largest`` and ``out_axis`` are static).

    >>> import jax.numpy as jnp
    >>> w = {"kernel": jnp.array([[4., 1.], [3., 2.], [2., 3.], [1., 4.]]), "bias": None}
    >>> topk(w, 0.5, prunable={"kernel": True, "bias": False})["kernel"].astype(int).tolist()
    [[1, 0], [1, 0], [0, 1], [0, 1]]
    >>> topk(w, None, scope="1:2")["kernel"].astype(int).T.tolist()    # groups of 2 along the input axis 0
    [[1, 0, 1, 0], [0, 1, 0, 1]]
    >>> topk({"w": w["kernel"].T}, 0.5, scope="1:2", out_axis=0)["w"].astype(int).tolist()  # (out, in)
    [[1, 0, 1, 0], [0, 1, 0, 1]]
    """
    nm = check_scope(scope)
    if isinstance(out_axis, bool) or not isinstance(out_axis, int | np.integer):
        raise TypeError(f"out_axis must be a Python int (the axis of output units), got {out_axis!r}")
    if not isinstance(largest, bool | np.bool_):
        raise TypeError(f"largest must be a bool, got {largest!r}")
    if mask is not None:
        check_same_structure(scores, mask, "scores", "mask")
    if params is not None:
        check_same_structure(scores, params, "scores", "params")
    shapes_src = mask if mask is not None else params
    if scope == "filter" and shapes_src is None:
        raise ValueError('scope="filter" needs params= (or mask=) to know the full leaf shapes')
    if prunable is not None:
        check_same_structure(scores, prunable, "scores", "prunable")
    elif mask is not None:
        prunable = mask
    elif scope == "filter":
        prunable = resolve_prunable(params)
    flags = resolve_prunable(scores, prunable)

    flat, treedef = jax.tree.flatten_with_path(scores, is_leaf=is_none)
    flag_list = treedef.flatten_up_to(flags)
    mask_list = [None] * len(flat) if mask is None else treedef.flatten_up_to(mask)
    src_list = [None] * len(flat) if shapes_src is None else treedef.flatten_up_to(shapes_src)
    if nm is not None:
        k_nm = check_nm_sparsity(sparsity, *nm)
        sparsity_list = [sparsity] * len(flat)
    elif scope == "layer" and not _is_scalar(sparsity):
        check_same_structure(scores, sparsity, "scores", "sparsity")
        sparsity_list = treedef.flatten_up_to(sparsity)
    else:
        check_number("sparsity", sparsity, low=0.0, high=1.0)
        sparsity_list = [sparsity] * len(flat)

    chosen = []  # (position, name, scores, valid-or-None, full shape, sparsity, axis)
    for i, ((path, s), flag, m, src, sp) in enumerate(
        zip(flat, flag_list, mask_list, src_list, sparsity_list, strict=True)
    ):
        if not flag:
            continue
        name = path_str(path) or "<root>"
        if s is None:
            raise ValueError(f"scores leaf {name} is None but marked prunable")
        if not hasattr(s, "shape"):
            raise TypeError(f"scores leaf {name} must be an array, got {type(s).__name__}")
        check_real_dtype(f"scores leaf {name}", s)
        _check_no_nan(path, s)
        full_shape = tuple(jnp.shape(s) if scope != "filter" else jnp.shape(src))
        axis = None
        if scope == "filter" or scope == "neuron" or nm is not None:
            axis = check_out_axis(out_axis, full_shape, name) if full_shape else None
        if scope == "filter" and (jnp.ndim(s) != 1 or axis is None or full_shape[axis] != jnp.shape(s)[0]):
            want = "(out,)" if axis is None else f"(out,) = {(full_shape[axis],)}"
            raise ValueError(
                f'scope="filter" needs per-unit scores of shape {want} at {name}, '
                f"got {jnp.shape(s)} for a leaf of shape {full_shape} (out_axis={out_axis})"
            )
        if nm is not None:
            if len(full_shape) < 2:
                raise ValueError(
                    f"scope={scope!r} needs leaves with ndim >= 2, got {name} of shape {full_shape}"
                )
            axis = input_axis(len(full_shape), axis)
            if full_shape[axis] % nm[1]:
                raise ValueError(
                    f"scope={scope!r}: M={nm[1]} does not divide the input axis {axis} (size "
                    f"{full_shape[axis]}) of the leaf {name} of shape {full_shape} (out_axis={out_axis})"
                )
        if m is not None and tuple(jnp.shape(m)) != full_shape:
            raise ValueError(f"mask leaf {name} has shape {jnp.shape(m)}, expected {full_shape}")
        if m is not None:
            check_mask_values(f"mask leaf {name}", m)
        if sp is None and nm is None:
            raise ValueError(f"sparsity has no value for the prunable leaf {name}")
        valid = None if m is None else as_bool_mask(m)
        chosen.append((i, name, s, valid, full_shape, sp, axis))

    result: list[Any] = [None] * len(flat)
    if not chosen:
        return jax.tree.unflatten(treedef, result)

    if scope in ("global", "filter"):
        if scope == "filter":
            units = [None if c[3] is None else jnp.any(neuron_view(c[3], c[6]), axis=0) for c in chosen]
        else:
            units = [c[3] for c in chosen]
        keys = [score_keys(c[2], u, largest=largest) for c, u in zip(chosen, units, strict=True)]
        n = sum(int(key.size) for key in keys)
        kept = select_global(keys, _num_kept(sparsity, n, "sparsity"))
        for (i, _, _, valid, shape, _, axis), keep in zip(chosen, kept, strict=True):
            if scope == "filter":
                unit_shape = [-1 if a == axis else 1 for a in range(len(shape))]
                keep = jnp.broadcast_to(keep.reshape(unit_shape), shape)
            result[i] = keep if valid is None else keep & valid
        return jax.tree.unflatten(treedef, result)

    keys, ks, rest = [], [], []
    for i, name, s, valid, shape, sp, axis in chosen:
        key = score_keys(s, valid, largest=largest)
        if scope == "layer":
            keys.append(key.reshape(-1, 1))
            ks.append(_num_kept(sp, int(key.size), f"sparsity[{name}]"))
        elif nm is not None:
            if nm[1] <= _NM_PAIRWISE_MAX:
                result[i] = _nm_pairwise(key, k_nm, axis=axis, m=nm[1])
                continue
            keys.append(_nm_view(key, axis, nm[1]))
            ks.append(k_nm)
        else:
            keys.append(neuron_view(key, out_axis))
            ks.append(_num_kept(sp, int(keys[-1].shape[0]), "sparsity"))
        rest.append((i, shape, axis))
    for (i, shape, axis), keep in zip(rest, select_columns(keys, ks) if keys else [], strict=True):
        if nm is not None:
            result[i] = _nm_unview(keep, shape, axis, nm[1])
        elif scope == "neuron" and shape:
            result[i] = neuron_unview(keep, shape, out_axis)
        else:
            result[i] = keep.reshape(shape)
    return jax.tree.unflatten(treedef, result)
