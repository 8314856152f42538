"""``masked_update``: fine-tuning / retraining with a FIXED mask."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune.transforms._common import (
    _copy_mask,
    _hidden_to_none,
    _map_masked,
    _restrict_to_visible,
)
from jaxprune.tree import (
    PyTree,
    check_mask_shapes,
    is_none,
    path_str,
)

# --------------------------------------------------------------------------- fixed mask


class MaskedState(NamedTuple):
    """State of :func:`masked_update`: the fixed mask (bool leaves, ``None`` =
    not prunable). Kept in the state, not closed over, so that it shards and
    checkpoints with the params and is not baked into the compiled step."""

    mask: PyTree


def _check_mask_leaves(params: PyTree, mask: PyTree, name: str = "mask") -> None:
    check_mask_shapes(params, mask, name)
    for path, m in jax.tree.leaves_with_path(mask, is_leaf=is_none):
        if m is not None and jnp.result_type(m) != jnp.bool_:
            raise TypeError(f"{name} leaf at {path_str(path)} must be boolean, got {jnp.result_type(m)}")


def masked_update(
    mask: PyTree, inner: optax.GradientTransformation | None = None
) -> optax.GradientTransformation:
    """Pruned coordinates (``mask`` False) get an update of exactly 0.

    ``mask``: a pytree with the params' structure, boolean arrays of the leaf
    shapes on prunable leaves and ``None`` elsewhere (``None`` leaves are left
    alone). The transformation replaces the updates it receives at pruned
    coordinates by exactly 0 (``jnp.where``, so NaN/inf cannot leak through).
    The state holds a copy of ``mask`` (donating the state leaves the caller's
    arrays intact).

    Guarantee (start from masked params, e.g. ``jp.apply_mask(params, mask)``):

    - placed LAST in the chain, or given the optimizer as ``inner`` (this
      returns ``optax.chain(inner, masked_update(mask))``): the final update
      of every pruned coordinate is 0 whatever comes before it (momentum,
      Nesterov, weight decay, Adam, a reused dense optimizer state, noise...),
      so pruned weights keep their value (0) for any number of steps. This is
      the recommended placement.
    - placed FIRST: the later transforms see a zero gradient at a zero weight
      with a zero state, so pruned weights stay exactly 0 only if every later
      transform maps that to a zero update. True for ``optax.sgd`` (with or
      without (Nesterov) momentum), ``add_decayed_weights``, ``adam``/``adamw``
      with ``eps > 0`` started from a fresh state; not for additive noise or a
      momentum state carried over from dense training.

    As a branch of ``optax.multi_transform`` (or inside ``optax.masked``),
    ``mask`` may be given for the full params or for the branch; the leaves of
    other branches must be ``None`` in it (an array there raises ``ValueError``:
    this branch cannot keep them pruned).

    >>> import jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jnp.array([1.0, 2.0, 3.0])}
    >>> tx = jp.optax.masked_update({"w": jnp.array([True, False, True])}, inner=optax.sgd(1.0))
    >>> updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    >>> updates["w"].tolist()
    [-1.0, 0.0, -1.0]
    """
    if inner is not None:
        return optax.chain(inner, masked_update(mask))

    def init_fn(params: PyTree) -> MaskedState:
        own = _restrict_to_visible(params, mask, "mask")
        _check_mask_leaves(_hidden_to_none(params), own)
        return MaskedState(mask=_copy_mask(own))

    def update_fn(
        updates: PyTree, state: MaskedState, params: PyTree | None = None
    ) -> tuple[PyTree, MaskedState]:
        del params
        zero = lambda m, u: jnp.where(m, u, jnp.zeros((), jnp.result_type(u)))
        return _map_masked(zero, state.mask, updates), state

    return optax.GradientTransformation(init_fn, update_fn)

