"""Tests of jaxprune.measures.latent against NumPy/SciPy closed forms and
SciPy's multivariate Student-t."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


# ----------------------------------------------------------------------------- robustness (issue 17)
def test_ap3_student_t_df_inf_is_the_gaussian_limit():
    """df = inf used to hang (the Gamma sampler never accepted). It is now the
    Gaussian limit in closed form: ap3_gaussian of the group means."""
    w = RNG.normal(size=250).astype(np.float32)
    v = (w + RNG.normal(size=250) * 0.3).astype(np.float32)
    gm = lambda a: np.asarray(latent.group_means(jnp.asarray(a), 100))
    want = float(measures.ap3_gaussian(gm(w), gm(v)))
    np.testing.assert_allclose(want, 0.5 * ((gm(w) - gm(v)).astype(np.float64) ** 2).sum(), rtol=1e-5)
    for df in (math.inf, 1e300, 1e30):
        got = float(measures.ap3_student_t(w, v, key=jax.random.key(0), df=df, num_samples=10))
        np.testing.assert_allclose(got, want, rtol=1e-5)
    # a large finite df converges to it (Monte Carlo: 5 standard errors of the s-term, sd = gap)
    got = float(measures.ap3_student_t(w, v, key=jax.random.key(1), df=1e7, num_samples=200_000))
    assert abs(got - want) < 5 * math.sqrt(2 * want) / math.sqrt(200_000) + 1e-4


@given(df=st.sampled_from([0.1, 0.6]), k=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
@settings(max_examples=8)  # 65,536 draws per example on both sides: keeps the test < 5 s
def test_ap3_student_t_small_df_matches_scipy(df, k, seed):
    """Small df used to give NaN (the chi2 draw underflowed to 0: inf/inf).
    Compared with SciPy's multivariate t log densities on SciPy's own draws."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=k).astype(np.float32)
    v = (w + rng.normal(size=k)).astype(np.float32)
    n = 65_536
    got = float(measures.ap3_student_t(w, v, key=jax.random.key(seed), df=df, groups=k, num_samples=n))
    assert np.isfinite(got)
    p = stats.multivariate_t(w.astype(np.float64), np.eye(k), df=df)
    q = stats.multivariate_t(v.astype(np.float64), np.eye(k), df=df)
    x = p.rvs(size=n, random_state=seed).reshape(n, k)
    ratio = p.logpdf(x) - q.logpdf(x)
    se = ratio.std() / math.sqrt(n)
    assert abs(got - ratio.mean()) < 6 * math.sqrt(2) * se + 1e-4


_gamma_jit = jax.jit(latent._gamma, static_argnums=(1, 2))


@given(a=st.sampled_from([1.0, 1e3, 1e6, 1e8, 1e9]), seed=st.integers(0, 2**16))
def test_gamma_sampler_large_shape(a, seed):
    """Gamma(a) draws match mean a and variance a for a up to 1e9 (the direct
    Marsaglia-Tsang test cancelled terms of size a in float32: variance 0.85 a at 1e8)."""
    n = 50_000
    x = np.asarray(_gamma_jit(jax.random.key(seed), a, n), np.float64)
    assert abs(x.mean() - a) < 6 * math.sqrt(a / n) + 1e-6 * a
    assert abs(x.var() / a - 1) < 0.06  # ~9 standard errors; float32 rounding adds ~3e-16 a


