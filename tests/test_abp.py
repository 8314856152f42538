"""Tests for jaxprune.abp: a hand-worked two-layer network, the solvers
against scikit-learn, the magnitude baseline, masks/None leaves, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import Lasso, LinearRegression

from jaxprune import abp
from jaxprune.abp import solvers
from jaxprune.tree import prunable


class TwoLayer(nn.Module):
    """x (N, 2) -> Dense(3) -> ReLU -> Dense(1)."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, name="out")(nn.relu(nn.Dense(3, name="hidden")(x)))


# Hand-worked example. Inputs x1 = (1, 2, 3, 4), x2 = (1, 3, 2, 4): all >= 1,
# so every hidden pre-activation below is positive and ReLU is the identity.
X = np.array([[1, 1], [2, 3], [3, 2], [4, 4]], np.float32)
# hidden units: h1 = x1 + 0.5 x2, h2 = x1 + 0.01 x2, h3 = 2 x1 + 2 x2 (no bias)
K1 = np.array([[1.0, 1.0, 2.0], [0.5, 0.01, 2.0]], np.float32)
# output: y = 1 h1 + 0.04 h2 + 0.01 h3 + 0.3
K2 = np.array([[1.0], [0.04], [0.01]], np.float32)
HAND_PARAMS = {
    "hidden": {"kernel": K1, "bias": np.zeros(3, np.float32)},
    "out": {"kernel": K2, "bias": np.array([0.3], np.float32)},
}


def apply_fn(params, x):
    return TwoLayer().apply({"params": params}, x)


def test_hand_worked_abp_m():
    # q = 0.5, eta = 0.2: m = ceil((sum sqrt|w|)^2 / ||w||_1 / 1.2^2).
    #   h1 (1, .5):  (1 + .7071)^2 / 1.5 / 1.44 = 1.349 -> 2
    #   h2 (1, .01): 1.1^2 / 1.01 / 1.44 = 0.832 -> 1 (keeps x1)
    #   h3 (2, 2):   8 / 4 / 1.44 = 1.389 -> 2
    #   out (1, .04, .01): 1.3^2 / 1.05 / 1.44 = 1.118 -> 2 (drops h3)
    new, mask, report = abp.prune(apply_fn, HAND_PARAMS, X, method="M", q=0.5, eta=0.2)
    np.testing.assert_array_equal(report.layers["hidden/kernel"].kept, [2, 1, 2])
    np.testing.assert_array_equal(report.layers["out/kernel"].kept, [2])
    np.testing.assert_array_equal(mask["hidden"]["kernel"], [[True, True, True], [True, False, True]])
    np.testing.assert_array_equal(mask["out"]["kernel"], [[True], [True], [False]])
    assert mask["hidden"]["bias"] is None and mask["out"]["bias"] is None
    assert report.kept == 7 and report.size == 9
    assert report.compression_ratio == pytest.approx(9 / 7)
    assert report.pruning_ratio == pytest.approx(2 / 7 * 7 / 9)

    # Full-support neurons are refit exactly to themselves.
    np.testing.assert_allclose(new["hidden"]["kernel"][:, [0, 2]], K1[:, [0, 2]], rtol=1e-4, atol=1e-5)
    # h2 on x1 alone: cov(x1, x2) / var(x1) = 1.0 / 1.25 = 0.8 (population moments),
    # slope 1 + 0.01 * 0.8 = 1.008, bias 0.01 * (2.5 - 0.8 * 2.5) = 0.005.
    np.testing.assert_allclose(new["hidden"]["kernel"][:, 1], [1.008, 0.0], atol=1e-5)
    np.testing.assert_allclose(new["hidden"]["bias"], [0.0, 0.005, 0.0], atol=1e-5)
    # Output refit uses the ORIGINAL hidden activations: h3 = a h1 + b h2 exactly with
    # a + b = 2, 0.5 a + 0.01 b = 2 -> a = 1.98 / 0.49, b = 2 - a; bias unchanged.
    a = 1.98 / 0.49
    expected_out = [1.0 + 0.01 * a, 0.04 + 0.01 * (2.0 - a), 0.0]
    np.testing.assert_allclose(new["out"]["kernel"][:, 0], expected_out, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(new["out"]["bias"], [0.3], atol=1e-4)


def test_abp_m_counts_follow_sparsity_index():
    """Per-neuron m in the report = numpy's ceil(SI^(q/(q-1)) (1+eta)^(1/(q-1))), clipped."""
    rng = np.random.default_rng(1)
    t2 = lambda *shape: rng.standard_t(2, size=shape).astype(np.float32)
    params = {"hidden": {"kernel": t2(2, 3), "bias": t2(3)}, "out": {"kernel": t2(3, 1), "bias": t2(1)}}
    params["hidden"]["kernel"][:, 1] = 0.0  # all-zero neuron -> m = 1
    for q, eta in [(0.3, 0.0), (0.7, 0.3)]:
        _, _, report = abp.prune(apply_fn, params, X, method="M", q=q, eta=eta)
        for name in ("hidden", "out"):
            a = np.abs(params[name]["kernel"].astype(np.float64)).T
            with np.errstate(invalid="ignore", divide="ignore"):
                si = a.sum(1) / (a**q).sum(1) ** (1 / q)
                m = np.ceil(si ** (q / (q - 1)) * (1 + eta) ** (1 / (q - 1)))
            m = np.where(a.sum(1) > 0, np.clip(m, 1, a.shape[1]), 1)
            np.testing.assert_array_equal(report.layers[f"{name}/kernel"].kept, m)


def test_keep_largest_exact_counts():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(9, 5)).astype(np.float32)
    counts = np.array([0, 1, 4, 9, 3])
    keep = np.asarray(abp.keep_largest(jnp.asarray(w), jnp.asarray(counts)))
    for j, c in enumerate(counts):
        expected = np.zeros(9, bool)
        expected[np.argsort(-np.abs(w[:, j]))[:c]] = True
        np.testing.assert_array_equal(keep[:, j], expected)


