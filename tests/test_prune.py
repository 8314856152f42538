"""jp.prune (one-shot pruning) against NumPy references: a stable argsort of
the negated magnitudes per pool (lower flat index wins ties), N:M groups
counted by hand, and on 8 simulated devices the shardings of the outputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxprune as jp


def ref_keep(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest of a 1-D pool (stable: the lower index wins ties)."""
    keep = np.zeros(scores.shape, bool)
    keep[np.argsort(-scores.astype(np.float64), kind="stable")[:k]] = True
    return keep


def make_params(seed=0, ties=False):
    rng = np.random.default_rng(seed)
    k1 = rng.standard_normal((16, 32)).astype(np.float32)
    k2 = rng.standard_normal((32, 8)).astype(np.float32)
    if ties:
        k1, k2 = np.round(k1), np.round(k2)  # many equal magnitudes
    return {
        "d0": {"kernel": jnp.asarray(k1), "bias": jnp.ones(32)},
        "d1": {"kernel": jnp.asarray(k2), "bias": jnp.zeros(8)},
        "extra": None,
    }


@pytest.mark.parametrize("ties", [False, True])
def test_global_magnitude_matches_numpy(ties):
    params = make_params(1, ties)
    sparse, mask = jp.prune(params, 0.8)
    k1, k2 = np.asarray(params["d0"]["kernel"]), np.asarray(params["d1"]["kernel"])
    flat = np.abs(np.concatenate([k1.ravel(), k2.ravel()]))
    keep = ref_keep(flat, round(0.2 * flat.size))
    want1, want2 = keep[: k1.size].reshape(k1.shape), keep[k1.size :].reshape(k2.shape)
    np.testing.assert_array_equal(np.asarray(mask["d0"]["kernel"]), want1)
    np.testing.assert_array_equal(np.asarray(mask["d1"]["kernel"]), want2)
    np.testing.assert_array_equal(np.asarray(sparse["d0"]["kernel"]), np.where(want1, k1, 0.0))
    np.testing.assert_array_equal(np.asarray(sparse["d1"]["kernel"]), np.where(want2, k2, 0.0))
    assert mask["d0"]["bias"] is None and mask["extra"] is None and sparse["extra"] is None
    np.testing.assert_array_equal(np.asarray(sparse["d0"]["bias"]), np.ones(32))


def test_layer_scope_with_per_leaf_sparsity():
    params = make_params(2)
    per_leaf = {"d0": {"kernel": 0.5, "bias": None}, "d1": {"kernel": 0.9, "bias": None}, "extra": None}
    _, mask = jp.prune(params, per_leaf, scope="layer")
    for name, s in (("d0", 0.5), ("d1", 0.9)):
        w = np.abs(np.asarray(params[name]["kernel"]))
        want = ref_keep(w.ravel(), round((1 - s) * w.size)).reshape(w.shape)
        np.testing.assert_array_equal(np.asarray(mask[name]["kernel"]), want)


def test_n_m_scope_keeps_n_of_every_m_inputs():
    params = make_params(3)
    sparse, mask = jp.prune(params, None, scope="2:4")
    for name in ("d0", "d1"):
        w = np.asarray(params[name]["kernel"])
        m = np.asarray(mask[name]["kernel"])
        groups = np.abs(w).reshape(w.shape[0] // 4, 4, w.shape[1])  # groups of 4 along the input axis 0
        want = np.zeros(groups.shape, bool)
        for g in range(groups.shape[0]):
            for j in range(groups.shape[2]):
                want[g, :, j] = ref_keep(groups[g, :, j], 2)
        np.testing.assert_array_equal(m, want.reshape(w.shape))
        np.testing.assert_array_equal(np.asarray(sparse[name]["kernel"]), np.where(m, w, 0.0))


def test_equinox_layout_out_axis_matches_transposed():
    # equinox Linear weights are (out, in): out_axis=0 must equal the flax layout transposed
    params = make_params(4)
    flax_layout = {k: params[k]["kernel"] for k in ("d0", "d1")}
    eqx_layout = {k: v.T for k, v in flax_layout.items()}
    for scope, scorer in (("neuron", jp.masks.magnitude), ("filter", jp.masks.filter_norm), ("2:4", None)):
        kwargs = {"scorer": scorer} if scorer is not None else {}
        s = None if scope == "2:4" else 0.5
        _, want = jp.prune(flax_layout, s, scope=scope, **kwargs)
        _, got = jp.prune(eqx_layout, s, scope=scope, out_axis=0, **kwargs)
        for k in flax_layout:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]).T)


