"""Capture what each dense/conv layer of a Flax model (linen or NNX) receives
and returns, without rewriting the model.

Data-informed methods need it: ABP refits each neuron on the original layer
inputs, SiPP's sensitivities weigh each weight by its input activation.

- linen (``nn.Dense``, ``nn.Conv``): ``flax.linen.intercept_methods``; the
  layer's kernel path is its scope path plus ``kernel``.
- NNX (``nnx.Linear``, ``nnx.Conv``): NNX has no method interception, so for
  the duration of the traced forward pass the ``__call__`` of these classes is
  wrapped (and restored afterwards, under a lock); a layer is identified by its
  kernel, which must be one of the ``params`` arrays handed to ``apply_fn``
  (``nnx.merge(graphdef, params, rest)`` keeps them), and named by that leaf's
  path in ``params`` (:func:`jaxprune.tree.leaves_with_paths`, e.g.
  ``"l1/kernel"``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from jaxprune.tree import leaves_with_paths

LINEN_KINDS: tuple[type, ...] = (nn.Dense, nn.Conv)
NNX_KINDS: tuple[type, ...] = (nnx.Linear, nnx.Conv)
_PATCH_LOCK = threading.RLock()


@dataclasses.dataclass(frozen=True)
class LayerIO:
    """One layer's traffic on a batch.

    Attributes:
      path: ``/``-joined path of the layer's kernel inside ``params``
        (e.g. ``"Dense_0/kernel"``; same form as :func:`jaxprune.tree.leaves_with_paths`).
      module: the layer (linen or NNX module: read ``strides``, ``padding``,
        ``kernel_dilation``, ``input_dilation``, ``feature_group_count`` from it).
      inputs: what the layer received, shape ``(N, ..., in)``.
      outputs: what it returned (the pre-activation), shape ``(N, ..., out)``.
    """

    path: str
    module: nn.Module | nnx.Module
    inputs: jax.Array
    outputs: jax.Array


def module_apply_fn(model: nnx.Module) -> Callable[[Any, jax.Array], Any]:
    """``apply_fn(params, x)`` for an NNX model: ``nnx.merge`` of the model's
    graph and non-``Param`` state with ``params`` (an ``nnx.State`` of its
    ``nnx.Param`` variables, e.g. ``nnx.state(model, nnx.Param)``), called on ``x``.
    The model itself is not modified."""
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    return lambda params, x: nnx.merge(graphdef, params, rest)(x)


def capture_layers(
    apply_fn: Callable[[Any, jax.Array], Any] | nnx.Module,
    params: Any,
    inputs: jax.Array,
    *,
    kinds: tuple[type, ...] = LINEN_KINDS + NNX_KINDS,
) -> dict[str, LayerIO]:
    """Run ``apply_fn(params, inputs)`` once and return every ``kinds`` layer's
    inputs and outputs, keyed by kernel path, in call order (input to output).

    ``apply_fn`` runs a model on ``params``: for linen the ``"params"``
    collection, e.g. ``lambda p, x: model.apply({"params": p}, x)``; for NNX
    an ``nnx.State`` of the ``nnx.Param`` variables, e.g.
    ``lambda p, x: nnx.merge(graphdef, p, rest)(x)``, or the NNX model itself
    (see :func:`module_apply_fn`). The forward pass is jitted (traced afresh on
    each call, so the layer metadata is always collected); inside a caller's
    ``jit`` it simply inlines. A layer applied more than once (shared weights)
    raises ``ValueError``; so does an NNX forward pass whose ``nnx.Linear`` /
    ``nnx.Conv`` layers all run on kernels that are not ``params`` arrays
    (``apply_fn`` transformed them: capture would find nothing).

    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(3)(x))
    ...         return nn.Dense(2)(h)
    >>> x = jax.numpy.ones((4, 5))
    >>> params = Net().init(jax.random.key(0), x)["params"]
    >>> layers = capture_layers(lambda p, v: Net().apply({"params": p}, v), params, x)
    >>> [(k, v.inputs.shape) for k, v in layers.items()]
    [('Dense_0/kernel', (4, 5)), ('Dense_1/kernel', (4, 3))]
    """
    if isinstance(apply_fn, nnx.Module):
        apply_fn = module_apply_fn(apply_fn)
    linen_kinds = tuple(k for k in kinds if issubclass(k, nn.Module))
    nnx_kinds = tuple(k for k in kinds if issubclass(k, nnx.Module))
    found: list[tuple[str, Any]] = []
    unmatched: list[str] = []

    def forward(p: Any, x: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        found.clear()
        unmatched.clear()
        traffic: list[tuple[jax.Array, jax.Array]] = []
        kernel_paths = {id(leaf): path for path, leaf in leaves_with_paths(p) if leaf is not None}

        def record(path: str, module: Any, x_in: jax.Array, out: jax.Array) -> None:
            if any(path == seen for seen, _ in found):
                raise ValueError(f"layer {path!r} is applied more than once; capture needs each once")
            found.append((path, module))
            traffic.append((x_in, out))

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            module = context.module
            if context.method_name == "__call__" and isinstance(module, linen_kinds):
                record("/".join((*module.scope.path, "kernel")), module, args[0], out)
            return out

        def nnx_call(original: Callable, module: Any, x_in: jax.Array, *args: Any, **kwargs: Any) -> Any:
            out = original(module, x_in, *args, **kwargs)
            path = kernel_paths.get(id(module.kernel.get_value()))
            if path is None:
                unmatched.append(type(module).__name__)
            else:
                record(path, module, x_in, out)
            return out

        with nn.intercept_methods(interceptor), _wrapped_calls(nnx_kinds, nnx_call):
            apply_fn(p, x)
        return traffic

    traffic = jax.jit(forward)(params, inputs)
    if unmatched and not found:
        raise ValueError(
            f"apply_fn called {len(unmatched)} NNX layers ({sorted(set(unmatched))}) whose kernels are not "
            "arrays of params: pass the nnx.Param state the model runs on and let apply_fn hand it to the "
            "model unchanged, e.g. apply_fn=lambda p, x: nnx.merge(graphdef, p, rest)(x) with "
            "graphdef, params, rest = nnx.split(model, nnx.Param, ...), or pass the model as apply_fn"
        )
    return {
        path: LayerIO(path=path, module=module, inputs=x_in, outputs=y_out)
        for (path, module), (x_in, y_out) in zip(found, traffic, strict=True)
    }


@contextlib.contextmanager
def _wrapped_calls(classes: tuple[type, ...], hook: Callable[..., Any]) -> Iterator[None]:
    """``cls.__call__`` of each class in ``classes`` becomes
    ``hook(original, self, *args, **kwargs)`` until exit (restored on any exit;
    the lock keeps concurrent captures from interleaving their patches)."""
    if not classes:
        yield
        return

    def wrapper(original: Callable) -> Callable:
        return lambda module, *args, **kwargs: hook(original, module, *args, **kwargs)

    with _PATCH_LOCK:
        saved = [(cls, cls.__dict__.get("__call__")) for cls in classes]
        try:
            for cls, _ in saved:
                cls.__call__ = wrapper(cls.__call__)
            yield
        finally:
            for cls, original in reversed(saved):
                if original is None:
                    del cls.__call__
                else:
                    cls.__call__ = original
