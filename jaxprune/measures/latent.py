"""AP2 and AP3 (Mozafarinia & Yasaei Sekeh): distances between a layer's
weights ``w`` and its pruned / fine-tuned version ``w~`` in a latent space.

- ``ap2 = ||w - w~||_2^2``.
- ``ap3_gaussian = KL(N(w, S1) || N(w~, S2))`` in closed form, through Cholesky
  factors (never an explicit inverse).
- ``ap3_student_t = KL(P || Q)`` of two multivariate Student-t laws with
  identity scale, located at the group means of ``w`` and ``w~``, estimated by
  seeded Monte Carlo in bounded-memory chunks.

Inputs are arrays of any shape (flattened to ``k = w.size`` entries);
bf16/float16 are computed in float32. All functions are jittable.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from jaxprune import _validate

_CHUNK = 1 << 16  # Monte Carlo samples per chunk of ap3_student_t


def _pair(w: jax.Array, w_pruned: jax.Array) -> tuple[jax.Array, jax.Array]:
    w, w_pruned = jnp.asarray(w), jnp.asarray(w_pruned)
    if w.shape != w_pruned.shape:
        raise ValueError(f"w_pruned has shape {w_pruned.shape}, expected the shape of w {w.shape}")
    _validate.check_finite("w", w)
    _validate.check_finite("w_pruned", w_pruned)
    return w.reshape(-1).astype(jnp.float32), w_pruned.reshape(-1).astype(jnp.float32)


def ap2(w: jax.Array, w_pruned: jax.Array) -> jax.Array:
    """AP2 ``= ||w - w~||_2^2`` (float32 scalar)."""
    w, w_pruned = _pair(w, w_pruned)
    return jnp.sum(jnp.square(w - w_pruned))


# ----------------------------------------------------------------------------- Gaussian


def _cov_kind(name: str, cov, k: int) -> str:
    if cov is None:
        return "scalar"
    shape = jnp.shape(cov)
    if shape == ():
        _validate.check_number(name, cov, low=0.0, low_open=True)
        return "scalar"
    if shape == (k,):
        return "diag"
    if shape == (k, k):
        return "full"
    raise ValueError(f"{name} must be a scalar, a ({k},) vector or a ({k}, {k}) matrix; got shape {shape}")


def _as_kind(cov, kind: str, k: int) -> jax.Array:
    cov = jnp.float32(1.0) if cov is None else jnp.asarray(cov).astype(jnp.float32)
    if kind == "diag":
        return jnp.broadcast_to(cov, (k,))
    if kind == "full":
        return cov if cov.ndim == 2 else jnp.diag(jnp.broadcast_to(cov, (k,)))
    return cov


def _cholesky(name: str, cov: jax.Array) -> jax.Array:
    chol = jnp.linalg.cholesky(cov)
    if not isinstance(chol, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(chol))):
        raise ValueError(f"{name} is not a symmetric positive definite matrix (Cholesky failed)")
    return chol


def ap3_gaussian(
    w: jax.Array,
    w_pruned: jax.Array,
    *,
    cov: jax.Array | float | None = None,
    cov_pruned: jax.Array | float | None = None,
) -> jax.Array:
    """AP3 with Gaussian latents: ``KL(N(w, S1) || N(w~, S2))`` =
    ``1/2 [tr(S2^-1 S1) + D^T S2^-1 D - k + ln(det S2 / det S1)]``, ``D = w~ - w``.

    ``cov`` (S1): a scalar ``sigma^2`` (S1 = sigma^2 I), a ``(k,)`` vector
    (diagonal) or a ``(k, k)`` SPD matrix; ``None`` = identity.
    ``cov_pruned`` (S2): same forms; ``None`` = the same as ``cov``, which gives
    ``1/2 D^T S^-1 D``. Matrices go through Cholesky factors and triangular
    solves. Float32 scalar."""
    w, w_pruned = _pair(w, w_pruned)
    k = w.shape[0]
    kind1 = _cov_kind("cov", cov, k)
    kind2 = kind1 if cov_pruned is None else _cov_kind("cov_pruned", cov_pruned, k)
    if cov is not None and jnp.shape(cov) == (k,):
        _validate.check_number("min(cov)", jnp.min(cov), low=0.0, low_open=True)
    if cov_pruned is not None and jnp.shape(cov_pruned) == (k,):
        _validate.check_number("min(cov_pruned)", jnp.min(cov_pruned), low=0.0, low_open=True)
    diff = w_pruned - w
    kinds = {kind1, kind2}
    kind = "full" if "full" in kinds else "diag" if "diag" in kinds else "scalar"
    s1 = _as_kind(cov, kind, k)
    if kind == "full":
        l1 = _cholesky("cov", s1)
        if cov_pruned is None:
            z = solve_triangular(l1, diff, lower=True)
            return 0.5 * jnp.sum(jnp.square(z))
        l2 = _cholesky("cov_pruned", _as_kind(cov_pruned, kind, k))
        a = solve_triangular(l2, l1, lower=True)  # L2^-1 L1: tr(S2^-1 S1) = ||A||_F^2
        z = solve_triangular(l2, diff, lower=True)
        logdet = 2.0 * (jnp.sum(jnp.log(jnp.diag(l2))) - jnp.sum(jnp.log(jnp.diag(l1))))
        return 0.5 * (jnp.sum(jnp.square(a)) + jnp.sum(jnp.square(z)) - k + logdet)
    if cov_pruned is None:
        return 0.5 * jnp.sum(jnp.square(diff) / jnp.broadcast_to(s1, (k,)))
    s2 = jnp.broadcast_to(_as_kind(cov_pruned, kind, k), (k,))
    s1 = jnp.broadcast_to(s1, (k,))
    ratio = s1 / s2
    return 0.5 * jnp.sum(ratio + jnp.square(diff) / s2 - 1.0 - jnp.log(ratio))


def nondiagonal_covariance(
    dim: int, *, key: jax.Array, beta: float = 1.0, eigenvalues: jax.Array | None = None
) -> jax.Array:
    """The paper's non-diagonal covariance ``beta V diag(lambda) V^T``, ``(dim, dim)``:
    ``V`` = eigenvectors of ``R + R^T`` for ``R ~ N(0, 1)^(dim x dim)`` drawn from
    ``key``; ``lambda`` = ``eigenvalues`` (all > 0) or, by default,
    ``uniform(0.5, 1.5)`` drawn from ``key``. Symmetric positive definite."""
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim={dim!r} must be an integer >= 1")
    _validate.check_number("beta", beta, low=0.0, low_open=True)
    key_r, key_l = jax.random.split(key)
    r = jax.random.normal(key_r, (dim, dim), jnp.float32)
    _, v = jnp.linalg.eigh(r + r.T)
    if eigenvalues is None:
        lam = jax.random.uniform(key_l, (dim,), jnp.float32, 0.5, 1.5)
    else:
        lam = jnp.asarray(eigenvalues, jnp.float32)
        if lam.shape != (dim,):
            raise ValueError(f"eigenvalues must have shape ({dim},), got {lam.shape}")
        _validate.check_number("min(eigenvalues)", jnp.min(lam), low=0.0, low_open=True)
    cov = beta * (v * lam) @ v.T
    return 0.5 * (cov + cov.T)


# ----------------------------------------------------------------------------- Student-t


def group_means(w: jax.Array, groups: int) -> jax.Array:
    """Means of contiguous groups of ``g = max(n // groups, 1)`` entries of the
    flattened ``w``; a remainder of ``n mod g`` entries forms one more group.
    Shape ``(ceil(n / g),)``."""
    w = jnp.reshape(w, (-1,))
    n = w.shape[0]
    g = max(n // groups, 1)
    full = n // g
    means = jnp.mean(w[: full * g].reshape(full, g), axis=1)
    if n % g:
        means = jnp.concatenate([means, jnp.mean(w[full * g :], keepdims=True)])
    return means


def _t_log_kernel(sq_dist: jax.Array, df: float, k: int) -> jax.Array:
    """The location-dependent part of the log density of a ``k``-variate
    Student-t with ``df`` degrees of freedom and identity scale:
    ``-(df + k)/2 * log(1 + ||x - mu||^2 / df)``; the normalizing constant is
    the same for P and Q and cancels in ``log p - log q``."""
    return -0.5 * (df + k) * jnp.log1p(sq_dist / df)


def _gamma(key: jax.Array, a: float, n: int) -> jax.Array:
    """``n`` exact Gamma(a, 1) draws by Marsaglia & Tsang (2000) with bulk
    rejection: each round draws one normal and one uniform for every slot
    still rejected (acceptance >= 95% per round); ``a < 1`` uses the boost
    ``Gamma(a) = Gamma(a + 1) U^(1/a)``. Much faster on CPU than
    ``jax.random.gamma``, which splits a key per element."""
    shape_a = a + 1.0 if a < 1.0 else a
    d = shape_a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    key, key_boost = jax.random.split(key)

    def round_(state):
        key, x, done = state
        key, kz, ku = jax.random.split(key, 3)
        z = jax.random.normal(kz, (n,), jnp.float32)
        log_u = jnp.log(jax.random.uniform(ku, (n,), jnp.float32))
        v = (1.0 + c * z) ** 3
        safe_v = jnp.where(v > 0, v, 1.0)
        ok = (v > 0) & (log_u < 0.5 * z * z + d - d * safe_v + d * jnp.log(safe_v))
        take = ok & ~done
        return key, jnp.where(take, d * safe_v, x), done | ok

    init = (key, jnp.zeros((n,), jnp.float32), jnp.zeros((n,), bool))
    _, x, _ = jax.lax.while_loop(lambda s: ~jnp.all(s[2]), round_, init)
    if a < 1.0:
        x = x * jnp.exp(jnp.log(jax.random.uniform(key_boost, (n,), jnp.float32)) / a)
    return x


@functools.partial(jax.jit, static_argnames=("df", "num_samples"))
def _student_t_kl(loc_p: jax.Array, loc_q: jax.Array, key: jax.Array, *, df: float, num_samples: int):
    k = loc_p.shape[0]
    gap = jnp.sqrt(jnp.sum(jnp.square(loc_q - loc_p)))
    chunks = -(-num_samples // _CHUNK)

    def chunk_sum(i, total):
        kz, kr, ku = jax.random.split(jax.random.fold_in(key, i), 3)
        # x - loc_p = z * sqrt(df / u), z ~ N(0, I_k), u ~ chi2(df). Only two
        # statistics of z matter: s = z . e (e = unit vector towards loc_q) and
        # rest = ||z||^2 - s^2 ~ chi2(k - 1), independent of s (rotation invariance).
        s = jax.random.normal(kz, (_CHUNK,), jnp.float32)
        rest = 2.0 * _gamma(kr, 0.5 * (k - 1), _CHUNK) if k > 1 else jnp.zeros((_CHUNK,), jnp.float32)
        u = 2.0 * _gamma(ku, 0.5 * df, _CHUNK)
        t = jnp.sqrt(df / u)
        ortho = jnp.square(t) * rest  # squared distance orthogonal to loc_q - loc_p
        sq_p = jnp.square(t * s) + ortho  # ||x - loc_p||^2
        sq_q = jnp.square(t * s - gap) + ortho  # ||x - loc_q||^2
        log_ratio = _t_log_kernel(sq_p, df, k) - _t_log_kernel(sq_q, df, k)
        valid = i * _CHUNK + jnp.arange(_CHUNK) < num_samples
        return total + jnp.sum(jnp.where(valid, log_ratio, 0.0))

    return jax.lax.fori_loop(0, chunks, chunk_sum, jnp.float32(0)) / num_samples


def ap3_student_t(
    w: jax.Array,
    w_pruned: jax.Array,
    *,
    key: jax.Array,
    df: float = 4.0,
    groups: int = 100,
    num_samples: int = 600_000,
) -> jax.Array:
    """AP3 with Student-t latents: ``KL(P || Q)``, P and Q multivariate
    Student-t with ``df`` degrees of freedom and identity scale, located at
    the group means (:func:`group_means`, ``groups`` groups, about ``groups``
    dimensions) of ``w`` and ``w_pruned``. Monte Carlo estimate
    ``mean_{x ~ P} [log p(x) - log q(x)]`` over ``num_samples`` draws seeded by
    ``key``, in chunks of 65,536 (memory independent of ``num_samples``).

    Each draw ``x = loc_p + z sqrt(df/u)`` is represented exactly by
    ``(z . e, ||z||^2 - (z . e)^2, u)`` with ``e`` the unit vector from
    ``loc_p`` to ``loc_q`` (N(0,1), chi2(k-1), chi2(df), independent): the
    same estimator as sampling the k-vector, at O(1) instead of O(k) cost per
    draw. Float32 scalar; 0 (to float32 rounding) when the group means coincide."""
    w, w_pruned = _pair(w, w_pruned)
    _validate.check_number("df", df, low=0.0, low_open=True)
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups={groups!r} must be an integer >= 1")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1")
    if w.shape[0] == 0:
        raise ValueError("w must have at least one entry")
    return _student_t_kl(
        group_means(w, groups), group_means(w_pruned, groups), key, df=float(df), num_samples=num_samples
    )
