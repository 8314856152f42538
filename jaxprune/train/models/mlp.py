"""Fully connected models: ``linear``, ``mlp`` (PQ-Index paper, Table 1:
in-128-256-K), ``lenet300`` (LeNet-300-100: in-300-100-K) and
``mlp_regressor`` (in-64-64-64-1 by default).

Input: any (N, ...) float array; it is flattened to (N, F) first, so images
(N, H, W, C) and tabular (N, F) inputs both work. Output: (N, num_outputs)
float32. Dense kernels are (in, out), LeCun-normal initialized; biases start
at 0. ``dtype`` is the computation dtype (params stay float32, see
``layers``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.train.models.layers import Dtype, Widths, dense, to_compute, to_logits, width_of


class MLP(nn.Module):
    """ReLU multilayer perceptron: Dense(h) + ReLU for each ``h`` in ``hidden``,
    then a linear Dense(num_outputs) head. ``hidden=()`` is a linear model.
    ``widths`` overrides layer widths by name (``"Dense_0"``, ...; see ``layers.Widths``)."""

    hidden: Sequence[int]
    num_outputs: int
    dtype: Dtype = jnp.float32
    widths: Widths = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no train/eval difference (no BatchNorm, no dropout)
        x = to_compute(x, self.dtype).reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = nn.relu(dense(width_of(self.widths, f"Dense_{i}", width), dtype=self.dtype)(x))
        head = width_of(self.widths, f"Dense_{len(self.hidden)}", self.num_outputs)
        return to_logits(dense(head, dtype=self.dtype)(x))