def _regression_data(seed=0, n=300, d=6, o=3):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) + 3.0).astype(np.float32)
    w = rng.normal(size=(d, o)).astype(np.float32)
    y = (x @ w + 0.3 * rng.normal(size=(n, o)) + 1.0).astype(np.float32)
    return x, y, w


def test_batched_stats_equal_full_pass():
    x, y, _ = _regression_data()
    s = solvers.merge_stats(solvers.batch_stats(x[:70], y[:70]), solvers.batch_stats(x[70:], y[70:]))
    xc, yc = x - x.mean(0), y - y.mean(0)
    np.testing.assert_allclose(s.sxx, xc.T @ xc, rtol=1e-4)
    np.testing.assert_allclose(s.sxy, xc.T @ yc, rtol=1e-4)
    np.testing.assert_allclose(s.syy, (yc**2).sum(0), rtol=1e-4)
    np.testing.assert_allclose(s.mean_x, x.mean(0), rtol=1e-5)


def test_masked_lstsq_matches_sklearn():
    x, y, _ = _regression_data()
    support = np.random.default_rng(3).random((6, 3)) < 0.6
    support[0] = True
    w, b = solvers.masked_lstsq(solvers.batch_stats(x, y), jnp.asarray(support))
    for j in range(3):
        idx = np.flatnonzero(support[:, j])
        ref = LinearRegression().fit(x[:, idx].astype(np.float64), y[:, j].astype(np.float64))
        np.testing.assert_allclose(w[idx, j], ref.coef_, rtol=1e-4)
        np.testing.assert_allclose(b[j], ref.intercept_, atol=1e-4)  # mean_y - mean_x . w cancels in f32
        assert np.all(np.asarray(w)[~support[:, j], j] == 0)


@pytest.mark.parametrize("lam", [1e-3, 0.05, 0.5])
def test_lasso_fista_matches_sklearn(lam):
    x, y, w_true = _regression_data()
    w, b, info = solvers.lasso_fista(solvers.batch_stats(x, y), lam, jnp.asarray(w_true), tol=1e-7)
    assert bool(info.converged)
    for j in range(3):
        ref = Lasso(alpha=lam, tol=1e-12, max_iter=100_000).fit(x.astype(np.float64), y[:, j])
        np.testing.assert_allclose(w[:, j], ref.coef_, rtol=1e-4, atol=1e-4 * np.abs(ref.coef_).max())
        np.testing.assert_allclose(b[j], ref.intercept_, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(w[:, j]) == 0, ref.coef_ == 0)
    if lam == 0.5:
        assert np.any(np.asarray(w) == 0)  # the large penalty must produce exact zeros