def test_random_scorer_needs_key_and_is_deterministic():
    params = make_params(5)
    with pytest.raises(ValueError, match="key"):
        jp.prune(params, 0.5, scorer=jp.masks.random)
    key = jax.random.key(0)
    _, m1 = jp.prune(params, 0.5, scorer=jp.masks.random, key=key)
    _, m2 = jp.prune(params, 0.5, scorer=jp.masks.random, key=key)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m2), strict=True))
    assert sum(int(np.sum(m)) for m in jax.tree.leaves(m1)) == round(0.5 * (16 * 32 + 32 * 8))


def test_snip_via_partial():
    params = make_params(6)
    grads = jax.tree.map(
        lambda w: None if w is None else jnp.full(w.shape, 2.0), params, is_leaf=lambda x: x is None
    )
    _, got = jp.prune(params, 0.7, scorer=functools.partial(jp.masks.snip, grads=grads))
    _, want = jp.prune(params, 0.7)  # |2 w| ranks as |w|
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))


def _sharded_params(mesh):
    params = make_params(7, ties=True)
    specs = {
        "d0": {"kernel": P("data", "model"), "bias": P("model")},
        "d1": {"kernel": P("model", None), "bias": P()},
    }
    put = lambda k, n: jax.device_put(params[k][n], NamedSharding(mesh, specs[k][n]))
    out = {k: {n: put(k, n) for n in specs[k]} for k in specs}
    return out, params


@pytest.mark.parametrize("under_jit", [False, True])
@pytest.mark.parametrize(("scope", "sparsity"), [("global", 0.9), ("neuron", 0.75), ("2:4", None)])
def test_sharded_params_keep_their_sharding_and_exact_counts(under_jit, scope, sparsity):
    assert len(jax.devices()) >= 8
    mesh = _mesh()
    sharded, plain = _sharded_params(mesh)
    plain = {k: plain[k] for k in sharded}
    fn = (lambda p: jp.prune(p, sparsity, scope=scope)) if not under_jit else jax.jit(
        lambda p: jp.prune(p, sparsity, scope=scope)
    )
    sparse, mask = fn(sharded)
    _, want = jp.prune(plain, sparsity, scope=scope)  # single device
    for k in sharded:
        w = sharded[k]["kernel"]
        for out in (mask[k]["kernel"], sparse[k]["kernel"], sparse[k]["bias"]):
            ref = w if out.shape == w.shape else sharded[k]["bias"]
            assert out.sharding.is_equivalent_to(ref.sharding, out.ndim), (k, out.sharding, ref.sharding)
        np.testing.assert_array_equal(np.asarray(mask[k]["kernel"]), np.asarray(want[k]["kernel"]))
        assert mask[k]["bias"] is None
    total = sum(int(np.sum(mask[k]["kernel"])) for k in sharded)
    if scope == "global":
        assert total == round(0.1 * (16 * 32 + 32 * 8))
    elif scope == "neuron":
        assert total == 32 * round(0.25 * 16) + 8 * round(0.25 * 32)
    else:
        assert total == (16 * 32 + 32 * 8) // 2


def test_traced_sparsity_under_jit():
    params = make_params(8)
    got = jax.jit(lambda p, s: jp.prune(p, s)[1])(params, jnp.float32(0.6))
    _, want = jp.prune(params, 0.6)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_input():
    params = make_params(9)
    with pytest.raises(ValueError, match=r"sparsity=1.5 is outside the valid range \[0.0, 1.0\]"):
        jp.prune(params, 1.5)
    with pytest.raises(ValueError, match="does not match scope='2:4'"):
        jp.prune(params, 0.3, scope="2:4")
    with pytest.raises(ValueError, match="1 <= N <= M"):
        jp.prune(params, None, scope="5:4")
    with pytest.raises(ValueError, match="scope='rows' is not valid"):
        jp.prune(params, 0.5, scope="rows")
    with pytest.raises(ValueError, match=r"M=3 does not divide .* d0/kernel of shape \(16, 32\)"):
        jp.prune(params, None, scope="1:3")
    with pytest.raises(TypeError, match="out_axis"):
        jp.prune(params, 0.5, scope="neuron", out_axis="0")
    with pytest.raises(ValueError, match=r"out_axis=2 is outside the valid range \[-2, 2\) for the leaf d0/"):
        jp.prune(params, 0.5, scope="neuron", out_axis=2)
    with pytest.raises(TypeError, match="grads"):
        jp.prune(params, 0.5, scorer=jp.masks.snip)
    with pytest.raises(ValueError, match="sparsity\\[d1/kernel\\]=2"):
        per_leaf = {"d0": {"kernel": 0.5, "bias": None}, "d1": {"kernel": 2, "bias": None}, "extra": None}
        jp.prune(params, per_leaf, scope="layer")
    with pytest.raises(ValueError, match="selects no leaf"):
        jp.prune({"b": jnp.ones(3)}, 0.5)
    bad = jax.tree.map(lambda x: x, params)
    bad["d1"]["kernel"] = bad["d1"]["kernel"].at[3, 2].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN at d1/kernel"):
        jp.prune(bad, 0.5)
