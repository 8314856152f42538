"""Tests of jaxprune.compress.sparse_file: bitwise-exact round trips (float32,
bfloat16, all-kept / all-pruned leaves, None leaves, nested dicts), the
Golomb-Rice mask code against a hand-worked bit string and the binary
entropy, the file size at 90% sparsity, and bad input."""

from __future__ import annotations

import json
import math
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.compress import load_sparse, save_sparse
from jaxprune.compress import sparse_file as sf


def _bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    uint = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return np.array_equal(a.view(uint), b.view(uint))


def _masked_reference(params, mask):
    """m * w computed with NumPy, pruned entries exactly +0.0."""
    return jax.tree.map(
        lambda w, m: (
            np.asarray(w) if m is None else np.where(m, np.asarray(w), np.zeros((), np.asarray(w).dtype))
        ),
        params,
        mask,
        is_leaf=lambda x: x is None,
    )


def _tree(rng, dtype=np.float32):
    return {
        "Conv_0": {
            "kernel": rng.standard_normal((3, 3, 4, 8)).astype(dtype),
            "bias": rng.standard_normal(8).astype(dtype),
        },
        "block": {"Dense_0": {"kernel": rng.standard_normal((20, 30)).astype(dtype)}},
        "head": {"kernel": rng.standard_normal((30, 5)).astype(dtype)},
    }


def _mask(rng, params, density=0.1):
    return {
        "Conv_0": {"kernel": rng.random((3, 3, 4, 8)) < density, "bias": None},
        "block": {"Dense_0": {"kernel": np.ones((20, 30), bool)}},  # all kept
        "head": {"kernel": np.zeros((30, 5), bool)},  # all pruned
    }


@pytest.mark.parametrize("coding", ["rice", "bits"])
@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16, np.float16, np.int32])
def test_round_trip_bitwise(tmp_path, coding, dtype):
    rng = np.random.default_rng(0)
    params = _tree(rng, dtype)
    params["Conv_0"]["kernel"][0, 0, 0, :2] = (
        np.array([-0.0, np.inf]).astype(dtype) if dtype != np.int32 else 7
    )
    mask = _mask(rng, params)
    mask["Conv_0"]["kernel"][0, 0, 0, :2] = True
    save_sparse(tmp_path / "f.npz", params, mask, coding=coding)
    p2, m2 = load_sparse(tmp_path / "f.npz")
    ref = _masked_reference(params, mask)
    assert jax.tree.structure(p2) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(p2), strict=True):
        assert _bits_equal(a, b)
    assert m2["Conv_0"]["bias"] is None
    for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(m2), strict=True):
        assert b.dtype == np.bool_ and np.array_equal(a, b)


def test_round_trip_zoo_params_and_none_leaf(tmp_path):
    """LeNet-300-100's param tree (nested linen dicts) plus a None param leaf."""
    params, mask = _zoo_params_and_mask("lenet300", (28, 28, 1), 0.95)
    ref = _masked_reference(params, mask)
    save_sparse(tmp_path / "f", {**params, "extra": None}, {**mask, "extra": None})  # ".npz" appended
    p2, m2 = load_sparse(tmp_path / "f.npz")
    assert p2.pop("extra") is None and m2.pop("extra") is None
    assert jax.tree.structure(p2) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(p2), strict=True):
        assert _bits_equal(a, b)


def test_round_trip_jax_arrays(tmp_path):
    """Device (jax) arrays in, including bfloat16; masks from jp.masks.topk."""
    rng = np.random.default_rng(5)
    params = {"Dense_0": {"kernel": jnp.asarray(rng.standard_normal((16, 8)), jnp.bfloat16)}}
    mask = jp.masks.topk(jp.masks.magnitude(params), 0.75)
    save_sparse(tmp_path / "f.npz", params, mask)
    p2, m2 = load_sparse(tmp_path / "f.npz")
    assert int(m2["Dense_0"]["kernel"].sum()) == 32
    assert _bits_equal(
        _masked_reference(jax.tree.map(np.asarray, params), mask)["Dense_0"]["kernel"],
        p2["Dense_0"]["kernel"],
    )


def test_rice_code_hand_worked():
    """Positions [2, 3, 9] in 12 entries: gaps [2, 0, 5]; with k = 1 the quotients
    are [1, 0, 2] -> unary '01' '1' '001', remainders '0' '0' '1'."""
    bits, unary_len = sf._rice_bits(np.array([2, 3, 9]), 1)
    assert "".join(str(int(b)) for b in bits) == "011001" + "001"
    assert unary_len == 6
    np.testing.assert_array_equal(sf._rice_decode(bits, 3, 1, unary_len), [2, 3, 9])
    # Optimal k by brute force over the closed-form length sum(g >> k) + n (1 + k).
    gaps = np.array([2, 0, 5])
    lengths = [sum(int(g) >> k for g in gaps) + 3 * (1 + k) for k in range(4)]
    assert sf._best_rice_k(np.array([2, 3, 9]), 12) == int(np.argmin(lengths))


