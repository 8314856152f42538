"""Straight-through estimator (STE) sparse training: the mask recomputed at
every step, gradients applied to the dense weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune import masks as _masks
from jaxprune._validate import check_choice
from jaxprune.transforms._common import Schedule, _as_schedule, _scorer_args, paper_prunable
from jaxprune.tree import PyTree, full_mask, is_none, resolve_prunable


class STEState(NamedTuple):
    """State of :func:`ste`: ``count`` (int32 updates so far) and ``mask`` (bool
    on pruned leaves, ``None`` elsewhere), the mask of the params passed to the
    last update."""

    count: jax.Array
    mask: PyTree


def ste(
    schedule: float | Schedule,
    *,
    scorer: Callable[..., PyTree] = _masks.magnitude,
    scope: str = "global",
    prunable: PyTree | None = None,
    key: jax.Array | None = None,
) -> optax.GradientTransformation:
    """Straight-through sparse training (magnitude or random pruning, as in
    JaxPruner's STE; Bengio et al. 2013 for the estimator): at EVERY update
    ``t`` the mask is recomputed from the dense params ``w_t`` at sparsity
    ``schedule(t)`` (``jp.masks.topk(scorer(w_t), schedule(t), scope=scope)``)
    and the updates pass through unchanged: the gradient taken at the masked
    weights ``m * w`` is applied to the dense ``w`` (the straight-through
    estimator of the masking). Place it first in the chain (it only reads).

    With the magnitude scorer this IS DPF with ``update_every = 1`` (Lin et
    al. 2020, whose reparametrization period p = 1 recomputes the mask every
    step); both produce bitwise the same masks and params (tested). The timing
    is DPF's: the mask of ``w_t`` serves the forward pass of step ``t + 1``;
    the initial mask keeps everything.

    Args:
      schedule: target sparsity (constant in ``[0, 1]`` or a jittable step ->
        sparsity callable, checked as in :func:`jaxprune.optax.dpf`).
      scorer: ``scorer(params)`` or ``scorer(key, params)`` (e.g.
        ``jp.masks.random``: STE random pruning, ``key = fold_in(key, t)``).
      scope: ``"global"`` | ``"layer"`` | ``"neuron"``.
      prunable: pruned leaves (default :func:`jaxprune.optax.paper_prunable`).
      key: PRNG key, required by scorers that take one.

    >>> import jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jnp.arange(10.0).reshape(2, 5)}
    >>> tx = optax.chain(jp.optax.ste(0.6, prunable={"w": True}), optax.sgd(0.1))
    >>> state = tx.init(params)
    >>> _, state = tx.update(params, state, params)
    >>> jp.optax.get_mask(state)["w"].astype(int).tolist()
    [[0, 0, 0, 0, 0], [0, 1, 1, 1, 1]]
    """
    check_choice("scope", scope, ("global", "layer", "neuron"))
    schedule_fn, _ = _as_schedule(schedule, 1)
    arg_names = _scorer_args(scorer)
    if "grads" in arg_names:
        raise ValueError("ste scores the params only: scorer must take (params) or (key, params)")
    if "key" in arg_names and key is None:
        raise ValueError(f"scorer {getattr(scorer, '__name__', scorer)!r} takes a PRNG key: pass key=")

    def init_fn(params: PyTree) -> STEState:
        flags = paper_prunable(params) if prunable is None else resolve_prunable(params, prunable)
        if not any(jax.tree.leaves(flags)):
            raise ValueError("prunable selects no leaf of params: nothing to prune")
        return STEState(jnp.zeros((), jnp.int32), full_mask(params, flags))

    def update_fn(updates: PyTree, state: STEState, params: PyTree | None = None) -> tuple[PyTree, STEState]:
        if params is None:
            raise ValueError("ste needs the params: call tx.update(grads, opt_state, params)")
        t = state.count
        sparsity = jnp.clip(jnp.reshape(jnp.asarray(schedule_fn(t), jnp.float32), ()), 0.0, 1.0)
        only = jax.tree.map(lambda m, w: None if m is None else w, state.mask, params, is_leaf=is_none)
        inputs = {"params": only, "key": None if key is None else jax.random.fold_in(key, t)}
        scores = scorer(*(inputs[name] for name in arg_names))
        mask = _masks.topk(scores, sparsity, scope=scope, prunable=state.mask)
        return updates, STEState(t + 1, mask)

    return optax.GradientTransformation(init_fn, update_fn)
