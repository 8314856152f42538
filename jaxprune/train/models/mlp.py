"""Fully connected models: ``linear``, ``mlp`` (PQ-Index paper, Table 1:
in-128-256-K), ``lenet300`` (LeNet-300-100: in-300-100-K) and
``mlp_regressor`` (in-64-64-64-1 by default).

Input: any (N, ...) float array; it is flattened to (N, F) first, so images
(N, H, W, C) and tabular (N, F) inputs both work. Output: (N, num_outputs).
Dense kernels are (in, out), LeCun-normal initialized; biases start at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """ReLU multilayer perceptron: Dense(h) + ReLU for each ``h`` in ``hidden``,
    then a linear Dense(num_outputs) head. ``hidden=()`` is a linear model."""

    hidden: Sequence[int]
    num_outputs: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no train/eval difference (no BatchNorm, no dropout)
        x = jnp.asarray(x, jnp.float32).reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_outputs)(x)
