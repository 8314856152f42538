"""jaxprune on Flax NNX and equinox pytrees: paths, the prunable filter, masks,
measures, DPF, layer capture and SiPP sensitivities, checked against numpy
references and hand-written path lists; the two examples train briefly."""

import importlib.util
import pathlib

import chex
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxprune as jp
from jaxprune.capture import capture_layers
from jaxprune.tree import leaf_paths

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPS32 = np.finfo(np.float32).eps


class _NNXMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, sizes=(6, 8, 5, 3)):
        self.l1 = nnx.Linear(sizes[0], sizes[1], rngs=rngs)
        self.l2 = nnx.Linear(sizes[1], sizes[2], rngs=rngs)
        self.head = nnx.Linear(sizes[2], sizes[3], rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


NNX_PATHS = ["head/bias", "head/kernel", "l1/bias", "l1/kernel", "l2/bias", "l2/kernel"]


def _nnx_states(model):
    """The three ways NNX hands out its parameters: an nnx.State of the Params,
    the params part of nnx.split, and the module itself (a pytree)."""
    _, split_params, _ = nnx.split(model, nnx.Param, ...)
    return {"state": nnx.state(model, nnx.Param), "split": split_params, "module": model}


def _np_kernels(model, names):
    return {n: np.asarray(getattr(model, n).kernel[...]) for n in names}


def _top_fraction_mask(values: dict, sparsity: float) -> dict:
    """numpy reference of an exact global magnitude top-k (random floats: no ties)."""
    flat = np.concatenate([np.abs(v).ravel() for v in values.values()])
    keep = round((1 - sparsity) * flat.size)
    threshold = np.sort(flat)[::-1][keep - 1]
    return {k: np.abs(v) >= threshold for k, v in values.items()}


# ----------------------------------------------------------------------------- NNX: trees
@pytest.mark.parametrize("kind", ["state", "split", "module"])
def test_nnx_paths_drop_the_variable_value_key(kind):
    tree = _nnx_states(_NNXMLP(nnx.Rngs(0)))[kind]
    assert leaf_paths(tree) == NNX_PATHS
    flags = jp.prunable(tree, exclude="head/kernel$")
    got = dict(zip(NNX_PATHS, jax.tree.leaves(flags), strict=True))
    assert got == {"head/bias": False, "head/kernel": False, "l1/bias": False, "l1/kernel": True,
                   "l2/bias": False, "l2/kernel": True}
    only_l2 = jp.prunable(tree, include=r"^l2/kernel$")
    assert [p for p, f in zip(NNX_PATHS, jax.tree.leaves(only_l2), strict=True) if f] == ["l2/kernel"]
    assert jax.tree.structure(flags) == jax.tree.structure(jax.tree.map(lambda _: True, tree))


@pytest.mark.parametrize("kind", ["state", "split"])
def test_nnx_topk_apply_mask_summarize(kind):
    model = _NNXMLP(nnx.Rngs(1))
    params = _nnx_states(model)[kind]
    flags = jp.prunable(params, exclude="^head/")
    mask = jp.masks.topk(jp.masks.magnitude(params), 0.75, prunable=flags)
    ref = _top_fraction_mask(_np_kernels(model, ["l1", "l2"]), 0.75)
    for name in ("l1", "l2"):
        np.testing.assert_array_equal(np.asarray(mask[name]["kernel"][...]), ref[name])
        assert mask[name]["bias"].get_value() is None
    assert mask["head"]["kernel"].get_value() is None
    sparse = jp.apply_mask(params, mask)
    assert isinstance(sparse["l1"]["kernel"], nnx.Param)  # the structure (Param wrappers) is kept
    for name in ("l1", "l2"):
        w = np.asarray(getattr(model, name).kernel[...])
        np.testing.assert_array_equal(np.asarray(sparse[name]["kernel"][...]), np.where(ref[name], w, 0.0))
    np.testing.assert_array_equal(np.asarray(sparse["head"]["kernel"][...]), model.head.kernel[...])
    report = jp.summarize(sparse, prunable=flags)
    assert sorted(report["leaves"]) == NNX_PATHS
    kept = sum(int(r.sum()) for r in ref.values())
    assert report["prunable"]["nonzero"] == kept
    assert report["prunable"]["size"] == 6 * 8 + 8 * 5


def test_nnx_pq_index_matches_numpy():
    model = _NNXMLP(nnx.Rngs(2))
    params = nnx.state(model, nnx.Param)
    flags = jp.prunable(params, exclude="^head/")
    w = np.concatenate([np.abs(model.l1.kernel[...]).ravel(), np.abs(model.l2.kernel[...]).ravel()])
    p, q, d = 0.5, 1.0, w.size
    ref = 1 - d ** (1 / q - 1 / p) * np.sum(w**p) ** (1 / p) / np.sum(w**q) ** (1 / q)
    np.testing.assert_allclose(jp.measures.pq_index(params, p=p, q=q, prunable=flags), ref, rtol=1e-5)
    neuron = jp.measures.pq_index(params, scope="neuron", prunable=flags)
    k = np.abs(np.asarray(model.l2.kernel[...]))  # (in, out): one column per unit
    n = k.shape[0]
    ref_units = 1 - n ** (1 / q - 1 / p) * np.sum(k**p, 0) ** (1 / p) / np.sum(k**q, 0) ** (1 / q)
    np.testing.assert_allclose(neuron["l2"]["kernel"][...], ref_units, rtol=1e-5)


def test_nnx_dpf_mask_and_sparse_params():
    model = _NNXMLP(nnx.Rngs(3))
    params = nnx.state(model, nnx.Param)
    flags = jp.prunable(params, exclude="^head/")
    tx = jp.optax.dpf(0.5, update_every=1, prunable=flags)
    opt_state = tx.init(params)
    _, opt_state = tx.update(jax.tree.map(jnp.zeros_like, params), opt_state, params)
    ref = _top_fraction_mask(_np_kernels(model, ["l1", "l2"]), 0.5)
    mask = jp.optax.get_mask(opt_state)
    for name in ("l1", "l2"):
        np.testing.assert_array_equal(np.asarray(mask[name]["kernel"][...]), ref[name])
    np.testing.assert_allclose(float(jp.optax.dpf_diagnostics(opt_state)["sparsity"]), 0.5, atol=1 / 88)
    sparse = jp.optax.sparse_params(params, opt_state)
    chex.assert_trees_all_equal_structs(sparse, params)  # nnx.Param wrappers kept
    np.testing.assert_array_equal(
        np.asarray(sparse["l1"]["kernel"][...]), np.where(ref["l1"], model.l1.kernel[...], 0.0)
    )


# ----------------------------------------------------------------------------- NNX: capture, SiPP
def _dense_sensitivity(a, w):
    """Def. 1-2 for a dense layer with non-negative inputs a (N, F), kernel (F, c):
    s_ji = max_x |w_ji| a_j / sum_k w^t_ki a_k (t the sign side of w_ji)."""
    s = np.zeros_like(w)
    for t, side in ((1, np.maximum(w, 0)), (-1, np.maximum(-w, 0))):
        den = a @ side  # (N, c)
        ratio = np.abs(w)[None] * a[:, :, None] / np.where(den > EPS32, den, np.inf)[:, None, :]
        s = np.where(np.sign(w) == t, ratio.max(0), s)
    return s


def test_nnx_capture_and_sensitivity_match_numpy():
    model = _NNXMLP(nnx.Rngs(4))
    x = jax.random.uniform(jax.random.key(0), (7, 6))  # non-negative inputs
    params = nnx.state(model, nnx.Param)
    graphdef, split_params, rest = nnx.split(model, nnx.Param, ...)
    apply_fn = lambda p, v: nnx.merge(graphdef, p, rest)(v)
    for fn, p in ((model, params), (apply_fn, split_params)):
        layers = capture_layers(fn, p, x)
        assert list(layers) == ["l1/kernel", "l2/kernel", "head/kernel"]
    w1, b1 = np.asarray(model.l1.kernel[...]), np.asarray(model.l1.bias[...])
    np.testing.assert_allclose(layers["l1/kernel"].inputs, x)
    np.testing.assert_allclose(layers["l1/kernel"].outputs, np.asarray(x) @ w1 + b1, rtol=1e-5, atol=1e-6)
    h1 = np.maximum(np.asarray(x) @ w1 + b1, 0)
    np.testing.assert_allclose(layers["l2/kernel"].inputs, h1, rtol=1e-5, atol=1e-6)
    sens = jp.sipp.sensitivity(apply_fn, split_params, x)
    chex.assert_tree_all_finite(sens)
    assert isinstance(sens["l1"]["kernel"], nnx.Param) and sens["l1"]["bias"].get_value() is None
    np.testing.assert_allclose(sens["l1"]["kernel"][...], _dense_sensitivity(np.asarray(x), w1), rtol=1e-5)
    np.testing.assert_allclose(sens["l2"]["kernel"][...],
                               _dense_sensitivity(h1, np.asarray(model.l2.kernel[...])), rtol=1e-4, atol=1e-6)
    assert nnx.Linear.__call__.__qualname__ == "Linear.__call__"  # the temporary wrapper is gone


def test_nnx_conv_sensitivity_equals_linen_twin():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(2, 3, (3, 3), strides=2, padding="VALID", rngs=rngs)
            self.out = nnx.Linear(12, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.conv(x)).reshape(x.shape[0], -1))

    class Twin(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(3, (3, 3), strides=2, padding="VALID", name="conv")(x)
            return nn.Dense(2, name="out")(nn.relu(x).reshape(x.shape[0], -1))

    model = Net(nnx.Rngs(5))
    x = jax.random.normal(jax.random.key(1), (4, 5, 5, 2))
    linen_params = {n: {"kernel": getattr(model, n).kernel[...], "bias": getattr(model, n).bias[...]}
                    for n in ("conv", "out")}
    ours = jp.sipp.sensitivity(model, nnx.state(model, nnx.Param), x)
    twin = jp.sipp.sensitivity(lambda p, v: Twin().apply({"params": p}, v), linen_params, x)
    for n in ("conv", "out"):
        np.testing.assert_allclose(ours[n]["kernel"][...], twin[n]["kernel"], rtol=1e-6)


@pytest.mark.parametrize("method", ["M", "L"])
def test_nnx_abp_equals_linen_twin(method):
    """ABP on an NNX model (params an nnx.State, leaves ``a/kernel/value``) gives
    bitwise the refit and mask of the same weights in a linen twin."""
    model = _NNXMLP(nnx.Rngs(7))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(2), (40, 6))
    ours, mask, report = jp.abp.prune(lambda p, v: nnx.merge(graphdef, p, rest)(v), params, x, method=method,
                                      lam=0.01)
    twin = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(5), nn.relu, nn.Dense(3)])
    names = {"l1": "layers_0", "l2": "layers_2", "head": "layers_4"}
    linen = {t: {"kernel": getattr(model, n).kernel[...], "bias": getattr(model, n).bias[...]}
             for n, t in names.items()}
    theirs, twin_mask, _ = jp.abp.prune(lambda p, v: twin.apply({"params": p}, v), linen, x, method=method,
                                        lam=0.01)
    assert list(report.layers) == ["l1/kernel/value", "l2/kernel/value", "head/kernel/value"]
    for n, t in names.items():
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(np.asarray(ours[n][leaf][...]), np.asarray(theirs[t][leaf]))
        np.testing.assert_array_equal(np.asarray(mask[n]["kernel"][...]), np.asarray(twin_mask[t]["kernel"]))


