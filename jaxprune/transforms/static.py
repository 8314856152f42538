"""Static sparse training: a fixed random mask chosen at initialization."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from jaxprune.transforms._sparse import check_common, random_init, sparse_transform
from jaxprune.tree import PyTree


class StaticSparseState(NamedTuple):
    """State of :func:`static_sparse`: ``count`` (int32 updates so far), the
    fixed ``mask`` (bool on pruned leaves, ``None`` elsewhere) and the wrapped
    optimizer's ``inner_state``."""

    count: jax.Array
    mask: PyTree
    inner_state: Any


def static_sparse(
    inner: optax.GradientTransformation,
    sparsity: float,
    *,
    key: jax.Array,
    distribution: str = "uniform",
    prunable: PyTree | None = None,
) -> optax.GradientTransformation:
    """Train a fixed random sparse network: ``inner`` (the optimizer) wrapped so
    that only the entries of a random mask drawn at ``init`` are ever nonzero.

    The "Static" baseline of Evci et al. (2020, RigL, Section 4): each pruned
    leaf keeps exactly ``round((1 - s_l) n_l)`` random entries, with per-leaf
    sparsities ``s_l`` from :func:`jaxprune.masks.allocate` (``"uniform"``: every
    leaf at ``sparsity``; ``"erk"``: Erdos-Renyi-Kernel, the same total count).
    The entries are the per-leaf top of ``jp.masks.random(key, params)``.

    The update of an inactive entry is ``-w`` (the first update zeroes the
    inactive weights of a dense initialization; they stay exactly 0) and the
    inner optimizer sees the gradient zeroed there. Forward pass:
    ``jp.optax.sparse_params(params, opt_state)`` (or the params themselves
    after the first update).

    Args:
      inner: the optimizer, e.g. ``optax.sgd(0.1, momentum=0.9)``.
      sparsity: target fraction of zeros over the pruned leaves, in ``[0, 1)``.
      key: PRNG key of the mask.
      distribution: ``"uniform"`` | ``"erk"``.
      prunable: pruned leaves (default :func:`jaxprune.optax.paper_prunable`).

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jnp.ones((10, 10)), "b": jnp.ones(10)}
    >>> tx = jp.optax.static_sparse(optax.sgd(0.1), 0.9, key=jax.random.key(0),
    ...                             prunable={"w": True, "b": False})
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
    >>> int((optax.apply_updates(params, updates)["w"] != 0).sum())
    10
    """
    check_common(sparsity, None, distribution, key)

    init_mask = random_init(key, prunable, sparsity, distribution)

    return sparse_transform("static_sparse", inner, StaticSparseState, init_mask=init_mask)
