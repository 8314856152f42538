"""SAP, Sparsity-informed Adaptive Pruning (Diao et al., ICLR 2023), and its
stopping rule.

One SAP round on the unmasked weights of each pool (``scope``: ``"global"`` =
all prunable leaves as one pool, ``"layer"`` = each leaf, ``"neuron"`` = each
output unit: each index of the axis ``out_axis`` of a leaf, by default the LAST
axis (flax); ``out_axis=0`` for equinox/PyTorch ``(out, in, ...)`` layouts):

1. the PQ Index ``I`` of the pool (:func:`jaxprune.measures.pq_index`);
2. the PQI-bound on the weights to retain (Theorem 2,
   :func:`jaxprune.measures.pqi_bound`):
   ``r = ceil(d (1 + eta_r)^(-q/(q-p)) (1 - I)^(qp/(q-p)))``, ``d`` = unmasked count;
3. the number to prune ``c = floor(d * clip(gamma (1 - r/d), 0, beta))``;
4. the ``c`` smallest-magnitude unmasked weights of the pool are pruned
   (ties: the lower flat index survives, as in :func:`jaxprune.masks.topk`).

The counts are data dependent, so the selection uses the dynamic-count,
sort-free bisection of :mod:`jaxprune.masks.select`; the whole round is one
jitted computation (``p``, ``q`` and ``scope`` static).

The stopping rule (the paper's "future work", Appendix A) is
:class:`StopRule`: stop when the PQ Index has risen ``rise_rounds`` rounds in
a row, or when the last round pruned fewer than ``min_ratio`` of the
remaining weights.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxprune import _validate
from jaxprune.masks.select import as_bool_mask, score_keys, select_columns, select_global
from jaxprune.measures import _scope, pq_index, pqi_bound
from jaxprune.tree import (
    PyTree,
    check_mask_shapes,
    check_out_axis,
    check_same_structure,
    full_mask,
    is_none,
    neuron_unview,
    neuron_view,
    resolve_prunable,
)

SCOPES = ("global", "layer", "neuron")
# beta * d and gamma * (d - r) are formed in float32: a product within this
# relative distance BELOW an integer is taken as that integer before the floor
# (so 0.9 * 1000 is 900 whatever float32 rounding does to 0.9).
_FLOOR_GUARD = 2.0**-22


class SapRecord(NamedTuple):
    """Per-pool quantities of one SAP round, each with the structure of
    :func:`jaxprune.measures.pq_index` for the scope (scalar / pytree of
    scalars with ``None`` on non-prunable leaves / pytree of ``(units,)``
    vectors).

    ``pqi``: PQ Index of the unmasked weights (float32); ``r``: PQI-bound on
    the weights to retain (int32); ``c``: weights pruned this round (int32);
    ``d``: unmasked weights before the round (int32).

    ``valid``: bool scalar, whether the round was carried out. It is False
    only under ``jit`` (on concrete inputs the same conditions raise
    ``ValueError``), when some param is NaN/inf or a traced ``eta_r``,
    ``gamma`` or ``beta`` is outside its range (or NaN); then NOTHING is
    pruned: ``c`` is 0 in every pool and the mask comes back unchanged, while
    ``pqi`` is NaN and ``r`` is -1 in the pools holding a non-finite unmasked
    weight (-1 everywhere for a bad ``eta_r``)."""

    pqi: PyTree
    r: PyTree
    c: PyTree
    d: PyTree
    valid: Any = True


def _floor_guarded(x: jax.Array) -> jax.Array:
    """``floor(x)`` for ``x >= 0``, rounding up values just below an integer (see ``_FLOOR_GUARD``)."""
    f = jnp.floor(x)
    bump = (x > f) & (x >= (f + 1.0) * (1.0 - _FLOOR_GUARD))
    return f + bump


def sap_counts(d: jax.Array, r: jax.Array, gamma: Any = 1.0, beta: Any = 0.9) -> jax.Array:
    """SAP's pruned count ``c = floor(d * clip(gamma (1 - r/d), 0, beta))`` (int32).

    ``d`` (unmasked weights) and ``r`` (PQI-bound, ``r <= d``) are int arrays
    of any matching shape; ``d == 0`` gives 0. Computed without division as
    ``min(floor(gamma (d - r)), floor(beta d))`` clipped to ``[0, d]``, which is
    exact for the default ``gamma = 1``. A negative ``r`` (the -1 that
    :func:`jaxprune.measures.pqi_bound` gives for a non-finite pool) and a
    NaN product (traced NaN ``gamma``/``beta``) give 0: nothing is pruned.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> d, r = jnp.array([100, 100, 0]), jnp.array([40, 95, 0])   # unmasked weights, PQI-bound
    >>> jp.sap.sap_counts(d, r).tolist()     # floor(d * min(1 - r/d, 0.9)): 60, 5; an empty pool prunes 0
    [60, 5, 0]
    """
    d = jnp.asarray(d, jnp.int32)
    r = jnp.asarray(r)
    df = d.astype(jnp.float32)
    by_bound = _floor_guarded(jnp.asarray(gamma, jnp.float32) * (df - r.astype(jnp.float32)))
    by_beta = _floor_guarded(jnp.asarray(beta, jnp.float32) * df)
    c = jnp.clip(jnp.minimum(by_bound, by_beta), 0.0, df)
    return jnp.where(jnp.isnan(c) | (r < 0), 0.0, c).astype(jnp.int32)


def _pools(tree: PyTree, flags: list[bool]) -> list[Any]:
    """The prunable leaves of ``tree`` (the flagged ones), in leaf order."""
    leaves = jax.tree.leaves(tree, is_leaf=is_none)
    return [x for x, f in zip(leaves, flags, strict=True) if f]


def _check_counts(
    name: str,
    counts: PyTree,
    scope: str,
    shapes: list[tuple[int, ...]],
    flags: list[bool],
    out_axis: int = -1,
):
    if scope == "global":
        if jnp.ndim(counts) != 0:
            raise ValueError(f"{name} must be a scalar for scope='global', got shape {jnp.shape(counts)}")
        return [counts]
    per_pool = _pools(counts, flags)
    if len(per_pool) != len(shapes):
        raise ValueError(f"{name} must have one entry per prunable leaf ({len(shapes)}), got {len(per_pool)}")
    for k, shape in zip(per_pool, shapes, strict=True):
        want = () if scope == "layer" else (shape[out_axis],)
        if k is None or tuple(jnp.shape(k)) != want:
            raise ValueError(
                f"{name} leaves must have shape {want} for scope={scope!r} (leaf shape {shape}), "
                f"got {None if k is None else tuple(jnp.shape(k))}"
            )
    return per_pool


@functools.partial(jax.jit, static_argnames=("scope", "out_axis"))
def prune_smallest(
    params: PyTree, mask: PyTree, counts: PyTree, *, scope: str = "global", out_axis: int = -1
) -> PyTree:
    """Prune the ``counts`` smallest-magnitude UNMASKED weights of every pool.

    Args:
      params: the weights (any pytree); prunable leaves are the non-``None``
        leaves of ``mask``.
      mask: bool arrays of the leaf shapes (``False`` = already pruned, stays
        pruned) or ``None`` (leaf not prunable).
      counts: int number to prune per pool: a scalar (``"global"``), a pytree
        of scalars with ``None`` on non-prunable leaves (``"layer"``) or of
        ``(units,)`` vectors (``"neuron"``); may be traced. Counts beyond the
        unmasked size of a pool prune the whole pool.
      scope: ``"global"`` | ``"layer"`` | ``"neuron"``.
      out_axis: the axis of output units of every prunable leaf (neuron
        scope; default the last; ``0`` for equinox/PyTorch layouts).

    Returns the new mask (same structure; ``None`` leaves kept). Ties in
    magnitude: the lower flat index survives. Jitted (``scope`` and
    ``out_axis`` static), no sort.

    >>> import jax.numpy as jnp
    >>> w, m = {"k": jnp.array([[3., 1.], [2., 4.]])}, {"k": jnp.ones((2, 2), bool)}
    >>> prune_smallest(w, m, {"k": jnp.array([1, 0])}, scope="neuron")["k"].astype(int).tolist()
    [[1, 1], [0, 1]]
    >>> prune_smallest(w, m, {"k": jnp.array([1, 0])}, scope="neuron", out_axis=0)["k"].astype(int).tolist()
    [[1, 0], [1, 1]]
    """
    _validate.check_choice("scope", scope, SCOPES)
    check_same_structure(params, mask)
    flags = jax.tree.leaves(resolve_prunable(params, mask), is_leaf=is_none)
    weights, masks = _pools(params, flags), _pools(mask, flags)
    shapes = [tuple(jnp.shape(w)) for w in weights]
    for w, m in zip(weights, masks, strict=True):
        if tuple(jnp.shape(m)) != tuple(jnp.shape(w)):
            raise ValueError(f"mask leaf of shape {jnp.shape(m)} does not match param shape {jnp.shape(w)}")
        if scope == "neuron":
            check_out_axis(out_axis, tuple(jnp.shape(w)))
    per_pool = _check_counts("counts", counts, scope, shapes, flags, out_axis)
    keys = [score_keys(jnp.abs(w), jnp.asarray(m, bool)) for w, m in zip(weights, masks, strict=True)]
    alive = [jnp.asarray(m, bool) for m in masks]
    if not keys:
        return mask
    if scope == "global":
        d = sum(jnp.sum(a, dtype=jnp.int32) for a in alive)
        kept = select_global(keys, jnp.maximum(d - jnp.asarray(per_pool[0], jnp.int32), 0))
    elif scope == "layer":
        ks = [jnp.maximum(jnp.sum(a, dtype=jnp.int32) - jnp.asarray(c, jnp.int32), 0) for a, c in
              zip(alive, per_pool, strict=True)]
        kept = select_columns([k.reshape(-1, 1) for k in keys], [k.reshape(1) for k in ks])
    else:
        units = [jnp.sum(neuron_view(a, out_axis), axis=0, dtype=jnp.int32) for a in alive]
        ks = [jnp.maximum(d - jnp.asarray(c, jnp.int32), 0) for d, c in zip(units, per_pool, strict=True)]
        kept = select_columns([neuron_view(k, out_axis) for k in keys], ks)
        kept = [neuron_unview(k, s, out_axis) for k, s in zip(kept, shapes, strict=True)]
    kept_iter = iter(k.reshape(s) for k, s in zip(kept, shapes, strict=True))
    leaves, treedef = jax.tree.flatten(mask, is_leaf=is_none)
    out = [next(kept_iter) if f else m for m, f in zip(leaves, flags, strict=True)]
    return jax.tree.unflatten(treedef, out)


def unmasked_counts(mask: PyTree, scope: str = "global", out_axis: int = -1) -> PyTree:
    """``d`` per pool: the number of ``True`` entries of ``mask`` (int32; a scalar /
    pytree of scalars / pytree of ``(units,)`` vectors for global / layer / neuron,
    the units on axis ``out_axis``).

    >>> import jax.numpy as jnp
    >>> unmasked_counts({"k": jnp.array([[True, False], [True, True]])}, "neuron", out_axis=0)["k"].tolist()
    [1, 2]
    """
    _validate.check_choice("scope", scope, SCOPES)
    if scope == "global":
        return sum((jnp.sum(m, dtype=jnp.int32) for m in jax.tree.leaves(mask)), jnp.int32(0))
    if scope == "layer":
        return jax.tree.map(lambda m: jnp.sum(m, dtype=jnp.int32), mask)
    return jax.tree.map(lambda m: jnp.sum(neuron_view(m, out_axis), axis=0, dtype=jnp.int32), mask)


def _all_finite(params: PyTree) -> jax.Array:
    """Whether every float leaf of ``params`` is free of NaN/inf (bool scalar)."""
    ok = jnp.bool_(True)
    for leaf in jax.tree.leaves(params):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            ok &= jnp.all(jnp.isfinite(leaf))
    return ok


@functools.partial(jax.jit, static_argnames=("p", "q", "scope", "out_axis"))
def _prune_round(params, mask, eta_r, gamma, beta, *, p, q, scope, out_axis):
    # pq_index and pqi_bound share their power sums: under this jit XLA computes them once.
    pqi = pq_index(params, p, q, mask=mask, scope=scope, out_axis=out_axis)
    r = pqi_bound(params, p, q, eta_r, mask=mask, scope=scope, out_axis=out_axis)
    d = unmasked_counts(mask, scope, out_axis)
    # Under an outer jit the argument checks of prune_round cannot run: a round
    # on non-finite params or with out-of-range hyperparameters prunes nothing.
    eta_r, gamma, beta = (jnp.asarray(x, jnp.float32) for x in (eta_r, gamma, beta))
    valid = _all_finite(params) & (eta_r >= 0) & (gamma >= 0) & (beta >= 0) & (beta <= 1)
    c = jax.tree.map(lambda d_, r_: jnp.where(valid, sap_counts(d_, r_, gamma, beta), 0), d, r)
    pruned = prune_smallest(params, mask, c, scope=scope, out_axis=out_axis)
    new_mask = jax.tree.map(lambda n, m: jnp.where(valid, n, m), pruned, mask)
    return new_mask, SapRecord(pqi=pqi, r=r, c=c, d=d, valid=valid)


def prune_round(
    params: PyTree,
    mask: PyTree | None,
    *,
    p: float = 0.5,
    q: float = 1.0,
    eta_r: float = 0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
    scope: str = "global",
    prunable: PyTree | None = None,
    out_axis: int = -1,
) -> tuple[PyTree, SapRecord]:
    """One SAP pruning round: PQ Index -> PQI-bound ``r`` -> count ``c`` -> prune.

    Args:
      params: the trained weights (any pytree of arrays).
      mask: the current mask (bool leaves of the param shapes, ``False`` =
        pruned; ``None`` leaves are not prunable), or ``None`` for an all-kept
        mask over ``prunable``.
      p: PQ Index exponent, ``0 < p < q`` (static). Paper settings:
        ``(p, q) = (0.5, 1)`` (default) and ``(1, 2)``.
      q: PQ Index exponent, ``q > p`` (static).
      eta_r: ``>= 0``, the Theorem-2 slack; larger prunes more.
      gamma: ``>= 0``, scales the PQI-suggested pruning ratio ``1 - r/d``.
      beta: in ``[0, 1]``, the cap on the fraction of a pool pruned per round.
      scope: ``"global"`` (one pool) | ``"layer"`` (per leaf) | ``"neuron"``
        (per output unit = last axis).
      prunable: used only when ``mask`` is ``None`` (default filter: kernels).
      out_axis: the axis of output units of every prunable leaf, for
        ``scope="neuron"`` (Python int; default ``-1``, the last, as in flax;
        ``0`` for equinox/PyTorch ``(out, in, ...)`` layouts).

    Returns:
      ``(new_mask, record)``: the mask with ``c`` more entries pruned per
      pool, and a :class:`SapRecord` of ``pqi``, ``r``, ``c``, ``d`` per pool
      and ``valid`` (device arrays). Jittable: ``eta_r``, ``gamma`` and
      ``beta`` may be traced; the counts are computed on device (no host
      round trip).

    Raises ``ValueError`` for invalid arguments and NaN/inf params. Under
    ``jit`` (traced params or hyperparameters) these cannot raise: the round
    then prunes nothing and says so with ``record.valid == False`` (see
    :class:`SapRecord`).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> w = jnp.array([[4.0, 3.0], [2.0, 1.0], [0.5, 0.25], [0.1, 0.05]])
    >>> mask, record = jp.sap.prune_round({"kernel": w, "bias": jnp.zeros(2)}, None)
    >>> int(record.d), int(record.r), int(record.c)     # 8 weights, PQI-bound r, c = d - r pruned
    (8, 6, 2)
    >>> mask["kernel"].astype(int).tolist(), mask["bias"]
    ([[1, 1], [1, 1], [1, 1], [0, 0]], None)
    """
    _validate.check_p_q(p, q)
    _validate.check_number("eta_r", eta_r, low=0.0)
    _validate.check_number("gamma", gamma, low=0.0)
    _validate.check_number("beta", beta, low=0.0, high=1.0)
    _validate.check_choice("scope", scope, SCOPES)
    if mask is None:
        mask = full_mask(params, prunable)
    else:
        check_mask_shapes(params, mask)  # structure, shapes, bool or 0/1 values
        mask = jax.tree.map(as_bool_mask, mask)
    _scope.check_all_finite("params", params)
    if isinstance(out_axis, bool) or not isinstance(out_axis, int):
        raise TypeError(f"out_axis must be a Python int (the axis of output units), got {out_axis!r}")
    return _prune_round(
        params, mask, eta_r, gamma, beta, p=float(p), q=float(q), scope=scope,
        out_axis=int(out_axis) if scope == "neuron" else -1,
    )


@dataclass(frozen=True)
class StopRule:
    """When to stop iterative pruning (the paper's Appendix A future work).

    ``rise_rounds``: stop once the PQ Index rose in each of the last
    ``rise_rounds`` consecutive rounds (``pqi[t] > pqi[t-1]``), i.e. the
    sparsity of the surviving weights has turned up; 0 disables this test.
    ``min_ratio``: stop once the last round pruned a fraction ``c/d`` of the
    remaining weights below ``min_ratio`` (SAP's bound says little is left to
    prune); 0 disables it."""

    rise_rounds: int = 3
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        _validate.check_number("rise_rounds", self.rise_rounds, low=0)
        if int(self.rise_rounds) != self.rise_rounds:
            raise ValueError(f"rise_rounds={self.rise_rounds!r} must be an integer >= 0")
        _validate.check_number("min_ratio", self.min_ratio, low=0.0, high=1.0)

    def check(self, pqi: Sequence[float], ratios: Sequence[float]) -> str | None:
        """The reason to stop after the last round, or ``None``.

        ``pqi``: the PQ Index of each round so far (host floats, oldest
        first); ``ratios``: the fraction of remaining weights each round
        pruned.

        >>> import jax.numpy as jnp
        >>> import jaxprune as jp
        >>> rule = jp.sap.StopRule(rise_rounds=2, min_ratio=0.01)
        >>> rule.check([0.30, 0.28, 0.29], [0.2, 0.2, 0.2]) is None    # one rise only
        True
        >>> rule.check([0.30, 0.28, 0.29, 0.31], [0.2, 0.2, 0.2, 0.2])
        'PQ Index rose 2 rounds in a row (0.28 -> 0.31)'
        >>> rule.check([0.30, 0.28], [0.2, 0.005])
        'pruning ratio 0.005 < min_ratio=0.01'
        """
        k = int(self.rise_rounds)
        if k and len(pqi) > k and all(pqi[-i] > pqi[-i - 1] for i in range(1, k + 1)):
            return f"PQ Index rose {k} rounds in a row ({pqi[-k - 1]:.4g} -> {pqi[-1]:.4g})"
        if self.min_ratio and ratios and ratios[-1] < self.min_ratio:
            return f"pruning ratio {ratios[-1]:.4g} < min_ratio={self.min_ratio:g}"
        return None