def test_rice_near_entropy_at_10_percent(tmp_path):
    """A random mask of density 0.1 costs close to H(0.1) = 0.469 bits/entry (and
    at most 2% above it), far below the bitmask's 1 bit."""
    rng = np.random.default_rng(1)
    m = rng.random(200_000) < 0.1
    bits, info = sf._code_mask(m, "rice")
    assert info["coding"] == "rice"
    d = m.mean()
    entropy = -(d * math.log2(d) + (1 - d) * math.log2(1 - d))
    assert entropy <= len(bits) / m.size <= 1.02 * entropy
    np.testing.assert_array_equal(sf._decode_mask(bits, info, m.shape), m)


def test_rice_falls_back_to_bits_at_half_density():
    m = np.random.default_rng(2).random(1000) < 0.5
    bits, info = sf._code_mask(m, "rice")
    assert info == {"coding": "bits"} and len(bits) == 1000


def test_file_layout_documented_keys(tmp_path):
    rng = np.random.default_rng(3)
    params, mask = _tree(rng), _mask(rng, _tree(rng))
    save_sparse(tmp_path / "f.npz", params, mask)
    with np.load(tmp_path / "f.npz") as data:
        assert sorted(data.files) == ["dense", "mask_bits", "meta", "values"]
        meta = json.loads(zlib.decompress(data["meta"].tobytes()))
        nvalues = data["values"].size
    assert meta["format"] == "jaxprune-sparse" and meta["version"] == 1
    paths = [leaf["path"] for leaf in meta["leaves"]]
    assert paths == ["Conv_0/bias", "Conv_0/kernel", "block/Dense_0/kernel", "head/kernel"]
    kept = int(mask["Conv_0"]["kernel"].sum()) + 600
    assert nvalues == 4 * kept  # float32 kept values only, nothing for the all-pruned head


def _zoo_params_and_mask(name, input_shape, sparsity, seed=0):
    """Normal params of the zoo model's shapes (``jax.eval_shape``: no init run)
    and a NumPy mask keeping exactly ``round((1 - sparsity) * n)`` random
    entries of every kernel (ndim >= 2); other leaves None."""
    model = jp.train.models.get_model(name, 10)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)["params"]
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)

    def one(w):
        if w.ndim < 2:
            return None
        flat = np.zeros(w.size, bool)
        flat[rng.permutation(w.size)[: round((1 - sparsity) * w.size)]] = True
        return flat.reshape(w.shape)

    return params, jax.tree.map(one, params)


def test_size_at_90_percent_resnet20(tmp_path):
    """ResNet-20, 90% random sparsity of every kernel: <= 0.14x the dense float32
    npz with the bitmask (bitmask + values of the kernels alone: 0.131x),
    <= 0.125x with the Rice code (entropy bound of the kernels: 0.115x)."""
    params, mask = _zoo_params_and_mask("resnet20", (32, 32, 3), 0.9)
    flat = {
        jax.tree_util.keystr(p, simple=True, separator="/"): x for p, x in jax.tree.leaves_with_path(params)
    }
    np.savez(tmp_path / "dense.npz", **flat)
    dense = os.path.getsize(tmp_path / "dense.npz")
    assert save_sparse(tmp_path / "bits.npz", params, mask, coding="bits") <= 0.14 * dense
    assert save_sparse(tmp_path / "rice.npz", params, mask) <= 0.125 * dense


def test_bad_input(tmp_path):
    rng = np.random.default_rng(4)
    params, mask = _tree(rng), _mask(rng, _tree(rng))
    f = tmp_path / "f.npz"
    with pytest.raises(ValueError, match="does not match the structure"):
        save_sparse(f, params, {**mask, "head": None, "extra": None})
    bad_shape = {**mask, "head": {"kernel": np.ones((5, 30), bool)}}
    with pytest.raises(ValueError, match="head/kernel"):
        save_sparse(f, params, bad_shape)
    float_mask = {**mask, "head": {"kernel": np.ones((30, 5), np.float32)}}
    with pytest.raises(TypeError, match="head/kernel has dtype float32"):
        save_sparse(f, params, float_mask)
    nan_params = {**params, "head": {"kernel": params["head"]["kernel"].copy()}}
    nan_params["head"]["kernel"][1, 1] = np.nan
    with pytest.raises(ValueError, match="head/kernel contains 1 NaN"):
        save_sparse(f, nan_params, mask)
    with pytest.raises(ValueError, match="coding='gzip'"):
        save_sparse(f, params, mask, coding="gzip")
    with pytest.raises(TypeError, match="list"):
        save_sparse(f, [params["head"]["kernel"]], [None])
    with pytest.raises(ValueError, match="without '/'"):
        save_sparse(f, {"a/b": np.ones(2)}, {"a/b": None})
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="not a jaxprune-sparse file"):
        load_sparse(tmp_path / "other.npz")


def test_truncated_file_is_a_clear_error(tmp_path):
    """A truncated file was a bare zipfile.BadZipFile; now a ValueError naming the file."""
    params = {"k": jnp.arange(8.0).reshape(2, 4)}
    mask = {"k": params["k"] > 2}
    path = tmp_path / "t.npz"
    save_sparse(path, params, mask)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"t\.npz.*truncated or corrupt"):
        load_sparse(path)


def test_numeric_mask_values_checked(tmp_path):
    params = {"k": jnp.arange(8.0).reshape(2, 4)}
    with pytest.raises(ValueError, match="mask leaf"):
        save_sparse(tmp_path / "n.npz", params, {"k": jnp.ones((2, 4)).at[0, 0].set(jnp.nan)})