@given(
    log_s1=st.lists(st.floats(-37.0, 37.0), min_size=3, max_size=3),
    log_s2=st.lists(st.floats(-37.0, 37.0), min_size=3, max_size=3),
    scalar=st.booleans(),
)
def test_ap3_gaussian_diagonal_never_nan(log_s1, log_s2, scalar):
    """Variances anywhere in float32's normal range: the closed form (float64
    numpy reference) or inf where it exceeds float32; never NaN (the ratio
    s1/s2 used to overflow to inf and give inf - log(inf) = NaN)."""
    w, v = np.array([0.3, -1.0, 2.0]), np.array([0.1, -1.5, 2.0])
    s1, s2 = 10.0 ** np.array(log_s1), 10.0 ** np.array(log_s2)
    if scalar:
        s1, s2 = s1[:1], s2[:1]
    cov, cov_p = (float(s1[0]), float(s2[0])) if scalar else (s1, s2)
    got = float(measures.ap3_gaussian(w, v, cov=cov, cov_pruned=cov_p))
    s1f = np.broadcast_to(np.asarray(s1, np.float32).astype(np.float64), (3,))
    s2f = np.broadcast_to(np.asarray(s2, np.float32).astype(np.float64), (3,))
    lr = np.log(s1f) - np.log(s2f)
    want = 0.5 * np.sum(np.exp(lr) - 1 - lr + (v - w) ** 2 / s2f)
    assert not np.isnan(got)
    if want < 1e37:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    elif want > 1e39:
        assert got == np.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cov": math.inf}, "cov=inf must be finite"),
        ({"cov": 1.0, "cov_pruned": math.inf}, "cov_pruned=inf must be finite"),
        ({"cov": np.array([1.0, np.inf, 1.0]), "cov_pruned": np.ones(3)}, "cov contains NaN or infinite"),
        ({"cov": np.array([1.0, np.nan, 1.0])}, "cov contains NaN or infinite"),
        ({"cov": np.diag([1.0, np.inf, 1.0])}, "cov contains NaN or infinite"),
        ({"cov": 1e-50}, r"cov=1e-50 is not representable as a positive float32"),
        ({"cov": np.array([1.0, 1e-50, 1.0])}, r"cov\[1\]=1e-50"),
        ({"cov": np.array([1.0, 0.0, 1.0])}, r"cov\[1\]=0.0"),
        ({"cov_pruned": np.array([1.0, 1e39, 1.0])}, r"cov_pruned\[1\]=1e\+39"),
        ({"cov": np.array([[2.0, 1.5, 0], [-1.5, 2.0, 0], [0, 0, 1]])}, "cov must be a symmetric matrix"),
        ({"cov": np.ones((3, 3), np.complex64)}, "cov must be a real"),
    ],
)
def test_ap3_gaussian_rejects_unusable_covariances(kwargs, match):
    w = np.array([0.3, -1.0, 2.0], np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        measures.ap3_gaussian(w, w + 0.1, **kwargs)


def test_traced_bad_inputs_give_nan_not_a_number():
    """Under jit values cannot be checked: bad covariances / weights give NaN."""
    w = jnp.array([0.3, -1.0, 2.0])
    f = jax.jit(lambda a, b, c1, c2: measures.ap3_gaussian(a, b, cov=c1, cov_pruned=c2))
    one = jnp.ones(3)
    assert np.isnan(f(w, w + 0.1, one.at[1].set(jnp.inf), one))
    assert np.isnan(f(w, w + 0.1, one.at[1].set(-1.0), one))
    assert np.isnan(f(w, w + 0.1, one.at[1].set(jnp.nan), one))
    assert np.isnan(f(w.at[0].set(jnp.nan), w, one, one))
    assert np.isnan(f(w, w + 0.1, jnp.full(3, jnp.inf), jnp.full(3, jnp.inf)))  # inf / inf
    g = jax.jit(lambda a, b, c: measures.ap3_gaussian(a, b, cov=c))
    assert np.isnan(g(w, w + 0.1, -jnp.eye(3)))  # not positive definite
    assert np.isnan(g(w, w + 0.1, jnp.eye(3).at[0, 0].set(jnp.inf)))
    assert np.isnan(g(w.at[1].set(jnp.inf), w, jnp.eye(3)))
    assert np.isnan(g(w, w + 0.1, jnp.eye(3).at[0, 1].set(0.5)))  # not symmetric
    t = jax.jit(lambda a, b: measures.ap3_student_t(a, b, key=jax.random.key(0), num_samples=100))
    assert np.isnan(t(w.at[0].set(jnp.nan), w))


def test_latent_argument_errors():
    w = np.ones(5, np.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="groups=0"):
        latent.group_means(jnp.asarray(w), 0)
    with pytest.raises(ValueError, match="groups=True"):
        measures.ap3_student_t(w, w, key=key, groups=True)
    with pytest.raises(ValueError, match=r"num_samples=2\.5"):
        measures.ap3_student_t(w, w, key=key, num_samples=2.5)
    with pytest.raises(ValueError, match="num_samples"):
        measures.ap3_student_t(w, w, key=key, num_samples=2**40)
    with pytest.raises(ValueError, match="df=nan"):
        measures.ap3_student_t(w, w, key=key, df=math.nan)
    with pytest.raises(ValueError, match="df=-1"):
        measures.ap3_student_t(w, w, key=key, df=-1)
    with pytest.raises(ValueError, match="key=None"):
        measures.ap3_student_t(w, w, key=None)
    with pytest.raises(TypeError, match="w must be a real"):
        measures.ap2(w.astype(np.complex64), w)
    with pytest.raises(ValueError, match="beta=inf"):
        measures.nondiagonal_covariance(3, key=key, beta=math.inf)
    with pytest.raises(ValueError, match="eigenvalues contains NaN or infinite"):
        measures.nondiagonal_covariance(3, key=key, eigenvalues=np.array([1.0, np.inf, 2.0]))
    with pytest.raises(ValueError, match="dim=True"):
        measures.nondiagonal_covariance(True, key=key)
