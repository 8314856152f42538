"""Sparsity measures of weight pools: lq norm, PQ Index, PQI-bound, sparsity
index (ABP), Gini index and Hoyer measure.

All pytree measures take ``(params, *, mask, scope, prunable, out_axis)`` with
the scope semantics of :mod:`jaxprune.measures._scope`: ``"global"`` -> scalar,
``"layer"`` -> pytree of scalars (``None`` on non-prunable leaves),
``"neuron"`` -> pytree of ``(units,)`` vectors, the units on axis ``out_axis``
of each leaf (default ``-1``, the last axis as in flax; ``0`` for equinox /
PyTorch ``(out, in, ...)`` layouts; no effect on the other scopes). A plain
array ``params`` is one prunable leaf whatever its ``ndim``. Masked-out
entries are excluded from the pool (``d`` counts unmasked entries). Inputs of
any float dtype (bf16, float16) are computed in float32. Everything is
jittable; argument checks run at trace time.

Non-finite inputs: on concrete (non-traced) inputs a NaN/inf in a prunable
leaf raises ``ValueError``. Under ``jit`` that is impossible, so a pool with a
NaN or inf among its UNMASKED entries gives NaN (float measures) or -1 (the
integer counts :func:`pqi_bound` and :func:`abp_retained`); never a plausible
value. Other pools of the same call are unaffected.

Range of exactness
------------------
Every measure is exact to float32 rounding (see below for the size of the
error) for ANY finite float32 input: subnormal entries (which XLA:CPU flushes
to zero in arithmetic, FTZ/DAZ) and entries near the float32 maximum included,
bf16/float16 inputs too (their conversion to float32 is exact). Plain float
sums are used only where a check proves that flushed or overflowed terms
cannot matter; otherwise magnitudes are handled only in forms that cannot
flush or overflow: the bit pattern of ``|w|`` (an integer; its max is exact),
its exact split ``|w| = m 2^E`` with ``m`` in ``[1, 2)`` (integer operations),
and logarithms ``log|w| - log max`` formed from that split. The PQ Index,
Gini, Hoyer and SI are invariant to scaling ``w`` by ``c > 0`` (each is a
ratio of two norms of the same degree, or of ``c|w|`` sums), so dividing a
pool by a power of two is exact and changes nothing; the PQI-bound and ABP's
``m`` depend on ``w`` only through ``I`` resp. ``SI`` (and ``d``), so they are
invariant too; only :func:`lq_norm` is not, and it reapplies the power of two
exactly at the end (subnormal results included).

Numerics of the power means
---------------------------
The PQ Index, SI, Hoyer and lq norm all reduce to generalized means
``G_e = log (mean |w|^e)^(1/e)`` of a pool, for two exponents, carried as
``G_e = log(n/d)/e + b_e + (k_e/e + scale) ln2`` (``n`` = nonzero entries,
``k_e`` and ``scale`` integers) and combined by :func:`_combine` with static
rational coefficients, so that ``1/e``-fold terms of tiny exponents and a
common magnitude of the data cancel exactly instead of in float32.

The common case is ONE pass over the data (XLA:CPU fuses only plain float
arithmetic into its reductions; a bit cast, compare or select would cost a
materialized copy, so the pass has none): per exponent the sum
``S_e = sum |w|^e`` (``|w|^e`` special-cased to ``abs``/``sqrt``/products for
e in {0.25, 0.5, 1, 1.5, 2, 3, 4}, ``exp(e log|w|)`` otherwise), for small
non-special exponents ``e < 1/4`` instead ``T_e = sum expm1(e log|w|)``
(``log mean = log1p(T/d)``: no ``1/e`` amplification of rounding) plus
``min |w|``, for ``e = inf`` the max. Each pool is then checked:

- ``S_e`` finite and ``>= 2^24 d tiny^min(e, 1)``: every term lost to
  FTZ/DAZ (a subnormal entry, an underflowed power) is below
  ``tiny^min(e, 1)``, so together below ``2^-24 S_e``; for ``exp(e log|w|)``
  also ``|log(S_e/d)| <= 12 e`` (each term is exact to ~``eps |log|w||``);
- ``T_e``: ``min |w| > 0`` (no zero or subnormal entry: DAZ compares them as
  0), ``T_e >= -d/2`` and ``|T_e| <= 12 e d``;
- the max finite and positive.

If some pool fails, a ``lax.cond`` branch reads the bit patterns (exact
integer max per pool). Pools that failed only for being all zero (``S == 0``
cannot tell zeros from subnormals under DAZ) are settled by that max alone;
otherwise everything is recomputed relative to the pool max ``M``:
``log r = log(|w|/M) <= 0`` exactly from the bit split, and both
``S = sum r^e`` (max term 1, no overflow) and ``T = sum_{w != 0}
expm1(e log r)``, using ``T`` where ``S >= n/2`` (then ``1 + T/n`` has no
cancellation) and ``S`` otherwise (then the ``1/e``-th root is damped by
``(S/n)^(1/e) <= 2^(-1/e)``). NaN/inf entries also land in this branch
(their pools give NaN).

Accuracy: the PQ Index is within ~1e-6 absolute (a few float32 roundings of
logarithms of moderate size; typically ~1e-7) of the exact value, for ANY
finite float32 entries, ``1e-30 <= p < q <= inf`` (``q = inf``: the max, the
limit of the power mean; ``p < 1e-30`` raises: ``p`` and ``p log|w|`` must
stay normal float32 numbers) and ``d < 2^31``; SI, Hoyer and the lq norm
to ~1e-6 relative. Sums are accumulated in float32 by XLA (pairwise/vectorized
on CPU), which adds ~1e-7 log2(d) relative.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxprune import _validate
from jaxprune.measures import _scope
from jaxprune.tree import PyTree

_F32 = jnp.finfo(jnp.float32)


def _log_floor(e: float) -> float:
    """``log(2^24 tiny^e)``: sums above ``d`` times this lose < 2^-24 to terms below ``tiny^e``."""
    return e * math.log(float(_F32.tiny)) + 24 * math.log(2.0)


#: Smallest exponent accepted (p of the PQ Index, q of SI and lq_norm).
MIN_EXPONENT = 1e-30
_SMALL_EXPONENT = 0.25  # non-special exponents below this use the expm1 sums
_SPREAD = 12.0  # fast exp/expm1 sums need typical |log|w|| <~ _SPREAD (precision ~eps * _SPREAD)

_ABS_MASK = np.uint32(0x7FFFFFFF)
_INF_BITS = np.uint32(0x7F800000)
_MANT_MASK = np.uint32(0x007FFFFF)
_ONE_BITS = np.uint32(0x3F800000)
_MIN_NORMAL_BITS = np.uint32(0x00800000)
_LN2_HI = np.float32(0.693359375)  # 9 significant bits: k * _LN2_HI is exact for |k| < 2^15
_LN2_LO = np.float32(math.log(2.0) - 0.693359375)
_LN2 = np.float32(math.log(2.0))
_INV_LN2 = np.float32(1.0 / math.log(2.0))


# ----------------------------------------------------------------------------- exact bit-level helpers


def _abs_bits(x: jax.Array) -> jax.Array:
    """The bit pattern of ``|x|`` (float32 -> uint32). Non-negative floats order
    like their bit patterns, and integer operations never flush subnormals;
    ``>= 0x7F800000`` means inf or NaN."""
    return lax.bitcast_convert_type(x, jnp.uint32) & _ABS_MASK


def _split(bits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``|x| = m * 2^E`` exactly, for the :func:`_abs_bits` of a finite nonzero
    ``x`` (subnormals included): ``m`` float32 in ``[1, 2)``, ``E`` int32.
    Integer operations and an exact int -> float conversion only."""
    sub = bits < _MIN_NORMAL_BITS
    # a subnormal is M * 2^-149 with the integer M < 2^23, which converts exactly to a normal float
    significand = (bits & _MANT_MASK).astype(jnp.int32).astype(jnp.float32)
    b = jnp.where(sub, lax.bitcast_convert_type(significand, jnp.uint32), bits)
    e = (b >> 23).astype(jnp.int32) - jnp.where(sub, 127 + 149, 127)
    m = lax.bitcast_convert_type((b & _MANT_MASK) | _ONE_BITS, jnp.float32)
    return m, e


