"""Tests of jaxprune.measures.masks_stats against NumPy set arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
