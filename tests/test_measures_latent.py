"""Tests of jaxprune.measures.latent against NumPy/SciPy closed forms and
SciPy's multivariate Student-t."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxprune import measures
from jaxprune.measures import latent

RNG = np.random.default_rng(1)


def ref_kl_gauss(m1, s1, m2, s2):
    """KL(N(m1, s1) || N(m2, s2)) in float64 with explicit inverses (reference only)."""
    k = m1.size
    inv2 = np.linalg.inv(s2)
    diff = m2 - m1
    _, ld1 = np.linalg.slogdet(s1)
    _, ld2 = np.linalg.slogdet(s2)
    return 0.5 * (np.trace(inv2 @ s1) + diff @ inv2 @ diff - k + ld2 - ld1)


def spd(k):
    a = RNG.normal(size=(k, k))
    return a @ a.T + k * np.eye(k)


def test_ap2():
    w, v = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    np.testing.assert_allclose(measures.ap2(jnp.asarray(w), jnp.asarray(v)), ((w - v) ** 2).sum(), rtol=1e-5)


def test_ap3_gaussian_all_covariance_forms():
    k = 6
    w, v = RNG.normal(size=k), RNG.normal(size=k)
    wj, vj = jnp.asarray(w, jnp.float32), jnp.asarray(v, jnp.float32)
    f = lambda **kw: float(measures.ap3_gaussian(wj, vj, **kw))
    eye = np.eye(k)
    np.testing.assert_allclose(f(), 0.5 * ((w - v) ** 2).sum(), rtol=1e-5)
    want = ref_kl_gauss(w, 2 * eye, v, 0.5 * eye)
    np.testing.assert_allclose(f(cov=2.0, cov_pruned=0.5), want, rtol=1e-4)
    d1, d2 = RNG.uniform(0.5, 2, k), RNG.uniform(0.5, 2, k)
    want = ref_kl_gauss(w, np.diag(d1), v, np.diag(d2))
    np.testing.assert_allclose(f(cov=d1, cov_pruned=d2), want, rtol=1e-4)
    s1, s2 = spd(k), spd(k)
    np.testing.assert_allclose(f(cov=s1, cov_pruned=s2), ref_kl_gauss(w, s1, v, s2), rtol=1e-4)
    np.testing.assert_allclose(f(cov=3.0, cov_pruned=s2), ref_kl_gauss(w, 3 * eye, v, s2), rtol=1e-4)
    # equal covariances: 1/2 D^T S^-1 D
    diff = v - w
    np.testing.assert_allclose(f(cov=s1), 0.5 * diff @ np.linalg.solve(s1, diff), rtol=1e-4)
    np.testing.assert_allclose(f(cov=d1), 0.5 * (diff**2 / d1).sum(), rtol=1e-5)
    jitted = jax.jit(lambda a, b, c: measures.ap3_gaussian(a, b, cov=c))
    np.testing.assert_allclose(jitted(w, v, s1), 0.5 * diff @ np.linalg.solve(s1, diff), rtol=1e-4)


def test_ap3_gaussian_errors():
    w = jnp.ones(3)
    with pytest.raises(ValueError, match="w_pruned has shape"):
        measures.ap3_gaussian(w, jnp.ones(4))
    with pytest.raises(ValueError, match="cov must be"):
        measures.ap3_gaussian(w, w, cov=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="cov="):
        measures.ap3_gaussian(w, w, cov=-1.0)
    with pytest.raises(ValueError, match="positive definite"):
        measures.ap3_gaussian(w, w, cov=-jnp.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        measures.ap2(jnp.array([1.0, jnp.nan]), jnp.ones(2))


def test_nondiagonal_covariance():
    key = jax.random.key(3)
    cov = np.asarray(measures.nondiagonal_covariance(5, key=key, beta=2.0), np.float64)
    np.testing.assert_allclose(cov, cov.T)
    eig = np.linalg.eigvalsh(cov)
    assert np.all(eig > 2 * 0.5 - 1e-4) and np.all(eig < 2 * 1.5 + 1e-4)
    assert np.abs(cov - np.diag(np.diag(cov))).max() > 1e-3  # not diagonal
    lam = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    fixed = np.asarray(measures.nondiagonal_covariance(5, key=key, eigenvalues=lam), np.float64)
    np.testing.assert_allclose(np.linalg.eigvalsh(fixed), lam, rtol=1e-4)
    np.testing.assert_array_equal(cov, measures.nondiagonal_covariance(5, key=key, beta=2.0))  # seeded
    with pytest.raises(ValueError, match="eigenvalues"):
        measures.nondiagonal_covariance(5, key=key, eigenvalues=-lam)


def test_group_means():
    w = np.arange(1055, dtype=np.float32)
    g = np.asarray(latent.group_means(jnp.asarray(w), 100))  # groups of 10, remainder of 5
    assert g.shape == (106,)
    np.testing.assert_allclose(g[:105], w[:1050].reshape(105, 10).mean(1))
    np.testing.assert_allclose(g[105], w[1050:].mean())
    assert latent.group_means(jnp.ones(7), 100).shape == (7,)


def test_log_kernel_matches_scipy_student_t():
    k, df = 5, 4.0
    x = RNG.normal(size=(20, k)) * 3
    loc1, loc2 = RNG.normal(size=k), RNG.normal(size=k)
    sq = lambda loc: jnp.asarray(((x - loc) ** 2).sum(1), jnp.float32)
    got = latent._t_log_kernel(sq(loc1), df, k) - latent._t_log_kernel(sq(loc2), df, k)
    want = (stats.multivariate_t(loc1, np.eye(k), df=df).logpdf(x)
            - stats.multivariate_t(loc2, np.eye(k), df=df).logpdf(x))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_gamma_sampler_moments():
    for a in (0.7, 2.0, 49.5):
        x = np.asarray(latent._gamma(jax.random.key(5), a, 200_000), np.float64)
        assert abs(x.mean() - a) < 5 * math.sqrt(a / x.size)
        assert abs(x.var() / a - 1) < 0.03
        assert stats.kstest(x[:5000], stats.gamma(a).cdf).pvalue > 1e-3


def test_ap3_student_t_against_scipy_monte_carlo():
    k, df = 4, 4.0
    w = RNG.normal(size=k).astype(np.float32)
    v = (w + RNG.normal(size=k) * 0.8).astype(np.float32)
    got = float(measures.ap3_student_t(w, v, key=jax.random.key(0), df=df, groups=k, num_samples=200_000))
    p, q = stats.multivariate_t(w, np.eye(k), df=df), stats.multivariate_t(v, np.eye(k), df=df)
    x = p.rvs(size=200_000, random_state=7)
    ratio = p.logpdf(x) - q.logpdf(x)
    se = ratio.std() / math.sqrt(x.shape[0])
    assert abs(got - ratio.mean()) < 5 * math.sqrt(2) * se


def test_ap3_student_t_properties():
    key = jax.random.key(1)
    w = RNG.normal(size=1000).astype(np.float32)
    kl = lambda v, **kw: float(measures.ap3_student_t(w, v, key=key, **({"num_samples": 70_000} | kw)))
    assert abs(kl(w)) < 1e-6  # same location: KL = 0 up to float32 rounding
    values = [kl(w + gap) for gap in (0.05, 0.2, 0.5, 1.0)]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert kl(w + 0.2) == kl(w + 0.2)  # seeded
    with pytest.raises(ValueError, match="num_samples"):
        kl(w, num_samples=0)
    with pytest.raises(ValueError, match="df"):
        kl(w, df=0.0)
