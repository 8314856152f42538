"""CIFAR residual networks: ResNet-20/32/56 (He et al. 2016, Section 4.2) and
WideResNet-d-k (Zagoruyko & Komodakis 2016, pre-activation blocks).

Input (N, H, W, C) float32 NHWC (32x32 CIFAR); output (N, num_outputs) float32
logits. Convolutions have no bias (each is followed by BatchNorm). ``dtype`` is
the computation dtype (params and BatchNorm statistics stay float32, see
``layers``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune._validate import check_choice
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


class BasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, ReLU.

    When the shape changes (stride 2 or new width) the shortcut is
    ``"B"``: 1x1 strided conv + BN projection (default; also torchvision's
    ResNet-18), or ``"A"``: strided identity, zero-padded channels (He et al.'s
    CIFAR option, parameter-free).

    ``projection``: whether the shape changes (``None``: inferred from the
    stride and the input width); ``widths`` overrides the convs' widths by name
    (``"conv1"``, ``"conv2"``, ``"shortcut_conv"``; see ``layers.Widths``)."""

    features: int
    stride: int = 1
    shortcut: str = "B"
    dtype: Dtype = jnp.float32
    projection: bool | None = None
    widths: Widths = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, w = self.dtype, self.widths
        y = conv(width_of(w, "conv1", self.features), 3, self.stride, dtype=dt, name="conv1")(x)
        y = nn.relu(batch_norm(train, dtype=dt, name="bn1")(y))
        y = conv(width_of(w, "conv2", self.features), 3, dtype=dt, name="conv2")(y)
        y = batch_norm(train, dtype=dt, name="bn2")(y)
        projection = self.projection
        if projection is None:
            projection = self.stride != 1 or x.shape[-1] != self.features
        if projection:
            if self.shortcut == "B":
                features = width_of(w, "shortcut_conv", self.features)
                x = conv(features, 1, self.stride, dtype=dt, name="shortcut_conv")(x)
                x = batch_norm(train, dtype=dt, name="shortcut_bn")(x)
            else:
                x = x[:, :: self.stride, :: self.stride, :]
                extra = y.shape[-1] - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return nn.relu(y + x)


class CifarResNet(nn.Module):
    """ResNet-``depth`` for CIFAR: conv3x3(16)-BN-ReLU, three stages of
    n = (depth - 2) / 6 basic blocks at 16/32/64 channels (strides 1, 2, 2),
    global average pooling, Dense(num_outputs). ResNet-20 has 0.27M parameters.
    ``widths`` overrides layer widths by path (``"stem_conv"``,
    ``"stage1_block1/conv1"``, ``"head"``; see ``layers.Widths``)."""

    depth: int
    num_outputs: int
    shortcut: str = "B"
    dtype: Dtype = jnp.float32
    widths: Widths = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(
                f"depth={self.depth!r} is not valid; expected 6n + 2 with n >= 1 (20, 32, 56, 110)"
            )
        check_choice("shortcut", self.shortcut, ("A", "B"))
        n = (self.depth - 2) // 6
        dt, w = self.dtype, self.widths
        x = conv(width_of(w, "stem_conv", 16), 3, dtype=dt, name="stem_conv")(to_compute(x, dt))
        x = nn.relu(batch_norm(train, dtype=dt, name="stem_bn")(x))
        previous = 16
        for stage, width in enumerate((16, 32, 64)):
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                name = f"stage{stage + 1}_block{block + 1}"
                projection = stride != 1 or previous != width
                x = BasicBlock(
                    width, stride, self.shortcut, dt, projection, widths_under(w, name), name=name
                )(x, train)
                previous = width
        x = jnp.mean(x, axis=(1, 2))
        return to_logits(dense(width_of(w, "head", self.num_outputs), dtype=dt, name="head")(x))


class WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus shortcut.
    The shortcut is the identity, or a 1x1 strided conv of the pre-activated
    input when the shape changes (as in the WRN reference code). No dropout.
    ``projection`` and ``widths`` as in :class:`BasicBlock`."""

    features: int
    stride: int = 1
    dtype: Dtype = jnp.float32
    projection: bool | None = None
    widths: Widths = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, w = self.dtype, self.widths
        pre = nn.relu(batch_norm(train, dtype=dt, name="bn1")(x))
        y = conv(width_of(w, "conv1", self.features), 3, self.stride, dtype=dt, name="conv1")(pre)
        y = nn.relu(batch_norm(train, dtype=dt, name="bn2")(y))
        y = conv(width_of(w, "conv2", self.features), 3, dtype=dt, name="conv2")(y)
        projection = self.projection
        if projection is None:
            projection = self.stride != 1 or x.shape[-1] != self.features
        if projection:
            features = width_of(w, "shortcut_conv", self.features)
            x = conv(features, 1, self.stride, dtype=dt, name="shortcut_conv")(pre)
        return y + x


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen``: conv3x3(16), three groups of
    n = (depth - 4) / 6 pre-activation blocks at 16k/32k/64k channels (strides
    1, 2, 2), BN-ReLU, global average pooling, Dense(num_outputs).
    WRN-28-2 has 1.47M parameters (DPF paper, Figure 3). ``widths`` overrides
    layer widths by path (see :class:`CifarResNet`)."""

    depth: int = 28
    widen: int = 2
    num_outputs: int = 10
    dtype: Dtype = jnp.float32
    widths: Widths = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(
                f"depth={self.depth!r} is not valid; expected 6n + 4 with n >= 1 (16, 22, 28, 40)"
            )
        if not isinstance(self.widen, int) or self.widen < 1:
            raise ValueError(f"widen={self.widen!r} is not valid; expected an integer >= 1")
        n = (self.depth - 4) // 6
        dt, w = self.dtype, self.widths
        x = conv(width_of(w, "stem_conv", 16), 3, dtype=dt, name="stem_conv")(to_compute(x, dt))
        previous = 16
        for group, width in enumerate((16, 32, 64)):
            for block in range(n):
                stride = 2 if group > 0 and block == 0 else 1
                name = f"group{group + 1}_block{block + 1}"
                features = width * self.widen
                projection = stride != 1 or previous != features
                block_widths = widths_under(w, name)
                x = WideBlock(features, stride, dt, projection, block_widths, name=name)(x, train)
                previous = features
        x = nn.relu(batch_norm(train, dtype=dt, name="final_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return to_logits(dense(width_of(w, "head", self.num_outputs), dtype=dt, name="head")(x))
