"""SET: Sparse Evolutionary Training (Mocanu et al., Nature Communications 2018)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune.transforms._sparse import (
    check_common,
    check_fraction,
    count,
    drop_and_grow,
    is_update_step,
    random_init,
    random_scores,
    sparse_transform,
)
from jaxprune.tree import PyTree


class SETState(NamedTuple):
    """State of :func:`set_sparse`: ``count`` (int32 updates so far), ``mask``
    (bool on pruned leaves, ``None`` elsewhere) and the optimizer's ``inner_state``."""

    count: jax.Array
    mask: PyTree
    inner_state: Any


def set_sparse(
    inner: optax.GradientTransformation,
    sparsity: float,
    *,
    key: jax.Array,
    drop_fraction: float = 0.3,
    update_every: int = 100,
    distribution: str = "uniform",
    prunable: PyTree | None = None,
    reset_moments: bool = False,
) -> optax.GradientTransformation:
    """SET (Mocanu et al. 2018): every ``update_every`` steps, in every pruned
    leaf, drop the fraction ``zeta`` of the active weights with the smallest
    magnitude and regrow as many at random among the inactive ones.

    Rule at update ``t`` (``t > 0``, ``t % update_every == 0``), per leaf with
    ``a`` active entries: ``d = floor(zeta * a)`` (float32 product); keep the
    ``a - d`` largest ``|w|`` among the active entries (ties: lower flat index
    kept), then activate the ``d`` entries with the largest
    ``uniform(fold_in(fold_in(key, t), i))`` draw (``i``: index of the leaf
    among the pruned ones) among the entries inactive after the drop (a just
    dropped entry can be drawn again: it then stays active with its value).
    Newly active weights start at exactly 0. Each leaf's density stays at its
    initial allocation (``"uniform"`` as in the paper, or ``"erk"``).

    Defaults: ``zeta = 0.3`` (the paper's value); the paper evolves the topology
    after every epoch, here every ``update_every = 100`` steps (RigL's ``Delta T``;
    pass the steps per epoch for the paper's cadence). The paper removes the
    fraction ``zeta`` of the smallest positive and of the largest negative
    weights; here the smallest magnitudes overall (as in RigL's SET baseline).
    ``reset_moments=True`` zeroes the optimizer moments of regrown weights (not
    in the paper). The inner optimizer sees the gradient zeroed at inactive
    entries; an inactive weight's update is ``-w`` (held at 0).

    Args:
      inner: the optimizer to wrap. sparsity: fraction of zeros in ``[0, 1)``.
      key: PRNG key (initial mask and regrowth). drop_fraction: ``zeta`` in
      ``[0, 1)``. update_every: ``Delta T >= 1``. distribution: ``"uniform"`` |
      ``"erk"``. prunable: pruned leaves (default
      :func:`jaxprune.optax.paper_prunable`).

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jax.random.normal(jax.random.key(1), (20, 10))}
    >>> tx = jp.optax.set_sparse(optax.sgd(0.1), 0.8, key=jax.random.key(0), update_every=2,
    ...                          prunable={"w": True})
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...     updates, state = tx.update(params, state, params)
    ...     params = optax.apply_updates(params, updates)
    >>> int(state.mask["w"].sum()), int((params["w"] != 0).sum()) <= 40
    (40, True)
    """
    check_common(sparsity, update_every, distribution, key)
    check_fraction("drop_fraction", drop_fraction)
    zeta = jnp.float32(drop_fraction)

    init_mask = random_init(key, prunable, sparsity, distribution)

    def mask_update(t: jax.Array, old: list, w: list, g: list, extra: tuple) -> tuple[list, tuple]:
        drops = [jnp.floor(zeta * count(m).astype(jnp.float32)).astype(jnp.int32) for m in old]
        return drop_and_grow(old, w, random_scores(key, t, [m.shape for m in old]), drops), extra

    return sparse_transform(
        "set_sparse", inner, SETState, init_mask=init_mask,
        due=lambda t: is_update_step(t, update_every), mask_update=mask_update, reset_moments=reset_moments,
    )
