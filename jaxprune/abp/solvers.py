"""Per-neuron refits for ABP, computed from Gram statistics only.

A dense layer with inputs ``X`` (N, d) and pre-activations ``Y`` (N, o) is
summarized by :class:`GramStats` (sample count, means, centered cross-product
sums). Both refits then cost O(d^2 o) per iteration, independent of N, and
solve all ``o`` neurons of the layer at once:

- :func:`masked_lstsq`: least squares of each neuron's target on its own subset
  of inputs, plus an unpenalized bias (ABP-M refit, Algorithm 2 step 5);
- :func:`lasso_fista`: LASSO with scikit-learn's objective
  ``(1/2N) ||y - X w - b||^2 + lam ||w||_1`` and unpenalized bias (ABP-L,
  Algorithm 3), by FISTA with adaptive restart and a duality-gap stopping rule.

Statistics accumulate batch by batch (:func:`batch_stats`, :func:`merge_stats`:
Chan et al.'s pairwise update, so no large-mean cancellation in float32).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxprune import _validate

_HI = jax.lax.Precision.HIGHEST


class GramStats(NamedTuple):
    """Sufficient statistics of a linear fit of ``Y`` (N, o) on ``X`` (N, d).

    count: () total sample weight N. mean_x: (d,). mean_y: (o,).
    sxx: (d, d) sum of (x - mean_x)(x - mean_x)^T. sxy: (d, o) sum of
    (x - mean_x)(y - mean_y)^T. syy: (o,) sum of (y - mean_y)^2 per column.
    """

    count: jax.Array
    mean_x: jax.Array
    mean_y: jax.Array
    sxx: jax.Array
    sxy: jax.Array
    syy: jax.Array


@jax.jit
def batch_stats(x: jax.Array, y: jax.Array, weight: jax.Array | None = None) -> GramStats:
    """Statistics of one batch: ``x`` (B, d), ``y`` (B, o), optional per-row
    ``weight`` (B,) (0 for padding rows). Two-pass (centered) within the batch;
    accumulates in float32 at least.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> y = x @ jnp.array([[2.0], [0.0], [-1.0]]) + 0.5            # one neuron: y = 2 x0 - x2 + 0.5
    >>> stats = jp.abp.batch_stats(x, y)
    >>> float(stats.count), stats.sxx.shape, stats.sxy.shape
    (64.0, (3, 3), (3, 1))
    """
    dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
    x, y = x.astype(dtype), y.astype(dtype)
    w = jnp.ones(x.shape[0], dtype) if weight is None else weight.astype(dtype)
    n = jnp.sum(w)
    safe_n = jnp.maximum(n, jnp.finfo(dtype).tiny)
    mean_x = jnp.matmul(w, x, precision=_HI) / safe_n
    mean_y = jnp.matmul(w, y, precision=_HI) / safe_n
    xc, yc = x - mean_x, y - mean_y
    xw = xc * w[:, None]
    return GramStats(
        count=n,
        mean_x=mean_x,
        mean_y=mean_y,
        sxx=jnp.matmul(xw.T, xc, precision=_HI),
        sxy=jnp.matmul(xw.T, yc, precision=_HI),
        syy=jnp.matmul(w, yc * yc, precision=_HI),
    )


@jax.jit
def merge_stats(a: GramStats, b: GramStats) -> GramStats:
    """Statistics of the union of two sample sets (pairwise update).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> y = x @ jnp.array([[2.0], [0.0], [-1.0]]) + 0.5            # one neuron: y = 2 x0 - x2 + 0.5
    >>> whole = jp.abp.batch_stats(x, y)
    >>> merged = jp.abp.merge_stats(jp.abp.batch_stats(x[:20], y[:20]), jp.abp.batch_stats(x[20:], y[20:]))
    >>> float(merged.count), all(bool(jnp.allclose(a, b, atol=1e-4)) for a, b in zip(merged, whole))
    (64.0, True)
    """
    n = a.count + b.count
    safe_n = jnp.maximum(n, jnp.finfo(a.sxx.dtype).tiny)
    frac_b = b.count / safe_n
    dx, dy = b.mean_x - a.mean_x, b.mean_y - a.mean_y
    cross = a.count * frac_b  # n_a n_b / n
    return GramStats(
        count=n,
        mean_x=a.mean_x + frac_b * dx,
        mean_y=a.mean_y + frac_b * dy,
        sxx=a.sxx + b.sxx + cross * jnp.outer(dx, dx),
        sxy=a.sxy + b.sxy + cross * jnp.outer(dx, dy),
        syy=a.syy + b.syy + cross * dy * dy,
    )


@jax.jit
def without_intercept(s: GramStats) -> GramStats:
    """The same data as statistics for a fit with NO bias: means set to 0 and
    the cross products made uncentered (for ``use_bias=False`` layers)."""
    n = s.count
    zx, zy = jnp.zeros_like(s.mean_x), jnp.zeros_like(s.mean_y)
    return GramStats(
        count=n,
        mean_x=zx,
        mean_y=zy,
        sxx=s.sxx + n * jnp.outer(s.mean_x, s.mean_x),
        sxy=s.sxy + n * jnp.outer(s.mean_x, s.mean_y),
        syy=s.syy + n * s.mean_y * s.mean_y,
    )


def _covariances(s: GramStats) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(C (d, d), c (d, o), v (o,)): covariance of x, cross-covariance, var of y."""
    n = jnp.maximum(s.count, jnp.finfo(s.sxx.dtype).tiny)
    return s.sxx / n, s.sxy / n, s.syy / n


