"""The engine's model zoo, looked up by name (Flax linen modules).

Every model is called as ``model.apply(variables, x, train=...)`` with ``x``
NHWC float32 images (N, H, W, C) or tabular (N, F) inputs and returns
(N, num_outputs) float32 logits (regression: ``num_outputs=1``). Models with
BatchNorm keep a ``"batch_stats"`` collection (pass ``mutable=["batch_stats"]``
when ``train=True``). Dense kernels are (in, out), conv kernels HWIO.

| name | architecture |
| --- | --- |
| ``linear`` | Dense(K) on the flattened input |
| ``mlp`` | in-128-256-K, ReLU (PQ paper Table 1); ``hidden=`` overrides |
| ``lenet300`` | LeNet-300-100: in-300-100-K, ReLU |
| ``mlp_regressor`` | in-64-64-64-K, ReLU; ``hidden=`` overrides |
| ``cnn`` | conv3x3 64/128/256/512 + BN + ReLU + maxpool2 each, GAP, Dense K (PQ paper Table 2) |
| ``vgg16`` | CIFAR VGG16-D with BN, Dense(512, K) head |
| ``resnet20/32/56/110`` | CIFAR ResNets, 16/32/64 channels; ``shortcut="B"`` (1x1 conv + BN) or ``"A"`` |
| ``wrn28_2/4/8``, ``wrn28`` | WideResNet-28-k, pre-activation blocks; ``wrn28`` takes ``widen=`` |
| ``wrn16_8`` | WideResNet-16-8 (SiPP's CIFAR WRN); every ``wrn*`` takes ``depth=`` (6n + 4) |
| ``resnet18``, ``resnet50`` | ImageNet ResNets; ``cifar_stem=True`` = 3x3/1 stem, no max-pool |

Initialization: conv kernels He-normal fan-out, dense kernels LeCun normal
(Flax default), biases 0, BatchNorm scale 1 / bias 0, momentum 0.9, eps 1e-5.

Mixed precision: ``get_model(..., dtype=)`` sets the computation dtype of every
model (the ``dtype`` field of the modules):

| ``dtype`` | computation |
| --- | --- |
| ``"float32"`` (default) | float32 everywhere |
| ``"bfloat16"`` | activations, matmuls and convolutions in bfloat16 |
| ``"auto"`` | bfloat16 if ``jax.default_backend()`` is a GPU or TPU, else float32 |

In every case the params are float32 (the master weights that optimizers,
masks and measures read; the same init key gives the same param tree whatever
the ``dtype``), BatchNorm statistics, running averages and normalization are
float32 (Flax's ``force_float32_reductions``, see ``layers``), and the logits
are returned float32. ``resolve_dtype`` maps a ``dtype`` value to the JAX dtype.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune._validate import check_choice
from jaxprune.train.models.cnn import VGG16_CFG, ConvBNNet
from jaxprune.train.models.mlp import MLP
from jaxprune.train.models.resnet_cifar import CifarResNet, WideResNet
from jaxprune.train.models.resnet_imagenet import ImageNetResNet

__all__ = ["DTYPES", "MODEL_NAMES", "get_model", "param_count", "resolve_dtype"]

# The values of ``get_model``'s ``dtype`` (``resolve_dtype`` also takes a JAX dtype).
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "auto")
_ACCELERATOR_BACKENDS = ("gpu", "cuda", "rocm", "tpu")


def resolve_dtype(name: str | Any) -> jnp.dtype:
    """The computation dtype named by ``name``: ``"float32"``, ``"bfloat16"``,
    ``"auto"`` (bfloat16 when ``jax.default_backend()`` is a GPU or TPU backend,
    float32 otherwise; resolved at call time) or a JAX/NumPy float32 or
    bfloat16 dtype. Anything else raises ``ValueError``."""
    if isinstance(name, str):
        check_choice("dtype", name, DTYPES)
        if name == "auto":
            name = "bfloat16" if jax.default_backend() in _ACCELERATOR_BACKENDS else "float32"
        return jnp.dtype(name)
    try:
        dtype = jnp.dtype(name)
    except TypeError:
        dtype = None
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise ValueError(
            f"dtype={name!r} is not valid; expected one of {list(DTYPES)} or jnp.float32 / jnp.bfloat16"
        )
    return dtype


def _mlp(num_outputs: int, dtype: Any, *, hidden: tuple[int, ...]) -> nn.Module:
    return MLP(hidden=tuple(hidden), num_outputs=num_outputs, dtype=dtype)


def _cnn(num_outputs: int, dtype: Any) -> nn.Module:
    return ConvBNNet(cfg=(64, "M", 128, "M", 256, "M", 512, "M"), num_outputs=num_outputs, dtype=dtype)


def _vgg16(num_outputs: int, dtype: Any) -> nn.Module:
    return ConvBNNet(cfg=VGG16_CFG, num_outputs=num_outputs, dtype=dtype)


def _cifar_resnet(num_outputs: int, dtype: Any, *, depth: int, shortcut: str = "B") -> nn.Module:
    return CifarResNet(depth=depth, num_outputs=num_outputs, shortcut=shortcut, dtype=dtype)


def _wrn(num_outputs: int, dtype: Any, *, widen: int, depth: int = 28) -> nn.Module:
    return WideResNet(depth=depth, widen=widen, num_outputs=num_outputs, dtype=dtype)


def _imagenet_resnet(
    num_outputs: int, dtype: Any, *, blocks: tuple[int, ...], bottleneck: bool, cifar_stem: bool = False
) -> nn.Module:
    return ImageNetResNet(
        blocks_per_stage=blocks,
        bottleneck=bottleneck,
        num_outputs=num_outputs,
        cifar_stem=cifar_stem,
        dtype=dtype,
    )


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "linear": functools.partial(_mlp, hidden=()),
    "mlp": functools.partial(_mlp, hidden=(128, 256)),
    "lenet300": functools.partial(_mlp, hidden=(300, 100)),
    "mlp_regressor": functools.partial(_mlp, hidden=(64, 64, 64)),
    "cnn": _cnn,
    "vgg16": _vgg16,
    "resnet20": functools.partial(_cifar_resnet, depth=20),
    "resnet32": functools.partial(_cifar_resnet, depth=32),
    "resnet56": functools.partial(_cifar_resnet, depth=56),
    "resnet110": functools.partial(_cifar_resnet, depth=110),
    "wrn28": functools.partial(_wrn, widen=2),
    "wrn28_2": functools.partial(_wrn, widen=2),
    "wrn28_4": functools.partial(_wrn, widen=4),
    "wrn28_8": functools.partial(_wrn, widen=8),
    "wrn16_8": functools.partial(_wrn, widen=8, depth=16),
    "resnet18": functools.partial(_imagenet_resnet, blocks=(2, 2, 2, 2), bottleneck=False),
    "resnet50": functools.partial(_imagenet_resnet, blocks=(3, 4, 6, 3), bottleneck=True),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_model(name: str, num_outputs: int, *, dtype: str | Any = "float32", **kwargs: Any) -> nn.Module:
    """The model ``name`` (one of ``MODEL_NAMES``) with ``num_outputs`` outputs.

    ``dtype`` is the computation dtype: ``"float32"`` (default), ``"bfloat16"``,
    ``"auto"`` or a JAX dtype (see :func:`resolve_dtype`; ``"auto"`` is
    resolved here, on the current default backend). Params, BatchNorm
    statistics and logits are float32 whatever ``dtype`` (module docstring).
    ``kwargs`` are architecture options: ``hidden`` (mlp, mlp_regressor,
    lenet300, linear), ``shortcut`` (resnet20/32/56/110), ``widen``/``depth``
    (wrn*), ``cifar_stem`` (resnet18/50). Unknown names and bad ``dtype``
    values raise ``ValueError`` listing the valid choices; unknown options
    raise ``TypeError``."""
    if name not in _REGISTRY:
        raise ValueError(f"model name={name!r} is not valid; expected one of {list(MODEL_NAMES)}")
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"num_outputs={num_outputs!r} is not valid; expected an integer >= 1")
    return _REGISTRY[name](num_outputs, resolve_dtype(dtype), **kwargs)


def param_count(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of trainable parameters (the ``"params"`` collection; BatchNorm
    running statistics excluded) of ``model`` on inputs of ``input_shape`` (no
    batch axis). Uses ``jax.eval_shape``: nothing is allocated or computed."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))