def test_abp_l_is_lasso_on_original_activations():
    rng = np.random.default_rng(4)
    params = jax.tree.map(jnp.asarray, HAND_PARAMS)
    params["hidden"]["kernel"] = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    new, mask, report = abp.prune(apply_fn, params, x, method="L", lam=0.02, batch_size=24, tol=1e-7)
    h = np.maximum(x @ np.asarray(params["hidden"]["kernel"]), 0)  # original hidden activations
    y_out = h @ K2[:, 0] + 0.3
    ref = Lasso(alpha=0.02, tol=1e-12, max_iter=100_000).fit(h.astype(np.float64), y_out)
    # 3 ReLU features of 2 inputs are strongly correlated: float32 FISTA agrees to ~2e-4 here
    np.testing.assert_allclose(new["out"]["kernel"][:, 0], ref.coef_, atol=1e-3)
    np.testing.assert_allclose(new["out"]["bias"][0], ref.intercept_, atol=1e-3)
    np.testing.assert_array_equal(mask["out"]["kernel"][:, 0], ref.coef_ != 0)
    assert report.lasso["out/kernel"].converged


def test_mag_prunes_fixed_fraction_without_refit():
    rng = np.random.default_rng(5)
    params = {
        "hidden": {"kernel": rng.normal(size=(2, 3)).astype(np.float32), "bias": np.ones(3, np.float32)},
        "out": {"kernel": rng.normal(size=(3, 1)).astype(np.float32), "bias": np.ones(1, np.float32)},
    }
    new, mask, report = abp.prune(apply_fn, params, X, method="mag", p=0.5)
    # floor(0.5 * 2) = 1 of 2 and floor(0.5 * 3) = 1 of 3 dropped per neuron
    np.testing.assert_array_equal(report.layers["hidden/kernel"].kept, [1, 1, 1])
    np.testing.assert_array_equal(report.layers["out/kernel"].kept, [2])
    for name in ("hidden", "out"):
        k = params[name]["kernel"]
        thresh = np.sort(np.abs(k), axis=0)[np.floor(0.5 * k.shape[0]).astype(int) - 1]
        np.testing.assert_array_equal(mask[name]["kernel"], np.abs(k) > thresh)
        np.testing.assert_array_equal(new[name]["kernel"], np.where(mask[name]["kernel"], k, 0))
        np.testing.assert_array_equal(new[name]["bias"], params[name]["bias"])


