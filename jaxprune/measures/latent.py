"""AP2 and AP3 (Mozafarinia & Yasaei Sekeh): distances between a layer's
weights ``w`` and its pruned / fine-tuned version ``w~`` in a latent space.

- ``ap2 = ||w - w~||_2^2``.
- ``ap3_gaussian = KL(N(w, S1) || N(w~, S2))`` in closed form, through Cholesky
  factors (never an explicit inverse).
- ``ap3_student_t = KL(P || Q)`` of two multivariate Student-t laws with
  identity scale, located at the group means of ``w`` and ``w~``, estimated by
  seeded Monte Carlo in bounded-memory chunks.

Inputs are real arrays of any shape (flattened to ``k = w.size`` entries);
bf16/float16 are computed in float32. All functions are jittable. Outside
``jit`` NaN/inf weights or covariances, non-symmetric or non-positive-definite
covariances and out-of-range scalars raise ``ValueError``; under ``jit``
(where array values cannot be inspected) such inputs give NaN, never a
plausible number.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from jaxprune import _validate

_CHUNK = 1 << 16  # Monte Carlo samples per chunk of ap3_student_t


def _pair(w: jax.Array, w_pruned: jax.Array) -> tuple[jax.Array, jax.Array]:
    _validate.check_real_dtype("w", w)
    _validate.check_real_dtype("w_pruned", w_pruned)
    w, w_pruned = jnp.asarray(w), jnp.asarray(w_pruned)
    if w.shape != w_pruned.shape:
        raise ValueError(f"w_pruned has shape {w_pruned.shape}, expected the shape of w {w.shape}")
    _validate.check_finite("w", w)
    _validate.check_finite("w_pruned", w_pruned)
    return w.reshape(-1).astype(jnp.float32), w_pruned.reshape(-1).astype(jnp.float32)


def ap2(w: jax.Array, w_pruned: jax.Array) -> jax.Array:
    """AP2 ``= ||w - w~||_2^2`` (float32 scalar).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> round(float(jp.measures.ap2(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.0, 3.0]))), 4)  # 2^2
    4.0
    """
    w, w_pruned = _pair(w, w_pruned)
    return jnp.sum(jnp.square(w - w_pruned))


# ----------------------------------------------------------------------------- Gaussian


_F32_TINY = float(jnp.finfo(jnp.float32).tiny)
_F32_MAX = float(jnp.finfo(jnp.float32).max)


def _cov_kind(name: str, cov, k: int) -> str:
    """The form of ``cov`` (scalar / diag / full), validated when concrete:
    finite, positive (a scalar or diagonal entry must be a normal float32,
    ``[1.2e-38, 3.4e38]``, so that no variance rounds to 0 or inf), and a
    matrix symmetric."""
    if cov is None:
        return "scalar"
    _validate.check_real_dtype(name, cov)
    shape = jnp.shape(cov)
    if shape == ():
        _validate.check_finite_number(name, cov, low=0.0, low_open=True)
        if _validate.is_concrete(cov) and not _F32_TINY <= float(cov) <= _F32_MAX:
            raise ValueError(
                f"{name}={cov!r} is not representable as a positive float32 (valid range "
                f"[{_F32_TINY:.3g}, {_F32_MAX:.3g}])"
            )
        return "scalar"
    if shape not in ((k,), (k, k)):
        raise ValueError(
            f"{name} must be a scalar, a ({k},) vector or a ({k}, {k}) matrix; got shape {shape}"
        )
    _validate.check_array_range(name, cov)  # finiteness, reduced on device
    if shape == (k,):
        if _validate.is_concrete(cov) and k:
            var = np.asarray(cov, np.float64)
            bad = ~((var >= _F32_TINY) & (var <= _F32_MAX))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{name}[{i}]={float(var[i])!r} is not a positive float32 variance (valid range "
                    f"[{_F32_TINY:.3g}, {_F32_MAX:.3g}])"
                )
        return "diag"
    if _validate.is_concrete(cov) and k and not bool(_symmetric(jnp.asarray(cov, jnp.float32))):
        asym = float(jnp.max(jnp.abs(jnp.asarray(cov) - jnp.asarray(cov).T)))
        raise ValueError(f"{name} must be a symmetric matrix; max |{name} - {name}^T| = {asym:.3g}")
    return "full"


def _symmetric(mat: jax.Array) -> jax.Array:
    """``max |M - M^T| <= 1e-5 max |M|`` (float32 rounding of a symmetric matrix)."""
    return jnp.max(jnp.abs(mat - mat.T), initial=0.0) <= 1e-5 * jnp.max(jnp.abs(mat), initial=0.0)


def _as_kind(cov, kind: str, k: int) -> jax.Array:
    cov = jnp.float32(1.0) if cov is None else jnp.asarray(cov).astype(jnp.float32)
    if kind == "diag":
        return jnp.broadcast_to(cov, (k,))
    if kind == "full":
        return cov if cov.ndim == 2 else jnp.diag(jnp.broadcast_to(cov, (k,)))
    return cov


def _cholesky(name: str, cov: jax.Array) -> jax.Array:
    """Lower Cholesky factor; ``ValueError`` (concrete) unless ``cov`` is
    positive definite in float32 (finite factor with a positive diagonal).
    Traced: a failed factor is NaN, and so is the result."""
    chol = jnp.linalg.cholesky(cov)
    ok = jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.diagonal(chol) > 0)
    if _validate.is_concrete(chol) and not bool(ok):
        raise ValueError(f"{name} is not a symmetric positive definite matrix (Cholesky failed)")
    return jnp.where(ok, chol, jnp.nan)


def _nan_unless_finite(value: jax.Array, *arrays: jax.Array) -> jax.Array:
    """``value``, or NaN if any of ``arrays`` holds NaN/inf (for traced inputs)."""
    ok = jnp.bool_(True)
    for a in arrays:
        ok &= jnp.all(jnp.isfinite(a))
    return jnp.where(ok, value, jnp.nan)


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
    solves; the diagonal forms use ``ln(S1/S2)`` from logarithms, so a huge
    variance ratio gives ``inf`` (the true value exceeds float32), never NaN.
    Covariances must be finite and positive (variances in float32's normal
    range), matrices symmetric positive definite: else ``ValueError`` (under
    ``jit``: NaN). Float32 scalar.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> w, w_pruned = jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.0, 3.0])
    >>> round(float(jp.measures.ap3_gaussian(w, w_pruned)), 4)            # identity covariance: |D|^2 / 2
    2.0
    >>> round(float(jp.measures.ap3_gaussian(w, w_pruned, cov=2.0)), 4)   # sigma^2 = 2: |D|^2 / 4
    1.0
    >>> round(float(jp.measures.ap3_gaussian(w, w, cov=1.0, cov_pruned=2.0)), 4)  # (3/2 - 3 + 3 ln 2) / 2
    0.2897
    """
    w, w_pruned = _pair(w, w_pruned)
    k = w.shape[0]
    kind1 = _cov_kind("cov", cov, k)
    kind2 = kind1 if cov_pruned is None else _cov_kind("cov_pruned", cov_pruned, k)
    diff = w_pruned - w
    kinds = {kind1, kind2}
    kind = "full" if "full" in kinds else "diag" if "diag" in kinds else "scalar"
    s1 = _as_kind(cov, kind, k)
    if kind == "full":
        l1 = _cholesky("cov", s1)
        if cov_pruned is None:
            z = solve_triangular(l1, diff, lower=True)
            value = 0.5 * jnp.sum(jnp.square(z))
            return jnp.where(_symmetric(s1), _nan_unless_finite(value, diff), jnp.nan)
        s2 = _as_kind(cov_pruned, kind, k)
        l2 = _cholesky("cov_pruned", s2)
        a = solve_triangular(l2, l1, lower=True)  # L2^-1 L1: tr(S2^-1 S1) = ||A||_F^2
        z = solve_triangular(l2, diff, lower=True)
        logdet = 2.0 * (jnp.sum(jnp.log(jnp.diag(l2))) - jnp.sum(jnp.log(jnp.diag(l1))))
        value = 0.5 * (jnp.sum(jnp.square(a)) + jnp.sum(jnp.square(z)) - k + logdet)
        sym = _symmetric(s1) & _symmetric(s2)  # traced: cholesky would silently symmetrize
        return jnp.where(sym, _nan_unless_finite(value, diff), jnp.nan)
    s1 = jnp.broadcast_to(s1, (k,))
    var_ok = [s1]
    if cov_pruned is None:
        value = 0.5 * jnp.sum(jnp.square(diff) / s1)
    else:
        s2 = jnp.broadcast_to(_as_kind(cov_pruned, kind, k), (k,))
        var_ok.append(s2)
        log_ratio = jnp.log(s1) - jnp.log(s2)  # finite for any positive float32 pair
        value = 0.5 * jnp.sum(jnp.exp(log_ratio) - 1.0 - log_ratio + jnp.square(diff) / s2)
    valid = jnp.bool_(True)
    for v in var_ok:  # traced covariances: NaN unless positive and finite
        valid &= jnp.all((v > 0) & jnp.isfinite(v))
    return jnp.where(valid, _nan_unless_finite(value, diff), jnp.nan)


