"""Tests of jaxprune.measures.cost against hand counts computed here from the
architectures (never from a jaxpr): LeNet-300-100, ResNet-20 at 32x32,
ResNet-50 at 224 (abstract variables, no compute), a grouped/strided conv,
kept MACs under unstructured masks, sub-jaxprs (remat, scan, custom_jvp,
bf16 casts), and bad input."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.train.models import get_model


def _abstract_variables(model, input_shape):
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)


def _conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with padding kernel // 2 (the zoo's convention)."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def _resnet20_hand_macs(hw: int = 32, classes: int = 10) -> int:
    """ResNet-20 (He et al. 2016, Sec. 4.2): conv3x3(16), 3 stages x 3 basic
    blocks (16/32/64, strides 1/2/2), 1x1 projection shortcuts, GAP, FC."""
    macs = hw * hw * 16 * 3 * 9
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            out = _conv_out(hw, 3, stride)
            macs += out * out * width * cin * 9  # conv1
            macs += out * out * width * width * 9  # conv2
            if stride != 1 or cin != width:
                macs += out * out * width * cin  # 1x1 shortcut
            hw, cin = out, width
    return macs + 64 * classes


def _resnet50_hand_macs(hw: int = 224, classes: int = 1000) -> int:
    """ResNet-50 v1.5 (stride on the 3x3): 7x7/2 stem, 3x3/2 max-pool, bottleneck
    stages (3, 4, 6, 3) of widths 64..512 (x4 out), projection shortcuts."""
    hw = _conv_out(hw, 7, 2)
    macs = hw * hw * 64 * 3 * 49
    hw = (hw + 2 - 3) // 2 + 1  # max-pool 3x3/2, padding 1
    cin = 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            out = _conv_out(hw, 3, stride)
            macs += hw * hw * width * cin  # 1x1 reduce at the input resolution
            macs += out * out * width * width * 9
            macs += out * out * 4 * width * width  # 1x1 expand
            if block == 0:
                macs += out * out * 4 * width * cin
            hw, cin = out, 4 * width
    return macs + 2048 * classes


def test_lenet300_hand_count():
    model = get_model("lenet300", 10)
    c = jp.measures.cost(model, _abstract_variables(model, (28, 28, 1)), None, (28, 28, 1))
    assert c["macs"] == 784 * 300 + 300 * 100 + 100 * 10
    assert c["macs_kept"] == c["macs"] and c["macs_ratio"] == 1.0
    assert c["params"] == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert [c["layers"][f"params/Dense_{i}/kernel"]["macs"] for i in range(3)] == [235200, 30000, 1000]


def test_resnet20_hand_count():
    model = get_model("resnet20", 10)
    c = jp.measures.cost(model, _abstract_variables(model, (32, 32, 3)), None, (32, 32, 3))
    assert c["macs"] == _resnet20_hand_macs() == 40_813_184
    assert len(c["layers"]) == 19 + 2 + 1  # 19 convs, 2 shortcut convs, the head


def test_resnet50_hand_count():
    model = get_model("resnet50", 1000)
    c = jp.measures.cost(model, _abstract_variables(model, (224, 224, 3)), None, (224, 224, 3))
    assert c["macs"] == _resnet50_hand_macs() == 4_089_184_256
    assert c["params"] == 25_557_032  # torchvision's resnet50: 25,557,032


def test_unstructured_mask_scales_each_layer():
    """MACs kept = sum over layers of dense MACs x that kernel's density (NumPy
    reference from the hand counts), params kept = kept kernel entries + the
    unmasked biases."""
    model = get_model("lenet300", 10)
    params = _abstract_variables(model, (28, 28, 1))["params"]
    rng = np.random.default_rng(0)
    densities = {"Dense_0": 0.1, "Dense_1": 0.25, "Dense_2": 1.0}
    mask = {
        k: {"kernel": rng.random(v["kernel"].shape) < densities[k], "bias": None} for k, v in params.items()
    }
    c = jp.measures.cost(model, {"params": params}, mask, (28, 28, 1))
    dense_macs = {"Dense_0": 784 * 300, "Dense_1": 300 * 100, "Dense_2": 100 * 10}
    expected = sum(round(dense_macs[k] * mask[k]["kernel"].mean()) for k in mask)
    assert c["macs_kept"] == expected
    kept = sum(int(mask[k]["kernel"].sum()) for k in mask) + 300 + 100 + 10
    assert c["params_kept"] == kept
    np.testing.assert_allclose(c["params_ratio"], kept / 266_610)
    # The same mask given over the whole variables tree counts the same.
    c2 = jp.measures.cost(model, {"params": params}, {"params": mask}, (28, 28, 1))
    assert c2["macs_kept"] == expected


def test_compacted_model_exact():
    """A smaller dense model (what compaction produces) is counted exactly."""
    model = get_model("lenet300", 10, hidden=(150, 50))
    c = jp.measures.cost(model, _abstract_variables(model, (28, 28, 1)), None, (28, 28, 1))
    assert c["macs"] == 784 * 150 + 150 * 50 + 50 * 10


class _Grouped(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), strides=(2, 2), padding="VALID", feature_group_count=2, name="g")(x)
        x = nn.remat(nn.Dense)(5, name="d")(x.reshape((x.shape[0], -1)))
        return jax.nn.gelu(x) @ jnp.ones((5, 5))  # a matmul with no parameter


def test_grouped_strided_conv_remat_and_unattributed():
    """11x11x4 input, 3x3/2 VALID conv, 2 groups -> 5x5x8 output, each output
    sums 3*3*(4/2) inputs; then Dense 200 -> 5 under remat; then a 5x5 constant."""
    model = _Grouped()
    x = jax.ShapeDtypeStruct((1, 11, 11, 4), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    c = jp.measures.cost(model, variables, None, (11, 11, 4))
    assert c["layers"]["params/g/kernel"]["macs"] == 5 * 5 * 8 * 3 * 3 * 2
    assert c["layers"]["params/d/kernel"]["macs"] == 200 * 5
    assert c["layers"]["(no parameter)"]["macs"] == 25
    assert c["macs"] == 3600 + 1000 + 25


class _Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        def body(carry, w):
            return jnp.tanh(carry @ w.astype(jnp.bfloat16).astype(jnp.float32)), None

        w = self.param("w", nn.initializers.normal(), (3, 6, 6))
        y, _ = jax.lax.scan(body, x, w)
        return y


def test_scan_and_casts():
    """A scan over 3 stacked 6x6 weights (cast to bf16 and back inside): 3 * 36."""
    model = _Scanned()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    mask = {"w": np.arange(108).reshape(3, 6, 6) % 4 == 0}
    c = jp.measures.cost(model, variables, mask, (6,))
    assert c["layers"]["params/w"]["macs"] == 108
    assert c["layers"]["params/w"]["macs_kept"] == 27


def test_plain_function_and_bf16_model():
    model = get_model("mlp", 10, dtype="bfloat16")
    variables = _abstract_variables(model, (20,))
    c = jp.measures.cost(lambda v, x: model.apply(v, x), variables, None, (20,))
    assert c["macs"] == 20 * 128 + 128 * 256 + 256 * 10


def test_bad_input():
    model = get_model("lenet300", 10)
    params = _abstract_variables(model, (28, 28, 1))["params"]
    mask = jax.tree.map(lambda w: np.ones(w.shape, bool) if w.ndim == 2 else None, params)
    with pytest.raises(ValueError, match="does not match the structure"):
        jp.measures.cost(model, {"params": params}, {"Dense_0": mask["Dense_0"]}, (28, 28, 1))
    float_mask = {**mask, "Dense_1": {"kernel": np.ones((300, 100), np.float32), "bias": None}}
    with pytest.raises(TypeError, match="Dense_1/kernel has dtype float32"):
        jp.measures.cost(model, {"params": params}, float_mask, (28, 28, 1))
    with pytest.raises(ValueError, match="input_shape"):
        jp.measures.cost(model, {"params": params}, None, (28, 0))
    with pytest.raises(TypeError, match="model must be"):
        jp.measures.cost(3, {"params": params}, None, (784,))

    def looped(v, x):
        return jax.lax.while_loop(lambda c: c[1] < 2, lambda c: (c[0] @ v["w"], c[1] + 1), (x, 0))[0]

    with pytest.raises(ValueError, match="primitive 'while'"):
        jp.measures.cost(looped, {"w": jnp.ones((4, 4))}, None, (4,))


def test_result_is_consistent():
    model = get_model("resnet20", 10)
    c = jp.measures.cost(model, _abstract_variables(model, (32, 32, 3)), None, (32, 32, 3))
    assert c["macs"] == sum(e["macs"] for e in c["layers"].values())
    assert c["params"] == 272_474 == jp.train.models.param_count(model, (32, 32, 3))
    assert math.isclose(c["macs_ratio"], 1.0)


def test_study_kept_columns():
    """experiments.study_cost (the study reports' "params kept" / "MACs kept"):
    LeNet-300-100 with 90% of its two hidden kernels pruned keeps 27,930 of
    266,610 params and 27,520 of 266,200 MACs (one MAC per weight); a conv
    net's MACs are not determined by a pruned count alone; a stored summary
    wins."""
    from experiments import study_cost

    pruned = round(0.9 * (784 * 300 + 300 * 100))
    params, macs = study_cost.kept_fractions("lenet300", "fashion_mnist", pruned)
    assert math.isclose(params, 27_930 / 266_610) and math.isclose(macs, 27_520 / 266_200)
    assert study_cost.kept_fractions("resnet20", "cifar10", 1000)[1] is None
    summary = {"params_kept": 1, "params_total": 4, "macs_kept": 1, "macs_total": 8}
    assert study_cost.kept_fractions("resnet20", "cifar10", 1000, summary) == (0.25, 0.125)
    assert study_cost.cell({"A": (0.1, None), "B": (0.1, None)}, 0) == "10.00%"
    assert study_cost.cell({"A": (0.1, None), "B": (0.1004, None)}, 0) == "10.00-10.04%"
    assert study_cost.cell({"A": (0.1, None), "B": (0.2, None)}, 0) == "A 10.00%, B 20.00%"
    assert study_cost.cell({"A": (0.1, None)}, 1) == "n/a"


def test_input_shape_that_does_not_fit_the_model():
    """A wrong input_shape was a flax ScopeParamShapeError from inside the model."""
    model = nn.Dense(3)
    variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
    with pytest.raises(ValueError, match=r"input_shape=\(5,\)"):
        jp.measures.cost(model, variables, None, (5,))
