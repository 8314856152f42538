"""Tests of jaxprune.train.models: parameter counts against hand computations
and the papers' published sizes (via jax.eval_shape, nothing allocated),
forward passes of the small models, BatchNorm behaviour, initialization."""

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.train.models import MODEL_NAMES, get_model, param_count
from jaxprune.train.models.resnet_cifar import CifarResNet


# ---- independent parameter-count arithmetic (architecture read from the papers) ----
def dense(i, o):
    return i * o + o


def conv(k, i, o, bias=False):
    return k * k * i * o + (o if bias else 0)


def bn(c):
    return 2 * c  # scale + bias (running statistics are not parameters)


def mlp_count(sizes):
    return sum(dense(a, b) for a, b in itertools.pairwise(sizes))


def cifar_resnet_count(depth, k, shortcut="B"):
    n = (depth - 2) // 6
    total = conv(3, 3, 16) + bn(16)
    c_in = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += conv(3, c_in, width) + bn(width) + conv(3, width, width) + bn(width)
            if c_in != width and shortcut == "B":
                total += conv(1, c_in, width) + bn(width)
            c_in = width
    return total + dense(64, k)


def wrn_count(depth, widen, k):
    n = (depth - 4) // 6
    total, c_in = conv(3, 3, 16), 16
    for width in (16 * widen, 32 * widen, 64 * widen):
        for _ in range(n):
            total += bn(c_in) + conv(3, c_in, width) + bn(width) + conv(3, width, width)
            if c_in != width:
                total += conv(1, c_in, width)
            c_in = width
    return total + bn(c_in) + dense(c_in, k)


def imagenet_resnet_count(blocks, bottleneck, k, cifar_stem=False):
    total = (conv(3, 3, 64) if cifar_stem else conv(7, 3, 64)) + bn(64)
    c_in = 64
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            if bottleneck:
                out = 4 * width
                total += conv(1, c_in, width) + conv(3, width, width) + conv(1, width, out)
                total += bn(width) * 2 + bn(out)
            else:
                out = width
                total += conv(3, c_in, width) + conv(3, width, width) + 2 * bn(width)
            if stride != 1 or c_in != out:
                total += conv(1, c_in, out) + bn(out)
            c_in = out
    return total + dense(c_in, k)


def conv_bn_net_count(cfg, c_in, k):
    total = 0
    for item in cfg:
        if item != "M":
            total += conv(3, c_in, item, bias=True) + bn(item)
            c_in = item
    return total + dense(c_in, k)


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
CNN = [64, "M", 128, "M", 256, "M", 512, "M"]

# name, kwargs, num_outputs, input shape, hand count
COUNT_CASES = [
    ("linear", {}, 10, (28, 28, 1), mlp_count([784, 10])),
    ("mlp", {}, 10, (28, 28, 1), mlp_count([784, 128, 256, 10])),
    ("mlp", {"hidden": (32,)}, 3, (5,), mlp_count([5, 32, 3])),
    ("lenet300", {}, 10, (28, 28, 1), mlp_count([784, 300, 100, 10])),
    ("mlp_regressor", {}, 1, (8,), mlp_count([8, 64, 64, 64, 1])),
    ("cnn", {}, 10, (28, 28, 1), conv_bn_net_count(CNN, 1, 10)),
    ("cnn", {}, 10, (32, 32, 3), conv_bn_net_count(CNN, 3, 10)),
    ("vgg16", {}, 10, (32, 32, 3), conv_bn_net_count(VGG16, 3, 10)),
    ("resnet20", {}, 10, (32, 32, 3), cifar_resnet_count(20, 10)),
    ("resnet20", {"shortcut": "A"}, 10, (32, 32, 3), cifar_resnet_count(20, 10, "A")),
    ("resnet32", {}, 10, (32, 32, 3), cifar_resnet_count(32, 10)),
    ("resnet56", {}, 10, (32, 32, 3), cifar_resnet_count(56, 10)),
    ("resnet110", {}, 10, (32, 32, 3), cifar_resnet_count(110, 10)),
    ("wrn28_2", {}, 10, (32, 32, 3), wrn_count(28, 2, 10)),
    ("wrn28_4", {}, 10, (32, 32, 3), wrn_count(28, 4, 10)),
    ("wrn28_8", {}, 10, (32, 32, 3), wrn_count(28, 8, 10)),
    ("wrn28", {"widen": 10}, 10, (32, 32, 3), wrn_count(28, 10, 10)),
    ("wrn16_8", {}, 10, (32, 32, 3), wrn_count(16, 8, 10)),
    ("wrn28_2", {"depth": 16}, 10, (32, 32, 3), wrn_count(16, 2, 10)),
    ("resnet18", {}, 1000, (224, 224, 3), imagenet_resnet_count((2, 2, 2, 2), False, 1000)),
    ("resnet18", {"cifar_stem": True}, 10, (32, 32, 3), imagenet_resnet_count((2, 2, 2, 2), False, 10, True)),
    ("resnet50", {}, 1000, (224, 224, 3), imagenet_resnet_count((3, 4, 6, 3), True, 1000)),
]