def _intercept(s: GramStats, w: jax.Array) -> jax.Array:
    """Least-squares/LASSO bias for weights ``w`` (d, o): mean_y - mean_x @ w."""
    return s.mean_y - jnp.matmul(s.mean_x, w, precision=_HI)


# An input whose variance is below this floor, or below (32 float32 ulps of its
# mean)^2, is constant on the data (dead ReLU, all-zero or single-sample
# inputs, or rounding noise): its coefficient is not identified by the data.
_VAR_FLOOR = 1e-30
_CONST_REL = 32.0 * float(jnp.finfo(jnp.float32).eps)
_RETRY_RIDGES = (1e-4, 1e-2)  # relative ridges tried for neurons whose Cholesky failed


def informative(stats: GramStats) -> jax.Array:
    """(d,) bool: inputs that vary on the data (variance above ``1e-30`` and
    above ``(32 eps |mean|)^2``); the others are constant, their weights are
    not identified by a fit and their effect is a shift of the bias."""
    var = jnp.diagonal(stats.sxx) / jnp.maximum(stats.count, jnp.finfo(stats.sxx.dtype).tiny)
    return (var > _VAR_FLOOR) & (var > jnp.square(_CONST_REL * stats.mean_x))


def _stats_finite(stats: GramStats) -> jax.Array:
    ok = jnp.bool_(True)
    for field in stats:
        ok &= jnp.all(jnp.isfinite(field))
    return ok


def _check_fit_args(stats: GramStats, **arrays: jax.Array | None) -> None:
    """Shapes (each of ``arrays`` is (d, o) or None) and, when concrete,
    finite statistics (``ValueError``)."""
    d, o = jnp.shape(stats.sxy)
    for name, w in arrays.items():
        if w is not None and jnp.shape(w) != (d, o):
            raise ValueError(f"{name} must have shape (d, o) = {(d, o)} like stats.sxy, got {jnp.shape(w)}")
    _validate.check_array_range("stats", stats)


