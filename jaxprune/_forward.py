"""Tracing a model's forward pass on shapes only, shared by the MAC counter
(:func:`jaxprune.measures.cost`), the channel graph of
:mod:`jaxprune.compress` and ``experiments.compress``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax


def default_apply_kwargs(model: Any) -> dict[str, Any]:
    """``{"train": False}`` if ``model.__call__`` takes ``train``, else ``{}``."""
    try:
        params = inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {"train": False} if "train" in params else {}


def forward_jaxpr(fn: Callable[[Any, Any], Any], variables: Any, x: jax.ShapeDtypeStruct,
                  input_shape: tuple[int, ...]) -> Any:
    """``jax.make_jaxpr(fn)(variables, x)`` (nothing computed). An input that
    does not fit the model fails deep inside it (a flax/jax shape error): that
    becomes a ``ValueError`` naming ``input_shape`` (``x`` is it plus a batch axis)."""
    try:
        return jax.make_jaxpr(fn)(variables, x)
    except Exception as err:
        raise ValueError(
            f"the forward pass failed on an input of shape {tuple(x.shape)} "
            f"(input_shape={tuple(input_shape)!r} plus a batch axis of {x.shape[0]}): "
            f"{type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