def test_capture_and_sensitivity_refuse_clearly():
    model = _NNXMLP(nnx.Rngs(6))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.ones((3, 6))
    masked = lambda p, v: nnx.merge(graphdef, jax.tree.map(lambda w: 0.5 * w, p), rest)(v)
    with pytest.raises(ValueError, match="not arrays of params"):
        capture_layers(masked, params, x)
    plain = {"w": jnp.ones((6, 4))}  # a prunable leaf that no dense/conv layer runs on
    with pytest.raises(ValueError, match=r"no nn\.Dense / nn\.Conv / nnx\.Linear / nnx\.Conv layer"):
        jp.sipp.sensitivity(lambda p, v: v @ p["w"], plain, x)


# ----------------------------------------------------------------------------- equinox
EQX_PATHS = ["layers/0/weight", "layers/0/bias", "layers/1/weight", "layers/1/bias",
             "layers/2/weight", "layers/2/bias", "activation", "final_activation"]


def _eqx_params(seed=0):
    model = eqx.nn.MLP(6, 3, 8, depth=2, activation=jax.nn.relu, key=jax.random.key(seed))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return model, params, static


def test_equinox_paths_prunable_apply_mask():
    model, params, static = _eqx_params()
    assert leaf_paths(params) == EQX_PATHS  # attribute names; the functions are None in the params part
    flags = jp.prunable(params, exclude="^layers/2/")
    chosen = [p for p, f in zip(EQX_PATHS, jax.tree.leaves(flags, is_leaf=lambda v: v is None), strict=True)
              if f]
    assert chosen == ["layers/0/weight", "layers/1/weight"]
    mask = jp.masks.topk(jp.masks.magnitude(params), 0.6, prunable=flags)
    weights = {i: np.asarray(model.layers[i].weight) for i in (0, 1)}
    ref = _top_fraction_mask(weights, 0.6)
    sparse = jp.apply_mask(params, mask)
    for i in (0, 1):
        np.testing.assert_array_equal(np.asarray(sparse.layers[i].weight), np.where(ref[i], weights[i], 0.0))
    np.testing.assert_array_equal(np.asarray(sparse.layers[2].weight), np.asarray(model.layers[2].weight))
    assert sparse.activation is None
    y = eqx.combine(sparse, static)(jnp.ones(6))
    assert y.shape == (3,)