def nondiagonal_covariance(
    dim: int, *, key: jax.Array, beta: float = 1.0, eigenvalues: jax.Array | None = None
) -> jax.Array:
    """The paper's non-diagonal covariance ``beta V diag(lambda) V^T``, ``(dim, dim)``:
    ``V`` = eigenvectors of ``R + R^T`` for ``R ~ N(0, 1)^(dim x dim)`` drawn from
    ``key``; ``lambda`` = ``eigenvalues`` (all > 0) or, by default,
    ``uniform(0.5, 1.5)`` drawn from ``key``. Symmetric positive definite.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import jax
    >>> lam = jnp.array([1.0, 2.0, 4.0])
    >>> cov = jp.measures.nondiagonal_covariance(3, key=jax.random.key(0), eigenvalues=lam)
    >>> cov.shape, bool(jnp.allclose(cov, cov.T))
    ((3, 3), True)
    >>> jnp.linalg.eigvalsh(cov).round(3)
    Array([1., 2., 4.], dtype=float32)
    """
    _validate.check_int("dim", dim, low=1)
    _validate.check_finite_number("beta", beta, low=0.0, low_open=True)
    if key is None:
        raise ValueError("key=None: nondiagonal_covariance draws R; pass key=jax.random.key(...)")
    key_r, key_l = jax.random.split(key)
    r = jax.random.normal(key_r, (dim, dim), jnp.float32)
    _, v = jnp.linalg.eigh(r + r.T)
    if eigenvalues is None:
        lam = jax.random.uniform(key_l, (dim,), jnp.float32, 0.5, 1.5)
    else:
        lam = jnp.asarray(eigenvalues, jnp.float32)
        if lam.shape != (dim,):
            raise ValueError(f"eigenvalues must have shape ({dim},), got {lam.shape}")
        _validate.check_array_range("eigenvalues", lam, low=0.0, low_open=True)
    cov = beta * (v * lam) @ v.T
    return 0.5 * (cov + cov.T)


