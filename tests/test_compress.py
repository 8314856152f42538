"""jaxprune.compress: compacted models reproduce the (group-)masked model, have
the hand-counted sizes, respect residual ties, and refuse bad input."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.compress import compact, structure_groups
from jaxprune.train.models import get_model
from jaxprune.tree import apply_mask, is_none


def _init(model, shape, key=0):
    x = jax.random.normal(jax.random.key(key + 1), (3, *shape))
    variables = model.init(jax.random.key(key), x)
    if "batch_stats" in variables:  # non-trivial running statistics, so BN constants are not 0
        stats = variables["batch_stats"]
        leaves, treedef = jax.tree.flatten(stats)
        keys = jax.random.split(jax.random.key(7), len(leaves))
        leaves = [s + 0.3 * jnp.abs(jax.random.normal(k, s.shape)) for s, k in zip(leaves, keys, strict=True)]
        variables = {**variables, "batch_stats": jax.tree.unflatten(treedef, leaves)}
        params = variables["params"]
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(8), len(leaves))
        leaves = [
            w + 0.1 * jax.random.normal(k, w.shape) if w.ndim == 1 else w
            for w, k in zip(leaves, keys, strict=True)
        ]
        variables = {**variables, "params": jax.tree.unflatten(treedef, leaves)}
    return variables, x


def _per_layer_filter_mask(params, sparsity, exclude="head|Dense_2$"):
    """Filter-norm one-shot pruning, each prunable kernel pruned to ``sparsity`` of its units."""
    flags = jp.prunable(params, exclude=exclude)
    scores = jp.masks.filter_norm(params)

    def one(s, w, f):
        return jp.masks.topk({"k": s}, sparsity, scope="filter", params={"k": w})["k"] if f else None

    return jax.tree.map(one, scores, params, flags, is_leaf=is_none)


def _check_equal(model, variables, x, result, rtol=2e-5):
    small, small_vars, report = result
    ref = model.apply({**variables, "params": apply_mask(variables["params"], report.group_mask)}, x)
    out = small.apply(small_vars, x)
    scale = float(jnp.max(jnp.abs(ref)))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=rtol * max(scale, 1.0))


def _check_group_mask(mask, report):
    """The group mask leaves kernels (ndim >= 2) as they were; it only adds 1-D leaves."""
    for m, g in zip(
        jax.tree.leaves(mask, is_leaf=is_none),
        jax.tree.leaves(report.group_mask, is_leaf=is_none),
        strict=True,
    ):
        if m is not None:
            np.testing.assert_array_equal(np.asarray(m), np.asarray(g))
        elif g is not None:
            assert np.ndim(g) == 1


# cnn is covered by test_cnn_hand_count and the BatchNorm test below
ZOO = [
    ("mlp", {"hidden": (8, 6)}, (5,)),
    ("lenet300", {}, (12,)),
    ("resnet20", {}, (8, 8, 3)),
]
ZOO_SLOW = [
    ("wrn28", {"depth": 10, "widen": 2}, (8, 8, 3)),
    ("vgg16", {}, (32, 32, 3)),
    ("resnet18", {"cifar_stem": True}, (8, 8, 3)),
    ("resnet56", {}, (8, 8, 3)),
    ("resnet50", {}, (32, 32, 3)),
    ("wrn28", {"depth": 28, "widen": 2}, (8, 8, 3)),
]


def _check_structure_groups(model, variables, mask, shape, report):
    """The jittable structure_groups gives compact's (host) group mask: the same
    entries pruned, a None leaf of one standing for all True in the other."""
    params = variables["params"]
    ours = jax.jit(structure_groups(model, variables, input_shape=shape))(mask)
    full = lambda m, w: np.ones(np.shape(w), bool) if m is None else np.asarray(m, bool)
    theirs = jax.tree.leaves(report.group_mask, is_leaf=is_none)
    for a, b, w in zip(jax.tree.leaves(ours, is_leaf=is_none), theirs, jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(full(a, w), full(b, w))


def _one_shot(name, kwargs, shape):
    model = get_model(name, 4, **kwargs)
    variables, x = _init(model, shape)
    mask = _per_layer_filter_mask(variables["params"], 0.5)
    result = compact(model, variables, mask, input_shape=shape)
    _check_equal(model, variables, x, result, rtol=1e-4)
    _check_group_mask(mask, result.report)
    _check_structure_groups(model, variables, mask, shape, result.report)
    assert result.report.params_after < result.report.params_before
    # every small kernel really is smaller or equal, and some are smaller
    small_k = [w.shape for w in jax.tree.leaves(result.variables["params"]) if w.ndim >= 2]
    big_k = [w.shape for w in jax.tree.leaves(variables["params"]) if w.ndim >= 2]
    assert all(np.prod(a) <= np.prod(b) for a, b in zip(small_k, big_k, strict=True))
    assert any(np.prod(a) < np.prod(b) for a, b in zip(small_k, big_k, strict=True))


@pytest.mark.parametrize("name,kwargs,shape", ZOO, ids=[z[0] for z in ZOO])
def test_one_shot_filter_pruning_compacts_exactly(name, kwargs, shape):
    _one_shot(name, kwargs, shape)


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs,shape", ZOO_SLOW, ids=[z[0] for z in ZOO_SLOW])
def test_one_shot_large_models(name, kwargs, shape):
    _one_shot(name, kwargs, shape)


def test_global_filter_norm_topk_mask():
    """The documented global recipe: jp.masks.topk(filter_norm(params), s, scope="filter")."""
    model = get_model("mlp", 3, hidden=(16, 12))
    variables, x = _init(model, (6,))
    params = variables["params"]
    flags = jp.prunable(params, exclude="Dense_2")
    scores = jax.tree.map(lambda s, f: s if f else None, jp.masks.filter_norm(params), flags, is_leaf=is_none)
    mask = jp.masks.topk(scores, 0.4, scope="filter", params=params, prunable=flags)
    result = compact(model, variables, mask, input_shape=(6,))
    _check_equal(model, variables, x, result)
    kept = [int(np.asarray(mask[f"Dense_{i}"]["kernel"]).any(axis=0).sum()) for i in (0, 1)]
    assert result.model.widths == (("Dense_0", kept[0]), ("Dense_1", kept[1]))


# global filter sparsity low enough that no layer loses every unit (refused, tested below)
@pytest.mark.parametrize(
    "name,kwargs,shape,sparsity", [("mlp", {"hidden": (8, 6)}, (5,), 0.4), ("resnet20", {}, (8, 8, 3), 0.15)]
)
def test_structured_dpf_compacts_exactly(name, kwargs, shape, sparsity):
    """Structured DPF trained with the forward pass at the group-masked params
    (the dpf pipeline's form): compaction keeps exactly the trained function."""
    model = get_model(name, 4, **kwargs)
    variables, x = _init(model, shape)
    params = variables["params"]
    y = jax.random.normal(jax.random.key(3), (3, 4))
    tx = optax.chain(
        optax.sgd(0.05), jp.optax.dpf(sparsity, update_every=2, scorer=jp.masks.filter_norm, scope="filter")
    )
    state = tx.init(params)
    others = {k: v for k, v in variables.items() if k != "params"}
    group = structure_groups(model, variables, input_shape=shape)

    def forward(p, state):
        return apply_mask(p, group(jp.optax.get_mask(state, p)))

    @jax.jit
    def step(params, state):
        def loss(p):
            out = model.apply({**others, "params": forward(p, state)}, x)
            return jnp.mean((out - y) ** 2)

        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(5):
        params, state = step(params, state)
    mask = jp.optax.get_mask(state, params)
    variables = {**others, "params": params}
    result = compact(model, variables, mask, input_shape=shape)
    assert result.report.params_after < result.report.params_before
    _check_equal(model, variables, x, result)
    trained = model.apply({**others, "params": jax.jit(forward)(params, state)}, x)
    np.testing.assert_allclose(np.asarray(result.model.apply(result.variables, x)), np.asarray(trained),
                               atol=2e-5 * max(float(jnp.max(jnp.abs(trained))), 1.0))
    grouped = jax.tree.leaves(jax.jit(group)(mask), is_leaf=is_none)
    extra = [g for m, g in zip(jax.tree.leaves(mask, is_leaf=is_none), grouped, strict=True) if m is None]
    assert any(g is not None and not bool(np.all(g)) for g in extra)  # biases / BN of pruned filters masked


def test_mlp_hand_count_and_weights():
    model = get_model("mlp", 2, hidden=(5, 4))
    variables, x = _init(model, (3,))
    w0 = np.asarray(variables["params"]["Dense_0"]["kernel"])
    m0, m1 = np.ones((3, 5), bool), np.ones((5, 4), bool)
    m0[:, [1, 3]] = False  # layer 0 keeps units 0, 2, 4
    m1[:, [2]] = False  # layer 1 keeps 0, 1, 3
    mask = {
        "Dense_0": {"kernel": m0, "bias": None},
        "Dense_1": {"kernel": m1, "bias": None},
        "Dense_2": {"kernel": None, "bias": None},
    }
    small, sv, report = compact(model, variables, mask, input_shape=(3,))
    assert report.params_after == (3 * 3 + 3) + (3 * 3 + 3) + (3 * 2 + 2)
    assert sum(w.size for w in jax.tree.leaves(sv["params"])) == report.params_after
    np.testing.assert_array_equal(sv["params"]["Dense_0"]["kernel"], w0[:, [0, 2, 4]])
    w1 = np.asarray(variables["params"]["Dense_1"]["kernel"])
    np.testing.assert_array_equal(sv["params"]["Dense_1"]["kernel"], w1[np.ix_([0, 2, 4], [0, 1, 3])])
    assert [(c.layer, c.units_before, c.units_after, c.pruned) for c in report.layers] == [
        ("Dense_0", 5, 3, 2), ("Dense_1", 4, 3, 1), ("Dense_2", 2, 2, 0)
    ]  # fmt: skip
    # the head's rows follow Dense_1's kept units; independent numpy forward
    h = np.maximum(np.asarray(x) @ sv["params"]["Dense_0"]["kernel"] + sv["params"]["Dense_0"]["bias"], 0)
    h = np.maximum(h @ sv["params"]["Dense_1"]["kernel"] + sv["params"]["Dense_1"]["bias"], 0)
    ref = h @ sv["params"]["Dense_2"]["kernel"] + sv["params"]["Dense_2"]["bias"]
    np.testing.assert_allclose(np.asarray(small.apply(sv, x)), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cnn_hand_count():
    """cnn (conv3x3+bias, BN, 4 stages) at widths 64/128/256/512 minus the pruned filters."""
    model = get_model("cnn", 10)
    variables, x = _init(model, (16, 16, 3))
    mask = _per_layer_filter_mask(variables["params"], 0.25, exclude="Dense")
    result = compact(model, variables, mask, input_shape=(16, 16, 3))
    widths = [48, 96, 192, 384]  # 75% of 64/128/256/512 kept
    expected, cin = 0, 3
    for w in widths:
        expected += 9 * cin * w + w + 2 * w  # kernel, bias, BN scale and bias
        cin = w
    expected += cin * 10 + 10
    assert result.report.params_after == expected
    assert result.model.widths == tuple((f"Conv_{i}", w) for i, w in enumerate(widths))
    _check_equal(model, variables, x, result)


def test_bn_constants_covered_mask_equals_plain_masked_model():
    """When the mask already prunes the BN scale/shift and bias of the pruned filters, the
    group mask adds nothing and the compact model equals the plainly masked model; with a
    kernel-only mask the removed filters' BN constants are what the group mask zeroes."""
    model = get_model("cnn", 3)
    variables, x = _init(model, (16, 16, 3))
    params = variables["params"]
    kernel_mask = _per_layer_filter_mask(params, 0.5, exclude="Dense")
    full = jax.tree.map(lambda w: np.ones(w.shape, bool), params)
    for i in range(4):
        keep = np.asarray(kernel_mask[f"Conv_{i}"]["kernel"]).any(axis=(0, 1, 2))
        full[f"Conv_{i}"]["kernel"] = np.asarray(kernel_mask[f"Conv_{i}"]["kernel"])
        full[f"Conv_{i}"]["bias"] = keep
        full[f"BatchNorm_{i}"]["scale"] = keep
        full[f"BatchNorm_{i}"]["bias"] = keep
    small, sv, report = compact(model, variables, full, input_shape=(16, 16, 3))
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(report.group_mask), strict=True):
        np.testing.assert_array_equal(a, b)
    ref = model.apply({**variables, "params": apply_mask(params, full)}, x)
    np.testing.assert_allclose(np.asarray(small.apply(sv, x)), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # kernel-only mask: same compact model; the dropped constants make the plain masked model differ
    _, sv2, report2 = compact(model, variables, kernel_mask, input_shape=(16, 16, 3))
    for a, b in zip(jax.tree.leaves(sv), jax.tree.leaves(sv2), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(report2.group_mask["BatchNorm_0"]["scale"], full["BatchNorm_0"]["scale"])
    plain = model.apply({**variables, "params": apply_mask(params, kernel_mask)}, x)
    assert float(jnp.max(jnp.abs(plain - ref))) > 1e-3


def _resnet20_stream_mask(params, channels, layers):
    mask = jax.tree.map(lambda w: np.ones(w.shape, bool) if w.ndim == 4 else None, params)
    for layer in layers:
        node = mask
        for key in layer.split("/"):
            node = node[key]
        node["kernel"][..., channels] = False
    return mask


STREAM1 = ["stem_conv", "stage1_block1/conv2", "stage1_block2/conv2", "stage1_block3/conv2"]


def test_residual_tie_removed_when_every_coupled_layer_prunes():
    model = get_model("resnet20", 10)
    variables, x = _init(model, (8, 8, 3))
    mask = _resnet20_stream_mask(variables["params"], [2, 5], STREAM1)
    small, sv, report = compact(model, variables, mask, input_shape=(8, 8, 3))
    p = sv["params"]
    assert p["stem_conv"]["kernel"].shape == (3, 3, 3, 14)
    assert p["stage1_block2"]["conv1"]["kernel"].shape == (3, 3, 14, 16)  # consumer of the stream
    assert p["stage2_block1"]["shortcut_conv"]["kernel"].shape == (1, 1, 14, 32)
    assert sv["batch_stats"]["stage1_block3"]["bn2"]["mean"].shape == (14,)
    assert report.not_removable == ()
    _check_equal(model, variables, x, (small, sv, report))
    _check_structure_groups(model, variables, mask, (8, 8, 3), report)


def test_residual_tie_kept_when_one_layer_keeps():
    model = get_model("resnet20", 10)
    variables, x = _init(model, (8, 8, 3))
    mask = _resnet20_stream_mask(variables["params"], [2, 5], STREAM1[:-1])  # block 3 keeps them
    small, sv, report = compact(model, variables, mask, input_shape=(8, 8, 3))
    assert sv["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, 16)
    (kept,) = report.not_removable
    assert set(kept.layers) == set(STREAM1) and kept.channels == 2 and "tied" in kept.reason
    assert small.widths == ()  # nothing removable: same model
    _check_structure_groups(model, variables, mask, (8, 8, 3), report)
    np.testing.assert_allclose(
        np.asarray(small.apply(sv, x)),
        np.asarray(model.apply({**variables, "params": apply_mask(variables["params"], mask)}, x)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_zero_padded_shortcut_keeps_its_channels():
    model = get_model("resnet20", 10, shortcut="A")
    variables, x = _init(model, (8, 8, 3))
    mask = _resnet20_stream_mask(variables["params"], [2, 5], STREAM1)
    result = compact(model, variables, mask, input_shape=(8, 8, 3))
    assert result.variables["params"]["stem_conv"]["kernel"].shape[-1] == 16
    assert any("pad" in k.reason for k in result.report.not_removable)
    _check_equal(model, variables, x, result)
    _check_structure_groups(model, variables, mask, (8, 8, 3), result.report)


class SquareResidual(nn.Module):
    """``h = Dense(x); h = h + Dense(relu(h))``: the second kernel's input and
    output axes are the same channel space."""

    widths: tuple = ()

    @nn.compact
    def __call__(self, x):
        n = dict(self.widths).get("Dense_0", 4)
        h = nn.Dense(n)(x)
        h = h + nn.Dense(dict(self.widths).get("Dense_1", n))(nn.relu(h))
        return nn.Dense(2)(h)


def test_structure_groups_with_a_square_kernel_in_its_own_space():
    """A kernel whose input and output axes a residual addition ties into one
    space: structure_groups decides as compact does (same group mask), whether
    the square kernel's slice is masked one way or both."""
    model = SquareResidual()
    variables, x = _init(model, (3,))
    params = variables["params"]
    for also_input in (False, True):
        mask = jax.tree.map(lambda w: np.ones(w.shape, bool) if w.ndim == 2 else None, params)
        mask["Dense_2"]["kernel"] = None
        for layer in ("Dense_0", "Dense_1"):
            mask[layer]["kernel"][:, 2] = False
        if also_input:
            mask["Dense_1"]["kernel"][2, :] = False
        result = compact(model, variables, mask, input_shape=(3,))
        _check_equal(model, variables, x, result)
        _check_structure_groups(model, variables, mask, (3,), result.report)


class FlattenNet(nn.Module):
    """A user's model: conv -> BN -> relu -> flatten -> dense, widths as attributes."""

    widths: tuple = ()

    @nn.compact
    def __call__(self, x, train=False):
        w = dict(self.widths)
        x = nn.Conv(w.get("Conv_0", 6), (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(w.get("Dense_0", 5))(x))
        return nn.Dense(2)(x)


def test_user_model_with_flatten():
    model = FlattenNet()
    variables, x = _init(model, (4, 4, 2))
    mask = {
        "Conv_0": {"kernel": np.ones((3, 3, 2, 6), bool), "bias": None},
        "BatchNorm_0": {"scale": None, "bias": None},
        "Dense_0": {"kernel": np.ones((96, 5), bool), "bias": None},
        "Dense_1": {"kernel": None, "bias": None},
    }
    mask["Conv_0"]["kernel"][..., [1, 4]] = False
    mask["Dense_0"]["kernel"][:, 0] = False
    small, sv, report = compact(model, variables, mask, input_shape=(4, 4, 2))
    assert small.widths == (("Conv_0", 4), ("Dense_0", 4))
    rows = np.arange(96).reshape(4, 4, 6)[..., [0, 2, 3, 5]].ravel()  # flatten order (h, w, c)
    w = np.asarray(variables["params"]["Dense_0"]["kernel"])
    np.testing.assert_array_equal(sv["params"]["Dense_0"]["kernel"], w[np.ix_(rows, [1, 2, 3, 4])])
    _check_equal(model, variables, x, (small, sv, report))


class NoWidths(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(4)(x)))


def test_user_model_without_widths_needs_small_model():
    model = NoWidths()
    variables, x = _init(model, (3,))
    # linen names modules when they are built: Dense_0 is the head, Dense_1 the hidden layer
    mask = {
        "Dense_0": {"kernel": None, "bias": None},
        "Dense_1": {"kernel": np.array([[1, 0, 1, 1]] * 3, bool), "bias": None},
    }
    with pytest.raises(TypeError, match="widths"):
        compact(model, variables, mask, input_shape=(3,))

    class Small(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(3)(x)))

    result = compact(model, variables, mask, input_shape=(3,), small_model=Small())
    _check_equal(model, variables, x, result)
    with pytest.raises(ValueError, match="does not build"):
        compact(model, variables, mask, input_shape=(3,), small_model=NoWidths())


def test_bad_inputs():
    model = get_model("mlp", 2, hidden=(4,))
    variables, _ = _init(model, (3,))
    good = {
        "Dense_0": {"kernel": np.ones((3, 4), bool), "bias": None},
        "Dense_1": {"kernel": None, "bias": None},
    }
    with pytest.raises(ValueError, match="structure"):
        compact(model, variables, {"Dense_0": good["Dense_0"]}, input_shape=(3,))
    floats = {**good, "Dense_0": {"kernel": np.ones((3, 4), np.float32), "bias": None}}
    with pytest.raises(TypeError, match=r"Dense_0/kernel.*bool"):
        compact(model, variables, floats, input_shape=(3,))
    wrong = {**good, "Dense_0": {"kernel": np.ones((4, 3), bool), "bias": None}}
    with pytest.raises(ValueError, match="shape"):
        compact(model, variables, wrong, input_shape=(3,))
    empty = {**good, "Dense_0": {"kernel": np.zeros((3, 4), bool), "bias": None}}
    with pytest.raises(ValueError, match="every unit of layer Dense_0"):
        compact(model, variables, empty, input_shape=(3,))


class Sorting(nn.Module):
    widths: tuple = ()

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, name="inner")(x)
        return nn.Dense(2)(jnp.sort(x, axis=0))


def test_unsupported_primitive_names_op_and_layer():
    model = Sorting()
    variables, _ = _init(model, (3,))
    mask = jax.tree.map(lambda w: None, variables["params"])
    with pytest.raises(ValueError, match="primitive 'sort' at layer 'Sorting'"):
        compact(model, variables, mask, input_shape=(3,))


def test_input_shape_that_does_not_fit_the_model():
    """A wrong input_shape was a flax ScopeParamShapeError from inside the trace."""
    model = nn.Sequential([nn.Dense(6), nn.relu, nn.Dense(3)])
    variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
    mask = {"layers_0": {"kernel": jnp.ones((4, 6), bool), "bias": None},
            "layers_2": {"kernel": jnp.ones((6, 3), bool), "bias": None}}
    with pytest.raises(ValueError, match=r"input_shape=\(7,\)"):
        compact(model, variables, mask, input_shape=(7,))