@pytest.mark.parametrize(("name", "kwargs", "k", "shape", "expected"), COUNT_CASES)
def test_param_count_matches_hand_computation(name, kwargs, k, shape, expected):
    model = get_model(name, k, **kwargs)
    assert param_count(model, shape) == expected


def test_every_model_has_a_count_case():
    assert {c[0] for c in COUNT_CASES} == set(MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "kwargs", "k", "shape", "published", "half_unit"),
    [  # published sizes, rounded as printed: |count - published| <= half a unit of the last digit
        ("linear", {}, 10, (28, 28, 1), 7.9e3, 50),  # PQ paper Table 3 (FashionMNIST): 7.9 K
        ("mlp", {}, 10, (28, 28, 1), 136.1e3, 50),  # 136.1 K
        ("cnn", {}, 10, (28, 28, 1), 1.6e6, 0.05e6),  # 1.6 M
        ("resnet18", {"cifar_stem": True}, 10, (28, 28, 1), 11.2e6, 0.05e6),  # 11.2 M
        ("linear", {}, 10, (32, 32, 3), 30.7e3, 50),  # PQ paper Table 3 (CIFAR10): 30.7 K
        ("mlp", {}, 10, (32, 32, 3), 428.9e3, 50),  # 428.9 K
        ("cnn", {}, 10, (32, 32, 3), 1.6e6, 0.05e6),  # 1.6 M
        ("resnet20", {}, 10, (32, 32, 3), 0.27e6, 0.005e6),  # DPF / He et al.: 0.27 M
        ("resnet20", {"shortcut": "A"}, 10, (32, 32, 3), 0.27e6, 0.005e6),
        ("resnet56", {"shortcut": "A"}, 10, (32, 32, 3), 0.85e6, 0.005e6),  # He et al. Table 6: 0.85 M
        ("wrn28_2", {}, 10, (32, 32, 3), 1.47e6, 0.005e6),  # DPF Figure 3: 1.47 M
        ("wrn28", {"widen": 10}, 10, (32, 32, 3), 36.5e6, 0.05e6),  # Zagoruyko & Komodakis: 36.5 M
        ("wrn16_8", {}, 10, (32, 32, 3), 11.0e6, 0.05e6),  # Zagoruyko & Komodakis: 11.0 M
        ("resnet110", {"shortcut": "A"}, 10, (32, 32, 3), 1.7e6, 0.05e6),  # He et al. Table 6: 1.7 M
        ("vgg16", {}, 10, (32, 32, 3), 14.7e6, 0.05e6),  # CIFAR VGG16-BN: 14.7 M
        ("lenet300", {}, 10, (28, 28, 1), 266_610, 0),  # LeNet-300-100 on MNIST
        ("resnet50", {}, 1000, (224, 224, 3), 25_557_032, 0),  # torchvision resnet50
        ("resnet18", {}, 1000, (224, 224, 3), 11_689_512, 0),  # torchvision resnet18
    ],
)
def test_param_count_matches_published(name, kwargs, k, shape, published, half_unit):
    count = param_count(get_model(name, k, **kwargs), shape)
    assert abs(count - published) <= half_unit, (count, published)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_output_shape_and_batch_stats(name):
    """Abstract train-mode forward of each model: (N, K) float32; BN models
    expose a batch_stats collection that train mode updates."""
    shape = (8,) if name == "mlp_regressor" else (32, 32, 3)
    model = get_model(name, 7)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    out, updates = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, x
    )
    assert out.shape == (2, 7) and out.dtype == jnp.float32
    has_bn = name not in ("linear", "mlp", "lenet300", "mlp_regressor")
    assert ("batch_stats" in variables) == has_bn
    if has_bn:
        assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (get_model("linear", 3), (6, 6, 1)),
        (get_model("mlp", 3), (6, 6, 1)),
        (get_model("lenet300", 3), (6, 6, 1)),
        (get_model("mlp_regressor", 3, hidden=(4, 4)), (5,)),
        (get_model("cnn", 3), (16, 16, 1)),
        (CifarResNet(depth=8, num_outputs=3, shortcut="A"), (8, 8, 3)),  # the resnet20/32/56 code, n = 1
    ],
)
def test_small_models_forward(model, shape):
    """Finite (N, K) float32 outputs. Eval mode uses running averages, so an
    example's output does not depend on the rest of the batch; train mode
    (batch statistics, BN models only) does."""
    x = jax.random.normal(jax.random.key(1), (2, *shape))
    x2 = x.at[1].multiply(3.0).at[1].add(1.0)
    variables = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(0), x)

    def run(v, x):
        return model.apply(v, x, train=False), model.apply(v, x, train=True, mutable=["batch_stats"])[0]

    run = jax.jit(run)
    (ev, tr), (ev2, tr2) = run(variables, x), run(variables, x2)
    assert ev.shape == (2, 3) and ev.dtype == jnp.float32
    assert np.all(np.isfinite(ev)) and np.all(np.isfinite(tr))
    np.testing.assert_allclose(ev[0], ev2[0], rtol=1e-5, atol=1e-6)
    if "batch_stats" in variables:
        assert not np.allclose(tr[0], tr2[0])
        assert not np.allclose(tr, ev)
    else:
        np.testing.assert_allclose(tr, ev, rtol=1e-6)