# ----------------------------------------------------------------------------- Student-t


def group_means(w: jax.Array, groups: int) -> jax.Array:
    """Means of contiguous groups of ``g = max(n // groups, 1)`` entries of the
    flattened ``w``; a remainder of ``n mod g`` entries forms one more group.
    Shape ``(ceil(n / g),)``; ``groups`` must be an integer >= 1."""
    _validate.check_int("groups", groups, low=1)
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


def _log1p_remainder(t: jax.Array) -> jax.Array:
    """``R(t) = log1p(t) - t + t^2/2 - t^3/3`` (``= -t^4/4 + t^5/5 - ...``) to
    float32 relative accuracy: a series for ``|t| < 0.1``, else direct."""
    small = jnp.abs(t) < 0.1
    ts = jnp.where(small, t, 0.0)
    poly = jnp.zeros_like(t)
    for m in range(7, -1, -1):  # t^4 * sum_m (-1)^(m+1) t^m / (m + 4)
        poly = poly * ts + (-1.0) ** (m + 1) / (m + 4)
    tb = jnp.where(small, 0.5, jnp.maximum(t, -0.999999))
    direct = jnp.log1p(tb) - tb + tb * tb / 2.0 - tb * tb * tb / 3.0
    return jnp.where(small, jnp.square(jnp.square(ts)) * poly, direct)


def _gamma(key: jax.Array, a: float, n: int) -> jax.Array:
    """``n`` exact Gamma(a, 1) draws by Marsaglia & Tsang (2000) with bulk
    rejection: each round draws one normal and one uniform for every slot
    still rejected (acceptance >= 95% per round); ``a < 1`` uses the boost
    ``Gamma(a) = Gamma(a + 1) U^(1/a)``. Much faster on CPU than
    ``jax.random.gamma``, which splits a key per element.

    The acceptance test ``log U < z^2/2 + d - d v + d log v`` (``v = (1 + c z)^3``)
    is evaluated in the algebraically equal form ``log U < 3 d R(c z)``
    (:func:`_log1p_remainder`): the direct form cancels terms of size ``d``
    and in float32 rejects too few draws once ``a`` exceeds ~1e6."""
    shape_a = a + 1.0 if a < 1.0 else a
    d = shape_a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    key, key_boost = jax.random.split(key)

    def round_(state):
        key, x, done = state
        key, kz, ku = jax.random.split(key, 3)
        z = jax.random.normal(kz, (n,), jnp.float32)
        log_u = jnp.log(jax.random.uniform(ku, (n,), jnp.float32))
        t = c * z
        ok = (t > -1.0) & (log_u < 3.0 * d * _log1p_remainder(t))
        take = ok & ~done
        return key, jnp.where(take, d * jnp.where(ok, (1.0 + t) ** 3, 1.0), x), done | ok

    init = (key, jnp.zeros((n,), jnp.float32), jnp.zeros((n,), bool))
    _, x, _ = jax.lax.while_loop(lambda s: ~jnp.all(s[2]), round_, init)
    if a < 1.0:
        x = x * jnp.exp(jnp.log(jax.random.uniform(key_boost, (n,), jnp.float32)) / a)
    return x


