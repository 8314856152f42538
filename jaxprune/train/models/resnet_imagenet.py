"""ImageNet-style ResNet-18 (basic blocks) and ResNet-50 (bottleneck blocks),
He et al. 2016, with projection (1x1 conv + BN) shortcuts and the stride on
the 3x3 conv of the bottleneck (the torchvision "v1.5" variant).

``cifar_stem=True`` replaces the 7x7/2 conv + 3x3/2 max-pool stem by a 3x3/1
conv without pooling (the usual CIFAR adaptation; the PQ paper's ResNet18 on
CIFAR-10 with 11.2M parameters). Input (N, H, W, C) float32 NHWC; output
(N, num_outputs) float32 logits. ``dtype`` is the computation dtype (params and
BatchNorm statistics stay float32, see ``layers``).
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
    widths_under,
)
from jaxprune.train.models.resnet_cifar import BasicBlock


class Bottleneck(nn.Module):
    """conv1x1(w)-BN-ReLU-conv3x3(w, stride)-BN-ReLU-conv1x1(4w)-BN, plus a
    projection shortcut when the shape changes, then ReLU. ``projection`` and
    ``widths`` as in :class:`~jaxprune.train.models.resnet_cifar.BasicBlock`."""

    features: int
    stride: int = 1
    expansion: int = 4
    dtype: Dtype = jnp.float32
    projection: bool | None = None
    widths: Widths = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, out, w = self.dtype, self.features * self.expansion, self.widths
        y = conv(width_of(w, "conv1", self.features), 1, dtype=dt, name="conv1")(x)
        y = nn.relu(batch_norm(train, dtype=dt, name="bn1")(y))
        y = conv(width_of(w, "conv2", self.features), 3, self.stride, dtype=dt, name="conv2")(y)
        y = nn.relu(batch_norm(train, dtype=dt, name="bn2")(y))
        y = conv(width_of(w, "conv3", out), 1, dtype=dt, name="conv3")(y)
        y = batch_norm(train, dtype=dt, name="bn3")(y)
        projection = self.projection
        if projection is None:
            projection = self.stride != 1 or x.shape[-1] != out
        if projection:
            x = conv(width_of(w, "shortcut_conv", out), 1, self.stride, dtype=dt, name="shortcut_conv")(x)
            x = batch_norm(train, dtype=dt, name="shortcut_bn")(x)
        return nn.relu(y + x)


class ImageNetResNet(nn.Module):
    """Stem, four stages of ``blocks_per_stage`` blocks at 64/128/256/512 base
    widths (strides 1, 2, 2, 2), global average pooling, Dense(num_outputs).
    ``widths`` overrides layer widths by path (``"stem_conv"``,
    ``"stage1_block1/conv1"``, ``"head"``; see ``layers.Widths``)."""

    blocks_per_stage: Sequence[int]
    bottleneck: bool
    num_outputs: int
    cifar_stem: bool = False
    dtype: Dtype = jnp.float32
    widths: Widths = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dt, w = self.dtype, self.widths
        x = to_compute(x, dt)
        kernel, stride = (3, 1) if self.cifar_stem else (7, 2)
        x = conv(width_of(w, "stem_conv", 64), kernel, stride, dtype=dt, name="stem_conv")(x)
        x = nn.relu(batch_norm(train, dtype=dt, name="stem_bn")(x))
        if not self.cifar_stem:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        previous = 64
        for stage, (count, width) in enumerate(zip(self.blocks_per_stage, (64, 128, 256, 512), strict=True)):
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                name = f"stage{stage + 1}_block{block + 1}"
                out = width * 4 if self.bottleneck else width
                projection, sub = stride != 1 or previous != out, widths_under(w, name)
                if self.bottleneck:
                    x = Bottleneck(width, stride, 4, dt, projection, sub, name=name)(x, train)
                else:
                    x = BasicBlock(width, stride, "B", dt, projection, sub, name=name)(x, train)
                previous = out
        x = jnp.mean(x, axis=(1, 2))
        return to_logits(dense(width_of(w, "head", self.num_outputs), dtype=dt, name="head")(x))