def test_mlp_is_a_plain_relu_network():
    """Reference forward in numpy from the (in, out) kernels."""
    model = get_model("mlp", 4, hidden=(5, 6))
    x = np.random.default_rng(0).normal(size=(3, 2, 2, 1)).astype(np.float32)
    params = model.init(jax.random.key(0), x, train=False)["params"]
    h = x.reshape(3, -1)
    for i in range(3):
        layer = params[f"Dense_{i}"]
        h = h @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"])
        if i < 2:
            h = np.maximum(h, 0)
    out = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
    np.testing.assert_allclose(out, h, rtol=1e-5, atol=1e-5)
    assert params["Dense_0"]["kernel"].shape == (4, 5)


def _conv_same_numpy(x, w):
    """Reference 3x3 stride-1 convolution, zero padding 1, NHWC x HWIO."""
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += np.einsum("nhwc,co->nhwo", xp[:, i : i + h, j : j + wd], w[i, j])
    return out


@pytest.fixture(scope="module")
def cifar_resnet_run():
    """A CIFAR ResNet (option B; depth 8 = the resnet20/32/56 code with n = 1, to
    keep compile time low), initialized and run once in train mode on a tiny batch."""
    model = CifarResNet(depth=8, num_outputs=2)
    x = np.random.default_rng(2).normal(size=(4, 6, 6, 3)).astype(np.float32)
    variables = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(0), x)
    out, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    return x, variables, out, upd


def test_batchnorm_running_statistics_momentum(cifar_resnet_run):
    """After one train-mode call the stem BN's running mean/var are
    0.9 * init + 0.1 * batch statistics (biased variance) of the stem conv output."""
    x, variables, out, upd = cifar_resnet_run
    assert out.shape == (4, 2) and np.all(np.isfinite(out))
    kernel = np.asarray(variables["params"]["stem_conv"]["kernel"], np.float64)
    y = _conv_same_numpy(x.astype(np.float64), kernel)
    stats = upd["batch_stats"]["stem_bn"]
    np.testing.assert_allclose(stats["mean"], 0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * y.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)


def test_conv_init_is_he_normal_fan_out(cifar_resnet_run):
    params = cifar_resnet_run[1]["params"]
    kernel = np.asarray(params["stage3_block1"]["conv2"]["kernel"])  # (3, 3, 64, 64)
    expected = math.sqrt(2.0 / (3 * 3 * 64))
    assert kernel.std() == pytest.approx(expected, rel=0.05)
    assert abs(kernel.mean()) < 0.05 * expected
    assert "shortcut_conv" in params["stage2_block1"] and "shortcut_conv" not in params["stage1_block1"]


def test_shortcut_a_is_parameter_free_zero_padding():
    params_a = jax.eval_shape(
        lambda k: get_model("resnet20", 10, shortcut="A").init(k, jnp.zeros((1, 8, 8, 3))), jax.random.key(0)
    )["params"]
    assert "shortcut_conv" not in params_a["stage2_block1"]


def test_resnet_imagenet_stem_downsamples_by_32():
    """Standard stem (7x7/2 + maxpool/2) and three strided stages: 64x64 -> 2x2;
    the CIFAR stem keeps 32x32 -> 4x4. Checked by capturing the head's input."""
    for cifar_stem, size in ((False, 64), (True, 32)):
        model = get_model("resnet18", 5, cifar_stem=cifar_stem)
        x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        variables = jax.eval_shape(lambda k, x, m=model: m.init(k, x), jax.random.key(0), x)
        shapes = {}

        def grab(next_fun, args, kwargs, context, shapes=shapes):
            if context.method_name == "__call__" and context.module.name == "stage4_block2":
                shapes["in"] = args[0].shape
            return next_fun(*args, **kwargs)

        def run(v, x, m=model, grab=grab):
            with nn.intercept_methods(grab):
                return m.apply(v, x)

        jax.eval_shape(run, variables, x)
        assert shapes["in"][1:3] == (size // 32, size // 32) if not cifar_stem else (4, 4)


def test_unknown_name_and_bad_arguments():
    with pytest.raises(ValueError, match="resnet20"):
        get_model("resnet21", 10)
    with pytest.raises(ValueError, match="num_outputs"):
        get_model("mlp", 0)
    with pytest.raises(TypeError):
        get_model("mlp", 10, widen=2)
    bad = get_model("resnet20", 10, shortcut="C")
    with pytest.raises(ValueError, match="shortcut"):
        jax.eval_shape(lambda k: bad.init(k, jnp.zeros((1, 8, 8, 3))), jax.random.key(0))
    with pytest.raises(ValueError, match="depth"):
        jax.eval_shape(
            lambda k: get_model("wrn28", 10, widen=2, depth=27).init(k, jnp.zeros((1, 8, 8, 3))),
            jax.random.key(0),
        )