# Above this df the Student-t laws are Gaussian to far below float32 resolution
# (their scale mixture has relative spread sqrt(2 / df)): closed form instead.
_DF_GAUSSIAN = 1e30


@functools.partial(jax.jit, static_argnames=("df", "num_samples"))
def _student_t_kl(loc_p: jax.Array, loc_q: jax.Array, key: jax.Array, *, df: float, num_samples: int):
    k = loc_p.shape[0]
    gap = jnp.sqrt(jnp.sum(jnp.square(loc_q - loc_p)))
    chunks = -(-num_samples // _CHUNK)

    def chunk_sum(i, total):
        kz, kr, ku = jax.random.split(jax.random.fold_in(key, i), 3)
        # x - loc_p = z / tau, z ~ N(0, I_k), tau = sqrt(u / df), u ~ chi2(df). Only two
        # statistics of z matter: s = z . e (e = unit vector towards loc_q) and
        # rest = ||z||^2 - s^2 ~ chi2(k - 1), independent of s (rotation invariance).
        s = jax.random.normal(kz, (_CHUNK,), jnp.float32)
        rest = 2.0 * _gamma(kr, 0.5 * (k - 1), _CHUNK) if k > 1 else jnp.zeros((_CHUNK,), jnp.float32)
        u = 2.0 * _gamma(ku, 0.5 * df, _CHUNK)
        # log p - log q = -(df + k)/2 * log((df + ||x - loc_p||^2) / (df + ||x - loc_q||^2))
        #              = -(df + k)/2 * log1p((A_p - A_q) / (u + A_q)),  A = tau^2 ||x - loc||^2:
        # A_p = s^2 + rest, A_q = (s - gap tau)^2 + rest, A_p - A_q = gap tau (2 s - gap tau).
        # Exact for u -> 0 (heavy tails, small df: the ratio -> 0 instead of inf/inf)
        # and for large df (no difference of two logs of ~df-sized numbers).
        g_tau = gap * jnp.sqrt(u / df)
        den = u + jnp.square(s - g_tau) + rest
        arg = jnp.where(den == 0, 0.0, g_tau * (2.0 * s - g_tau) / jnp.where(den == 0, 1.0, den))  # NaN stays
        log_ratio = -0.5 * (df + k) * jnp.log1p(arg)
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
    draw. Float32 scalar; 0 (to float32 rounding) when the group means coincide.

    ``df`` is any value in ``(0, inf]`` (a static Python number). ``df = inf``
    (and any ``df >= 1e30``, where the two laws are Gaussian to far below
    float32 resolution) is the Gaussian limit, computed in closed form:
    ``||loc_p - loc_q||^2 / 2`` = ``ap3_gaussian`` of the group means with
    identity covariance (no sampling; ``key`` unused). ``num_samples`` is in
    ``[1, 2^31 - 65536]``. Under ``jit``, NaN/inf weights give NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import jax
    >>> w, w_pruned = jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.0, 3.0])
    >>> exact = jp.measures.ap3_student_t(w, w_pruned, key=jax.random.key(0), df=float("inf"))  # Gaussian
    >>> mc = jp.measures.ap3_student_t(w, w_pruned, key=jax.random.key(0), df=4.0, num_samples=100_000)
    >>> round(float(exact), 4), bool(0.0 < float(mc) < float(exact))     # heavier tails: smaller KL
    (2.0, True)
    """
    w, w_pruned = _pair(w, w_pruned)
    _validate.check_number("df", df, low=0.0, low_open=True)
    _validate.check_int("groups", groups, low=1)
    _validate.check_int("num_samples", num_samples, low=1, high=2**31 - _CHUNK)
    if key is None:
        raise ValueError("key=None: ap3_student_t samples; pass key=jax.random.key(...)")
    if w.shape[0] == 0:
        raise ValueError("w must have at least one entry")
    loc_p, loc_q = group_means(w, groups), group_means(w_pruned, groups)
    if float(df) >= _DF_GAUSSIAN:
        return 0.5 * jnp.sum(jnp.square(loc_q - loc_p))
    return _student_t_kl(loc_p, loc_q, key, df=float(df), num_samples=int(num_samples))