def test_prunable_filter_leaves_output_layer_dense():
    flags = prunable(HAND_PARAMS, exclude="out")
    new, mask, report = abp.prune(apply_fn, HAND_PARAMS, X, method="M", q=0.5, eta=0.2, prunable=flags)
    assert mask["out"]["kernel"] is None
    np.testing.assert_array_equal(new["out"]["kernel"], K2)
    assert list(report.layers) == ["hidden/kernel"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"q": 0.0}, "q=0.0"),
        ({"q": 1.0}, "q=1.0"),
        ({"eta": -0.1}, "eta=-0.1"),
        ({"lam": -1e-3}, "lam=-0.001"),
        ({"p": 1.0}, r"p=1.0.*\[0.0, 1.0\)"),
        ({"p": -0.2}, "p=-0.2"),
        ({"method": "lasso"}, "method='lasso'"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        abp.prune(apply_fn, HAND_PARAMS, X, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"per-example shape \(5,\) do not fit the model"):
        abp.prune(apply_fn, HAND_PARAMS, np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, features"):
        abp.prune(apply_fn, HAND_PARAMS, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        abp.prune(apply_fn, HAND_PARAMS, np.full((4, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="dense layers only"):
        abp.prune(apply_fn, {**HAND_PARAMS, "extra": np.ones((2, 2), np.float32)}, X)


def test_layer_without_bias_refits_through_origin():
    class NoBias(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, use_bias=False, name="lin")(x)

    rng = np.random.default_rng(6)
    x = (rng.normal(size=(50, 4)) + 2.0).astype(np.float32)
    kernel = np.array([[1.0, 0.02], [0.03, 1.0], [0.5, 0.01], [0.01, 0.6]], np.float32)
    params = {"lin": {"kernel": kernel}}
    new, mask, _ = abp.prune(lambda p, v: NoBias().apply({"params": p}, v), params, x, method="M", eta=0.5)
    keep = np.asarray(mask["lin"]["kernel"])
    assert keep.sum() < keep.size  # the small weights were dropped
    for j in range(2):
        idx = np.flatnonzero(keep[:, j])
        ref = LinearRegression(fit_intercept=False).fit(x[:, idx].astype(np.float64), x @ kernel[:, j])
        np.testing.assert_allclose(new["lin"]["kernel"][idx, j], ref.coef_, rtol=1e-4, atol=1e-5)
    assert set(new["lin"]) == {"kernel"}


# ----------------------------------------------------------------------------- degenerate data (issue 17)
DEGENERATE = ("zeros", "single", "constant", "zero_kernel", "dead_relu")


def _degenerate_case(kind, seed):
    """The hand-worked network's shapes with random weights, on data that make
    some layer's input covariance zero."""
    rng = np.random.default_rng(seed)
    k1, b1 = rng.normal(size=(2, 3)), rng.normal(size=3)
    k2, b2 = rng.normal(size=(3, 1)), rng.normal(size=1)
    x = rng.normal(size=(6, 2))
    if kind == "zeros":
        x = np.zeros_like(x)
    elif kind == "single":
        x = x[:1]
    elif kind == "constant":
        x = np.tile(x[:1], (6, 1))
    elif kind == "zero_kernel":
        k1 = np.zeros_like(k1)
    elif kind == "dead_relu":  # every hidden pre-activation < 0 on the data
        x, k1, b1 = np.abs(x) + 0.1, -np.abs(k1), -np.abs(b1) - 0.1
    f32 = lambda a: np.asarray(a, np.float32)
    params = {"hidden": {"kernel": f32(k1), "bias": f32(b1)}, "out": {"kernel": f32(k2), "bias": f32(b2)}}
    return params, f32(x)


def _np_forward(params, x):
    """float64 numpy forward pass of TwoLayer: (hidden activations, output)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = np.maximum(x.astype(np.float64) @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0.0)
    return h, h @ p["out"]["kernel"] + p["out"]["bias"]


@given(kind=st.sampled_from(DEGENERATE), seed=st.integers(0, 2**16), method=st.sampled_from(abp.METHODS))
def test_degenerate_data_give_finite_exact_refits(kind, seed, method):
    """Zero input covariance (all-zero inputs, one sample, constant inputs, an
    all-zero kernel, dead ReLUs) used to put NaN into ABP-M's weights. Now:
    finite everywhere; the output layer, whose inputs are constant in every
    case, keeps its original kept weights (ABP-M) or drops them (ABP-L, the
    LASSO optimum for zero-variance inputs), with a bias that reproduces its
    original outputs; where every layer's fit is exact, so is the network."""
    params, x = _degenerate_case(kind, seed)
    new, mask, _ = abp.prune(apply_fn, params, x, method=method, q=0.5, eta=0.2)
    for leaf in jax.tree.leaves(new):
        assert np.all(np.isfinite(np.asarray(leaf)))
    if method == "mag":
        return
    h0, y0 = _np_forward(params, x)
    keep = np.asarray(mask["out"]["kernel"])
    w_out = np.asarray(new["out"]["kernel"], np.float64)
    expected_w = np.where(keep, params["out"]["kernel"], 0.0) if method == "M" else np.zeros_like(w_out)
    np.testing.assert_allclose(w_out, expected_w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h0 @ w_out + np.asarray(new["out"]["bias"]), y0, rtol=1e-5, atol=1e-5)
    if kind != "dead_relu":  # the hidden refit is exact too (constant inputs or a constant target)
        np.testing.assert_allclose(_np_forward(new, x)[1], y0, rtol=1e-4, atol=1e-4)


def _data_with_dead_columns(seed, n=40, d=5, o=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + rng.normal(size=d) * 3
    dead = rng.random(d) < 0.4
    x[:, dead] = rng.normal(size=int(dead.sum())).round(1)  # constant columns (maybe 0)
    w = rng.normal(size=(d, o))
    y = x @ w + 0.1 * rng.normal(size=(n, o))
    return x.astype(np.float32), y.astype(np.float32), w.astype(np.float32), dead, rng


@given(seed=st.integers(0, 2**16), ridge=st.sampled_from([0.0, 1e-6]))
def test_masked_lstsq_constant_columns_keep_w0(seed, ridge):
    """Constant input columns keep their w0 weight; the other supported columns
    give scikit-learn's least-squares predictions (ridge 0 included)."""
    x, y, w0, dead, rng = _data_with_dead_columns(seed)
    support = rng.random(w0.shape) < 0.7
    w, b = solvers.masked_lstsq(solvers.batch_stats(x, y), jnp.asarray(support), ridge, jnp.asarray(w0))
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(b))
    x64 = x.astype(np.float64)
    for j in range(w0.shape[1]):
        np.testing.assert_array_equal(w[~support[:, j], j], 0.0)
        np.testing.assert_allclose(w[support[:, j] & dead, j], w0[support[:, j] & dead, j])
        live = np.flatnonzero(support[:, j] & ~dead)
        pred = x64 @ w[:, j] + b[j]
        if live.size:
            ref = LinearRegression().fit(x64[:, live], y[:, j]).predict(x64[:, live])
        else:
            ref = np.full(len(x), y[:, j].astype(np.float64).mean())
        np.testing.assert_allclose(pred, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


@given(seed=st.integers(0, 2**16), dup=st.booleans())
def test_masked_lstsq_singular_without_ridge_is_finite(seed, dup):
    """ridge=0 on an exactly singular subset (duplicated or all-zero columns):
    finite, and the fitted values are still scikit-learn's."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    if dup:
        x[:, 3] = x[:, 0]  # an exactly collinear pair
    else:
        x[:, 1:] = 0.0
    y = (x @ rng.normal(size=(4, 1)) + 1.0).astype(np.float32)
    support = np.ones((4, 1), bool)
    w, b = solvers.masked_lstsq(solvers.batch_stats(x, y), jnp.asarray(support), 0.0)
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(b))
    ref = LinearRegression().fit(x.astype(np.float64), y[:, 0]).predict(x.astype(np.float64))
    np.testing.assert_allclose(x @ w[:, 0] + b[0], ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


@given(seed=st.integers(0, 2**16), lam=st.sampled_from([1e-3, 0.05, 0.3]))
def test_lasso_constant_columns_match_sklearn(seed, lam):
    """Constant input columns (all-zero ones included) have no gradient: their
    weight is 0, as scikit-learn's Lasso gives, and the rest match it."""
    x, y, w0, dead, _ = _data_with_dead_columns(seed)
    w, b, _ = solvers.lasso_fista(solvers.batch_stats(x, y), lam, jnp.asarray(w0), tol=1e-7)
    w = np.asarray(w, np.float64)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(np.asarray(b)))
    np.testing.assert_array_equal(w[dead], 0.0)
    for j in range(w0.shape[1]):
        ref = Lasso(alpha=lam, tol=1e-10, max_iter=100_000).fit(x.astype(np.float64), y[:, j])
        np.testing.assert_allclose(w[:, j], ref.coef_, atol=2e-3 * max(np.abs(ref.coef_).max(), 1.0))
        np.testing.assert_allclose(b[j], ref.intercept_, atol=2e-2 * max(abs(ref.intercept_), 1.0))


def test_lasso_all_constant_layer_is_bias_only():
    x = np.full((5, 3), 2.0, np.float32)
    y = (x @ np.ones((3, 2), np.float32) + 0.5).astype(np.float32)
    for lam in (0.0, 1e-4):
        w, b, _ = solvers.lasso_fista(solvers.batch_stats(x, y), lam, jnp.ones((3, 2)))
        expected_w = np.ones((3, 2)) if lam == 0 else np.zeros((3, 2))  # lam = 0: unidentified, kept at w0
        np.testing.assert_allclose(w, expected_w)
        np.testing.assert_allclose(np.asarray(x @ np.asarray(w) + b), y, rtol=1e-6)


@pytest.mark.parametrize("method", ["M", "L"])
def test_overflowing_activations_name_the_layer(method):
    with pytest.raises(ValueError, match=r"Gram statistics of layers \['hidden/kernel', 'out/kernel'\]"):
        abp.prune(apply_fn, HAND_PARAMS, X * 1e20, method=method)
    stats = abp.layer_stats(apply_fn, HAND_PARAMS, X)
    stats["out/kernel"] = stats["out/kernel"]._replace(sxx=stats["out/kernel"].sxx * np.nan)
    with pytest.raises(ValueError, match=r"layers \['out/kernel'\]"):
        abp.prune(apply_fn, HAND_PARAMS, X, method=method, stats=stats)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eta": float("inf")}, "eta=inf"),
        ({"lam": float("inf")}, "lam=inf"),
        ({"ridge": float("inf")}, "ridge=inf"),
        ({"ridge": float("nan")}, "ridge=nan"),
        ({"tol": float("inf")}, "tol=inf"),
        ({"max_iter": True}, "max_iter=True"),
        ({"batch_size": 2.0}, "batch_size=2.0"),
    ],
)
def test_non_finite_or_mistyped_scalars(kwargs, match):
    with pytest.raises(ValueError, match=match):
        abp.prune(apply_fn, HAND_PARAMS, X, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_params_are_refused(bad):
    params = jax.tree.map(np.array, HAND_PARAMS)
    params["out"]["bias"][0] = bad
    with pytest.raises(ValueError, match=r"params contains NaN or infinite values at \['out'\]\['bias'\]"):
        abp.prune(apply_fn, params, X)
    with pytest.raises(ValueError, match="params contains NaN"):
        abp.layer_stats(apply_fn, params, X)


def test_solver_bad_arguments_and_traced_nan():
    x, y, w_true = _regression_data()
    s = solvers.batch_stats(x, y)
    support = jnp.ones((6, 3), bool)
    with pytest.raises(ValueError, match="ridge=-1"):
        solvers.masked_lstsq(s, support, -1.0)
    with pytest.raises(ValueError, match="support must have shape"):
        solvers.masked_lstsq(s, jnp.ones((5, 3), bool))
    with pytest.raises(ValueError, match=r"lam=-0\.1"):
        solvers.lasso_fista(s, -0.1)
    with pytest.raises(ValueError, match="lam=inf"):
        solvers.lasso_fista(s, np.inf)
    with pytest.raises(ValueError, match="max_iter=0"):
        solvers.lasso_fista(s, 0.1, max_iter=0)
    bad = s._replace(sxy=s.sxy.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="stats contains NaN"):
        solvers.masked_lstsq(bad, support)
    with pytest.raises(ValueError, match="stats contains NaN"):
        solvers.lasso_fista(bad, 0.1)
    # under jit nothing can be checked: NaN out, never a plausible fit
    w, _ = jax.jit(solvers.masked_lstsq)(bad, support)
    assert np.all(np.isnan(w))
    w, _ = jax.jit(lambda st, r: solvers.masked_lstsq(st, support, r))(s, -1.0)
    assert np.all(np.isnan(w))
    w, _, _ = jax.jit(lambda st, lam: solvers.lasso_fista(st, lam, w_true, max_iter=50))(s, -0.1)
    assert np.all(np.isnan(w))
    w, _, _ = jax.jit(lambda st: solvers.lasso_fista(st, 0.1, max_iter=50))(bad)
    assert np.all(np.isnan(w))


# ----------------------------------------------------------------------------- issue 17 sweep regressions


def test_keep_largest_shapes_checked():
    """A vector w (not (d, o)) was an IndexError from inside the function."""
    with pytest.raises(ValueError, match="shape"):
        abp.keep_largest(jnp.ones(4), jnp.int32(2))
    with pytest.raises(ValueError, match="count"):
        abp.keep_largest(jnp.ones((4, 2)), jnp.array([1]))
    assert not np.any(abp.keep_largest(jnp.ones((4, 1)), jnp.array([-1])))