def masked_lstsq(
    stats: GramStats, support: jax.Array, ridge: float = 1e-6, w0: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Least squares with intercept, each neuron on its own input subset.

    For neuron j with support ``S = support[:, j]`` this minimizes
    ``sum_n (y_nj - x_nS . w_S - b_j)^2 + ridge * N * sum_{i in S} var(x_i) (w_i - w0_ij)^2``
    and sets ``w`` to 0 off ``S``: a ridge relative to each input's own
    variance (the system is solved in correlation units, ``C_SS / (sd sd^T) +
    ridge * I``, by Cholesky, all neurons vmapped), so it can neither
    underflow nor depend on the inputs' scale. It makes rank-deficient
    subsets (duplicated inputs) solvable, choosing the least-squares solution
    closest to ``w0``.

    Degenerate data never give NaN:
    - inputs that are constant on the data (:func:`informative`: all-zero
      inputs, dead ReLUs, a single sample, rounding noise) keep their ``w0``
      weight if in ``S`` (the data cannot identify it; the bias absorbs its
      constant contribution), so an all-degenerate layer keeps ``w0`` on ``S``
      and only the bias is refit;
    - a neuron whose Cholesky factorization fails in float32 (``ridge`` 0 or
      too small for a near-singular subset) is re-solved with relative ridges
      ``1e-4`` then ``1e-2``; if that fails too, it keeps ``w0`` on ``S``.

    Args:
      stats: :class:`GramStats` of the layer (d inputs, o neurons).
      support: (d, o) bool, the inputs each neuron keeps.
      ridge: relative ridge (>= 0).
      w0: (d, o) weights the ridge pulls towards (ABP: the original kernel);
        None: zeros (the minimum-norm choice).

    Returns:
      (w (d, o), b (o,)). Concrete NaN/inf ``stats`` or a negative / non-finite
      ``ridge`` raise ``ValueError``; traced ones (under ``jit``) give NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> y = x @ jnp.array([[2.0], [0.0], [-1.0]]) + 0.5            # one neuron: y = 2 x0 - x2 + 0.5
    >>> support = jnp.array([[True], [False], [True]])     # the inputs the neuron keeps
    >>> w, b = jp.abp.masked_lstsq(jp.abp.batch_stats(x, y), support)
    >>> w.round(3).ravel().tolist(), round(float(b[0]), 3)
    ([2.0, 0.0, -1.0], 0.5)
    """
    _check_fit_args(stats, support=support, w0=w0)
    _validate.check_finite_number("ridge", ridge, low=0.0)
    return _masked_lstsq(stats, jnp.asarray(support, bool), ridge, w0)


@jax.jit
def _masked_lstsq(
    stats: GramStats, support: jax.Array, ridge: float, w0: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    cov, cross, _ = _covariances(stats)
    dtype = cov.dtype
    d = cov.shape[0]
    w0 = jnp.zeros_like(cross) if w0 is None else jnp.asarray(w0, dtype)
    live = informative(stats)
    sd = jnp.where(live, jnp.sqrt(jnp.where(live, jnp.diagonal(cov), 1.0)), 1.0)
    corr = cov / sd[:, None] / sd[None, :]  # |corr| <= 1: no overflow, no underflow
    corr = jnp.where(live[:, None] & live[None, :], corr, 0.0)
    rhs = cross / sd[:, None]  # (d, o): cov(x_i, y_j) / sd_i
    u0 = w0 * sd[:, None]  # w0 in correlation units
    use = support & live[:, None]  # coordinates actually fitted
    eye = jnp.eye(d, dtype=dtype)
    ridge = jnp.asarray(ridge, dtype)

    def one(keep: jax.Array, r: jax.Array, u0j: jax.Array, lam: jax.Array) -> jax.Array:
        s = keep.astype(dtype)
        a = corr * s[:, None] * s[None, :] + jnp.diag(1.0 - s) + lam * eye
        chol = jnp.linalg.cholesky(a)
        return jax.scipy.linalg.cho_solve((chol, True), (r + lam * u0j) * s) * s

    def solve(lam: jax.Array) -> jax.Array:
        return jax.vmap(one, in_axes=(1, 1, 1, None), out_axes=1)(use, rhs, u0, lam)

    def retry(u: jax.Array, lam: jax.Array) -> jax.Array:
        bad = ~jnp.all(jnp.isfinite(u), axis=0)
        return jax.lax.cond(jnp.any(bad), lambda: jnp.where(bad, solve(lam), u), lambda: u)

    u = solve(ridge)
    for lam in _RETRY_RIDGES:  # only computed when some neuron failed
        u = retry(u, jnp.maximum(ridge, lam))
    ok = jnp.all(jnp.isfinite(u), axis=0)
    w = jnp.where(use & ok, u / sd[:, None], jnp.where(support, w0, 0.0))
    valid = _stats_finite(stats) & jnp.isfinite(ridge) & (ridge >= 0) & jnp.all(jnp.isfinite(w0))
    w = jnp.where(valid, w, jnp.nan)  # traced bad input: visible, not a plausible refit
    return w, _intercept(stats, w)


class LassoInfo(NamedTuple):
    """FISTA diagnostics: iterations run, final duality gap per neuron (o,),
    relative to the neuron's target variance, and whether all reached ``tol``."""

    iterations: jax.Array
    rel_gap: jax.Array
    converged: jax.Array


def _soft(x: jax.Array, thresh: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - thresh, 0.0)


def _rel_gap(cov: jax.Array, cross: jax.Array, var_y: jax.Array, w: jax.Array, lam: jax.Array) -> jax.Array:
    """Duality gap of the centered LASSO per neuron, divided by var(y), from
    Gram quantities only (scikit-learn's gap, divided by N)."""
    grad_neg = cross - jnp.matmul(cov, w, precision=_HI)  # X^T r / N, (d, o)
    ry = var_y - jnp.sum(cross * w, axis=0)  # r . y / N
    rr = ry - jnp.sum(w * grad_neg, axis=0)  # r . r / N
    dual_norm = jnp.max(jnp.abs(grad_neg), axis=0)
    const = jnp.minimum(1.0, lam / jnp.maximum(dual_norm, jnp.finfo(w.dtype).tiny))
    gap = 0.5 * rr * (1.0 + const**2) + lam * jnp.sum(jnp.abs(w), axis=0) - const * ry
    return gap / jnp.maximum(var_y, jnp.finfo(w.dtype).tiny)


def lasso_fista(
    stats: GramStats,
    lam: float | jax.Array,
    w0: jax.Array | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 5000,
) -> tuple[jax.Array, jax.Array, LassoInfo]:
    """LASSO with intercept for all neurons of a layer, by FISTA.

    Minimizes, per neuron j, ``(1/2N) ||y_j - X w_j - b_j||^2 + lam ||w_j||_1``
    (scikit-learn ``Lasso(alpha=lam)``; the bias is unpenalized, i.e. the fit
    runs on centered data). Step size 1/L with L the largest eigenvalue of the
    input covariance; gradient-based adaptive restart (O'Donoghue & Candes);
    a neuron stops once its duality gap is <= ``tol * var(y_j)`` (the
    scikit-learn criterion; in float32 the gap is resolved to ~1e-7 only, so
    keep ``tol`` >= 1e-7), all stop at ``max_iter``. Soft-thresholding gives
    exact zeros: they are the pruning mask.

    Inputs constant on the data (:func:`informative`: all-zero inputs, dead
    ReLUs, a single sample) have no gradient: their weight is 0 for
    ``lam > 0`` (the LASSO optimum) and stays at ``w0`` for ``lam = 0``; an
    all-constant layer gives ``w = 0`` (``lam > 0``) and ``b = mean(y)``,
    which reproduces its (constant) pre-activations. No NaN on such data.

    Args:
      stats: :class:`GramStats` of the layer (d inputs, o neurons).
      lam: penalty (>= 0).
      w0: (d, o) warm start (e.g. the original kernel, which is the full
        least-squares solution of the layer's own pre-activations); zeros if None.
      tol: relative duality-gap tolerance.
      max_iter: iteration cap.

    Returns:
      (w (d, o), b (o,), :class:`LassoInfo`). Concrete NaN/inf ``stats``, a
      negative / non-finite ``lam`` or ``tol``, or ``max_iter`` < 1 raise
      ``ValueError``; traced bad values (under ``jit``) give NaN weights.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> y = x @ jnp.array([[2.0], [0.0], [-1.0]]) + 0.5            # one neuron: y = 2 x0 - x2 + 0.5
    >>> w, b, info = jp.abp.lasso_fista(jp.abp.batch_stats(x, y), 0.1)
    >>> (w != 0).ravel().tolist()                            # the LASSO drops the unused input
    [True, False, True]
    """
    _check_fit_args(stats, w0=w0)
    _validate.check_finite_number("lam", lam, low=0.0)
    _validate.check_finite_number("tol", tol, low=0.0)
    _validate.check_int("max_iter", max_iter, low=1)
    return _lasso_fista(stats, lam, w0, tol=tol, max_iter=max_iter)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _lasso_fista(
    stats: GramStats, lam: float | jax.Array, w0: jax.Array | None, *, tol: float, max_iter: int
) -> tuple[jax.Array, jax.Array, LassoInfo]:
    cov, cross, var_y = _covariances(stats)
    dtype = cov.dtype
    live = informative(stats)
    cov = jnp.where(live[:, None] & live[None, :], cov, 0.0)
    cross = jnp.where(live[:, None], cross, 0.0)
    lam = jnp.asarray(lam, dtype)
    lip = jnp.maximum(jnp.linalg.eigvalsh(cov)[-1], jnp.finfo(dtype).tiny)
    w = jnp.zeros_like(cross) if w0 is None else jnp.asarray(w0, dtype)
    w0_checked = w
    w = jnp.where(live[:, None] | (lam == 0), w, 0.0)  # constant inputs: the LASSO optimum is 0 (lam > 0)
    o = cross.shape[1]

    def cond(state):
        k, _, _, _, done = state
        return (k < max_iter) & ~jnp.all(done)

    def body(state):
        k, w, z, t, done = state
        grad = jnp.matmul(cov, z, precision=_HI) - cross
        w_new = _soft(z - grad / lip, lam / lip)
        restart = jnp.sum((z - w_new) * (w_new - w), axis=0) > 0  # momentum points uphill
        t_new = jnp.where(restart, 1.0, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)))
        mom = jnp.where(restart, 0.0, (t - 1.0) / t_new)
        z_new = w_new + mom * (w_new - w)
        w_new = jnp.where(done, w, w_new)
        z_new = jnp.where(done, w, z_new)
        done = done | (_rel_gap(cov, cross, var_y, w_new, lam) <= tol)
        return k + 1, w_new, z_new, t_new, done

    done0 = _rel_gap(cov, cross, var_y, w, lam) <= tol
    init = (jnp.asarray(0, jnp.int32), w, w, jnp.ones(o, dtype), done0)
    k, w, _, _, done = jax.lax.while_loop(cond, body, init)
    valid = _stats_finite(stats) & jnp.isfinite(lam) & (lam >= 0) & jnp.all(jnp.isfinite(w0_checked))
    w = jnp.where(valid, w, jnp.nan)  # traced bad input: visible, not a plausible fit
    info = LassoInfo(iterations=k, rel_gap=_rel_gap(cov, cross, var_y, w, lam), converged=jnp.all(done))
    return w, _intercept(stats, w), info
