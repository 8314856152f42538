"""Shared building blocks of the engine's models: initializers, the
BatchNorm / conv / dense factories every architecture uses, and the dtype
casts at the model's input and output, so that the settings (momentum 0.9,
eps 1e-5, He fan-out conv init, the mixed-precision policy) live in one place.

Initialization (stated once for the whole model zoo):
- conv kernels: He normal, fan-out (``variance_scaling(2, "fan_out", "normal")``,
  as torchvision / the ResNet and WRN reference code);
- dense kernels: LeCun normal (Flax's default), dense biases zero;
- BatchNorm: scale 1, bias 0.

Mixed precision (``dtype`` = the computation dtype, float32 or bfloat16): every
layer is built with ``dtype=dtype`` and ``param_dtype=float32``. The params (the
master weights that optimizers, masks and measures read) are float32 and do
not depend on ``dtype``: the same init key gives the same param tree. Flax's
Dense/Conv cast their input, kernel and bias to ``dtype`` before the
matmul/convolution, so activations are ``dtype``; the gradient flows back
through that cast and reaches the params as float32.

BatchNorm in bfloat16 (checked in the source of flax 0.12.8,
``flax/linen/normalization.py``): ``nn.BatchNorm`` has
``force_float32_reductions=True`` by default, so ``_compute_stats`` promotes
the input to ``promote_types(dtype, float32)`` = float32 before taking the
batch mean and variance; the running averages (``batch_stats``) are created
float32 and updated with those float32 statistics; ``_normalize`` subtracts
the float32 mean, scales by the float32 ``rsqrt(var + eps) * scale`` and adds
the float32 bias in float32, and only casts the result to ``dtype`` at the end.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any  # a JAX dtype (jnp.float32, jnp.bfloat16, ...)

# Per-layer width overrides: ``(("stage1_block1/conv1", 12), ...)``, the module
# path (relative to the module holding the attribute) and the features of that
# Dense/Conv. Empty = the architecture's own widths. ``jaxprune.compress``
# builds compacted models through this attribute.
Widths = tuple[tuple[str, int], ...]

CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

PARAM_DTYPE = jnp.float32  # master weights: always float32, whatever the compute dtype


def batch_norm(train: bool, name: str | None = None, *, dtype: Dtype = jnp.float32) -> nn.BatchNorm:
    """BatchNorm over the channel (last) axis; batch statistics when ``train``,
    running averages (momentum 0.9) otherwise. Output in ``dtype``; statistics,
    running averages and the normalization itself in float32 (module docstring)."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=PARAM_DTYPE,
        name=name,
    )


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    *,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """2-D convolution (NHWC, HWIO kernel) with symmetric "same"-style padding
    ``kernel // 2`` (PyTorch's ``padding=k//2``, so strided convs match the
    reference implementations exactly) and He fan-out init; computes in
    ``dtype``, float32 params."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        kernel_init=CONV_INIT,
        dtype=dtype,
        param_dtype=PARAM_DTYPE,
        name=name,
    )


def dense(features: int, *, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Dense:
    """Dense layer (LeCun-normal kernel, zero bias) computing in ``dtype``, float32 params."""
    return nn.Dense(features, dtype=dtype, param_dtype=PARAM_DTYPE, name=name)


def width_of(widths: Widths, name: str, default: int) -> int:
    """The features of the layer ``name`` under the overrides ``widths`` (``default`` if absent).

    >>> width_of((("conv1", 12),), "conv1", 16), width_of((), "conv1", 16)
    (12, 16)
    """
    return dict(widths).get(name, default)


def widths_under(widths: Widths, prefix: str) -> Widths:
    """The overrides below the submodule ``prefix``, with paths relative to it.

    >>> widths_under((("block1/conv1", 12), ("head", 3)), "block1")
    (('conv1', 12),)
    """
    head = prefix + "/"
    return tuple((name[len(head) :], w) for name, w in widths if name.startswith(head))


def to_compute(x: jax.Array, dtype: Dtype) -> jax.Array:
    """The model input cast to the computation dtype (inputs arrive float32)."""
    return jnp.asarray(x, dtype)


def to_logits(x: jax.Array) -> jax.Array:
    """The head's output returned as float32 logits, whatever the compute dtype."""
    return jnp.asarray(x, jnp.float32)
