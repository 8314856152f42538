"""Shared building blocks of the engine's models: initializers and the
BatchNorm / conv factories every architecture uses, so that the settings
(momentum 0.9, eps 1e-5, He fan-out conv init) live in one place.

Initialization (stated once for the whole model zoo):
- conv kernels: He normal, fan-out (``variance_scaling(2, "fan_out", "normal")``,
  as torchvision / the ResNet and WRN reference code);
- dense kernels: LeCun normal (Flax's default), dense biases zero;
- BatchNorm: scale 1, bias 0.
"""

from __future__ import annotations

import flax.linen as nn

CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm over the channel (last) axis; batch statistics when ``train``,
    running averages (momentum 0.9) otherwise."""
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv(
    features: int, kernel: int, stride: int = 1, *, use_bias: bool = False, name: str | None = None
) -> nn.Conv:
    """2-D convolution (NHWC, HWIO kernel) with symmetric "same"-style padding
    ``kernel // 2`` (PyTorch's ``padding=k//2``, so strided convs match the
    reference implementations exactly) and He fan-out init."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        kernel_init=CONV_INIT,
        name=name,
    )
