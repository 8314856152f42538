"""Tests of jaxprune.measures.masks_stats against NumPy set arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxprune import measures

RNG = np.random.default_rng(2)


def masks():
    a = {"k1": RNG.random((4, 5)) > 0.5, "b": None, "k2": RNG.random((3, 3, 2)) > 0.3}
    b = {"k1": RNG.random((4, 5)) > 0.5, "b": None, "k2": RNG.random((3, 3, 2)) > 0.3}
    return a, b


def test_iou_and_flips_match_numpy():
    a, b = masks()
    fa = np.concatenate([a["k1"].ravel(), a["k2"].ravel()])
    fb = np.concatenate([b["k1"].ravel(), b["k2"].ravel()])
    np.testing.assert_allclose(measures.mask_iou(a, b), (fa & fb).sum() / (fa | fb).sum(), rtol=1e-6)
    np.testing.assert_allclose(measures.mask_flips(a, b), (fa != fb).mean(), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(measures.mask_flips)(a, b), (fa != fb).mean(), rtol=1e-6)
    assert float(measures.mask_iou(a, a)) == 1.0 and float(measures.mask_flips(a, a)) == 0.0
    empty = {"k1": np.zeros((4, 5), bool), "b": None, "k2": np.zeros((3, 3, 2), bool)}
    assert float(measures.mask_iou(empty, empty)) == 1.0


def test_mask_mismatch_errors():
    a, b = masks()
    b["b"] = np.ones(3, bool)
    with pytest.raises(ValueError, match="prunable"):
        measures.mask_iou(a, b)
    a, b = masks()
    b["k1"] = np.ones((5, 4), bool)
    with pytest.raises(ValueError, match="shape"):
        measures.mask_flips(a, b)
    with pytest.raises(ValueError, match="structure"):
        measures.mask_flips(a, {"k1": a["k1"]})


def test_pruning_quality():
    w = {"k1": RNG.normal(size=(4, 5)), "b": np.ones(5), "k2": RNG.normal(size=(3, 3, 2))}
    m, _ = masks()
    pruned = sum((w[k][~m[k]] ** 2).sum() for k in ("k1", "k2"))
    total = sum((w[k] ** 2).sum() for k in ("k1", "k2"))
    wf = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), w)
    np.testing.assert_allclose(measures.pruning_quality(wf, m), pruned / total, rtol=1e-5)
    wb = jax.tree.map(lambda x: x.astype(jnp.bfloat16), wf)
    exact = jax.tree.map(lambda x: np.asarray(x.astype(jnp.float32), np.float64), wb)
    keys = ("k1", "k2")
    want = sum((exact[k][~m[k]] ** 2).sum() for k in keys) / sum((exact[k] ** 2).sum() for k in keys)
    np.testing.assert_allclose(measures.pruning_quality(wb, m), want, rtol=1e-5)
    big = {"k1": wf["k1"] * 1e25, "b": wf["b"], "k2": wf["k2"] * 1e25}  # squares overflow float32
    np.testing.assert_allclose(measures.pruning_quality(big, m), pruned / total, rtol=1e-4)
    zeros = jax.tree.map(jnp.zeros_like, wf)
    assert float(measures.pruning_quality(zeros, m)) == 0.0
    wf["k1"] = wf["k1"].at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        measures.pruning_quality(wf, m)


# ----------------------------------------------------------------------------- robustness (issue 17)
@given(
    bits_a=st.lists(st.booleans(), min_size=6, max_size=6),
    bits_b=st.lists(st.booleans(), min_size=6, max_size=6),
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.uint8, jnp.bfloat16]),
)
def test_numeric_01_masks_equal_bool_masks(bits_a, bits_b, dtype):
    """0/1 numeric masks are the bool masks they spell (NumPy set reference)."""
    a, b = np.array(bits_a), np.array(bits_b)
    ma, mb = {"k": np.asarray(a, dtype)}, {"k": np.asarray(b, dtype)}
    union = (a | b).sum()
    np.testing.assert_allclose(measures.mask_iou(ma, mb), (a & b).sum() / union if union else 1.0, rtol=1e-6)
    np.testing.assert_allclose(measures.mask_flips(ma, mb), (a != b).mean(), rtol=1e-6)
    w = np.linspace(-1, 1, 6)
    want = (w[~a] ** 2).sum() / (w**2).sum()
    got = measures.pruning_quality({"k": jnp.asarray(w, jnp.float32)}, ma)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@given(
    bad=st.sampled_from([np.nan, np.inf, -np.inf, 0.5, -1.0, 2.0]),
    pos=st.integers(0, 5),
    which=st.sampled_from(["a", "b"]),
)
def test_masks_other_than_01_are_refused(bad, pos, which):
    """A float mask holding NaN (or any value but 0/1) used to be read as True:
    a silent IoU. Concrete: ValueError naming the mask and leaf; jit: NaN."""
    good = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
    broken = good.copy()
    broken[pos] = bad
    ma, mb = {"k": good, "b": None}, {"k": good, "b": None}
    (ma if which == "a" else mb)["k"] = broken
    name = f"mask_{which}"
    for fn in (measures.mask_iou, measures.mask_flips):
        with pytest.raises(ValueError, match=rf"{name} leaf at k has the value"):
            fn(ma, mb)
        assert np.isnan(jax.jit(fn)(ma, mb))
    w = {"k": np.ones(6, np.float32), "b": None}
    with pytest.raises(ValueError, match="mask leaf at k has the value"):
        measures.pruning_quality(w, {"k": broken, "b": None})
    assert np.isnan(jax.jit(measures.pruning_quality)(w, {"k": broken, "b": None}))


@given(bad=st.sampled_from([np.nan, np.inf, -np.inf]), pos=st.integers(0, 5))
def test_pruning_quality_non_finite_weights_under_jit_are_nan(bad, pos):
    """Outside jit NaN/inf weights raise; under jit they used to give 0.0 (a
    plausible delta): now NaN."""
    w = np.linspace(0.5, 1.5, 6).astype(np.float32)
    w[pos] = bad
    m = {"k": np.arange(6) % 2 == 0}
    with pytest.raises(ValueError, match="NaN"):
        measures.pruning_quality({"k": w}, m)
    assert np.isnan(jax.jit(measures.pruning_quality)({"k": w}, m))


def test_mask_dtype_errors():
    with pytest.raises(TypeError, match="mask_a leaf at k must be a bool"):
        measures.mask_iou({"k": np.ones(3, np.complex64)}, {"k": np.ones(3, bool)})


# ----------------------------------------------------------------------------- issue 17 sweep regressions


@given(st.integers(-170, 100), st.lists(st.floats(0.0, 2.0), min_size=2, max_size=6), st.integers(0, 63))
def test_pruning_quality_exact_at_any_scale(k, mags, bits):
    """delta = ||w - m w||^2 / ||w||^2 is scale invariant: subnormal weights (flushed to 0 by
    XLA:CPU arithmetic) and weights near the float32 max give the float64 NumPy value."""
    w = np.ldexp(np.asarray(mags), k).astype(np.float32)
    keep = np.array([(bits >> i) & 1 for i in range(len(mags))], bool)
    w64 = w.astype(np.float64)
    total = np.sum(w64**2)
    ref = 0.0 if total == 0 else float(np.sum((w64 * ~keep) ** 2) / total)
    got = float(measures.pruning_quality({"k": jnp.asarray(w)}, {"k": jnp.asarray(keep)}))
    assert got == pytest.approx(ref, abs=1e-6)
