"""OptAlloc: split a weight budget over SiPP's parameter groups (paper Sec. 4,
App. C.2) to minimise the summed Lemma 7 error bounds.

Groups: one per (layer, weight sign side, output unit). Group i has ``n_i``
nonzero weights of its sign and sensitivity sum ``S_i``. With
``S~_i = S_i C / 3 * ln(16 eta / delta)`` (Algorithm 3, line 2) the SiPPRand
bound for N draws is ``eps(N) = u + sqrt(u (u + 6))``, ``u = S~_i / N``
(Lemma 7). OptAlloc solves

    min_m  sum_i eps_i(m_i) / c_layer(i)   s.t.  sum_i m_i <= B,  0 <= m_i <= n_i

with ``eps`` evaluated at ``N = m`` (the expected draws for m unique weights
are at least m, so this is an upper bound on the bound actually incurred), and
``c_layer`` the number of output units of the group's layer. ``eps_i`` is convex
and decreasing, so the KKT conditions give ``m_i(lam) = clip(m : -eps_i'(m) /
c = lam, 0, n_i)``; both ``m_i(lam)`` (per group) and the multiplier ``lam``
(for the budget) are found by bisection in log space, vectorised over all
groups. The integral allocation rounds ``m_i(lam)`` up, with ``lam`` bisected
on the rounded total so that ``sum_i ceil(m_i) <= B`` still holds.
Groups with ``S_i = 0`` or ``n_i = 0`` get 0.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _validate
from jaxprune._validate import check_finite_number
from jaxprune.tree import check_same_structure, is_none, neuron_view, path_str

PyTree = Any
_ITERS = 64


def log_term(eta: float, delta: float) -> float:
    """``ln(16 eta / delta)``: the union-bound factor of Algorithm 3, line 2
    (``eta`` finite >= 1, ``delta`` in (0, 1))."""
    check_finite_number("eta", eta, low=1.0)
    check_finite_number("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    ratio = 16.0 * eta / delta
    return math.log(ratio) if math.isfinite(ratio) else math.log(16.0 * eta) - math.log(delta)


def eps_rand(s_sum: jax.Array, draws: jax.Array, *, c: float = 3.0, log_factor: float) -> jax.Array:
    """Lemma 7 bound ``u + sqrt(u (u + 6))``, ``u = S C/3 * log_factor / N``.
    0 where ``S = 0``; ``inf`` where ``N = 0 < S``; 0 where ``N = inf``.

    ``s_sum`` must be finite and >= 0, ``draws`` >= 0 (not NaN), ``c`` and
    ``log_factor`` finite and > 0: ``ValueError`` when concrete; traced
    entries outside these ranges give NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> round(float(jp.sipp.eps_rand(jnp.array(1.0), jnp.array(1.0), c=3.0, log_factor=1.0)), 4)  # 1+sqrt(7)
    3.6458
    >>> float(jp.sipp.eps_rand(jnp.array(0.0), jnp.array(5.0), log_factor=1.0))   # no sensitivity: no error
    0.0
    """
    _validate.check_array_range("s_sum", s_sum, low=0.0)
    if _validate.is_concrete(draws):
        n = np.asarray(draws, np.float64)
        bad = np.isnan(n) | (n < 0)
        if bad.any():
            raise ValueError(f"draws has the value {n[bad].flat[0]!r}; valid: N in [0, inf]")
    check_finite_number("c", c, low=0.0, low_open=True)
    check_finite_number("log_factor", log_factor, low=0.0, low_open=True)
    s_sum, draws = jnp.asarray(s_sum, jnp.float32), jnp.asarray(draws, jnp.float32)
    st = s_sum * (c / 3.0) * log_factor
    safe_n = jnp.where(draws > 0, draws, 1.0)
    u = st / safe_n
    val = u + jnp.sqrt(u * (u + 6.0))
    val = jnp.where(st > 0, jnp.where(draws > 0, val, jnp.inf), 0.0)
    ok = jnp.isfinite(s_sum) & (s_sum >= 0) & (draws >= 0)  # False for NaN
    return jnp.where(ok, val, jnp.nan)


def _neg_slope(m: jax.Array, st: jax.Array, weight: jax.Array) -> jax.Array:
    """``-weight * d eps / dm`` at ``m`` (decreasing in m) for ``S~ = st``."""
    u = st / m
    return weight * (u * u / st) * (1.0 + (u + 3.0) / jnp.sqrt(u * (u + 6.0)))


def _m_of_lam(lam: jax.Array, st: jax.Array, size: jax.Array, weight: jax.Array) -> jax.Array:
    """Continuous KKT allocation of every group for multiplier ``lam``."""
    active = (st > 0) & (size > 0)
    st_safe = jnp.where(active, st, 1.0)
    hi0 = jnp.log(jnp.maximum(size, 1.0))
    lo0 = jnp.full_like(hi0, -30.0)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = _neg_slope(jnp.exp(mid), st_safe, weight) > lam  # m* is larger than mid
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _ITERS, body, (lo0, hi0))
    m = jnp.exp(0.5 * (lo + hi))
    m = jnp.where(_neg_slope(size.astype(m.dtype), st_safe, weight) >= lam, size, m)  # corner m = n
    return jnp.where(active, jnp.clip(m, 0.0, size), 0.0)


def _ceil(m: jax.Array) -> jax.Array:
    """Round up, ignoring float32 noise just above an integer."""
    return jnp.ceil(m - 1e-5 * jnp.maximum(m, 1.0))


def allocate(
    s_sum: jax.Array,
    size: jax.Array,
    weight: jax.Array,
    budget: Any,
    *,
    c: float = 3.0,
    log_factor: float,
) -> tuple[jax.Array, jax.Array]:
    """Solve OptAlloc on flat group arrays (all shape (G,)).

    Args:
      s_sum: ``S_i``; size: ``n_i`` (nonzero weights); weight: ``1 / c_layer``;
      budget: B (total weights kept); log_factor: ``ln(16 eta / delta)``.

    Returns ``(m_frac, m_int)``: the exact continuous optimum (float32) and the
    rounded-up integral allocation (int32) with ``sum(m_int) <= budget``.

    Valid inputs: ``s_sum`` and ``size`` finite and >= 0, ``weight`` finite
    and > 0 (all the same 1-D shape), ``budget`` finite and >= 0, ``c`` and
    ``log_factor`` finite and > 0. Concrete violations raise ``ValueError``;
    traced ones (under ``jit``) make the whole allocation invalid:
    ``m_frac`` NaN and ``m_int`` -1 for every group (the groups share the
    budget, so no entry can be trusted).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> s_sum, size = jnp.array([4.0, 1.0]), jnp.array([100, 100])
    >>> m_frac, m_int = jp.sipp.allocate(s_sum, size, jnp.ones(2), 30, log_factor=40.0)
    >>> m_int.tolist(), int(m_int.sum()) <= 30, bool(m_frac[0] > m_frac[1])   # more to the sensitive group
    ([20, 10], True, True)
    """
    for name, arr in (("s_sum", s_sum), ("size", size), ("weight", weight)):
        if jnp.ndim(arr) != 1 or jnp.shape(arr) != jnp.shape(s_sum):
            raise ValueError(
                f"{name} must be 1-D with the shape of s_sum {jnp.shape(s_sum)}, got {jnp.shape(arr)}"
            )
    _validate.check_array_range("s_sum", s_sum, low=0.0)
    _validate.check_array_range("size", size, low=0.0)
    _validate.check_array_range("weight", weight, low=0.0, low_open=True)
    check_finite_number("budget", budget, low=0.0)
    check_finite_number("c", c, low=0.0, low_open=True)
    check_finite_number("log_factor", log_factor, low=0.0, low_open=True)
    s_sum = jnp.asarray(s_sum, jnp.float32)
    size = jnp.asarray(size, jnp.float32)
    weight = jnp.asarray(weight, jnp.float32)
    budget = jnp.asarray(budget, jnp.float32)
    if s_sum.shape[0] == 0:
        return s_sum, s_sum.astype(jnp.int32)
    valid = (
        jnp.all(jnp.isfinite(s_sum) & (s_sum >= 0))
        & jnp.all(jnp.isfinite(size) & (size >= 0))
        & jnp.all(jnp.isfinite(weight) & (weight > 0))
        & jnp.isfinite(budget)
        & (budget >= 0)
    )
    st = s_sum * (c / 3.0) * log_factor
    active = (st > 0) & (size > 0)
    st_safe = jnp.where(active, st, 1.0)
    # lam at which a group saturates (m = n) / goes below m = 1e-12: bracket all of them
    slopes_n = jnp.where(active, _neg_slope(jnp.maximum(size, 1.0), st_safe, weight), jnp.inf)
    lo0 = jnp.log(jnp.min(slopes_n)) - 1.0
    hi0 = jnp.log(jnp.max(jnp.where(active, _neg_slope(jnp.full_like(st, 1e-9), st_safe, weight), 0.0))) + 1.0

    def solve(total_fn):
        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            over = total_fn(_m_of_lam(jnp.exp(mid), st, size, weight)) > budget
            return jnp.where(over, mid, lo), jnp.where(over, hi, mid)

        _, hi = jax.lax.fori_loop(0, _ITERS, body, (lo0, hi0))
        return _m_of_lam(jnp.exp(hi), st, size, weight)  # hi: feasible side

    fits = jnp.sum(jnp.where(active, size, 0.0)) <= budget
    full = jnp.where(active, size, 0.0)
    m_frac = jnp.where(fits, full, solve(jnp.sum))
    m_int = jnp.where(fits, full, _ceil(solve(lambda m: jnp.sum(_ceil(m)))))
    return jnp.where(valid, m_frac, jnp.nan), jnp.where(valid, m_int.astype(jnp.int32), -1)


def sign_sides(w: jax.Array) -> jax.Array:
    """``(2, F, c)`` bool: membership of each weight of ``neuron_view(w)`` in
    the positive (row 0) and negative (row 1) group of its unit."""
    w2 = neuron_view(w)
    return jnp.stack([w2 > 0, w2 < 0])


def group_stats(sensitivities: PyTree, params: PyTree) -> tuple[PyTree, PyTree]:
    """``(s_sum, size)``: pytrees with a ``(2, units)`` array per prunable leaf
    over (sign side [+, -], output unit): the group's sensitivity sum and its
    number of nonzero weights. ``None`` where sensitivities are ``None``.
    Each sensitivity leaf must have its weight's shape; concrete ones must be
    finite and >= 0, concrete weights finite (``ValueError``).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.array([[1.0, -2.0], [-3.0, 4.0], [0.0, 5.0]])}
    >>> s = {"kernel": jnp.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])}
    >>> s_sum, size = jp.sipp.group_stats(s, params)
    >>> [[round(v, 3) for v in row] for row in s_sum["kernel"].tolist()]   # rows: + / - weights; cols: units
    [[0.1, 1.0], [0.3, 0.2]]
    >>> size["kernel"].tolist()                                            # nonzero weights per group
    [[1.0, 2.0], [1.0, 1.0]]
    """
    check_same_structure(params, sensitivities, "params", "sensitivities")
    check_sensitivities(sensitivities, params)
    return _group_stats(sensitivities, params)


def _group_stats(sensitivities: PyTree, params: PyTree) -> tuple[PyTree, PyTree]:
    """:func:`group_stats` without the checks (the caller made them)."""

    def s_sum(s: Any, w: Any) -> Any:
        if s is None or w is None:
            return None
        return jnp.sum(jnp.where(sign_sides(w), neuron_view(s).astype(jnp.float32)[None], 0.0), axis=1)

    def size(s: Any, w: Any) -> Any:
        return None if s is None or w is None else jnp.sum(sign_sides(w), axis=1).astype(jnp.float32)

    return (
        jax.tree.map(s_sum, sensitivities, params, is_leaf=is_none),
        jax.tree.map(size, sensitivities, params, is_leaf=is_none),
    )


def check_sensitivities(sensitivities: PyTree, params: PyTree) -> None:
    """Shapes match leaf by leaf; concrete sensitivities finite and >= 0 and
    concrete params finite (``ValueError`` naming the leaf)."""
    flat_s = jax.tree.leaves_with_path(sensitivities, is_leaf=is_none)
    for (path, s), w in zip(flat_s, jax.tree.leaves(params, is_leaf=is_none), strict=True):
        if s is None:
            continue
        if w is None or jnp.shape(s) != jnp.shape(w):
            raise ValueError(
                f"sensitivities at {path_str(path)!r} have shape {jnp.shape(s)}, "
                f"params {None if w is None else jnp.shape(w)}"
            )
    _validate.check_array_range("sensitivities", sensitivities, low=0.0)
    _validate.check_array_range("params", params)


def optalloc(
    sensitivities: PyTree,
    budget: int,
    *,
    params: PyTree,
    c: float = 3.0,
    delta: float = 1e-16,
    eta: float = 1.0,
) -> PyTree:
    """Budget per parameter group (module docstring).

    Args:
      sensitivities: pytree from :func:`jaxprune.sipp.sensitivity` (``None`` =
        not prunable).
      budget: total number of weights to keep, ``B >= 0``.
      params: the weights (their signs define the two groups of each unit).
      c: the constant C of Lemma 7.
      delta: the failure probability delta of Lemma 7.
      eta: total output patches of the network (``sum(layer_output_sizes(...))``).

    Returns:
      A pytree like ``sensitivities`` with an int32 ``(2, units)`` allocation
      (row 0: positive weights, row 1: negative weights) on prunable leaves.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.array([[1.0, -2.0], [-3.0, 4.0], [0.5, 5.0]]), "bias": jnp.zeros(2)}
    >>> s = {"kernel": jnp.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]), "bias": None}   # sensitivities
    >>> alloc = jp.sipp.optalloc(s, 4, params=params)      # keep 4 weights in all
    >>> alloc["kernel"].tolist(), alloc["bias"]                # rows: + / - weights; columns: units
    ([[1, 1], [1, 1]], None)
    """
    check_finite_number("budget", budget, low=0.0)
    check_finite_number("c", c, low=0.0, low_open=True)
    factor = log_term(eta, delta)
    sums, sizes = group_stats(sensitivities, params)
    return _allocate_tree(sums, sizes, budget, c=c, log_factor=factor)[1]


def _allocate_tree(
    sums: PyTree, sizes: PyTree, budget: Any, *, c: float, log_factor: float
) -> tuple[PyTree, PyTree]:
    """:func:`allocate` over the groups of all leaves at once; returns the
    ``(m_frac, m_int)`` pytrees of ``(2, units)`` arrays."""
    leaves, treedef = jax.tree.flatten(sums, is_leaf=is_none)
    size_leaves = jax.tree.leaves(sizes, is_leaf=is_none)
    live = [i for i, g in enumerate(leaves) if g is not None]
    if not live:
        return sums, sums
    s_flat = jnp.concatenate([leaves[i].ravel() for i in live])
    n_flat = jnp.concatenate([size_leaves[i].ravel() for i in live])
    w_flat = jnp.concatenate([jnp.full(leaves[i].size, 1.0 / leaves[i].shape[-1]) for i in live])
    results = _allocate_jit(s_flat, n_flat, w_flat, budget, c=c, log_factor=log_factor)
    trees = []
    for flat in results:
        out, start = [None] * len(leaves), 0
        for i in live:
            n = leaves[i].size
            out[i] = flat[start : start + n].reshape(leaves[i].shape)
            start += n
        trees.append(jax.tree.unflatten(treedef, out))
    return trees[0], trees[1]


_allocate_jit = jax.jit(allocate, static_argnames=("c", "log_factor"))
