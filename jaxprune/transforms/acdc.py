"""AC/DC: Alternating Compressed / DeCompressed training (Peste, Iofinova,
Vladu & Alistarh, NeurIPS 2021)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxprune import masks as _masks
from jaxprune._validate import check_choice, check_number
from jaxprune.transforms._common import _static_int, paper_prunable
from jaxprune.transforms._sparse import sparse_transform
from jaxprune.tree import PyTree, full_mask, resolve_prunable


class ACDCState(NamedTuple):
    """State of :func:`acdc`: ``count`` (int32 updates so far), ``mask`` (bool on
    pruned leaves, ``None`` elsewhere; all True in dense phases) and the
    optimizer's ``inner_state``."""

    count: jax.Array
    mask: PyTree
    inner_state: Any


def acdc_phases(total_steps: int, warmup_fraction: float = 0.1, phase_fraction: float = 0.05,
                final_fraction: float = 0.15) -> tuple[int, int, int]:
    """``(warmup, phase, final_start)`` in steps: dense for ``t < warmup``; then
    phases of ``phase`` steps alternating compressed (first) and decompressed;
    compressed from ``final_start`` to the end.

    >>> import jaxprune as jp
    >>> jp.optax.acdc_phases(100)  # the paper's ImageNet schedule in epochs
    (10, 5, 85)
    """
    _static_int("total_steps", total_steps, 1)
    check_number("warmup_fraction", warmup_fraction, low=0.0, high=1.0, high_open=True)
    check_number("phase_fraction", phase_fraction, low=0.0, high=1.0, low_open=True)
    check_number("final_fraction", final_fraction, low=0.0, high=1.0, low_open=True)
    warmup = round(warmup_fraction * total_steps)
    phase = max(round(phase_fraction * total_steps), 1)
    final_start = total_steps - max(round(final_fraction * total_steps), 1)
    if final_start < warmup:
        raise ValueError(
            f"warmup_fraction={warmup_fraction} + final_fraction={final_fraction} exceed the training "
            f"({total_steps} steps): the final compressed phase would start before the dense warm-up ends"
        )
    return warmup, phase, final_start


def acdc(
    inner: optax.GradientTransformation,
    sparsity: float,
    total_steps: int,
    *,
    warmup_fraction: float = 0.1,
    phase_fraction: float = 0.05,
    final_fraction: float = 0.15,
    scope: str = "global",
    prunable: PyTree | None = None,
) -> optax.GradientTransformation:
    """AC/DC (Peste et al. 2021): a dense warm-up, then compressed (sparse) and
    decompressed (dense) phases of equal length, alternating, ending with a
    longer compressed phase.

    Phases (:func:`acdc_phases`): dense for ``t < warmup``; for ``warmup <= t <
    final_start`` phase ``k = (t - warmup) // phase`` is compressed when ``k`` is
    even; compressed for ``t >= final_start``. At the first update of every
    compressed phase (and at ``final_start``) the mask is recomputed by
    magnitude from the current weights at ``sparsity``
    (``jp.masks.topk(|w|, sparsity, scope=scope)``, ties to the lower index),
    the pruned weights are set to exactly 0 and stay 0 for the phase (their
    gradient is zeroed for the inner optimizer); at the first update of a
    decompressed phase the mask becomes all True and every weight trains again,
    the pruned ones restarting from 0. The final model is the last compressed one.

    Defaults: the paper's ImageNet schedule (100 epochs: 10 dense warm-up
    epochs, 5-epoch phases, the final compressed phase from epoch 85) as
    fractions of ``total_steps``: ``0.1``, ``0.05``, ``0.15``.

    Args:
      inner: the optimizer to wrap. sparsity: fraction of zeros in ``[0, 1)``
      in compressed phases. total_steps: training steps. warmup_fraction,
      phase_fraction, final_fraction: see above. scope: ``"global"`` |
      ``"layer"`` | ``"neuron"``. prunable: pruned leaves (default
      :func:`jaxprune.optax.paper_prunable`).

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jax.random.normal(jax.random.key(0), (10, 10))}
    >>> tx = jp.optax.acdc(optax.sgd(0.1), 0.9, 20, prunable={"w": True})
    >>> state = tx.init(params)
    >>> kept = []
    >>> for _ in range(8):
    ...     updates, state = tx.update(params, state, params)
    ...     params = optax.apply_updates(params, updates)
    ...     kept.append(int(state.mask["w"].sum()))
    >>> kept  # warm-up 2 steps, then phases of 1 step
    [100, 100, 10, 100, 10, 100, 10, 100]
    """
    check_number("sparsity", sparsity, low=0.0, high=1.0, high_open=True)
    check_choice("scope", scope, ("global", "layer", "neuron"))
    warmup, phase, final_start = acdc_phases(total_steps, warmup_fraction, phase_fraction, final_fraction)

    def compressed(t: jax.Array) -> jax.Array:
        alternating = (t >= warmup) & (((t - warmup) // phase) % 2 == 0)
        return jnp.where(t >= final_start, True, alternating)

    def due(t: jax.Array) -> jax.Array:
        prev = jnp.where(t > 0, compressed(jnp.maximum(t - 1, 0)), False)
        return (compressed(t) != prev) | (t == final_start)

    def init_mask(params: PyTree) -> PyTree:
        flags = paper_prunable(params) if prunable is None else resolve_prunable(params, prunable)
        if not any(jax.tree.leaves(flags)):
            raise ValueError("prunable selects no leaf of params: nothing to prune")
        return full_mask(params, flags)

    def mask_update(t: jax.Array, old: list, w: list, g: list, extra: tuple) -> tuple[list, tuple]:
        def compress() -> list:
            return _masks.topk([jnp.abs(x) for x in w], sparsity, scope=scope, prunable=[True] * len(w))

        def decompress() -> list:
            return [jnp.ones(m.shape, bool) for m in old]

        return lax.cond(compressed(t), compress, decompress), extra

    return sparse_transform("acdc", inner, ACDCState, init_mask=init_mask, due=due, mask_update=mask_update)
