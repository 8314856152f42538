"""Tests of jaxprune.measures.sparsity against float64 NumPy references."""

import math
from decimal import Decimal, localcontext
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jaxprune import measures

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- references


def ref_pq(a, p, q):
    a = np.abs(np.asarray(a, np.float64)).ravel()
    if a.size == 0 or not a.any():
        return 0.0
    # log-space generalized means (exact for extreme magnitudes)
    la = np.log(a[a > 0])
    lm = lambda e: (np.logaddexp.reduce(e * la) - math.log(a.size)) / e
    return 1.0 - math.exp(lm(p) - lm(q))


def ref_si(a, q):
    a = np.abs(np.asarray(a, np.float64)).ravel()
    if not a.any():
        return 1.0
    return a.sum() / (a**q).sum() ** (1 / q)


def ref_hoyer(a):
    a = np.abs(np.asarray(a, np.float64)).ravel()
    d = a.size
    if d <= 1 or not a.any():
        return 0.0
    return (math.sqrt(d) - a.sum() / math.sqrt((a**2).sum())) / (math.sqrt(d) - 1)


def ref_gini(a):
    """Hurley & Rickard: G = 1 - 2 sum_k (c_(k)/||c||_1) ((N - k + 1/2)/N), c ascending."""
    c = np.sort(np.abs(np.asarray(a, np.float64)).ravel())
    n = c.size
    if n == 0 or not c.any():
        return 0.0
    k = np.arange(1, n + 1)
    return 1 - 2 * np.sum(c / c.sum() * (n - k + 0.5) / n)


def ref_bound(a, p, q, eta):
    a = np.asarray(a, np.float64).ravel()
    d = a.size
    if d == 0:
        return 0
    r = d * (1 + eta) ** (-q / (q - p)) * (1 - ref_pq(a, p, q)) ** (q * p / (q - p))
    return int(np.clip(math.ceil(r), 1, d))


def make_params():
    return {
        "dense": {"kernel": RNG.normal(size=(5, 7)).astype(np.float32), "bias": np.ones(7, np.float32)},
        "conv": {"kernel": RNG.normal(size=(3, 3, 2, 4)).astype(np.float32)},
    }


def make_mask(params):
    return {
        "dense": {"kernel": RNG.random((5, 7)) > 0.4, "bias": None},
        "conv": {"kernel": RNG.random((3, 3, 2, 4)) > 0.3},
    }


def pools(params, mask, scope):
    """Reference pools: {path: list of 1-D float64 arrays (unmasked entries)}."""
    out = {}
    for name in ("dense", "conv"):
        w = np.asarray(params[name]["kernel"], np.float64)
        m = np.ones(w.shape, bool) if mask is None else np.asarray(mask[name]["kernel"])
        cols = w.reshape(-1, w.shape[-1])
        mcols = m.reshape(-1, w.shape[-1])
        if scope == "neuron":
            out[name] = [cols[:, j][mcols[:, j]] for j in range(cols.shape[1])]
        else:
            out[name] = [w[m]]
    if scope == "global":
        return {"all": [np.concatenate([out["dense"][0], out["conv"][0]])]}
    return out


