"""ImageNet-style ResNet-18 (basic blocks) and ResNet-50 (bottleneck blocks),
He et al. 2016, with projection (1x1 conv + BN) shortcuts and the stride on
the 3x3 conv of the bottleneck (the torchvision "v1.5" variant).

``cifar_stem=True`` replaces the 7x7/2 conv + 3x3/2 max-pool stem by a 3x3/1
conv without pooling (the usual CIFAR adaptation; the PQ paper's ResNet18 on
CIFAR-10 with 11.2M parameters). Input (N, H, W, C) float32 NHWC; output
(N, num_outputs) logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.train.models.layers import batch_norm, conv
from jaxprune.train.models.resnet_cifar import BasicBlock


class Bottleneck(nn.Module):
    """conv1x1(w)-BN-ReLU-conv3x3(w, stride)-BN-ReLU-conv1x1(4w)-BN, plus a
    projection shortcut when the shape changes, then ReLU."""

    features: int
    stride: int = 1
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = self.features * self.expansion
        y = nn.relu(batch_norm(train, name="bn1")(conv(self.features, 1, name="conv1")(x)))
        y = nn.relu(batch_norm(train, name="bn2")(conv(self.features, 3, self.stride, name="conv2")(y)))
        y = batch_norm(train, name="bn3")(conv(out, 1, name="conv3")(y))
        if self.stride != 1 or x.shape[-1] != out:
            x = batch_norm(train, name="shortcut_bn")(conv(out, 1, self.stride, name="shortcut_conv")(x))
        return nn.relu(y + x)


class ImageNetResNet(nn.Module):
    """Stem, four stages of ``blocks_per_stage`` blocks at 64/128/256/512 base
    widths (strides 1, 2, 2, 2), global average pooling, Dense(num_outputs)."""

    blocks_per_stage: Sequence[int]
    bottleneck: bool
    num_outputs: int
    cifar_stem: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        if self.cifar_stem:
            x = nn.relu(batch_norm(train, name="stem_bn")(conv(64, 3, name="stem_conv")(x)))
        else:
            x = nn.relu(batch_norm(train, name="stem_bn")(conv(64, 7, 2, name="stem_conv")(x)))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, (count, width) in enumerate(zip(self.blocks_per_stage, (64, 128, 256, 512), strict=True)):
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                name = f"stage{stage + 1}_block{block + 1}"
                if self.bottleneck:
                    x = Bottleneck(width, stride, name=name)(x, train)
                else:
                    x = BasicBlock(width, stride, "B", name=name)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_outputs, name="head")(x)
