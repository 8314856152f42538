"""Plain convolutional models: the PQ-Index paper's ``cnn`` (appendix Table 2)
and CIFAR ``vgg16`` (VGG16-D with BatchNorm, as in the DPF paper).

Input (N, H, W, C) float32 NHWC; output (N, num_outputs) float32 logits;
``dtype`` is the computation dtype (params stay float32, see ``layers``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.train.models.layers import (
    Dtype,
    Widths,
    batch_norm,
    conv,
    dense,
    to_compute,
    to_logits,
    width_of,
)

# VGG16 configuration "D" (Simonyan & Zisserman 2015): widths, "M" = 2x2 max-pool.
# fmt: off
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
# fmt: on


def _max_pool2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class ConvBNNet(nn.Module):
    """Conv3x3(+bias) -> BN -> ReLU layers, "M" entries = 2x2 max-pool, then global
    average pooling and one Dense(num_outputs).

    ``cfg=(64, "M", 128, "M", 256, "M", 512, "M")`` is the PQ paper's CNN
    (Conv2d(c, w, 3, 1, 1) has a bias in the authors' PyTorch table);
    ``VGG16_CFG`` is CIFAR VGG16-D with BN, whose 32x32 input leaves a 1x1x512
    map, so the pooling is the usual flatten and the head the usual single
    Linear(512, K) classifier of CIFAR VGG. ``widths`` overrides layer widths
    by name (``"Conv_0"``, ..., ``"Dense_0"``; see ``layers.Widths``)."""

    cfg: Sequence[int | str]
    num_outputs: int
    dtype: Dtype = jnp.float32
    widths: Widths = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = to_compute(x, self.dtype)
        convs = 0
        for item in self.cfg:
            if item == "M":
                x = _max_pool2(x)
            else:
                features = width_of(self.widths, f"Conv_{convs}", int(item))
                convs += 1
                y = conv(features, 3, use_bias=True, dtype=self.dtype)(x)
                x = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        x = jnp.mean(x, axis=(1, 2))
        head = width_of(self.widths, "Dense_0", self.num_outputs)
        return to_logits(dense(head, dtype=self.dtype)(x))
