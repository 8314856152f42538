"""Sparsity measures of weight pools: lq norm, PQ Index, PQI-bound, sparsity
index (ABP), Gini index and Hoyer measure.

All pytree measures take ``(params, *, mask, scope, prunable)`` with the scope
semantics of :mod:`jaxprune.measures._scope`: ``"global"`` -> scalar,
``"layer"`` -> pytree of scalars (``None`` on non-prunable leaves),
``"neuron"`` -> pytree of ``(units,)`` vectors. A plain array ``params`` is one
prunable leaf whatever its ``ndim``. Masked-out entries are excluded from the
pool (``d`` counts unmasked entries). Inputs of any float dtype (bf16, float16)
are computed in float32. Everything is jittable; argument checks run at trace
time, and the NaN check only on concrete (non-traced) inputs.

Numerics of the power means
---------------------------
The PQ Index, SI, Hoyer and lq norm all reduce to generalized means
``G_e = log (mean |w|^e)^(1/e)`` of a pool, for two exponents. The common case
is ONE pass over the data: the unscaled sums ``S_e = sum |w|^e`` (plus the
unmasked count when masked), with ``|w|^e`` special-cased to
``abs``/``sqrt``/products for e in {0.25, 0.5, 1, 1.5, 2, 3, 4} and
``exp(e * log|w|)`` otherwise. The sums are exact to float32 rounding unless
a term overflowed (then ``S_e`` is inf) or the dominant terms underflowed; the
latter cannot matter when ``S_e >= 2^24 * d * tiny`` (tiny = smallest normal
float32, ~1.2e-38), since terms that flush to zero lose less than
``d * tiny <= 2^-24 S_e``. So each pool is checked after the pass:
``S_e`` finite and ``>= 2^24 d tiny`` for both exponents, or an all-zero pool
(``S_e == 0`` for the smaller exponent when it is <= 1, because ``a^e >= a``
for normal ``a <= 1``). Only if some pool fails (entries beyond ~1e±30 at
q = 1, ~1e±3 at q = 10), a ``lax.cond`` branch recomputes everything scaled by
the pool max ``M`` in log space: ``sum exp(e (log|w| - log M))`` has terms <= 1
(no overflow, and the max term is 1), and underflowing terms are < 1e-38 each,
negligible against 1 for any d <= 1e8 (two more passes: max, then sums).
Finally ``log(S_e / d) / e`` is formed on scalars, so the PQ Index
``1 - exp(G_p - G_q)`` is exact to float32 rounding, amplified by at most 1/p
through the 1/p-th root, for 0 < p < q, d < 2^31 and any finite entries.
Sums are accumulated in float32 by XLA (pairwise/vectorized on CPU).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxprune import _validate
from jaxprune.measures import _scope
from jaxprune.tree import PyTree

_F32 = jnp.finfo(jnp.float32)
_LOG_TINY = math.log(float(_F32.tiny)) + 24 * math.log(2.0)  # flushed terms < 2^-24 of the sum


def _abs_alt(x: jax.Array) -> jax.Array:
    # |x| spelled differently from jnp.abs: a shared abs would be materialized
    # by XLA:CPU instead of being fused into each reduction.
    return jnp.maximum(x, -x)


# |x|^e for signed x without a transcendental for these exponents.
_CHEAP_POWERS: dict[float, Callable[[jax.Array], jax.Array]] = {
    0.25: lambda x: jnp.sqrt(jnp.sqrt(_abs_alt(x))),
    0.5: lambda x: jnp.sqrt(_abs_alt(x)),
    1.0: jnp.abs,
    1.5: lambda x: _abs_alt(x) * jnp.sqrt(_abs_alt(x)),
    2.0: lambda x: x * x,
    3.0: lambda x: _abs_alt(x) * x * x,
    4.0: lambda x: (x * x) * (x * x),
}


def _power(x: jax.Array, e: float) -> jax.Array:
    """``|x| ** e`` (0 ** e = 0), cheap for the exponents above."""
    cheap = _CHEAP_POWERS.get(float(e))
    return cheap(x) if cheap is not None else jnp.exp(e * jnp.log(jnp.abs(x)))


def _sum_pools(stats: list[tuple], combine: bool) -> list[tuple]:
    """Add up per-leaf ``(d, sums)`` into one pool when ``combine``."""
    if not combine:
        return stats
    d = sum((s[0] for s in stats), jnp.int32(0))
    sums = tuple(sum((s[1][i] for s in stats), jnp.float32(0)) for i in range(len(stats[0][1])))
    return [(d, sums)]


def _log_means(
    leaves: Sequence[jax.Array],
    masks: Sequence[jax.Array | None],
    view: Callable[[jax.Array, jax.Array | None], tuple[jax.Array, jax.Array | None]],
    exponents: tuple[float, ...],
    axis: int,
    combine: bool,
) -> list[tuple[jax.Array, jax.Array, tuple[jax.Array, ...]]]:
    """Per pool ``(d, nonzero, (G_e for e in exponents))``: unmasked count
    (int32), whether any unmasked entry is nonzero, and the log generalized
    means ``G_e = log(mean |w|^e) / e`` (meaningless where ``nonzero`` is False).

    ``view(leaf, mask)`` gives the float32 values and bool mask, reduced
    along ``axis``; it is applied inside each pass so that nothing is
    materialized. With ``combine`` all leaves form one pool (global scope).
    See the module docstring for the numerics."""

    def masked_view(x, m):
        x, m = view(x, m)
        return (x, m) if m is None else (jnp.where(m, x, 0.0), m)

    def count(x, m):
        if m is None:
            return jnp.full(x.shape[: axis % x.ndim] + x.shape[axis % x.ndim + 1 :], x.shape[axis], jnp.int32)
        return jnp.sum(m, axis=axis, dtype=jnp.int32)

    views = [masked_view(x, m) for x, m in zip(leaves, masks, strict=True)]
    stats = [(count(x, m), tuple(jnp.sum(_power(x, e), axis=axis) for e in exponents)) for x, m in views]
    pools = _sum_pools(stats, combine)
    e_min = min(exponents)

    def safe(d: jax.Array, sums: tuple[jax.Array, ...]) -> jax.Array:
        floor = jnp.exp(_LOG_TINY) * d.astype(jnp.float32)
        ok = jnp.ones(d.shape, bool)
        for s in sums:
            ok &= jnp.isfinite(s) & (s >= floor)
        # sum |w|^e_min == 0 with e_min <= 1 means all entries are 0 (a^e >= a for normal a <= 1).
        zero = (d == 0) | ((sums[exponents.index(e_min)] == 0) if e_min <= 1.0 else False)
        return jnp.all(ok | zero)

    all_safe = jnp.all(jnp.stack([safe(d, sums) for d, sums in pools]))

    def direct():
        out = []
        for d, sums in pools:
            df = d.astype(jnp.float32)
            logs = tuple(jnp.log(s / df) / e for s, e in zip(sums, exponents, strict=True))
            out.append((sums[exponents.index(e_min)] > 0, logs))
        return out

    def rescaled():
        bigs = [jnp.max(jnp.abs(x), axis=axis, initial=0.0) for x, _ in views]
        if combine:
            big = jnp.max(jnp.stack(bigs))
            bigs = [big] * len(bigs)
        stats = []
        for (x, m), big in zip(views, bigs, strict=True):
            log_big = jnp.log(jnp.expand_dims(jnp.where(big > 0, big, 1.0), axis))
            log_r = jnp.log(jnp.abs(x)) - log_big  # <= 0: the terms below cannot overflow
            stats.append((count(x, m), tuple(jnp.sum(jnp.exp(e * log_r), axis=axis) for e in exponents)))
        pool_bigs = bigs[:1] if combine else bigs
        out = []
        for (d, sums), big in zip(_sum_pools(stats, combine), pool_bigs, strict=True):
            df = d.astype(jnp.float32)
            logs = tuple(jnp.log(s / df) / e + jnp.log(big) for s, e in zip(sums, exponents, strict=True))
            out.append((big > 0, logs))
        return out

    result = jax.lax.cond(all_safe, direct, rescaled)
    return [(d, nonzero, g) for (d, _), (nonzero, g) in zip(pools, result, strict=True)]


@functools.partial(jax.jit, static_argnames=("exponents", "scope", "finalize"))
def _pooled(values, masks, extra, *, exponents, scope, finalize):
    """Power means per pool, then ``finalize(d, nonzero, G, exponents, *extra)`` per pool."""
    combine = scope == "global"
    if combine and not values:
        values, masks = [jnp.zeros((0,), jnp.float32)], [None]
    view = functools.partial(_scope.pool_view, scope=scope)
    pools = _log_means(values, masks, view, exponents, 0, combine)
    return [finalize(d, nonzero, g, exponents, *extra) for d, nonzero, g in pools]


def _run(params, mask, prunable, scope, exponents, finalize, extra=(), name="params") -> PyTree:
    pools = _scope.gather(params, mask, prunable, scope, name=name)
    out = _pooled(
        pools.values, pools.masks, tuple(extra), exponents=exponents, scope=scope, finalize=finalize
    )
    return out[0] if scope == "global" else _scope.scatter(pools, out)


def _ceil_guarded(log_x: jax.Array) -> jax.Array:
    """``ceil(exp(log_x))`` that rounds values within 1e-5 relative above an
    integer down to it (float32 rounding of an exact integer must not add 1)."""
    return jnp.ceil(jnp.exp(log_x) * (1.0 - 1e-5))


# ----------------------------------------------------------------------------- lq norm


def _lq_final(d, nonzero, g, exponents):
    (q,) = exponents
    return jnp.where(nonzero, jnp.exp(jnp.log(d.astype(jnp.float32)) / q + g[0]), 0.0)


def lq_norm(x: jax.Array, q: float) -> jax.Array:
    """``||x||_q = (sum |x|^q)^(1/q)`` over all entries of one array (a quasi-norm
    for 0 < q < 1). Float32 scalar; no overflow for any finite input."""
    _validate.check_number("q", q, low=0.0, low_open=True)
    return _run(jnp.asarray(x), None, None, "layer", (float(q),), _lq_final, name="x")


# ----------------------------------------------------------------------------- PQ Index


def _pq_final(d, nonzero, g, exponents):
    return jnp.where(nonzero, jnp.maximum(-jnp.expm1(g[0] - g[1]), 0.0), 0.0)  # I >= 0 (Hölder)


def pq_index(
    params: PyTree,
    p: float = 0.5,
    q: float = 1.0,
    *,
    mask: PyTree | None = None,
    scope: str = "global",
    prunable: PyTree | None = None,
) -> PyTree:
    """PQ Index ``I = 1 - d^(1/q - 1/p) ||w||_p / ||w||_q`` for ``0 < p < q``
    (Diao et al. 2023), in ``[0, 1 - d^(1/q - 1/p)]``; larger = sparser.

    ``d`` counts unmasked entries; an empty (all-masked) or all-zero pool
    gives 0. Returns a float32 scalar / pytree of scalars / pytree of
    ``(units,)`` vectors for scope global / layer / neuron. ``p`` and ``q``
    are static (Python numbers)."""
    _validate.check_p_q(p, q)
    return _run(params, mask, prunable, scope, (float(p), float(q)), _pq_final)


def _bound_final(d, nonzero, g, exponents, eta_r):
    p, q = exponents
    log_ratio = jnp.where(nonzero, g[0] - g[1], 0.0)  # log(1 - I); all-zero pool: I = 0
    log_r = jnp.log(d.astype(jnp.float32)) - q / (q - p) * jnp.log1p(eta_r) + q * p / (q - p) * log_ratio
    r = jnp.clip(_ceil_guarded(log_r), 1.0, d.astype(jnp.float32))
    return jnp.where(d > 0, r, 0.0).astype(jnp.int32)


def pqi_bound(
    params: PyTree,
    p: float = 0.5,
    q: float = 1.0,
    eta_r: float = 0.0,
    *,
    mask: PyTree | None = None,
    scope: str = "global",
    prunable: PyTree | None = None,
) -> PyTree:
    """PQI-bound (Theorem 2) on the number of weights to retain per pool:
    ``r = ceil(d (1 + eta_r)^(-q/(q-p)) (1 - I)^(qp/(q-p)))``, clipped to
    ``[1, d]`` (0 for an empty pool). int32, same structure as
    :func:`pq_index`. ``1 - I`` is taken in log space directly (no
    cancellation); a value within 1e-5 relative above an integer is taken
    as that integer before the ceiling (float32 guard)."""
    _validate.check_p_q(p, q)
    _validate.check_number("eta_r", eta_r, low=0.0)
    return _run(params, mask, prunable, scope, (float(p), float(q)), _bound_final, (eta_r,))


# ----------------------------------------------------------------------------- SI and ABP


def _si_final(d, nonzero, g, exponents):
    q = exponents[0]
    log_si = (1.0 - 1.0 / q) * jnp.log(d.astype(jnp.float32)) + g[1] - g[0]
    return jnp.where(nonzero, jnp.exp(log_si), 1.0)


def sparsity_index(
    params: PyTree,
    q: float = 0.5,
    *,
    mask: PyTree | None = None,
    scope: str = "neuron",
    prunable: PyTree | None = None,
) -> PyTree:
    """Sparsity index ``SI_q = ||w||_1 / ||w||_q`` for ``0 < q < 1`` (Yang et al.),
    in ``[d^(1 - 1/q), 1]``; larger = sparser. An all-zero or empty pool
    counts as maximally sparse: 1. Default scope: per neuron."""
    _validate.check_number("q", q, low=0.0, high=1.0, low_open=True, high_open=True)
    return _run(params, mask, prunable, scope, (float(q), 1.0), _si_final)


@functools.partial(jax.jit, static_argnames=("q",))
def _abp_retained(w, eta, *, q):
    view = lambda x, m: (x.astype(jnp.float32), m)
    ((d, nonzero, g),) = _log_means([w], [None], view, (q, 1.0), -1, False)
    log_si = jnp.log(_si_final(d, nonzero, g, (q, 1.0)))
    log_m = (q * log_si + jnp.log1p(eta)) / (q - 1.0)
    m = jnp.clip(_ceil_guarded(log_m), 1.0, d.astype(jnp.float32))
    return jnp.where(d > 0, m, 0.0).astype(jnp.int32)


def abp_retained(w: jax.Array, q: float = 0.5, eta: float = 0.0) -> jax.Array:
    """ABP's retained count ``m = ceil(SI_q^(q/(q-1)) (1 + eta)^(1/(q-1)))``,
    clipped to ``[1, d]``, for the vector(s) ``w`` of shape ``(..., d)``
    (reduced over the LAST axis) -> int32 of shape ``(...)``. All-zero
    vectors give 1, ``d == 0`` gives 0. Float32 guard as in :func:`pqi_bound`."""
    _validate.check_number("q", q, low=0.0, high=1.0, low_open=True, high_open=True)
    _validate.check_number("eta", eta, low=0.0)
    w = jnp.asarray(w)
    if w.ndim == 0:
        raise ValueError(f"w must have at least one axis (..., d), got shape {w.shape}")
    _validate.check_finite("w", w)
    return _abp_retained(w, eta, q=float(q))


# ----------------------------------------------------------------------------- Hoyer


def _hoyer_final(d, nonzero, g, exponents):
    sqrt_d = jnp.sqrt(d.astype(jnp.float32))
    # l1 / l2 = sqrt(d) * exp(G_1 - G_2)
    value = sqrt_d * jnp.maximum(-jnp.expm1(g[0] - g[1]), 0.0) / (sqrt_d - 1.0)
    return jnp.where(nonzero & (d > 1), value, 0.0)


def hoyer(
    params: PyTree,
    *,
    mask: PyTree | None = None,
    scope: str = "global",
    prunable: PyTree | None = None,
) -> PyTree:
    """Hoyer sparsity ``(sqrt(d) - ||w||_1/||w||_2) / (sqrt(d) - 1)`` in [0, 1];
    0 for pools with ``d <= 1`` or all zeros."""
    return _run(params, mask, prunable, scope, (1.0, 2.0), _hoyer_final)


# ----------------------------------------------------------------------------- Gini


def _gini_sorted(a: jax.Array, m: jax.Array | None) -> jax.Array:
    """Gini index of each column of ``a`` (``(n,)`` or ``(n, units)``, >= 0),
    excluding masked entries: Hurley & Rickard's
    ``1 - 2 sum_k (c_(k) / ||c||_1) (d - k + 1/2) / d`` on ascending ``c``."""
    big = jnp.max(a if m is None else jnp.where(m, a, 0.0), axis=0, initial=0.0)
    c = a / jnp.where(big > 0, big, 1.0)  # scale-free, no overflow in ||c||_1
    if m is None:
        d = jnp.full(big.shape, a.shape[0], jnp.int32)
    else:
        d = jnp.sum(m, axis=0, dtype=jnp.int32)
        c = jnp.where(m, c, jnp.inf)  # masked entries sort last
    c = jnp.sort(c, axis=0)
    k = jax.lax.broadcasted_iota(jnp.int32, c.shape, 0)  # k - 1
    valid = k < d
    df = d.astype(jnp.float32)
    weights = (df - k.astype(jnp.float32) - 0.5) / jnp.maximum(df, 1.0)
    c = jnp.where(valid, c, 0.0)
    total = jnp.sum(c, axis=0)
    value = 1.0 - 2.0 * jnp.sum(c * weights, axis=0) / jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, value, 0.0)


@functools.partial(jax.jit, static_argnames=("scope",))
def _gini(values, masks, *, scope):
    pairs = [_scope.pool_view(x, m, scope) for x, m in zip(values, masks, strict=True)]
    values, masks = [jnp.abs(a) for a, _ in pairs], [m for _, m in pairs]
    if scope != "global":
        return [_gini_sorted(a, m) for a, m in zip(values, masks, strict=True)]
    if not values:
        return [jnp.float32(0)]
    a = jnp.concatenate(values)
    m = None
    if any(x is not None for x in masks):
        filled = [jnp.ones(v.shape, bool) if x is None else x for v, x in zip(values, masks, strict=True)]
        m = jnp.concatenate(filled)
    return [_gini_sorted(a, m)]


def gini(
    params: PyTree,
    *,
    mask: PyTree | None = None,
    scope: str = "global",
    prunable: PyTree | None = None,
) -> PyTree:
    """Gini index of ``|w|`` (Hurley & Rickard 2009) in ``[0, 1 - 1/d]``;
    larger = sparser; 0 for empty or all-zero pools. Sorts each pool
    (a full sort is inherent to the Gini index)."""
    pools = _scope.gather(params, mask, prunable, scope)
    out = _gini(pools.values, pools.masks, scope=scope)
    return out[0] if scope == "global" else _scope.scatter(pools, out)
