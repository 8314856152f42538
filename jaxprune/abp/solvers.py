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
    accumulates in float32 at least."""
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
    """Statistics of the union of two sample sets (pairwise update)."""
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


@jax.jit
def masked_lstsq(stats: GramStats, support: jax.Array, ridge: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Least squares with intercept, each neuron on its own input subset.

    For neuron j with support ``S = support[:, j]`` this minimizes
    ``sum_n (y_nj - x_nS . w_S - b_j)^2`` and sets ``w`` to 0 off ``S``.
    Solved by a Cholesky factorization of the masked covariance
    ``C_SS + ridge * mean(diag C) * I`` (all neurons vmapped); the tiny ridge
    makes rank-deficient subsets (dead ReLU inputs, duplicated inputs) solvable
    and gives their coefficients ~ the minimum-norm choice.

    Args:
      stats: :class:`GramStats` of the layer (d inputs, o neurons).
      support: (d, o) bool, the inputs each neuron keeps.
      ridge: relative ridge (>= 0).

    Returns:
      (w (d, o), b (o,)).
    """
    cov, cross, _ = _covariances(stats)
    d = cov.shape[0]
    eps = ridge * jnp.maximum(jnp.trace(cov) / d, jnp.finfo(cov.dtype).tiny)
    eye = jnp.eye(d, dtype=cov.dtype)

    def one(keep: jax.Array, rhs: jax.Array) -> jax.Array:
        s = keep.astype(cov.dtype)
        a = cov * s[:, None] * s[None, :] + jnp.diag(1.0 - s) + eps * eye
        chol = jnp.linalg.cholesky(a)
        return jax.scipy.linalg.cho_solve((chol, True), rhs * s) * s

    w = jax.vmap(one, in_axes=(1, 1), out_axes=1)(support, cross)
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


@functools.partial(jax.jit, static_argnames=("max_iter",))
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

    Args:
      stats: :class:`GramStats` of the layer (d inputs, o neurons).
      lam: penalty (>= 0).
      w0: (d, o) warm start (e.g. the original kernel, which is the full
        least-squares solution of the layer's own pre-activations); zeros if None.
      tol: relative duality-gap tolerance.
      max_iter: iteration cap.

    Returns:
      (w (d, o), b (o,), :class:`LassoInfo`).
    """
    cov, cross, var_y = _covariances(stats)
    dtype = cov.dtype
    lam = jnp.asarray(lam, dtype)
    lip = jnp.maximum(jnp.linalg.eigvalsh(cov)[-1], jnp.finfo(dtype).tiny)
    w = jnp.zeros_like(cross) if w0 is None else jnp.asarray(w0, dtype)
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
    info = LassoInfo(iterations=k, rel_gap=_rel_gap(cov, cross, var_y, w, lam), converged=jnp.all(done))
    return w, _intercept(stats, w), info
