"""jaxprune.masks scorers, schedules and per-leaf allocation against closed
forms, NumPy and hand-worked cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp


def params():
    rng = np.random.default_rng(0)
    return {
        "conv": jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.bfloat16),
        "bias": None,
        "dense": jnp.asarray(rng.standard_normal((5, 6)), jnp.float32),
    }


def test_scorers_against_numpy():
    p = params()
    g = jax.tree.map(lambda w: None if w is None else jnp.ones_like(w) * -2.0, p, is_leaf=lambda x: x is None)
    mag, sn, fn = jp.masks.magnitude(p), jp.masks.snip(p, g), jp.masks.filter_norm(p)
    assert mag["bias"] is None and sn["bias"] is None and fn["bias"] is None
    for k in ("conv", "dense"):
        w = np.asarray(p[k], np.float32)
        np.testing.assert_allclose(np.asarray(mag[k], np.float32), np.abs(w))
        np.testing.assert_allclose(np.asarray(sn[k], np.float32), np.abs(2 * w), rtol=1e-2)
        np.testing.assert_allclose(
            np.asarray(fn[k]), np.linalg.norm(w.reshape(-1, w.shape[-1]), axis=0), rtol=1e-6
        )
        assert fn[k].dtype == jnp.float32


def test_filter_norm_out_axis_against_numpy():
    # equinox/PyTorch layouts: Conv (out, in, kh, kw), Linear (out, in); units on axis 0
    rng = np.random.default_rng(1)
    p = {"conv": rng.standard_normal((4, 2, 3, 3)), "lin": rng.standard_normal((6, 5)), "b": None}
    p = {k: None if v is None else jnp.asarray(v, jnp.float32) for k, v in p.items()}
    fn = jp.masks.filter_norm(p, out_axis=0)
    assert fn["b"] is None
    for k in ("conv", "lin"):
        w = np.asarray(p[k], np.float64)
        want = np.sqrt((w**2).reshape(w.shape[0], -1).sum(1))
        np.testing.assert_allclose(np.asarray(fn[k]), want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"out_axis=2 is outside the valid range \[-2, 2\) for the leaf lin"):
        jp.masks.filter_norm(p, out_axis=2)


def test_random_scores():
    p = params()
    a, b = jp.masks.random(jax.random.key(0), p), jp.masks.random(jax.random.key(1), p)
    assert a["bias"] is None and a["conv"].shape == (3, 3, 2, 4) and a["dense"].dtype == jnp.float32
    assert 0.0 <= float(a["dense"].min()) and float(a["dense"].max()) < 1.0
    assert not np.array_equal(np.asarray(a["dense"]), np.asarray(b["dense"]))


def test_snip_structure_mismatch():
    with pytest.raises(ValueError, match="grads"):
        jp.masks.snip({"w": jnp.ones((2, 2))}, {"v": jnp.ones((2, 2))})


def test_polynomial_schedule_closed_form():
    f = jax.jit(jp.masks.polynomial_schedule(0.9, 100, 500, init_sparsity=0.2, power=3))
    for t in (0, 100, 101, 250, 499, 500, 10_000):
        prog = min(max((t - 100) / 400, 0.0), 1.0)
        assert float(f(t)) == pytest.approx(0.9 + (0.2 - 0.9) * (1 - prog) ** 3, abs=1e-6)
    assert float(jp.masks.constant_schedule(0.3)(7)) == pytest.approx(0.3)


@pytest.mark.parametrize(("s_i", "s_f", "t0", "n", "dt"), [(0.0, 0.9, 0, 10, 16), (0.2, 0.95, 100, 25, 40)])
def test_polynomial_schedule_zhu_gupta_closed_form(s_i, s_f, t0, n, dt):
    """Zhu & Gupta (2017), eq. 1: s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 at the
    pruning steps t = t0, t0 + dt, ..., t0 + n dt; s_i before t0 and s_f after the last."""
    schedule = jp.masks.polynomial_schedule(s_f, t0, t0 + n * dt, init_sparsity=s_i)
    ts = np.array([0, *(t0 + k * dt for k in range(n + 1)), t0 + n * dt + 7, 10**6])
    ref = np.array([s_f + (s_i - s_f) * (1 - min(max((t - t0) / (n * dt), 0.0), 1.0)) ** 3 for t in ts])
    eager = np.array([float(schedule(int(t))) for t in ts])
    jitted = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(ts, jnp.int32)))
    assert jitted.dtype == np.float32
    np.testing.assert_allclose(eager, ref, rtol=0, atol=1.2e-7)  # float32 rounding of values <= 1
    np.testing.assert_allclose(jitted, ref, rtol=0, atol=1.2e-7)
    assert eager[-1] == np.float32(s_f)  # exactly the target once the ramp is over


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(final_sparsity=1.2, begin_step=0, end_step=1), "final_sparsity"),
        (dict(final_sparsity=0.5, begin_step=5, end_step=5), "end_step"),
        (dict(final_sparsity=0.5, begin_step=-1, end_step=5), "begin_step"),
        (dict(final_sparsity=0.5, begin_step=0, end_step=5, power=0), "power"),
        (dict(final_sparsity=0.5, begin_step=0, end_step=5, init_sparsity=float("nan")), "init_sparsity"),
    ],
)
def test_polynomial_schedule_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        jp.masks.polynomial_schedule(**kwargs)


def test_geometric():
    assert jp.masks.geometric_density(0.8, 3) == pytest.approx(0.512)
    assert float(jp.masks.geometric_schedule(0.85)(2)) == pytest.approx(1 - 0.85**2, abs=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        jp.masks.geometric_density(1.5, 1)


def test_erk_hand_computed():
    # Leaves (3,4) and (2,2,2,8): raw = 7/12 and 14/64; budget = 0.5 * 76 = 38.
    # eps = 38 / (7 + 14) makes (3,4) exceed density 1 -> dense; then eps = (38 - 12) / 14
    # and the conv density = 14/64 * 26/14 = 26/64.
    p = {"a": jnp.zeros((3, 4)), "b": jnp.zeros(3), "c": jnp.zeros((2, 2, 2, 8))}
    got = jp.masks.allocate(p, 0.5, method="erk")
    assert got["b"] is None and got["a"] == 0.0 and got["c"] == pytest.approx(1 - 26 / 64)
    kept = sum((1 - got[k]) * math.prod(p[k].shape) for k in ("a", "c"))
    assert kept == pytest.approx(38)


def test_allocate_uniform_overrides_and_topk_layer():
    p = {"a": jnp.arange(12.0).reshape(3, 4), "c": jnp.arange(16.0).reshape(4, 4)}
    alloc = jp.masks.allocate(p, 0.5, overrides={"^c$": 0.75})
    assert alloc == {"a": 0.5, "c": 0.75}
    mask = jp.masks.topk(p, alloc, scope="layer")
    np.testing.assert_array_equal(np.asarray(mask["a"]).ravel(), np.arange(12) >= 6)
    np.testing.assert_array_equal(np.asarray(mask["c"]).ravel(), np.arange(16) >= 12)
    with pytest.raises(ValueError, match="method"):
        jp.masks.allocate(p, 0.5, method="lamp")


# ----------------------------------------------------------------------------- robustness (issue 17)
def _erk_reference(shapes, density, power_scale):
    """ERK as water-filling, solved independently: d_l = min(1, eps * raw_l) with
    eps found by bisection (log space) so that sum d_l size_l = density * sum size_l;
    zero-size leaves get 1, 0-d leaves count as (1,)."""
    dims = [s if len(s) else (1,) for s in shapes]
    sizes = np.array([math.prod(s) for s in dims], np.float64)
    live = sizes > 0
    log_raw = np.array([power_scale * (math.log(sum(s)) - math.log(math.prod(s))) if math.prod(s) else 0.0
                        for s in dims])
    budget = density * sizes.sum()

    def dens(log_eps):
        return np.where(live, np.minimum(1.0, np.exp(np.minimum(log_raw + log_eps, 0.0))), 1.0)

    lo, hi = -2000.0, 2000.0
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (dens(mid) * sizes)[live].sum() < budget else (lo, mid)
    out = dens(hi)
    return np.where(live, out, 1.0) if density > 0 else np.where(live, 0.0, 1.0)


@given(
    shapes=st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple), min_size=1, max_size=4),
    density=st.floats(0.0, 1.0),
    power_scale=st.floats(0.0, 40.0),
)
def test_erk_densities_meet_the_budget(shapes, density, power_scale):
    """Any shapes (zero-size and 0-d leaves included), density in [0, 1] and
    power_scale >= 0: densities in [0, 1] that meet the budget exactly and equal
    an independent water-filling solution (no ZeroDivisionError, no
    OverflowError, no budget silently unmet by underflow)."""
    got = np.array(jp.masks.erk_densities(shapes, density, power_scale))
    assert np.all((got >= 0) & (got <= 1))
    sizes = np.array([math.prod(s) for s in shapes], np.float64)
    np.testing.assert_array_equal(got[sizes == 0], 1.0)
    np.testing.assert_allclose((got * sizes).sum(), density * sizes.sum(), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(got, _erk_reference(shapes, density, power_scale), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([(3, 4)], -0.5), "density=-0.5"),
        (([(3, 4)], 1.5), "density=1.5"),
        (([(3, 4)], math.nan), "density=nan"),
        (([(3, 4)], 0.5, math.inf), "power_scale=inf"),
        (([(3, 4)], 0.5, -1.0), "power_scale=-1.0"),
        (([(3, -4)], 0.5), r"shapes\[0\]=\(3, -4\)"),
        (([(3, 2.5)], 0.5), r"shapes\[0\]=\(3, 2.5\)"),
    ],
)
def test_erk_densities_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        jp.masks.erk_densities(*args)


def test_allocate_erk_with_an_empty_leaf():
    p = {"a": jnp.zeros((3, 4)), "e": jnp.zeros((0, 5)), "c": jnp.zeros((2, 2, 2, 8))}
    got = jp.masks.allocate(p, 0.5, method="erk")
    assert got["e"] == 0.0 and got["a"] == 0.0 and got["c"] == pytest.approx(1 - 26 / 64)
    with pytest.raises(ValueError, match="power_scale=inf"):
        jp.masks.allocate(p, 0.5, method="erk", power_scale=math.inf)


def test_schedules_from_validated_arguments_are_marked_in_range():
    """dpf skips its run-time range check (a host callback) only for these."""
    import jax

    from jaxprune.masks import polynomial_schedule
    from jaxprune.masks.schedules import constant_schedule, geometric_schedule

    assert polynomial_schedule(0.9, 0, 10).in_unit_interval
    assert constant_schedule(0.5).in_unit_interval and geometric_schedule(0.8).in_unit_interval
    marks = []
    jax.jit(lambda s: marks.append(polynomial_schedule(s, 0, 10).in_unit_interval) or s)(0.9)
    assert marks == [False]  # a traced final sparsity cannot be validated at construction


# ----------------------------------------------------------------------------- issue 17 sweep regressions


@given(
    st.integers(1, 8),
    st.lists(st.integers(-160, 124), min_size=1, max_size=4),
    st.integers(0, 2**31 - 1),
)
def test_filter_norm_exact_over_the_float32_range(fan_in, exponents, seed):
    """Per-unit l2 norms of float32 columns at any scale (subnormal entries, norms near the
    float32 max) against a float64 NumPy reference (NumPy does not flush subnormals)."""
    rng = np.random.default_rng(seed)
    cols = [np.ldexp(rng.uniform(-2.0, 2.0, fan_in), k) for k in exponents]
    w = np.stack(cols, axis=1).astype(np.float32)
    got = np.asarray(jp.masks.filter_norm({"k": jnp.asarray(w)})["k"], np.float64)
    ref = np.sqrt(np.sum(w.astype(np.float64) ** 2, axis=0))
    tol = np.maximum(2e-6 * ref, 2.0**-149)  # float32 rounding; one subnormal step for subnormal norms
    assert np.all(np.abs(got - ref) <= tol), (got, ref)


def test_filter_norm_nonfinite_and_complex():
    got = jp.masks.filter_norm({"k": jnp.array([[jnp.nan, 1.0, 0.0], [1.0, jnp.inf, 0.0]])})["k"]
    assert np.isnan(got[0]) and np.isinf(got[1]) and got[2] == 0.0
    with pytest.raises(TypeError, match="complex"):
        jp.masks.filter_norm({"k": jnp.ones((2, 2), jnp.complex64)})
