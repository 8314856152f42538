"""Tests for jaxprune.abp: a hand-worked two-layer network, the solvers
against scikit-learn, the magnitude baseline, masks/None leaves, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
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