def _pow2(k: jax.Array) -> jax.Array:
    """``2^k`` (float32) for int32 ``k`` in ``[-126, 127]``; 0 below -126."""
    bits = (jnp.clip(k, -126, 127) + 127) << 23
    return jnp.where(k >= -126, lax.bitcast_convert_type(bits.astype(jnp.int32), jnp.float32), 0.0)


def _scaled(bits: jax.Array, e_top: jax.Array) -> jax.Array:
    """``|x| / 2^e_top`` exactly, for :func:`_abs_bits` ``bits`` of finite ``x``
    with ``|x| < 2^(e_top + 1)``: in ``[0, 2)``; values below ``2^-126`` (less
    than ``2^-126`` of the max) give 0."""
    m, e = _split(bits)
    return jnp.where(bits == 0, 0.0, m * _pow2(e - e_top))


def _top_exponent(top: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(E, finite)`` for the :func:`_abs_bits` ``top`` of a maximum: ``2^E <= top
    < 2^(E+1)`` (``E = 0`` for a zero or non-finite ``top``) and whether ``top``
    is finite; scale with ``_scaled(jnp.where(finite, bits, 0), E)``."""
    finite = top < _INF_BITS
    _, e_top = _split(jnp.where(finite & (top > 0), top, _ONE_BITS))
    return e_top, finite


def _log_ratio(bits: jax.Array, log_m_top: jax.Array, e_top: jax.Array) -> jax.Array:
    """``log(|x| / top) <= 0`` for the :func:`_abs_bits` of finite ``x`` and
    ``top = m_top 2^e_top >= |x|`` (``-inf`` for ``x = 0``); the exponent
    difference is an exact integer, so entries near the top lose nothing."""
    m, e = _split(bits)
    k = (e - e_top).astype(jnp.float32)
    r = (jnp.log(m) - log_m_top) + k * _LN2_LO + k * _LN2_HI
    return jnp.where(bits == 0, -jnp.inf, jnp.minimum(r, 0.0))


def _ldexp(y: jax.Array, n: jax.Array) -> jax.Array:
    """``y * 2^n`` correctly rounded (to nearest even), subnormal results
    included, inf on overflow; ``y`` positive normal float32, ``n`` int32."""
    b = lax.bitcast_convert_type(y, jnp.int32)
    be = (b >> 23) + n  # biased exponent of the result
    frac = b & 0x7FFFFF
    normal = lax.bitcast_convert_type((jnp.clip(be, 1, 254) << 23) | frac, jnp.float32)
    s = jnp.clip(1 - be, 1, 25)  # right shift of the 24-bit significand for a subnormal result
    sig = frac | 0x800000
    q = sig >> s
    rem = sig & ((1 << s) - 1)
    half = 1 << (s - 1)
    q = q + ((rem > half) | ((rem == half) & ((q & 1) == 1))).astype(jnp.int32)
    sub = lax.bitcast_convert_type(q, jnp.float32)
    return jnp.where(be >= 255, jnp.inf, jnp.where(be >= 1, normal, sub))


# ----------------------------------------------------------------------------- power means


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


def _exponent(e: float) -> float:
    """A static exponent as used on device: beyond the float32 range it is
    ``inf`` (the max), which equals the power mean to float32 precision there."""
    e = float(e)
    return math.inf if e > float(_F32.max) else e


def _form(e: float) -> str:
    """How the one-pass (fast) branch sums ``|w|^e``: ``"max"`` for ``e = inf``,
    ``"expm1"`` for small non-special exponents, ``"sum"`` otherwise."""
    if math.isinf(e):
        return "max"
    if float(e) in _CHEAP_POWERS or e >= _SMALL_EXPONENT:
        return "sum"
    return "expm1"


class _Pool(NamedTuple):
    """Power means of one pool (arrays of the pool shape).

    ``d``: unmasked entries (int32); ``n``: nonzero unmasked entries (float32;
    equal to ``d`` where not needed); ``nonzero``/``finite``: some unmasked
    entry is nonzero / all are finite; per exponent ``b`` (float32) and ``k``
    (int32), and ``scale`` (int32), with
    ``G_e = log(mean |w|^e)/e = log(n/d)/e + b_e + (k_e/e + scale) ln2``
    (finite ``e``), ``G_inf = log max|w| = b_inf + (k_inf + scale) ln2``. The
    integer parts carry the magnitude exactly, so that it cancels exactly
    between exponents (see :func:`_combine`)."""

    d: jax.Array
    n: jax.Array
    nonzero: jax.Array
    finite: jax.Array
    b: tuple[jax.Array, ...]
    k: tuple[jax.Array, ...]
    scale: jax.Array


def _log_means(
    leaves: Sequence[jax.Array],
    masks: Sequence[jax.Array | None],
    view: Callable[[jax.Array, jax.Array | None], tuple[jax.Array, jax.Array | None]],
    exponents: tuple[float, ...],
    axis: int,
    combine: bool,
) -> list[_Pool]:
    """The :class:`_Pool` of every pool; see the module docstring for the numerics.

    ``view(leaf, mask)`` gives the float32 values and bool mask, reduced
    along ``axis``; it is applied inside each pass so that nothing is
    materialized. With ``combine`` all leaves form one pool (global scope)."""
    forms = tuple(_form(e) for e in exponents)

    def count(x, m):
        if m is None:
            return jnp.full(x.shape[: axis % x.ndim] + x.shape[axis % x.ndim + 1 :], x.shape[axis], jnp.int32)
        return jnp.sum(m, axis=axis, dtype=jnp.int32)

    def masked(m, term, fill=0.0):
        return term if m is None else jnp.where(m, term, fill)

    views = [view(x, m) for x, m in zip(leaves, masks, strict=True)]

    # ---- the one pass: only ops that XLA:CPU fuses into its reductions (no bit
    # casts, compares or selects, which would materialize a copy of the data).
    stats = []
    for x, m in views:
        sums = []
        for e, form in zip(exponents, forms, strict=True):
            if form == "sum":
                sums.append(jnp.sum(_power(masked(m, x), e), axis=axis))
            elif form == "expm1":  # valid only if no entry is 0 or subnormal: min |w| > 0 below
                sums.append(jnp.sum(masked(m, jnp.expm1(e * jnp.log(jnp.abs(x)))), axis=axis))
            else:
                sums.append(jnp.max(masked(m, jnp.abs(x)), axis=axis, initial=0.0))
        low = None
        if "expm1" in forms:
            low = jnp.min(masked(m, jnp.abs(x), jnp.inf), axis=axis, initial=jnp.inf)
        stats.append((count(x, m), low, sums))
    if combine:
        d = sum((s[0] for s in stats), jnp.int32(0))
        low = jnp.min(jnp.stack([s[1] for s in stats])) if "expm1" in forms else None
        sums = []
        for i, form in enumerate(forms):
            parts = [s[2][i] for s in stats]
            sums.append(jnp.max(jnp.stack(parts)) if form == "max" else sum(parts, jnp.float32(0)))
        stats = [(d, low, sums)]

    def check(d, low, sums):
        """The pool's fast sums are exact (see the module docstring), or it is empty.

        Under FTZ/DAZ a subnormal entry reads as 0, so nothing here can tell
        an all-zero pool from one of subnormals: such pools (S == 0) take the
        exact branch."""
        df = d.astype(jnp.float32)
        ok = jnp.ones(d.shape, bool)
        for e, form, s in zip(exponents, forms, sums, strict=True):
            if form == "sum":
                # flushed terms (subnormal entries, underflowed powers) are each < tiny^min(e, 1)
                floor = math.exp(_log_floor(min(e, 1.0))) * df
                ok &= jnp.isfinite(s) & (s >= floor)
                if float(e) not in _CHEAP_POWERS:  # exp(e log|w|) is exact to ~eps |log|w||
                    ok &= jnp.abs(jnp.log(s / df)) <= _SPREAD * e
            elif form == "expm1":  # no zero/subnormal entry (DAZ compares them as 0), n = d
                ok &= jnp.isfinite(s) & (s >= -0.5 * df) & (jnp.abs(s) <= _SPREAD * e * df) & (low > 0)
            else:
                ok &= jnp.isfinite(s) & (s > 0)
        return ok | (d == 0)

    checks = [check(*s) for s in stats]
    all_safe = jnp.all(jnp.stack([jnp.all(ok) for ok in checks]))

    def direct(tops=None):
        out = []
        for i, (d, _, sums) in enumerate(stats):
            n = d.astype(jnp.float32)
            b, k = [], []
            for e, form, s in zip(exponents, forms, sums, strict=True):
                if form == "expm1":  # |log1p(T/n)/e| <~ _SPREAD: no need to split off a magnitude
                    b.append(jnp.log1p(s / n) / e)
                    k.append(jnp.zeros(d.shape, jnp.int32))
                    continue
                # the (normal) mean S/d or the max as m 2^k exactly: log m in [0, ln 2)
                m, ex = _split(_abs_bits(s / n if form == "sum" else s))
                b.append(jnp.log(m) / e if form == "sum" else jnp.log(m))
                k.append(ex)
            # safe pools with d > 0 have a normal nonzero entry; the others are all zero (top == 0)
            nonzero = d > 0 if tops is None else tops[i] != 0
            zero = jnp.zeros(d.shape, jnp.int32)
            out.append(_Pool(d, n, nonzero, jnp.ones(d.shape, bool), tuple(b), tuple(k), zero))
        return out

    def exact():
        all_bits = [_abs_bits(x) if m is None else jnp.where(m, _abs_bits(x), np.uint32(0)) for x, m in views]
        tops = [jnp.max(b, axis=axis, initial=np.uint32(0)) for b in all_bits]
        pool_tops = [jnp.max(jnp.stack(tops))] if combine else tops
        # pools that failed the check only for being all zero (S == 0, not subnormals): no rescaling
        fixed = [jnp.all(ok | (t == 0)) for ok, t in zip(checks, pool_tops, strict=True)]
        zeros_only = jnp.all(jnp.stack(fixed))
        return lax.cond(zeros_only, lambda: direct(pool_tops), lambda: rescaled(all_bits, pool_tops))

    def rescaled(all_bits, pool_tops):
        tops = pool_tops * len(all_bits) if combine else pool_tops
        pool_stats = []
        for (x, m), bits, top in zip(views, all_bits, tops, strict=True):
            m_top, e_top = _split(top)
            log_m_top = jnp.log(m_top)
            lr = _log_ratio(bits, jnp.expand_dims(log_m_top, axis), jnp.expand_dims(e_top, axis))
            sums = []
            for e in exponents:
                if math.isinf(e):
                    sums.append(())
                    continue
                s = jnp.sum(jnp.exp(e * lr), axis=axis)
                t = jnp.sum(jnp.where(bits != 0, jnp.expm1(e * lr), 0.0), axis=axis) if e < 1.0 else None
                sums.append((s, t))
            nz = jnp.sum(bits != 0, axis=axis, dtype=jnp.int32)
            pool_stats.append((count(x, m), nz, sums))
        if combine:
            d = sum((s[0] for s in pool_stats), jnp.int32(0))
            nz = sum((s[1] for s in pool_stats), jnp.int32(0))
            sums = []
            for i, e in enumerate(exponents):
                if math.isinf(e):
                    sums.append(())
                    continue
                s = sum((ps[2][i][0] for ps in pool_stats), jnp.float32(0))
                t = sum((ps[2][i][1] for ps in pool_stats), jnp.float32(0)) if e < 1.0 else None
                sums.append((s, t))
            pool_stats = [(d, nz, sums)]
        out = []
        for (d, nz, sums), top in zip(pool_stats, pool_tops, strict=True):
            m_top, e_top = _split(top)
            log_m_top = jnp.log(m_top)
            n = nz.astype(jnp.float32)
            b = []
            for e, st in zip(exponents, sums, strict=True):
                if math.isinf(e):
                    b.append(log_m_top)
                    continue
                s, t = st
                mean_log = jnp.log(s / n)
                if t is not None:  # 1 + T/n without cancellation where S >= n/2
                    mean_log = jnp.where(s >= 0.5 * n, jnp.log1p(t / n), mean_log)
                b.append(mean_log / e + log_m_top)
            k = tuple(jnp.zeros(d.shape, jnp.int32) for _ in exponents)
            out.append(_Pool(d, n, top != 0, top < _INF_BITS, tuple(b), k, e_top))
        return out

    return lax.cond(all_safe, direct, exact)


def _split_coef(c: Fraction) -> tuple[float, float]:
    """``c = hi + lo`` with ``hi`` of at most 15 significant bits (so ``hi * k``
    is exact in float32 for ``|k| < 2^9``) and ``|lo| <= 2^-15 |c|``."""
    if c == 0:
        return 0.0, 0.0
    m, ex = math.frexp(float(c))
    hi = math.ldexp(round(m * 2**15), ex - 15)
    return hi, float(c - Fraction(hi))


def _combine(pool: _Pool, exponents: tuple[float, ...], coefs: Sequence, c_log_d=0, *, split=False):
    """``sum_e c_e G_e + c_log_d log d`` (without the ``scale`` term, which
    cancels when ``sum c_e = 0``), with exact static rational coefficients.

    With ``G_e = log(n/d)/e + b_e + (k_e/e) ln2`` (:class:`_Pool`): the
    ``log n`` and ``log d`` terms are collected first (exactly, as
    fractions), then evaluated in the basis ``{log n, log d}`` or
    ``{log(n/d), log d}``, whichever has the smaller ``log d`` coefficient, so
    that huge ``1/e`` coefficients of tiny exponents never meet in a
    cancellation (e.g. ``n = d`` gives exactly 0); the integer magnitudes
    ``k_e`` are combined with exactly representable coefficients first, so a
    common scale of the data cancels exactly. With ``split``: ``(float part,
    k_hi, k_lo)`` where the result is ``float part + (k_hi + k_lo) ln2`` and
    ``k_hi`` has few fractional bits."""
    coefs = [Fraction(c) for c in coefs]
    c_log_d = Fraction(c_log_d)
    weights = [Fraction(1) if math.isinf(e) else 1 / Fraction(e) for e in exponents]
    c_n = sum((c * w for c, e, w in zip(coefs, exponents, weights, strict=True) if c and not math.isinf(e)),
              Fraction(0))
    c_d = c_log_d - c_n  # coefficient of log d next to c_n * log n
    df = pool.d.astype(jnp.float32)
    out = jnp.zeros(pool.d.shape, jnp.float32)
    if abs(c_d) <= abs(c_log_d):
        if c_n:
            out = out + float(c_n) * jnp.log(pool.n)
        if c_d:
            out = out + float(c_d) * jnp.log(df)
    else:
        if c_n:
            out = out + float(c_n) * jnp.log(pool.n / df)
        if c_log_d:
            out = out + float(c_log_d) * jnp.log(df)
    for c, b in zip(coefs, pool.b, strict=True):
        if c:
            out = out + float(c) * b
    k_hi, k_lo = jnp.zeros(pool.d.shape, jnp.float32), jnp.zeros(pool.d.shape, jnp.float32)
    for c, w, k in zip(coefs, weights, pool.k, strict=True):
        if c:
            hi, lo = _split_coef(c * w)
            kf = k.astype(jnp.float32)
            k_hi, k_lo = k_hi + hi * kf, k_lo + lo * kf
    if split:
        return out, k_hi, k_lo
    return out + (k_hi * _LN2_HI + (k_hi * _LN2_LO + k_lo * _LN2))


def _where_valid(pool: _Pool, value: jax.Array, empty: float, invalid: float = math.nan) -> jax.Array:
    """``value`` where the pool has a nonzero entry, ``empty`` for all-zero or
    empty pools, ``invalid`` for pools with a non-finite entry."""
    return jnp.where(pool.finite, jnp.where(pool.nonzero, value, empty), invalid)


@functools.partial(jax.jit, static_argnames=("exponents", "scope", "finalize", "out_axis"))
def _pooled(values, masks, extra, *, exponents, scope, finalize, out_axis=-1):
    """Power means per pool, then ``finalize(pool, exponents, *extra)`` per pool."""
    combine = scope == "global"
    if combine and not values:
        values, masks = [jnp.zeros((0,), jnp.float32)], [None]
    view = functools.partial(_scope.pool_view, scope=scope, out_axis=out_axis)
    pools = _log_means(values, masks, view, exponents, 0, combine)
    return [finalize(pool, exponents, *extra) for pool in pools]


def _run(params, mask, prunable, scope, exponents, finalize, extra=(), name="params", out_axis=-1) -> PyTree:
    pools = _scope.gather(params, mask, prunable, scope, name=name, out_axis=out_axis)
    exponents = tuple(_exponent(e) for e in exponents)
    out = _pooled(
        pools.values,
        pools.masks,
        tuple(extra),
        exponents=exponents,
        scope=scope,
        finalize=finalize,
        out_axis=int(out_axis) if scope == "neuron" else -1,
    )
    return out[0] if scope == "global" else _scope.scatter(pools, out)


def _ceil_guarded(log_x: jax.Array) -> jax.Array:
    """``ceil(exp(log_x))`` that rounds values within 1e-5 relative above an
    integer down to it (float32 rounding of an exact integer must not add 1)."""
    return jnp.ceil(jnp.exp(log_x) * (1.0 - 1e-5))


def _check_exponent(name: str, value: float) -> None:
    _validate.check_number(name, value, low=MIN_EXPONENT)


def _check_p_q(p: float, q: float) -> None:
    _validate.check_p_q(p, q)
    _check_exponent("p", p)


# ----------------------------------------------------------------------------- lq norm


def _lq_final(pool, exponents):
    (q,) = exponents
    # log ||x||_q = log(d)/q + G_q = f + (k_hi + k_lo + scale) ln2, the integer part of k_hi kept exact
    f, k_hi, k_lo = _combine(pool, exponents, (1,), 1 / Fraction(q), split=True)
    k_int = jnp.floor(k_hi)
    f = f + ((k_hi - k_int) * _LN2 + k_lo * _LN2)
    j = jnp.clip(jnp.round(f * _INV_LN2), -1000, 1000)
    r = f - j * _LN2_HI - j * _LN2_LO  # |r| <= ln2/2 unless clipped
    n = jnp.clip(j + k_int, -1000, 1000).astype(jnp.int32) + pool.scale
    norm = _ldexp(jnp.exp(jnp.clip(r, -1.0, 1.0)), n)
    norm = jnp.where(r > 1.0, jnp.inf, jnp.where(r < -1.0, 0.0, norm))
    return _where_valid(pool, norm, 0.0)


@jax.jit
def _max_abs(x):
    top = jnp.max(_abs_bits(x.astype(jnp.float32)), initial=np.uint32(0))
    return jnp.where(top > _INF_BITS - 1, jnp.nan, lax.bitcast_convert_type(top, jnp.float32))


def lq_norm(x: jax.Array, q: float) -> jax.Array:
    """``||x||_q = (sum |x|^q)^(1/q)`` over all entries of one array (a quasi-norm
    for ``0 < q < 1``; ``q = inf``: ``max |x|``). Float32 scalar, exact to float32
    rounding for any finite input, subnormal entries and results included
    (``inf`` only if the norm exceeds the float32 range). ``q`` is static, in
    ``[1e-30, inf]``. Under ``jit`` a NaN/inf entry gives NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> x = jnp.array([3.0, -4.0])
    >>> [round(float(jp.measures.lq_norm(x, q)), 4) for q in (1.0, 2.0, float("inf"))]
    [7.0, 5.0, 4.0]
    >>> round(float(jp.measures.lq_norm(x, 0.5)), 4)   # (sqrt(3) + 2)^2
    13.9282
    """
    _validate.check_number("q", q, low=0.0, low_open=True)
    _check_exponent("q", q)
    if math.isinf(_exponent(q)):
        x = jnp.asarray(x)
        _scope.check_all_finite("x", x)
        return _max_abs(x)
    return _run(jnp.asarray(x), None, None, "layer", (float(q),), _lq_final, name="x")


# ----------------------------------------------------------------------------- PQ Index


def _pq_final(pool, exponents):
    i = jnp.maximum(-jnp.expm1(_combine(pool, exponents, (1, -1))), 0.0)  # I >= 0 (Hölder)
    return _where_valid(pool, i, 0.0)


def pq_index(
    params: PyTree,
    p: float = 0.5,
    q: float = 1.0,
    *,
    mask: PyTree | None = None,
    scope: str = "global",
    prunable: PyTree | None = None,
    out_axis: int = -1,
) -> PyTree:
    """PQ Index ``I = 1 - d^(1/q - 1/p) ||w||_p / ||w||_q`` for ``0 < p < q``
    (Diao et al. 2023), in ``[0, 1 - d^(1/q - 1/p)]``; larger = sparser.

    ``d`` counts unmasked entries; an empty (all-masked) or all-zero pool
    gives 0. Returns a float32 scalar / pytree of scalars / pytree of
    ``(units,)`` vectors for scope global / layer / neuron. ``p`` and ``q``
    are static (Python numbers) with ``1e-30 <= p < q <= inf``; ``q = inf``
    uses ``||w||_inf = max |w|`` (the limit ``q -> inf``, so
    ``I = 1 - (mean |w|^p)^(1/p) / max |w|``); ``p < 1e-30`` raises
    ``ValueError``. Default scope ``"global"``: the PQ Index measures a whole
    model's sparsity and SAP prunes from it (Diao et al. 2023); unlike
    :func:`sparsity_index`, whose quantity is defined per neuron. Exact to
    float32 rounding for any finite input (subnormals and values near the
    float32 max included; module docstring). Under ``jit``, a pool with a
    NaN/inf unmasked entry gives NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> round(float(jp.measures.pq_index(jnp.array([1.0, 0.0, 0.0, 0.0]))), 4)  # 1 - 4^(1 - 2)
    0.75
    >>> round(float(jp.measures.pq_index(jnp.ones(4))), 4)                      # all equal: least sparse
    0.0
    >>> params = {"kernel": jnp.array([[1.0, 1.0], [0.0, 1.0]]), "bias": jnp.zeros(2)}
    >>> jp.measures.pq_index(params, scope="neuron")                            # one value per output unit
    {'bias': None, 'kernel': Array([0.5, 0. ], dtype=float32)}
    >>> eqx = {"weight": params["kernel"].T}                                    # equinox layout (out, in)
    >>> jp.measures.pq_index(eqx, scope="neuron", out_axis=0)["weight"]
    Array([0.5, 0. ], dtype=float32)
    """
    _check_p_q(p, q)
    return _run(params, mask, prunable, scope, (float(p), float(q)), _pq_final, out_axis=out_axis)


def _bound_coefs(p: float, q: float) -> tuple[Fraction, Fraction]:
    """``(q/(q-p), qp/(q-p))`` as exact fractions; ``(1, p)`` for ``q = inf``."""
    if math.isinf(q):
        return Fraction(1), Fraction(p)
    fp, fq = Fraction(p), Fraction(q)
    return fq / (fq - fp), fq * fp / (fq - fp)


def _bound_final(pool, exponents, eta_r):
    a, b = _bound_coefs(*exponents)
    eta_r = jnp.asarray(eta_r, jnp.float32)
    df = pool.d.astype(jnp.float32)
    # log r = log d + b (G_p - G_q) - a log1p(eta_r); b (G_p - G_q) = b log(1 - I); all-zero pool: I = 0
    log_r = jnp.where(pool.nonzero, _combine(pool, exponents, (b, -b), 1), jnp.log(df))
    log_r = log_r - float(a) * jnp.log1p(eta_r)
    r = jnp.clip(_ceil_guarded(log_r), 1.0, df)
    r = jnp.where(pool.d > 0, r, 0.0).astype(jnp.int32)
    return jnp.where(pool.finite & (eta_r >= 0), r, -1)


def pqi_bound(
    params: PyTree,
    p: float = 0.5,
    q: float = 1.0,
    eta_r: float = 0.0,
    *,
    mask: PyTree | None = None,
    scope: str = "global",
    prunable: PyTree | None = None,
    out_axis: int = -1,
) -> PyTree:
    """PQI-bound (Theorem 2) on the number of weights to retain per pool:
    ``r = ceil(d (1 + eta_r)^(-q/(q-p)) (1 - I)^(qp/(q-p)))``, clipped to
    ``[1, d]`` (0 for an empty pool). int32, same structure as
    :func:`pq_index`, same range of ``p, q`` (``q = inf``: the exponents'
    limits ``q/(q-p) -> 1``, ``qp/(q-p) -> p``). ``(1 - I)^(qp/(q-p))`` is
    formed in log space from the power means (no cancellation, no overflow,
    exact for any finite input); a value within 1e-5 relative above an
    integer is taken as that integer before the ceiling (float32 guard).

    ``-1`` (never a valid count) marks a pool with a NaN/inf unmasked entry
    and, for a traced ``eta_r`` (under ``jit``), an ``eta_r`` that is NaN or
    negative; concrete inputs raise ``ValueError`` instead.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> int(jp.measures.pqi_bound(jnp.array([1.0, 0.0, 0.0, 0.0])))  # ceil(4 (1 - 0.75)): keep 1
    1
    >>> int(jp.measures.pqi_bound(jnp.ones(4)))                           # no sparsity: keep all 4
    4
    """
    _check_p_q(p, q)
    _validate.check_number("eta_r", eta_r, low=0.0)
    return _run(
        params, mask, prunable, scope, (float(p), float(q)), _bound_final, (eta_r,), out_axis=out_axis
    )


# ----------------------------------------------------------------------------- SI and ABP


def _si_final(pool, exponents):
    q = exponents[0]
    # log SI = (1 - 1/q) log d + G_1 - G_q
    si = jnp.exp(_combine(pool, exponents, (-1, 1), 1 - 1 / Fraction(q)))
    return _where_valid(pool, si, 1.0)


def _check_si_q(q: float) -> None:
    _validate.check_number("q", q, low=0.0, high=1.0, low_open=True, high_open=True)
    _check_exponent("q", q)


def sparsity_index(
    params: PyTree,
    q: float = 0.5,
    *,
    mask: PyTree | None = None,
    scope: str = "neuron",
    prunable: PyTree | None = None,
    out_axis: int = -1,
) -> PyTree:
    """Sparsity index ``SI_q = ||w||_1 / ||w||_q`` for ``1e-30 <= q < 1`` (Yang et al.),
    in ``[d^(1 - 1/q), 1]``; larger = sparser. An all-zero or empty pool
    counts as maximally sparse: 1. Default scope ``"neuron"``, unlike the
    ``"global"`` default of :func:`pq_index`, :func:`gini` and :func:`hoyer`:
    ABP defines the index on one neuron's incoming weights (Yang et al.,
    the retained count ``m`` of :func:`abp_retained` is per neuron), so the
    per-neuron value is the one the method uses. Exact to
    float32 rounding for any finite input; under ``jit`` a pool with a
    NaN/inf unmasked entry gives NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> w = jnp.array([[1.0, 1.0], [0.0, 1.0]])      # a (in, out) kernel
    >>> jp.measures.sparsity_index(w)                 # per output unit: ||w||_1 / ||w||_0.5
    Array([1. , 0.5], dtype=float32)
    >>> round(float(jp.measures.sparsity_index(jnp.ones(4), scope="global")), 4)   # d^(1 - 1/q)
    0.25
    """
    _check_si_q(q)
    return _run(params, mask, prunable, scope, (float(q), 1.0), _si_final, out_axis=out_axis)


@functools.partial(jax.jit, static_argnames=("q",))
def _abp_retained(w, eta, *, q):
    view = lambda x, m: (x.astype(jnp.float32), m)
    (pool,) = _log_means([w], [None], view, (q, 1.0), -1, False)
    eta = jnp.asarray(eta, jnp.float32)
    fq = Fraction(q)
    # log m = (q log SI + log1p(eta)) / (q - 1), log SI = (1 - 1/q) log d + G_1 - G_q
    log_m = _combine(pool, (q, 1.0), (-fq / (fq - 1), fq / (fq - 1)), 1) + jnp.log1p(eta) / (q - 1.0)
    log_m = jnp.where(pool.nonzero, log_m, jnp.log1p(eta) / (q - 1.0))  # all-zero: SI = 1
    df = pool.d.astype(jnp.float32)
    m = jnp.clip(_ceil_guarded(log_m), 1.0, df)
    m = jnp.where(pool.d > 0, m, 0.0).astype(jnp.int32)
    return jnp.where(pool.finite & (eta >= 0), m, -1)


def abp_retained(w: jax.Array, q: float = 0.5, eta: float = 0.0) -> jax.Array:
    """ABP's retained count ``m = ceil(SI_q^(q/(q-1)) (1 + eta)^(1/(q-1)))``,
    clipped to ``[1, d]``, for the vector(s) ``w`` of shape ``(..., d)``
    (reduced over the LAST axis) -> int32 of shape ``(...)``. All-zero
    vectors give 1, ``d == 0`` gives 0. Float32 guard as in :func:`pqi_bound`,
    same exactness as :func:`sparsity_index` (``1e-30 <= q < 1``). Under
    ``jit``, -1 marks a vector with a NaN/inf entry (and a NaN or negative
    traced ``eta``).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> jp.measures.abp_retained(jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))  # one m per row
    Array([1, 4], dtype=int32)
    """
    _check_si_q(q)
    _validate.check_number("eta", eta, low=0.0)
    w = jnp.asarray(w)
    if w.ndim == 0:
        raise ValueError(f"w must have at least one axis (..., d), got shape {w.shape}")
    _scope.check_all_finite("w", w)
    return _abp_retained(w, eta, q=float(q))


# ----------------------------------------------------------------------------- Hoyer


def _hoyer_final(pool, exponents):
    sqrt_d = jnp.sqrt(pool.d.astype(jnp.float32))
    # l1 / l2 = sqrt(d) * exp(G_1 - G_2)
    value = sqrt_d * jnp.maximum(-jnp.expm1(_combine(pool, exponents, (1, -1))), 0.0) / (sqrt_d - 1.0)
    return _where_valid(pool, jnp.where(pool.d > 1, value, 0.0), 0.0)


def hoyer(
    params: PyTree,
    *,
    mask: PyTree | None = None,
    scope: str = "global",
    prunable: PyTree | None = None,
    out_axis: int = -1,
) -> PyTree:
    """Hoyer sparsity ``(sqrt(d) - ||w||_1/||w||_2) / (sqrt(d) - 1)`` in [0, 1];
    0 for pools with ``d <= 1`` or all zeros. Default scope ``"global"``, like
    :func:`pq_index` (a model-level comparison measure; only
    :func:`sparsity_index` defaults to ``"neuron"``, as ABP defines it).
    Exact to float32 rounding for any finite input; under ``jit`` a pool
    with a NaN/inf unmasked entry gives NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> round(float(jp.measures.hoyer(jnp.array([1.0, 0.0, 0.0, 0.0]))), 4)  # (2 - 1) / (2 - 1)
    1.0
    >>> round(float(jp.measures.hoyer(jnp.ones(4))), 4)                      # (2 - 4/2) / (2 - 1)
    0.0
    """
    return _run(params, mask, prunable, scope, (1.0, 2.0), _hoyer_final, out_axis=out_axis)


# ----------------------------------------------------------------------------- Gini


def _gini_sorted(x: jax.Array, m: jax.Array | None) -> jax.Array:
    """Gini index of ``|x|`` per column of ``x`` (``(n,)`` or ``(n, units)``,
    float32), excluding masked entries: Hurley & Rickard's
    ``1 - 2 sum_k (c_(k) / ||c||_1) (d - k + 1/2) / d`` on ascending ``c``;
    NaN for columns with a NaN/inf unmasked entry.

    ``c = |x| / 2^E`` with ``2^E <= max |x| < 2^(E+1)`` is formed exactly from
    the bits (no flush of subnormals, no overflow of ``||c||_1 <= 2d``);
    entries below ``2^-126`` of the max become 0 (changes the sums by less
    than ``d 2^-126``)."""
    bits = _abs_bits(x)
    if m is not None:
        bits = jnp.where(m, bits, np.uint32(0))
    top = jnp.max(bits, axis=0, initial=np.uint32(0))
    _, e_top = _split(top)
    c = _scaled(bits, e_top)
    if m is None:
        d = jnp.full(top.shape, x.shape[0], jnp.int32)
    else:
        d = jnp.sum(m, axis=0, dtype=jnp.int32)
        c = jnp.where(m, c, jnp.inf)  # masked entries sort last
    c = jnp.sort(c, axis=0)
    k = lax.broadcasted_iota(jnp.int32, c.shape, 0)  # k - 1
    valid = k < d
    df = d.astype(jnp.float32)
    weights = (df - k.astype(jnp.float32) - 0.5) / jnp.maximum(df, 1.0)
    c = jnp.where(valid, c, 0.0)
    total = jnp.sum(c, axis=0)
    value = 1.0 - 2.0 * jnp.sum(c * weights, axis=0) / jnp.where(total > 0, total, 1.0)
    return jnp.where(top < _INF_BITS, jnp.where(top > 0, value, 0.0), jnp.nan)


@functools.partial(jax.jit, static_argnames=("scope", "out_axis"))
def _gini(values, masks, *, scope, out_axis=-1):
    pairs = [_scope.pool_view(x, m, scope, out_axis) for x, m in zip(values, masks, strict=True)]
    values, masks = [a for a, _ in pairs], [m for _, m in pairs]
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
    out_axis: int = -1,
) -> PyTree:
    """Gini index of ``|w|`` (Hurley & Rickard 2009) in ``[0, 1 - 1/d]``;
    larger = sparser; 0 for empty or all-zero pools. Default scope
    ``"global"``, like :func:`pq_index` (a model-level comparison measure;
    only :func:`sparsity_index` defaults to ``"neuron"``, as ABP defines it).
    Sorts each pool (a full sort is inherent to the Gini index). Exact to float32 rounding
    for any finite input (exact power-of-two rescaling of each pool, see
    :func:`_gini_sorted`); under ``jit`` a pool with a NaN/inf unmasked
    entry gives NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> round(float(jp.measures.gini(jnp.array([1.0, 0.0, 0.0, 0.0]))), 4)   # 1 - 1/d: the sparsest
    0.75
    >>> round(float(jp.measures.gini(jnp.ones(4))), 4)
    0.0
    """
    pools = _scope.gather(params, mask, prunable, scope, out_axis=out_axis)
    out = _gini(pools.values, pools.masks, scope=scope, out_axis=int(out_axis) if scope == "neuron" else -1)
    return out[0] if scope == "global" else _scope.scatter(pools, out)
