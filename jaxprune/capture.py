"""Capture what each dense/conv layer of a flax linen model receives and returns,
without rewriting the model (``flax.linen.intercept_methods``).

Data-informed methods need it: ABP refits each neuron on the original layer
inputs, SiPP's sensitivities weigh each weight by its input activation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class LayerIO:
    """One layer's traffic on a batch.

    Attributes:
      path: ``/``-joined path of the layer's kernel inside ``params``
        (e.g. ``"Dense_0/kernel"``; same form as :func:`jaxprune.tree.path_str`).
      module: the intercepted module (read ``strides``, ``padding``,
        ``kernel_dilation``, ``use_bias``, ``features`` from it).
      inputs: what the layer received, shape ``(N, ..., in)``.
      outputs: what it returned (the pre-activation), shape ``(N, ..., out)``.
    """

    path: str
    module: nn.Module
    inputs: jax.Array
    outputs: jax.Array


def capture_layers(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    inputs: jax.Array,
    *,
    kinds: tuple[type[nn.Module], ...] = (nn.Dense, nn.Conv),
) -> dict[str, LayerIO]:
    """Run ``apply_fn(params, inputs)`` once and return every ``kinds`` layer's
    inputs and outputs, keyed by kernel path, in call order (input to output).

    ``apply_fn`` is any function that runs a linen model on ``params`` (the
    ``"params"`` collection), e.g. ``lambda p, x: model.apply({"params": p}, x)``.
    The forward pass is jitted (traced afresh on each call, so the layer
    metadata is always collected); inside a caller's ``jit`` it simply inlines.
    A layer applied more than once (shared weights) raises ``ValueError``.
    """
    found: list[tuple[str, nn.Module]] = []

    def forward(p: Any, x: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        found.clear()
        traffic: list[tuple[jax.Array, jax.Array]] = []

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            module = context.module
            if context.method_name == "__call__" and isinstance(module, kinds):
                path = "/".join((*module.scope.path, "kernel"))
                if any(path == seen for seen, _ in found):
                    raise ValueError(f"layer {path!r} is applied more than once; capture needs each once")
                found.append((path, module))
                traffic.append((args[0], out))
            return out

        with nn.intercept_methods(interceptor):
            apply_fn(p, x)
        return traffic

    traffic = jax.jit(forward)(params, inputs)
    return {
        path: LayerIO(path=path, module=module, inputs=x_in, outputs=y_out)
        for (path, module), (x_in, y_out) in zip(found, traffic, strict=True)
    }
