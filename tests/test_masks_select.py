"""jaxprune.masks.topk against an independent NumPy reference: a stable
argsort of the negated scores over the unmasked entries of each pool (lower
flat index wins ties), keeping round((1 - sparsity) * n) entries."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprune as jp

SPARSITIES = [0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 0.97, 1.0]


def ref_pool(x: np.ndarray, valid: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """Keep the k best of the 1-D pool x among valid entries (stable argsort)."""
    x = x.astype(np.float64)
    idx = np.flatnonzero(valid)
    order = idx[np.argsort(-x[idx] if largest else x[idx], kind="stable")]
    keep = np.zeros(x.shape, bool)
    keep[order[:k]] = True
    return keep


def n_kept(s: float, n: int) -> int:
    return round((1 - s) * n)


def ref_global(leaves, masks, s, largest=True):
    flat = np.concatenate([np.asarray(x, np.float32).ravel() for x in leaves])
    valid = np.concatenate(
        [np.ones(np.size(x), bool) if m is None else np.ravel(m) for x, m in zip(leaves, masks, strict=True)]
    )
    keep = ref_pool(flat, valid, n_kept(s, flat.size), largest)
    out, start = [], 0
    for x in leaves:
        out.append(keep[start : start + np.size(x)].reshape(np.shape(x)))
        start += np.size(x)
    return out


def ref_layer(x, m, s, largest=True):
    x = np.asarray(x, np.float32)
    valid = np.ones(x.size, bool) if m is None else np.ravel(m)
    return ref_pool(x.ravel(), valid, n_kept(s, x.size), largest).reshape(x.shape)


def ref_neuron(x, m, s, largest=True):
    x = np.asarray(x, np.float32)
    cols = x.reshape(-1, x.shape[-1])
    valid = np.ones(cols.shape, bool) if m is None else np.asarray(m).reshape(cols.shape)
    out = np.stack(
        [ref_pool(cols[:, j], valid[:, j], n_kept(s, cols.shape[0]), largest) for j in range(cols.shape[1])],
        1,
    )
    return out.reshape(x.shape)


# Few distinct dims keep the number of XLA compilations (the test's cost) small.
shapes_st = st.lists(
    st.lists(st.sampled_from([1, 3, 4]), min_size=1, max_size=3).map(tuple), min_size=1, max_size=2
)


@st.composite
def problems(draw):
    shapes = draw(shapes_st)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "int", "equal"]))
    if kind == "normal":
        leaves = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    elif kind == "int":
        leaves = [rng.integers(-2, 3, s).astype(np.float32) for s in shapes]
    else:
        leaves = [np.full(s, 1.5, np.float32) for s in shapes]
    masks = [rng.random(s) < 0.6 for s in shapes] if draw(st.booleans()) else [None] * len(shapes)
    return leaves, masks, draw(st.sampled_from(SPARSITIES)), draw(st.booleans())


def as_trees(leaves, masks):
    scores = {f"l{i}": jnp.asarray(x) for i, x in enumerate(leaves)}
    flags = {f"l{i}": True for i in range(len(leaves))}
    mask = None
    if masks[0] is not None:
        mask = {f"l{i}": jnp.asarray(m) for i, m in enumerate(masks)}
    return scores, flags, mask


@settings(max_examples=20)
@given(problems(), st.sampled_from(["global", "layer", "neuron"]))
def test_topk_matches_numpy_reference(problem, scope):
    leaves, masks, s, largest = problem
    scores, flags, mask = as_trees(leaves, masks)
    got = jp.masks.topk(scores, s, scope=scope, prunable=flags, mask=mask, largest=largest)
    if scope == "global":
        want = ref_global(leaves, masks, s, largest)
    else:
        ref = ref_layer if scope == "layer" else ref_neuron
        want = [ref(x, m, s, largest) for x, m in zip(leaves, masks, strict=True)]
    for i, w in enumerate(want):
        np.testing.assert_array_equal(np.asarray(got[f"l{i}"]), w)


@settings(max_examples=12)
@given(problems())
def test_filter_scope_matches_numpy_reference(problem):
    leaves, masks, s, largest = problem
    params = {f"l{i}": jnp.zeros((2, *np.shape(x))) for i, x in enumerate(leaves)}  # units = last axis of x
    unit_scores = {f"l{i}": jnp.asarray(np.ravel(x)[: np.shape(x)[-1]]) for i, x in enumerate(leaves)}
    flags = {k: True for k in params}
    # Reference: units of each leaf are its last-axis entries; pool them globally.
    unit_leaves = [np.asarray(v) for v in unit_scores.values()]
    unit_masks = [None] * len(leaves)
    mask = None
    if masks[0] is not None:
        mask = {}
        for i, (k, p) in enumerate(params.items()):
            m = np.random.default_rng(i).random(p.shape) < 0.8
            mask[k] = jnp.asarray(m)
            unit_masks[i] = m.reshape(-1, p.shape[-1]).any(0)
    want_units = ref_global(unit_leaves, unit_masks, s, largest)
    got = jp.masks.topk(
        unit_scores, s, scope="filter", prunable=flags, mask=mask, params=params, largest=largest
    )
    for i, (k, p) in enumerate(params.items()):
        want = np.broadcast_to(want_units[i], p.shape)
        if mask is not None:
            want = want & np.asarray(mask[k])
        np.testing.assert_array_equal(np.asarray(got[k]), want)


@pytest.mark.parametrize("scope", ["global", "layer", "neuron"])
def test_exact_count_with_all_equal_scores_and_none_leaves(scope):
    scores = {"a": jnp.ones((6, 5)), "bias": None, "b": jnp.ones((4, 3, 5)), "c": jnp.ones(7)}
    got = jp.masks.topk(scores, 0.6, scope=scope)
    assert got["bias"] is None and got["c"] is None  # None and 1-D leaves are not prunable by default
    if scope == "global":
        assert int(got["a"].sum() + got["b"].sum()) == round(0.4 * 90)
        # ties -> lower flat index: the first 36 entries in leaf order ("a" then "b")
        assert bool(got["a"].all()) and int(got["b"].sum()) == 6 and bool(got["b"].ravel()[:6].all())
    elif scope == "layer":
        assert int(got["a"].sum()) == 12 and int(got["b"].sum()) == round(0.4 * 60)
    else:
        np.testing.assert_array_equal(np.asarray(got["a"].sum(0)), [round(0.4 * 6)] * 5)
        np.testing.assert_array_equal(np.asarray(got["b"].reshape(12, 5).sum(0)), [round(0.4 * 12)] * 5)


def test_masked_entries_stay_pruned_and_count_as_pruned():
    x = np.arange(10, dtype=np.float32)
    m = np.ones(10, bool)
    m[[9, 8, 7]] = False  # the three largest are already pruned
    got = jp.masks.topk({"w": jnp.asarray(x)}, 0.5, prunable={"w": True}, mask={"w": jnp.asarray(m)})
    np.testing.assert_array_equal(np.asarray(got["w"]), np.isin(np.arange(10), [2, 3, 4, 5, 6]))
    # fewer unmasked than k: keep every unmasked entry, nothing masked comes back
    got = jp.masks.topk({"w": jnp.asarray(x)}, 0.1, prunable={"w": True}, mask={"w": jnp.asarray(m)})
    np.testing.assert_array_equal(np.asarray(got["w"]), m)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_scores(dtype):
    rng = np.random.default_rng(0)
    leaves = [rng.standard_normal((8, 6)), rng.standard_normal((3, 3, 2, 4))]
    low = [np.asarray(jnp.asarray(x, dtype).astype(jnp.float32)) for x in leaves]  # rounded values, many ties
    scores = {"a": jnp.asarray(leaves[0], dtype), "b": jnp.asarray(leaves[1], dtype)}
    got = jp.masks.topk(scores, 0.8)
    want = ref_global(low, [None, None], 0.8)
    np.testing.assert_array_equal(np.asarray(got["a"]), want[0])
    np.testing.assert_array_equal(np.asarray(got["b"]), want[1])


def test_traced_sparsity_under_jit_matches_numpy():
    rng = np.random.default_rng(1)
    leaves = [
        rng.integers(0, 4, (10, 7)).astype(np.float32),
        rng.integers(0, 4, (3, 3, 2, 5)).astype(np.float32),
    ]
    scores = {"a": jnp.asarray(leaves[0]), "b": jnp.asarray(leaves[1])}
    for scope in ("global", "neuron"):
        fn = jax.jit(partial(jp.masks.topk, scope=scope))
        for s in (0.0, 0.3, 0.55, 0.9, 1.0):
            got = fn(scores, jnp.float32(s))
            if scope == "global":
                want = ref_global(leaves, [None, None], s)
            else:
                want = [ref_neuron(x, None, s) for x in leaves]
            np.testing.assert_array_equal(np.asarray(got["a"]), want[0])
            np.testing.assert_array_equal(np.asarray(got["b"]), want[1])


def test_layer_scope_with_per_leaf_sparsity_pytree_traced():
    rng = np.random.default_rng(2)
    leaves = {
        "a": rng.standard_normal((9, 4)).astype(np.float32),
        "b": rng.standard_normal((5, 6)).astype(np.float32),
    }
    scores = {k: jnp.asarray(v) for k, v in leaves.items()}
    per_leaf = {"a": 0.25, "b": 0.8}
    eager = jp.masks.topk(scores, per_leaf, scope="layer")
    traced = jax.jit(partial(jp.masks.topk, scope="layer"))(
        scores, {k: jnp.float32(v) for k, v in per_leaf.items()}
    )
    for k, v in leaves.items():
        np.testing.assert_array_equal(np.asarray(eager[k]), ref_layer(v, None, per_leaf[k]))
        np.testing.assert_array_equal(np.asarray(traced[k]), ref_layer(v, None, per_leaf[k]))


def test_nan_scores():
    scores = {"w": jnp.asarray([[1.0, jnp.nan], [3.0, 0.5]])}
    with pytest.raises(ValueError, match="NaN"):
        jp.masks.topk(scores, 0.5)
    got = jax.jit(jp.masks.topk)(scores, 0.5)  # under jit NaN ranks lowest
    np.testing.assert_array_equal(np.asarray(got["w"]), [[True, False], [True, False]])
    got = jax.jit(jp.masks.topk)(scores, 0.25)
    np.testing.assert_array_equal(np.asarray(got["w"]), [[True, False], [True, True]])


def test_same_mask_sharded_over_8_devices():
    devices = np.array(jax.devices())
    assert devices.size == 8
    mesh = jax.sharding.Mesh(devices, ("d",))
    rng = np.random.default_rng(3)
    leaves = {
        "conv": rng.integers(0, 50, (3, 3, 4, 16)).astype(np.float32),
        "dense": rng.standard_normal((64, 8)).astype(np.float32),
    }
    specs = {
        "conv": jax.sharding.PartitionSpec(None, None, None, "d"),
        "dense": jax.sharding.PartitionSpec("d"),
    }
    scores = {k: jnp.asarray(v) for k, v in leaves.items()}
    sharded = {k: jax.device_put(v, jax.sharding.NamedSharding(mesh, specs[k])) for k, v in scores.items()}
    assert len(sharded["dense"].sharding.device_set) == 8
    for scope in ("global", "layer", "neuron"):
        fn = jax.jit(partial(jp.masks.topk, scope=scope))
        one = fn(scores, 0.9)
        many = fn(sharded, 0.9)
        for k in leaves:
            np.testing.assert_array_equal(np.asarray(one[k]), np.asarray(many[k]))
    want = ref_global(list(leaves.values()), [None, None], 0.9)
    np.testing.assert_array_equal(np.asarray(jax.jit(jp.masks.topk)(sharded, 0.9)["conv"]), want[0])


def test_prunable_and_largest_false():
    x = np.array([[4.0, 1.0], [3.0, 2.0]], np.float32)
    scores = {"a": jnp.asarray(x), "b": jnp.asarray(x)}
    got = jp.masks.topk(scores, 0.5, prunable={"a": True, "b": False}, largest=False)
    assert got["b"] is None
    np.testing.assert_array_equal(np.asarray(got["a"]), [[False, True], [False, True]])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_sparsity(bad):
    with pytest.raises(ValueError, match="sparsity"):
        jp.masks.topk({"w": jnp.ones((2, 2))}, bad)
    with pytest.raises(ValueError, match="sparsity"):
        jp.masks.topk({"w": jnp.ones((2, 2))}, {"w": bad}, scope="layer")


def test_bad_arguments():
    scores = {"w": jnp.ones((2, 2)), "v": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match="scope"):
        jp.masks.topk(scores, 0.5, scope="channel")
    with pytest.raises(ValueError, match="prunable"):
        jp.masks.topk(scores, 0.5, prunable={"w": True})
    with pytest.raises(ValueError, match="mask"):
        jp.masks.topk(scores, 0.5, mask={"w": jnp.ones((2, 2), bool)})
    with pytest.raises(ValueError, match="mask"):
        jp.masks.topk(scores, 0.5, mask={"w": jnp.ones((2, 3), bool), "v": None})
    with pytest.raises(ValueError, match="filter"):
        jp.masks.topk(scores, 0.5, scope="filter")
    with pytest.raises(ValueError, match="filter"):
        jp.masks.topk(scores, 0.5, scope="filter", params=scores)  # full-shape scores, not per unit
    with pytest.raises(ValueError, match="sparsity"):
        jp.masks.topk(scores, {"w": 0.5, "v": None}, scope="layer")


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_heavy_ties_on_large_leaves_match_numpy(scope):
    """Thousands of tied entries per leaf: exercises the block-wise tie search
    (blocks of ~sqrt(n) entries), with and without an existing mask."""
    rng = np.random.default_rng(7)
    shapes = [(61, 97), (3, 3, 16, 40), (1000,)]
    leaves = [rng.integers(0, 4, s).astype(np.float32) for s in shapes]
    for masks in ([None] * 3, [rng.random(s) < 0.7 for s in shapes]):
        scores, flags, mask = as_trees(leaves, masks)
        for s in (0.3, 0.77):
            got = jp.masks.topk(scores, s, scope=scope, prunable=flags, mask=mask)
            if scope == "global":
                want = ref_global(leaves, masks, s)
            else:
                want = [ref_layer(x, m, s) for x, m in zip(leaves, masks, strict=True)]
            for i, w in enumerate(want):
                np.testing.assert_array_equal(np.asarray(got[f"l{i}"]), w)


# ----------------------------------------------------------------------------- robustness (issue 17)
# XLA:CPU flushes float32 subnormals to zero in float arithmetic/comparisons;
# the NumPy reference (float64 argsort) does not.


@st.composite
def magnitude_scores(draw):
    """Scores over all float32 magnitudes: subnormals, signed zeros, near-max values, ties."""
    shape = draw(st.sampled_from([(4, 3), (6, 2)]))
    n = int(np.prod(shape))
    exps = draw(st.lists(st.integers(-155, 127), min_size=n, max_size=n))
    mants = draw(st.lists(st.sampled_from([1.0, 1.25, 1.5, 1.75]), min_size=n, max_size=n))
    signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n, max_size=n))
    zeros = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    v = np.where(zeros, np.asarray(signs) * 0.0, np.asarray(signs) * np.ldexp(np.asarray(mants), exps))
    return v.astype(np.float32).reshape(shape)


@given(magnitude_scores(), st.sampled_from([0.25, 0.5, 0.75]), st.booleans(),
       st.sampled_from(["global", "layer", "neuron"]))
def test_subnormal_and_signed_zero_scores_rank_exactly(x, s, largest, scope):
    got = jp.masks.topk({"w": jnp.asarray(x)}, s, scope=scope, prunable={"w": True}, largest=largest)["w"]
    want = (ref_global([x], [None], s, largest)[0] if scope == "global"
            else (ref_layer if scope == "layer" else ref_neuron)(x, None, s, largest))
    np.testing.assert_array_equal(np.asarray(got), want)


def test_listed_subnormal_score_case():
    got = jp.masks.topk({"w": jnp.array([0.0, 1e-40, -0.0, 0.0])}, 0.75, prunable={"w": True})
    np.testing.assert_array_equal(got["w"], [False, True, False, False])
    low = jnp.asarray(np.array([0.0, 1e-39, 2e-39, 0.0]), jnp.bfloat16)  # bf16 subnormals
    got = jp.masks.topk({"w": low}, 0.5, prunable={"w": True})
    np.testing.assert_array_equal(got["w"], [False, True, True, False])


def test_jit_with_captured_concrete_scores():
    rng = np.random.default_rng(11)
    leaves = [rng.standard_normal((5, 4)).astype(np.float32)]
    scores = {"w": jnp.asarray(leaves[0])}
    got = jax.jit(lambda s: jp.masks.topk(scores, s))(0.5)
    np.testing.assert_array_equal(np.asarray(got["w"]), ref_global(leaves, [None], 0.5)[0])
    bad = {"w": scores["w"].at[0, 0].set(jnp.nan)}
    with pytest.raises(ValueError, match="NaN"):  # concrete, so checked even under jit
        jax.jit(lambda s: jp.masks.topk(bad, s))(0.5)
    with pytest.raises(ValueError, match="NaN"):
        jp.masks.topk({"w": bad["w"].astype(jnp.bfloat16)}, 0.5)


@pytest.mark.parametrize("scope", ["global", "layer", "neuron", "filter"])
def test_traced_out_of_range_sparsity_prunes_nothing(scope):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    m = rng.random((4, 3)) < 0.7
    scores = {"w": jnp.asarray(x if scope != "filter" else x[0])}
    mask = {"w": jnp.asarray(m)}
    fn = jax.jit(partial(jp.masks.topk, scope=scope))
    for s in (1.5, -0.25, float("nan"), float("inf")):
        got = fn(scores, jnp.float32(s), mask=mask)
        np.testing.assert_array_equal(np.asarray(got["w"]), m, err_msg=f"sparsity={s}")
        with pytest.raises(ValueError, match="sparsity"):
            jp.masks.topk(scores, s, scope=scope, mask=mask)
    got = fn(scores, jnp.float32(1.0), mask=mask)  # the edge of the range still prunes everything
    assert not np.asarray(got["w"]).any()
    if scope == "layer":
        got = fn(scores, {"w": jnp.float32(2.0)}, mask=mask)
        np.testing.assert_array_equal(np.asarray(got["w"]), m)


# ----------------------------------------------------------------------------- N:M scope and out_axis


def ref_nm(x, valid, n, m, in_axis, largest=True):
    """N:M reference: groups of m consecutive entries along in_axis, each
    keeping its n best valid entries (stable argsort: lower index wins ties)."""
    x = np.moveaxis(np.asarray(x, np.float32), in_axis, 0)
    v = np.ones(x.shape, bool) if valid is None else np.moveaxis(np.asarray(valid), in_axis, 0)
    keep = np.zeros(x.shape, bool)
    for start in range(0, x.shape[0], m):
        for idx in np.ndindex(*x.shape[1:]):
            sl = (slice(start, start + m), *idx)
            keep[sl] = ref_pool(x[sl], v[sl], n, largest)
    return np.moveaxis(keep, 0, in_axis)


@st.composite
def nm_problems(draw):
    m = draw(st.sampled_from([1, 2, 4, 8]))
    n = draw(st.integers(1, m))
    out_axis = draw(st.sampled_from([-1, 0]))
    groups, units = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 3]))
    conv = draw(st.booleans())
    if out_axis == -1:  # flax: (in, out) / (kh, kw, in, out)
        shape, in_axis = ((2, 1, groups * m, units), 2) if conv else ((groups * m, units), 0)
    else:  # equinox / PyTorch: (out, in) / (out, in, kh, kw)
        shape, in_axis = (units, groups * m, 2, 1), 1
        shape = shape if conv else shape[:2]
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["normal", "int", "equal"]))
    if kind == "normal":
        x = rng.standard_normal(shape).astype(np.float32)
    elif kind == "int":
        x = rng.integers(-2, 3, shape).astype(np.float32)
    else:
        x = np.full(shape, 0.5, np.float32)
    valid = rng.random(shape) < 0.6 if draw(st.booleans()) else None
    return x, valid, n, m, out_axis, in_axis, draw(st.booleans())


@settings(max_examples=15)
@given(nm_problems())
def test_n_m_scope_matches_numpy_reference(problem):
    x, valid, n, m, out_axis, in_axis, largest = problem
    mask = None if valid is None else {"w": jnp.asarray(valid), "b": None}
    scores = {"w": jnp.asarray(x), "b": None}
    got = jp.masks.topk(scores, None, scope=f"{n}:{m}", mask=mask, out_axis=out_axis, largest=largest)
    want = ref_nm(x, valid, n, m, in_axis, largest)
    np.testing.assert_array_equal(np.asarray(got["w"]), want)
    assert got["b"] is None
    if valid is None:  # every group keeps exactly n
        counts = np.moveaxis(np.asarray(got["w"]), in_axis, 0)
        counts = counts.reshape(-1, m, *counts.shape[1:]).sum(1)
        assert (counts == n).all()


def test_n_m_dense_and_conv_input_axes_by_hand():
    # Dense (in=4, out=2), 2:4 along axis 0; ties -> the lower input index
    k = jnp.array([[1.0, 5.0], [3.0, 5.0], [3.0, 1.0], [0.0, 5.0]])
    got = jp.masks.topk({"k": k}, 0.5, scope="2:4")["k"]
    np.testing.assert_array_equal(np.asarray(got), [[0, 1], [1, 1], [1, 0], [0, 0]])
    # Conv (kh=1, kw=2, in=4, out=1): groups run along the in-channel axis (-2), one per (kh, kw)
    c = jnp.asarray(np.array([[4, 3, 2, 1], [1, 2, 3, 4]], np.float32).reshape(1, 2, 4, 1))
    got = jp.masks.topk({"c": c}, None, scope="1:2")["c"][0, :, :, 0]
    np.testing.assert_array_equal(np.asarray(got), [[1, 0, 1, 0], [0, 1, 0, 1]])
    # groups larger than 32 take the bisection path: same rule (integer scores: many ties)
    x = np.random.default_rng(2).integers(0, 4, (2, 128, 3)).astype(np.float32)  # (out, in, k), out_axis=0
    valid = np.random.default_rng(3).random(x.shape) < 0.7
    got = jp.masks.topk({"x": jnp.asarray(x)}, None, scope="5:64", mask={"x": jnp.asarray(valid)}, out_axis=0)
    np.testing.assert_array_equal(np.asarray(got["x"]), ref_nm(x, valid, 5, 64, 1))


def test_n_m_traced_sparsity_and_dpf():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    scores = {"w": jnp.asarray(x)}
    want = ref_nm(scores["w"], None, 1, 4, 0)
    fn = jax.jit(lambda s: jp.masks.topk(scores, s, scope="1:4")["w"])
    np.testing.assert_array_equal(np.asarray(fn(jnp.float32(0.75))), want)
    assert np.asarray(fn(jnp.float32(0.5))).all()  # a traced sparsity other than 1 - N/M prunes nothing
    # usable as DPF's scope: the mask after the first update is the 1:4 pattern of the dense weights
    params = {"w": scores["w"]}
    tx = jp.optax.dpf(0.75, scope="1:4", update_every=1, prunable={"w": True})
    state = tx.init(params)
    _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
    np.testing.assert_array_equal(np.asarray(jp.optax.get_mask(state)["w"]), ref_nm(np.abs(x), None, 1, 4, 0))


def test_n_m_bad_input():
    scores = {"layer": {"kernel": jnp.ones((6, 4))}}
    bad_scopes = (("5:4", "1 <= N <= M"), ("0:4", "1 <= N <= M"), ("2-4", "not valid"), ("4", "not valid"))
    for scope, msg in bad_scopes:
        with pytest.raises(ValueError, match=msg):
            jp.masks.topk(scores, None, scope=scope)
    with pytest.raises(ValueError, match=r"M=4 does not divide the input axis 0 \(size 6\) of the leaf "
                       r"layer/kernel of shape \(6, 4\)"):
        jp.masks.topk(scores, None, scope="2:4")
    with pytest.raises(ValueError, match=r"M=4 does not divide the input axis 1 \(size 6\) of the leaf w"):
        jp.masks.topk({"w": jnp.ones((4, 6))}, None, scope="2:4", out_axis=0)
    with pytest.raises(ValueError, match=r"sparsity=0.9 does not match scope='1:2'"):
        jp.masks.topk(scores, 0.9, scope="1:2")
    with pytest.raises(ValueError, match="ndim >= 2"):
        jp.masks.topk({"v": jnp.ones(8)}, None, scope="1:2", prunable={"v": True})
    with pytest.raises(ValueError, match="sparsity must be None or a scalar"):
        jp.masks.topk(scores, {"layer": {"kernel": 0.5}}, scope="1:2")
    assert np.asarray(jp.masks.topk(scores, 0.5, scope="1:2")["layer"]["kernel"]).sum() == 12


@pytest.mark.parametrize("scope", ["neuron", "filter", "layer", "global"])
def test_out_axis_matches_transposed_default(scope):
    # equinox Linear (out, in) with out_axis=0 == flax (in, out) with the default, transposed;
    # conv (out, in, kh, kw) with out_axis=0 == (in, kh, kw, out) (the unit axis moved last)
    rng = np.random.default_rng(5)
    lin = rng.integers(-2, 3, (5, 6)).astype(np.float32)  # (out, in), ties
    conv = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)  # (out, in, kh, kw)
    mask = {k: jnp.asarray(rng.random(v.shape) < 0.7) for k, v in (("lin", lin), ("conv", conv))}
    params = {"lin": jnp.asarray(lin), "conv": jnp.asarray(conv)}
    moved = lambda t: jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), t)
    if scope == "filter":
        got = jp.masks.topk(jp.masks.filter_norm(params, out_axis=0), 0.4, scope=scope, mask=mask, out_axis=0)
        want = jp.masks.topk(jp.masks.filter_norm(moved(params)), 0.4, scope=scope, mask=moved(mask))
    else:
        got = jp.masks.topk(params, 0.4, scope=scope, mask=mask, out_axis=0)
        want = jp.masks.topk(moved(params), 0.4, scope=scope, mask=moved(mask))
    for k in params:
        np.testing.assert_array_equal(np.moveaxis(np.asarray(got[k]), 0, -1), np.asarray(want[k]))
    with pytest.raises(ValueError, match=r"out_axis=4 is outside the valid range \[-2, 2\) for the leaf lin"):
        jp.masks.topk(params, 0.4, scope="neuron", out_axis=4, prunable={"lin": True, "conv": False})
    with pytest.raises(TypeError, match="out_axis must be a Python int"):
        jp.masks.topk(params, 0.4, scope=scope, out_axis=1.0)


# ----------------------------------------------------------------------------- issue 17 sweep regressions


@pytest.mark.parametrize("scope", ["global", "layer", "neuron"])
def test_string_sparsity_refused(scope):
    """float("0.5") would accept a string: a sparsity must be a number."""
    with pytest.raises(ValueError, match="sparsity"):
        jp.masks.topk({"k": jnp.ones((4, 2))}, "0.5", scope=scope)


def test_complex_scores_refused():
    with pytest.raises(TypeError, match="complex"):
        jp.masks.topk({"k": jnp.ones((4, 2), jnp.complex64)}, 0.5)


@given(st.sampled_from([float("nan"), 0.5, -1.0, 2.0]))
def test_mask_values_other_than_0_1_refused(bad):
    """A numeric mask entry other than 0/1 (NaN would be cast to True: kept) is refused."""
    mask = jnp.ones((4, 2)).at[1, 0].set(bad)
    with pytest.raises(ValueError, match="mask leaf"):
        jp.masks.topk({"k": jnp.arange(8.0).reshape(4, 2)}, 0.5, mask={"k": mask})
    # the 0/1 float mask is the bool mask
    ok = jnp.ones((4, 2)).at[1, 0].set(0.0)
    got = jp.masks.topk({"k": jnp.arange(8.0).reshape(4, 2)}, 0.5, mask={"k": ok})["k"]
    want = jp.masks.topk({"k": jnp.arange(8.0).reshape(4, 2)}, 0.5, mask={"k": ok > 0})["k"]
    np.testing.assert_array_equal(got, want)


def test_traced_numeric_mask_entry_other_than_1_counts_as_pruned():
    scores = {"k": jnp.arange(8.0).reshape(4, 2)}
    bad = jnp.ones((4, 2)).at[3, 1].set(jnp.nan)  # the largest score
    got = jax.jit(lambda m: jp.masks.topk(scores, 0.5, mask={"k": m}))(bad)["k"]
    want = jp.masks.topk(scores, 0.5, mask={"k": bad == 1})["k"]
    assert not bool(got[3, 1])
    np.testing.assert_array_equal(got, want)
