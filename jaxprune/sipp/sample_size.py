"""Size of the sample S of SiPP (METHODS.md section 4):
``|S| = ceil(C ln(8 eta_star / delta'))`` with ``delta' = delta / eta``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import jax

from jaxprune._validate import check_number
from jaxprune.capture import capture_layers


def sample_size(output_sizes: Iterable[int], *, c: float = 3.0, delta: float = 1e-16) -> int:
    """Number of points in S.

    Args:
      output_sizes: scalars each layer outputs per example (``eta^l``: a dense
        layer's units, a conv layer's ``H' * W' * filters``), e.g. from
        :func:`layer_output_sizes`.
      c: the constant C of Assumption 1 (default 3).
      delta: overall failure probability (default 1e-16, Table S1).

    Returns ``ceil(c * ln(8 * eta_star * eta / delta))`` with ``eta = sum`` and
    ``eta_star = max`` of ``output_sizes`` (LeNet-300-100: 152).
    """
    sizes = [int(n) for n in output_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"output_sizes={sizes!r} must be a non-empty list of positive ints")
    check_number("c", c, low=0.0, low_open=True)
    check_number("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    eta, eta_star = sum(sizes), max(sizes)
    return math.ceil(c * math.log(8.0 * eta_star * eta / delta))


def layer_output_sizes(
    apply_fn: Callable[[Any, jax.Array], Any], params: Any, inputs: jax.Array
) -> list[int]:
    """``eta^l`` of every dense / conv layer, in call order, from one forward
    pass on ``inputs`` (one example suffices: ``inputs[:1]``)."""
    layers = capture_layers(apply_fn, params, inputs)
    return [math.prod(layer.outputs.shape[1:]) for layer in layers.values()]