def check_scoped(fn, ref, scope, masked, rtol=2e-5, atol=2e-6, **kw):
    params = make_params()
    mask = make_mask(params) if masked else None
    got = fn(params, mask=mask, scope=scope, **kw)
    expected = pools(params, mask, scope)
    if scope == "global":
        np.testing.assert_allclose(got, ref(expected["all"][0]), rtol=rtol, atol=atol)
        return
    assert got["dense"]["bias"] is None
    for name in ("dense", "conv"):
        want = [ref(v) for v in expected[name]]
        value = np.atleast_1d(np.asarray(got[name]["kernel"]))
        assert value.shape == ((len(want),) if scope == "neuron" else (1,))
        np.testing.assert_allclose(value, want, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- references by scope


@pytest.mark.parametrize("scope", ["global", "layer", "neuron"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("p,q", [(0.5, 1.0), (0.3, 1.7)])
def test_pq_index_matches_reference(scope, masked, p, q):
    check_scoped(measures.pq_index, lambda a: ref_pq(a, p, q), scope, masked, p=p, q=q)


@pytest.mark.parametrize("scope", ["global", "layer", "neuron"])
@pytest.mark.parametrize("masked", [False, True])
def test_other_measures_match_reference(scope, masked):
    check_scoped(measures.sparsity_index, lambda a: ref_si(a, 0.3), scope, masked, q=0.3)
    check_scoped(measures.hoyer, ref_hoyer, scope, masked)
    check_scoped(measures.gini, ref_gini, scope, masked)
    check_scoped(
        measures.pqi_bound, lambda a: ref_bound(a, 0.5, 1.0, 0.1), scope, masked, rtol=0, atol=0, eta_r=0.1
    )


def test_plain_vector_is_one_prunable_leaf_and_jit_matches():
    w = jnp.asarray(RNG.normal(size=50), jnp.float32)
    np.testing.assert_allclose(measures.pq_index(w), ref_pq(w, 0.5, 1.0), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(measures.pq_index)(w), ref_pq(w, 0.5, 1.0), rtol=1e-5)
    per_entry = measures.pq_index(w, scope="neuron")  # (1, 50): every entry its own pool
    np.testing.assert_allclose(per_entry, np.zeros(50), atol=1e-6)


def test_lq_norm_matches_numpy():
    x = RNG.normal(size=(4, 6))
    for q in (0.5, 1.0, 2.0, 3.3):
        np.testing.assert_allclose(measures.lq_norm(jnp.asarray(x, jnp.float32), q),
                                   (np.abs(x) ** q).sum() ** (1 / q), rtol=1e-5)
    big = jnp.array([1e30, -2e30, 3.0], jnp.float32)  # |x|^2 overflows float32 without scaling
    np.testing.assert_allclose(measures.lq_norm(big, 2.0), math.sqrt(5) * 1e30, rtol=1e-5)
    assert float(measures.lq_norm(jnp.zeros(3), 2.0)) == 0.0


@pytest.mark.parametrize("p,q", [(0.01, 10.0), (0.01, 1.0), (0.5, 1.0), (1.0, 2.0), (2.0, 3.0)])
def test_extreme_magnitudes_are_exact(p, q):
    w = np.array([1e30, 1e-30, 1.0, 3.0, -2e-20, 5e25], np.float32)
    np.testing.assert_allclose(measures.pq_index(w, p, q), ref_pq(w, p, q), rtol=5e-5)
    tiny = np.array([1e-30, 3e-31, 2e-30, 7e-32], np.float32)  # |w|^q underflows for q >= 2
    np.testing.assert_allclose(measures.pq_index(tiny, p, q), ref_pq(tiny, p, q), rtol=5e-5)
    # one extreme neuron forces the rescaled branch for the whole call: others stay exact
    cols = np.stack([w[:4], np.array([1.0, 2.0, 0.5, 4.0], np.float32)], axis=1)
    got = measures.pq_index(cols, p, q, scope="neuron")
    np.testing.assert_allclose(got, [ref_pq(cols[:, 0], p, q), ref_pq(cols[:, 1], p, q)], rtol=5e-5)


def test_empty_and_zero_pools():
    w = jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    mask = jnp.array([[False, True], [False, True], [False, True]])
    for fn in (measures.pq_index, measures.hoyer, measures.gini):
        np.testing.assert_array_equal(fn(w, mask=mask, scope="neuron"), [0.0, 0.0])
    # all-zero unmasked pool: I = 0, so r = d (1 + eta_r)^(-q/(q-p)) = d for eta_r = 0
    np.testing.assert_array_equal(measures.pqi_bound(w, mask=mask, scope="neuron"), [0, 3])
    np.testing.assert_array_equal(measures.sparsity_index(w, mask=mask), [1.0, 1.0])
    assert float(measures.pq_index(w, mask=jnp.zeros_like(mask))) == 0.0
    assert int(measures.pqi_bound(w, mask=jnp.zeros_like(mask))) == 0
    assert float(measures.pq_index({"b": jnp.ones(3)})) == 0.0  # no prunable leaf: d == 0


def test_abp_retained_matches_formula():
    w = RNG.normal(size=(6, 40))
    w[0] = 1.0  # equal magnitudes: m = d (1 + eta)^(-1/(1-q))
    w[1] = 0.0  # all zero: m = 1
    w[2, 10:] = 0.0
    for q, eta in ((0.5, 0.0), (0.3, 0.2), (0.7, 0.1)):
        got = np.asarray(measures.abp_retained(jnp.asarray(w, jnp.float32), q, eta))
        assert got.shape == (6,)
        want = [
            1 if not row.any() else
            int(np.clip(math.ceil(ref_si(row, q) ** (q / (q - 1)) * (1 + eta) ** (1 / (q - 1))), 1, 40))
            for row in w
        ]
        np.testing.assert_array_equal(got, want)
        assert got[0] == min(40, math.ceil(40 * (1 + eta) ** (-1 / (1 - q)) * (1 - 1e-9)))
    assert int(measures.abp_retained(jnp.array([1.0, 1, 1, 1, 0, 0, 0, 0]), 0.5)) == 4


def test_bf16_and_float16_inputs():
    w = RNG.normal(size=(16, 8))
    for dtype in (jnp.bfloat16, jnp.float16):
        x = jnp.asarray(w, dtype)
        exact = np.asarray(x.astype(jnp.float32), np.float64)
        out = measures.pq_index({"k": x}, scope="layer")["k"]
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, ref_pq(exact, 0.5, 1.0), rtol=1e-5)
        np.testing.assert_allclose(measures.gini(x), ref_gini(exact), rtol=1e-5)


def test_prunable_override_and_mask_defines_prunable():
    params = make_params()
    only_bias = measures.hoyer(params, scope="layer", prunable={
        "dense": {"kernel": False, "bias": True}, "conv": {"kernel": False}})
    assert only_bias["dense"]["kernel"] is None and only_bias["conv"]["kernel"] is None
    assert float(only_bias["dense"]["bias"]) == 0.0  # equal entries
    mask = {"dense": {"kernel": None, "bias": None}, "conv": {"kernel": np.ones((3, 3, 2, 4), bool)}}
    got = measures.pq_index(params, mask=mask, scope="layer")
    assert got["dense"]["kernel"] is None
    np.testing.assert_allclose(got["conv"]["kernel"], ref_pq(params["conv"]["kernel"], 0.5, 1.0), rtol=1e-5)


# ----------------------------------------------------------------------------- errors


def test_invalid_arguments():
    params = make_params()
    for p, q in ((0.0, 1.0), (-0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (0.5, 0.0)):
        with pytest.raises(ValueError, match=r"p=|q="):
            measures.pq_index(params, p, q)
    with pytest.raises(ValueError, match=r"scope='filter'.*global"):
        measures.pq_index(params, scope="filter")
    with pytest.raises(ValueError, match="eta_r"):
        measures.pqi_bound(params, eta_r=-0.1)
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="q="):
            measures.sparsity_index(params, q)
    with pytest.raises(ValueError, match="eta"):
        measures.abp_retained(jnp.ones(3), 0.5, -1.0)
    with pytest.raises(ValueError, match="mask"):
        measures.pq_index(params, mask={"dense": {"kernel": None}})
    with pytest.raises(ValueError, match="shape"):
        bad = make_mask(params)
        bad["conv"]["kernel"] = np.ones((2, 2), bool)
        measures.gini(params, mask=bad)
    with pytest.raises(ValueError, match="prunable"):
        measures.hoyer(params, prunable={"dense": True})
    params["conv"]["kernel"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="params contains NaN"):
        measures.pq_index(params)


# ----------------------------------------------------------------------------- Hurley & Rickard properties

# few distinct lengths: every new length is a new compilation
vectors = st.lists(st.floats(0.01, 100.0), min_size=2, max_size=6).map(lambda v: np.array(v, np.float64))
exponents = st.sampled_from([(0.5, 1.0), (1.0, 2.0), (0.3, 1.7), (0.1, 1.0)])


def pqi(v, pq):
    return float(measures.pq_index(jnp.asarray(v, jnp.float32), *pq))


@given(vectors, exponents)
def test_range(v, pq):
    p, q = pq
    value = pqi(v, pq)
    assert -1e-6 <= value <= 1 - len(v) ** (1 / q - 1 / p) + 1e-5


@given(vectors, exponents, st.floats(0.05, 0.45))
def test_d1_robin_hood(v, pq, frac):
    v = np.sort(v)
    assume(v[-1] - v[0] > 1.0)
    t = frac * (v[-1] - v[0])  # move mass from the largest to the smallest without reversing order
    w = v.copy()
    w[-1] -= t
    w[0] += t
    assert pqi(w, pq) < pqi(v, pq) + 1e-6
    assert ref_pq(w, *pq) < ref_pq(v, *pq)


@given(vectors, exponents, st.floats(0.01, 1e3))
def test_d2_scaling(v, pq, alpha):
    assert abs(pqi(alpha * v, pq) - pqi(v, pq)) < 2e-5


@given(vectors, exponents, st.floats(0.5, 50.0))
def test_d3_rising_tide(v, pq, c):
    assume(v.max() - v.min() > 0.5)
    assert pqi(v + c, pq) < pqi(v, pq)


@given(vectors, exponents)
def test_d4_cloning(v, pq):
    assert abs(pqi(np.concatenate([v, v, v]), pq) - pqi(v, pq)) < 2e-5


@given(vectors, exponents)
def test_p1_bill_gates(v, pq):
    values = [pqi(np.append(v, g), pq) for g in (1e3, 1e4, 1e5)]
    assert values[0] < values[1] < values[2]
    assert values[2] < 1 - (len(v) + 1) ** (1 / pq[1] - 1 / pq[0]) + 1e-5


@given(vectors, exponents)
def test_p2_babies(v, pq):
    assert pqi(np.append(v, 0.0), pq) > pqi(v, pq)


@given(vectors, st.floats(0.0, 1.0))
def test_pqi_bound_in_range_and_shrinks_when_sparser(v, eta):
    r = int(measures.pqi_bound(jnp.asarray(v, jnp.float32), 0.5, 1.0, eta))
    assert 1 <= r <= len(v)
    sparser = v.copy()
    sparser[np.argsort(v)[: len(v) // 2]] *= 1e-3  # shrink the smaller half
    assert int(measures.pqi_bound(jnp.asarray(sparser, jnp.float32), 0.5, 1.0, eta)) <= r


# ----------------------------------------------------------------------------- robustness (issue 17)
# XLA:CPU flushes float32 subnormals to zero (FTZ/DAZ) and float32 sums/powers
# overflow near 3.4e38; NaN cannot raise under jit. Expected values come from
# exact decimal arithmetic on the float32 inputs (Python's decimal module) or
# from the float64 references above, never from jaxprune.

INF = float("inf")


def dec_log_mean(a, e):
    """log (mean |a|^e)^(1/e) in 90-digit decimal arithmetic (``e = inf``: log max);
    ``a`` nonzero-free of NaN, at least one nonzero. Exact for any p >= 1e-30."""
    with localcontext() as ctx:
        ctx.prec = 90
        vals = [abs(Decimal(float(v))) for v in np.ravel(np.asarray(a, np.float64))]
        nz = [v for v in vals if v != 0]
        top = max(nz)
        if math.isinf(e):
            return top.ln()
        ee = Decimal(e)
        s = sum((ee * (v / top).ln()).exp() for v in nz) / len(vals)
        return s.ln() / ee + top.ln()


def dec_pq(a, p, q):
    a = np.asarray(a, np.float64)
    if a.size == 0 or not a.any():
        return 0.0
    with localcontext() as ctx:
        ctx.prec = 90
        return float(1 - (dec_log_mean(a, p) - dec_log_mean(a, q)).exp())


def dec_bound(a, p, q, eta):
    """(r_lo, r_hi): the PQI-bound of the exact value, with the float32 guard's slack."""
    a = np.asarray(a, np.float64)
    d = a.size
    if d == 0:
        return 0, 0
    a_, b_ = (1.0, p) if math.isinf(q) else (q / (q - p), q * p / (q - p))
    log_ratio = float(dec_log_mean(a, p) - dec_log_mean(a, q)) if a.any() else 0.0
    r = d * (1 + eta) ** (-a_) * math.exp(b_ * log_ratio)
    return tuple(int(np.clip(math.ceil(r * f), 1, d)) for f in (1 - 2e-5, 1 + 2e-5))


def f32_from_parts(center, offsets, mants, zeros):
    """float32 vector with entries m * 2^(center + offset) (rounded into the
    subnormal range, clipped below float32 max), some exact zeros."""
    e = np.clip(np.asarray(offsets) + center, -160, 127)
    v = np.ldexp(np.asarray(mants, np.float64), e)
    v = np.where(np.asarray(zeros), 0.0, v)
    return np.minimum(v, float(np.finfo(np.float32).max)).astype(np.float32)


N_VEC = 6
magnitude_vectors = st.builds(
    f32_from_parts,
    st.integers(-160, 127),  # subnormal ... near float32 max
    st.lists(st.integers(-40, 2), min_size=N_VEC, max_size=N_VEC),
    st.lists(st.floats(1.0, 2.0, exclude_max=True), min_size=N_VEC, max_size=N_VEC),
    st.lists(st.booleans(), min_size=N_VEC, max_size=N_VEC),
).map(lambda v: v * np.where(np.arange(N_VEC) % 2, -1, 1).astype(np.float32))


def test_listed_subnormal_cases():
    sub = np.array([1e-40, 2e-40, 0.0, 0.0], np.float32)
    exact = sub.astype(np.float64)
    assert abs(ref_pq(exact, 0.5, 1.0) - 0.514) < 1e-3
    for fn in (lambda f: f, jax.jit):
        w = jnp.asarray(sub)
        np.testing.assert_allclose(fn(measures.pq_index)(w), ref_pq(exact, 0.5, 1.0), atol=2e-6)
        assert int(fn(measures.pqi_bound)(w)) == ref_bound(exact, 0.5, 1.0, 0.0)
        np.testing.assert_allclose(fn(partial_layer_si)(w), ref_si(exact, 0.5), rtol=2e-6)
        np.testing.assert_allclose(fn(measures.gini)(w), ref_gini(exact), atol=2e-6)
        np.testing.assert_allclose(fn(measures.hoyer)(w), ref_hoyer(exact), atol=2e-6)
    # lq norms: exact in float32, subnormal results included
    assert float(measures.lq_norm(sub, 1.0)) == float(np.float32(exact.sum()))
    assert float(measures.lq_norm(sub, 2.0)) == float(np.float32(math.sqrt((exact**2).sum())))


def test_listed_overflow_cases():
    big = np.array([1e38, 5e37, 0.0, 0.0], np.float32)
    np.testing.assert_allclose(measures.gini(big), ref_gini(big), atol=2e-6)
    assert abs(ref_gini(big) - 0.583) < 1e-3
    near_max = np.array([3e38, -3.4e38, 1.0, 2e38, 0.0], np.float32)
    exact = near_max.astype(np.float64)
    np.testing.assert_allclose(measures.gini(near_max), ref_gini(exact), atol=2e-6)
    np.testing.assert_allclose(measures.hoyer(near_max), ref_hoyer(exact), atol=2e-6)
    np.testing.assert_allclose(partial_layer_si(near_max), ref_si(exact, 0.5), rtol=2e-6)
    for p, q in ((0.5, 1.0), (1.0, 2.0), (0.3, 1.7), (2.0, 4.0)):
        np.testing.assert_allclose(measures.pq_index(near_max, p, q), ref_pq(exact, p, q), atol=2e-6)
    assert float(measures.lq_norm(near_max[:2], 2.0)) == INF  # beyond float32 max
    np.testing.assert_allclose(measures.lq_norm(near_max[2:], 0.5), (1 + math.sqrt(2e38)) ** 2, rtol=1e-6)


def partial_layer_si(w, q=0.5):
    return measures.sparsity_index(w, q, scope="layer")


@given(magnitude_vectors, st.sampled_from([(0.5, 1.0), (1.0, 2.0), (0.1, 1.0), (0.3, 1.7), (1e-30, 1.0),
                                            (0.5, INF), (2.0, 3.0)]))
def test_pq_index_and_bound_exact_over_all_float32_magnitudes(w, pq):
    p, q = pq
    np.testing.assert_allclose(measures.pq_index(w, p, q), dec_pq(w, p, q), atol=3e-6)
    lo, hi = dec_bound(w, p, q, 0.25)
    assert lo <= int(measures.pqi_bound(w, p, q, 0.25)) <= hi


@given(magnitude_vectors)
def test_other_measures_exact_over_all_float32_magnitudes(w):
    exact = w.astype(np.float64)
    np.testing.assert_allclose(measures.gini(w), ref_gini(exact), atol=2e-6)
    np.testing.assert_allclose(measures.hoyer(w), ref_hoyer(exact), atol=2e-6)
    np.testing.assert_allclose(partial_layer_si(w, 0.3), ref_si(exact, 0.3), rtol=3e-6)
    # lq norm: the float32 rounding of the exact value (which may be subnormal or overflow)
    for q in (1.0, 2.0, 0.5):
        want = (np.abs(exact) ** q).sum() ** (1 / q) if exact.any() else 0.0
        got = float(measures.lq_norm(w, q))
        if want > np.finfo(np.float32).max:
            assert got == INF
        else:
            assert abs(got - want) <= 3e-6 * want + 2e-45  # one subnormal ulp
    assert float(measures.lq_norm(w, INF)) == float(np.abs(exact).max())


@pytest.mark.parametrize("scope", ["neuron", "layer", "global"])
def test_scoped_and_masked_extreme_pools_match_reference(scope):
    """Pools of subnormal, huge and ordinary columns in one call (the exact
    branch then serves all of them), with a mask."""
    cols = np.stack([
        np.array([1e-40, 3e-41, 0.0, 2e-39, 5e-45], np.float32),
        np.array([3e38, 1e38, 2.0, 0.0, 3.3e38], np.float32),
        RNG.normal(size=5).astype(np.float32),
        np.zeros(5, np.float32),
    ], axis=1)
    mask = np.ones(cols.shape, bool)
    mask[1, 2] = mask[4, 0] = False
    pools_ = [cols[:, j][mask[:, j]] for j in range(4)] if scope == "neuron" else [cols[mask]]
    for p, q in ((0.5, 1.0), (0.1, 1.0)):
        got = np.atleast_1d(measures.pq_index(cols, p, q, mask=mask, scope=scope))
        np.testing.assert_allclose(got, [dec_pq(v, p, q) for v in pools_], atol=3e-6)
    np.testing.assert_allclose(np.atleast_1d(measures.gini(cols, mask=mask, scope=scope)),
                               [ref_gini(v) for v in pools_], atol=2e-6)
    np.testing.assert_allclose(np.atleast_1d(measures.hoyer(cols, mask=mask, scope=scope)),
                               [ref_hoyer(v) for v in pools_], atol=2e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_subnormals(dtype):
    # bf16 subnormals stay subnormal in float32; float16 ones become normal float32
    tiny = 1e-39 if dtype == jnp.bfloat16 else 1e-6
    x = jnp.asarray(np.array([tiny, 2 * tiny, 0.0, 4 * tiny]), dtype)
    exact = np.asarray(x.astype(jnp.float32), np.float64)
    assert exact.any()
    np.testing.assert_allclose(measures.pq_index(x), ref_pq(exact, 0.5, 1.0), atol=2e-6)
    np.testing.assert_allclose(measures.gini(x), ref_gini(exact), atol=2e-6)


def _nan_inf_columns():
    w = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
    w[1, 1] = np.nan
    w[2, 2] = np.inf
    return w


@pytest.mark.parametrize("name", ["pq_index", "hoyer", "gini", "sparsity_index"])
def test_non_finite_under_jit_is_nan_per_pool(name):
    w = _nan_inf_columns()
    fn = getattr(measures, name)
    ref = {"pq_index": lambda a: ref_pq(a, 0.5, 1.0), "hoyer": ref_hoyer, "gini": ref_gini,
           "sparsity_index": lambda a: ref_si(a, 0.5)}[name]
    got = np.asarray(jax.jit(partial(fn, scope="neuron"))(w))
    np.testing.assert_allclose(got[0], ref(w[:, 0].astype(np.float64)), rtol=2e-6)
    assert np.isnan(got[1]) and np.isnan(got[2])
    assert np.isnan(jax.jit(partial(fn, scope="global"))(w))
    with pytest.raises(ValueError, match="NaN"):
        fn(w, scope="neuron")
    with pytest.raises(ValueError, match="NaN"):  # bf16 leaves are checked too
        fn(jnp.asarray(w, jnp.bfloat16), scope="neuron")


def test_non_finite_under_jit_counts_and_norms():
    w = _nan_inf_columns()
    bound = np.asarray(jax.jit(partial(measures.pqi_bound, scope="neuron"))(w))
    assert bound[0] == ref_bound(w[:, 0].astype(np.float64), 0.5, 1.0, 0.0)
    np.testing.assert_array_equal(bound[1:], [-1, -1])  # -1: never a valid count
    np.testing.assert_array_equal(jax.jit(measures.abp_retained)(w.T)[1:], [-1, -1])
    assert np.isnan(jax.jit(measures.lq_norm, static_argnums=1)(w, 2.0))
    assert np.isnan(jax.jit(measures.lq_norm, static_argnums=1)(w, INF))
    # a NaN among MASKED entries is excluded like any masked entry
    mask = np.isfinite(w)
    got = jax.jit(partial(measures.pq_index, scope="neuron"))(w, mask=mask)
    np.testing.assert_allclose(got, [ref_pq(w[:, j][mask[:, j]], 0.5, 1.0) for j in range(3)], rtol=2e-6)
    # a traced negative / NaN eta_r: no plausible count either
    fn = jax.jit(lambda e: measures.pqi_bound(w[:, 0], eta_r=e))
    assert int(fn(-0.5)) == -1 and int(fn(jnp.nan)) == -1 and int(fn(0.0)) == bound[0]


def test_exponent_limits():
    w = np.array([1.0, 2.0, 3.0, 0.0, 0.5], np.float32)
    nz = w[w != 0].astype(np.float64)
    # q = inf: ||w||_inf = max (the limit of the power mean)
    want = 1 - np.mean(np.sqrt(np.abs(w.astype(np.float64)))) ** 2 / 3.0
    np.testing.assert_allclose(measures.pq_index(w, 0.5, INF), want, atol=1e-6)
    r = 5 * (1 - want) ** 0.5 / 1.1  # (q/(q-p), qp/(q-p)) -> (1, p)
    assert int(measures.pqi_bound(w, 0.5, INF, 0.1)) == math.ceil(r)
    # p -> 0: the power mean -> the geometric mean (zeros: -> 0, so I -> 1)
    np.testing.assert_allclose(measures.pq_index(nz.astype(np.float32), 1e-30, 1.0),
                               1 - math.exp(np.mean(np.log(nz))) / nz.mean(), atol=1e-6)
    assert float(measures.pq_index(w, 1e-30, 1.0)) == 1.0
    # ... and r -> number of nonzero entries (d (n/d)^(qp/(q-p) / p) with p -> 0)
    assert int(measures.pqi_bound(w, 1e-30, 1.0)) == 4
    # SI with tiny q: one nonzero entry is maximally sparse (1); more -> ||w||_q explodes
    np.testing.assert_allclose(partial_layer_si(np.array([0, 0, 3.0], np.float32), 1e-30), 1.0, rtol=1e-6)
    assert float(partial_layer_si(w, 1e-30)) == 0.0
    for bad in (1e-300, 1e-31):
        with pytest.raises(ValueError, match=r"p=.*valid range \[1e-30"):
            measures.pq_index(w, bad, 1.0)
        with pytest.raises(ValueError, match=r"q=.*valid range"):
            measures.sparsity_index(w, bad)
        with pytest.raises(ValueError, match=r"q=.*valid range"):
            measures.lq_norm(w, bad)
    assert float(measures.lq_norm(np.array([-1e-40, 3e-42], np.float32), INF)) == float(np.float32(1e-40))
    np.testing.assert_allclose(measures.pq_index(w, 0.5, 1e39), want, atol=1e-6)  # beyond float32: inf


# ----------------------------------------------------------------------------- out_axis (equinox layouts)


def test_out_axis_matches_the_moved_layout_and_numpy():
    # equinox Linear (out, in) and Conv (out, in, kh, kw) with out_axis=0 == the same weights with
    # the unit axis moved last under the default; neuron pools checked against ref_pq per unit
    rng = np.random.default_rng(21)
    params = {"lin": rng.standard_normal((5, 7)), "conv": rng.standard_normal((4, 3, 2, 2)), "b": np.ones(5)}
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    mask = {k: jnp.asarray(rng.random(v.shape) < 0.8) for k, v in params.items() if k != "b"} | {"b": None}
    moved = lambda t: {k: None if v is None else jnp.moveaxis(v, 0, -1) for k, v in t.items()}
    fns = {
        "pq_index": measures.pq_index,
        "pqi_bound": partial(measures.pqi_bound, eta_r=0.1),
        "sparsity_index": measures.sparsity_index,
        "gini": measures.gini,
        "hoyer": measures.hoyer,
    }
    for name, fn in fns.items():
        for scope in ("neuron", "layer") if name == "pq_index" else ("neuron",):
            got = fn(params, mask=mask, scope=scope, out_axis=0)
            if scope == "neuron":
                want = fn(moved(params), mask=moved(mask), scope=scope)
            else:  # no effect on the scopes without units
                want = fn(params, mask=mask, scope=scope)
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, err_msg=f"{name} {scope}")
    got = measures.pq_index(params, mask=mask, scope="neuron", out_axis=0)["conv"]
    w, m = np.asarray(params["conv"]), np.asarray(mask["conv"])
    want = [ref_pq(w[u][m[u]], 0.5, 1.0) for u in range(w.shape[0])]
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-6)
    with pytest.raises(ValueError, match=r"out_axis=2 is outside the valid range \[-2, 2\) for the leaf lin"):
        measures.hoyer(params, mask=mask, scope="neuron", out_axis=2)
    with pytest.raises(TypeError, match="out_axis must be a Python int"):
        measures.gini(params, scope="neuron", out_axis=None)


# ----------------------------------------------------------------------------- issue 17 sweep regressions

_POOL_MEASURES = [
    measures.pq_index,
    measures.pqi_bound,
    partial(measures.sparsity_index, scope="global"),
    measures.gini,
    measures.hoyer,
]


@pytest.mark.parametrize("f", _POOL_MEASURES)
def test_mask_values_other_than_0_1_refused(f):
    """A float mask with NaN (or 0.5) would be cast to bool (NaN -> kept): refused, naming the mask."""
    w = jnp.array([4.0, 1.0, 0.0, 2.0])
    for bad in (jnp.array([1.0, jnp.nan, 0.0, 1.0]), jnp.array([1.0, 0.5, 0.0, 1.0])):
        with pytest.raises(ValueError, match="mask"):
            f(w, mask=bad)
    # 0/1 floats are the bool mask: same value as the bool mask on the kept entries
    bool_mask = jnp.array([True, True, False, False])
    assert float(f(w, mask=bool_mask.astype(jnp.float32))) == float(f(w[:2]))


@given(st.lists(st.sampled_from([0.0, 1.0, 0.25, -1.0, 2.0, float("nan")]), min_size=4, max_size=4))
def test_mask_values_property(values):
    """Any numeric mask is accepted iff every entry is 0 or 1."""
    mask = jnp.array(values, jnp.float32)
    w = jnp.array([4.0, 1.0, 3.0, 2.0])
    if all(v in (0.0, 1.0) for v in values):
        ref = measures.pq_index(w, mask=mask != 0)
        assert float(measures.pq_index(w, mask=mask)) == float(ref)
    else:
        with pytest.raises(ValueError, match="mask"):
            measures.pq_index(w, mask=mask)


@pytest.mark.parametrize("f", _POOL_MEASURES)
def test_complex_params_refused(f):
    """A complex input would be cast to float32 (imaginary part dropped): TypeError naming the dtype."""
    with pytest.raises(TypeError, match="complex"):
        f(jnp.array([1 + 1j, 0, 0, 1]))


@pytest.mark.parametrize("f", _POOL_MEASURES)
def test_float64_beyond_float32_refused(f):
    """A finite NumPy float64 beyond the float32 max would become inf in float32 (NaN result)."""
    with pytest.raises(ValueError, match="float32 range"):
        f(np.array([1e300, 1.0, 0.0, 0.0]))
    # within range: the float64 input is computed like its float32 cast (pq of [1, 0, 0, 0]: 1 - 4^-1)
    assert float(measures.pq_index(np.array([1e30, 0.0, 0.0, 0.0]))) == pytest.approx(0.75, abs=1e-6)


@pytest.mark.parametrize("f", _POOL_MEASURES)
def test_float64_below_float32_refused(f):
    """A nonzero NumPy float64 below float32's smallest subnormal would become 0
    (an all-1e-300 vector would read as all zeros): refused, naming the range."""
    with pytest.raises(ValueError, match="below the float32 range"):
        f(np.array([1e-300, 2e-300, 0.0, 0.0]))
    # float32 subnormals are representable: computed exactly (pq of [1, 2, 0, 0] at p = 0.5, q = 1:
    # 1 - d^(1/q - 1/p) ||w||_p / ||w||_q)
    want = 1 - 4 ** (1 / 1 - 1 / 0.5) * (1 + 2**0.5) ** 2 / (1 + 2)
    assert float(measures.pq_index(np.array([1e-40, 2e-40, 0.0, 0.0]))) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("p", ["0.5", b"0.5"])
def test_string_exponent_refused(p):
    with pytest.raises(ValueError, match="p must be a number"):
        measures.pq_index(jnp.ones(4), p)


@pytest.mark.parametrize("f", _POOL_MEASURES)
def test_traced_mask_values_other_than_0_1_give_nan(f):
    """Under jit a numeric mask cannot be inspected: an entry other than 0/1 makes its pool NaN
    (-1 for the pqi_bound count) instead of a value for a guessed mask; other pools unaffected."""
    w = jnp.arange(1.0, 9.0).reshape(4, 2)
    mask = jnp.ones((4, 2)).at[1, 0].set(jnp.nan)
    g = jax.jit(lambda m: f(w, mask=m, scope="neuron"))(mask)
    assert (np.isnan(g[0]) or g[0] == -1) and not (np.isnan(g[1]) or g[1] == -1)
    np.testing.assert_array_equal(jax.jit(lambda m: f(w, mask=m))(mask.at[1, 0].set(0.0)),
                                  f(w, mask=mask.at[1, 0].set(0.0) > 0))
