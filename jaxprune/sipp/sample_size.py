"""Size of the sample S of SiPP (METHODS.md section 4):
``|S| = ceil(C ln(8 eta_star / delta'))`` with ``delta' = delta / eta``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import jax

from jaxprune._validate import check_finite_number
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
    ``eta_star = max`` of ``output_sizes`` (LeNet-300-100: 152). Every size must
    be a whole number >= 1 (no bool, NaN, inf or fraction), ``c`` finite > 0,
    ``delta`` in (0, 1) (any such delta: the log is taken in parts, so a tiny
    one cannot overflow): else ``ValueError``.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> jp.sipp.sample_size([300, 100, 10])       # LeNet-300-100: ceil(3 ln(8 * 300 * 410 / 1e-16))
    152
    """
    raw = list(output_sizes)

    def whole(n: Any) -> bool:
        try:
            return not isinstance(n, bool) and math.isfinite(float(n)) and float(n) == int(n) and int(n) >= 1
        except (TypeError, ValueError, OverflowError):
            return False

    if not raw or not all(whole(n) for n in raw):
        raise ValueError(f"output_sizes={raw!r} must be a non-empty list of positive ints")
    sizes = [int(n) for n in raw]
    check_finite_number("c", c, low=0.0, low_open=True)
    check_finite_number("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    eta, eta_star = sum(sizes), max(sizes)
    ratio = 8.0 * eta_star * eta / delta
    log_ratio = math.log(ratio) if math.isfinite(ratio) else math.log(8.0 * eta_star * eta) - math.log(delta)
    return math.ceil(c * log_ratio)


def layer_output_sizes(
    apply_fn: Callable[[Any, jax.Array], Any], params: Any, inputs: jax.Array
) -> list[int]:
    """``eta^l`` of every dense / conv layer, in call order, from one forward
    pass on ``inputs`` (one example suffices: ``inputs[:1]``).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import flax.linen as nn, jax
    >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
    >>> x = jax.random.normal(jax.random.key(0), (32, 5))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> f = lambda p, x: model.apply({"params": p}, x)
    >>> jp.sipp.layer_output_sizes(f, params, x[:1])   # units per dense layer, in call order
    [8, 3]
    """
    layers = capture_layers(apply_fn, params, inputs)
    return [math.prod(layer.outputs.shape[1:]) for layer in layers.values()]