def test_equinox_dpf():
    model, params, _ = _eqx_params(1)
    flags = jp.prunable(params, exclude="^layers/2/")
    tx = optax.chain(jp.optax.dpf(0.5, update_every=1, prunable=flags), optax.sgd(0.0))
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    _, opt_state = tx.update(grads, opt_state, params)
    ref = _top_fraction_mask({i: np.asarray(model.layers[i].weight) for i in (0, 1)}, 0.5)
    mask = jp.optax.get_mask(opt_state)
    for i in (0, 1):
        np.testing.assert_array_equal(np.asarray(mask.layers[i].weight), ref[i])
    assert mask.layers[2].weight is None and mask.layers[0].bias is None
    sparse = jp.optax.sparse_params(params, opt_state)
    np.testing.assert_array_equal(
        np.asarray(sparse.layers[0].weight), np.where(ref[0], model.layers[0].weight, 0.0)
    )


def test_equinox_neuron_scope_with_out_axis_0_equals_linen_layout():
    lin = eqx.nn.Linear(7, 4, key=jax.random.key(2))  # weight (out, in) = (4, 7)
    w = np.asarray(lin.weight)
    eqx_params = eqx.filter(lin, eqx.is_inexact_array)
    linen_params = {"kernel": jnp.asarray(w.T), "bias": lin.bias}  # flax layout (in, out)
    eqx_flags = jp.prunable(eqx_params, include="weight")
    for name, fn in [("pq_index", jp.measures.pq_index), ("sparsity_index", jp.measures.sparsity_index),
                     ("gini", jp.measures.gini), ("hoyer", jp.measures.hoyer),
                     ("pqi_bound", jp.measures.pqi_bound)]:
        ours = fn(eqx_params, scope="neuron", prunable=eqx_flags, out_axis=0)
        ref = fn(linen_params, scope="neuron")
        chex.assert_shape(ours.weight, (4,))  # one value per output unit (axis 0 of the weight)
        np.testing.assert_allclose(ours.weight, ref["kernel"], rtol=1e-6, err_msg=name)
    # and against numpy: PQ index of each output unit (a row of the equinox weight)
    a, p, q = np.abs(w), 0.5, 1.0
    ref_rows = 1 - 7 ** (1 / q - 1 / p) * np.sum(a**p, 1) ** (1 / p) / np.sum(a**q, 1) ** (1 / q)
    ours = jp.measures.pq_index(eqx_params, scope="neuron", prunable=eqx_flags, out_axis=0)
    np.testing.assert_allclose(ours.weight, ref_rows, rtol=1e-5)
    # per-neuron top-k keeps the largest entries of each ROW of the (out, in) weight
    scores = jp.masks.magnitude(eqx_params)
    mask = jp.masks.topk(scores, 3 / 7, scope="neuron", prunable=eqx_flags, out_axis=0)
    ref_mask = np.abs(w) >= np.sort(np.abs(w), axis=1)[:, [-4]]
    np.testing.assert_array_equal(np.asarray(mask.weight), ref_mask)


# ----------------------------------------------------------------------------- examples
def _example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["nnx_dpf", "equinox_dpf"])
def test_example_reaches_target_sparsity_and_learns(name):
    out = _example(name).train(96, 0.8, hidden=32, lr=0.1, update_every=8, prune_until=0.5)
    n_prunable = 64 * 32 + 32 * 32  # the two hidden kernels; the output layer stays dense
    assert abs(out["sparsity"] - 0.8) <= 1 / n_prunable
    assert abs(out["dpf_sparsity"] - out["sparsity"]) <= 1 / n_prunable
    assert out["final_loss"] < 0.5 * out["first_loss"]
    assert out["test_accuracy"] > 0.6  # 10 classes: chance is 0.1
