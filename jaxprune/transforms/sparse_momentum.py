"""Sparse Momentum (Dettmers & Zettlemoyer 2019, "Sparse Networks from Scratch")."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune._validate import check_number
from jaxprune.transforms._common import _static_int
from jaxprune.transforms._sparse import (
    apportion,
    check_common,
    check_fraction,
    count,
    drop_and_grow,
    is_update_step,
    random_init,
    sparse_transform,
)
from jaxprune.tree import PyTree


class SparseMomentumState(NamedTuple):
    """State of :func:`sparse_momentum`: ``count`` (int32 updates so far),
    ``mask`` (bool on pruned leaves, ``None`` elsewhere), the optimizer's
    ``inner_state`` and ``momentum``: the list of momentum buffers of the pruned
    leaves (in leaf order), ``M <- beta M + g`` of the dense gradients."""

    count: jax.Array
    mask: PyTree
    inner_state: Any
    momentum: list


def sparse_momentum(
    inner: optax.GradientTransformation,
    sparsity: float,
    total_steps: int,
    *,
    key: jax.Array,
    prune_rate: float = 0.5,
    update_every: int = 100,
    momentum: float = 0.9,
    distribution: str = "uniform",
    prunable: PyTree | None = None,
) -> optax.GradientTransformation:
    """Sparse Momentum (Dettmers & Zettlemoyer 2019, Algorithm 1): prune the
    smallest weights of every layer at a cosine-decayed prune rate, redistribute
    the pruned count across layers by their mean momentum magnitude and regrow
    where the momentum is largest.

    Rule at update ``t`` (``t > 0``, ``t % update_every == 0``), with prune rate
    ``p_t = prune_rate/2 * (1 + cos(pi t / total_steps))`` and ``a_l`` active
    entries in leaf ``l``:

    1. contribution ``c_l = mean(|M_l|)`` over the active entries of leaf ``l``
       (``M``: the momentum buffer, below), normalized over the leaves;
    2. prune ``r_l = ceil(p_t * a_l)`` (float32 product) active entries of
       smallest ``|w|`` per leaf (ties: the higher flat index goes);
    3. regrow ``R = sum_l r_l`` entries, split across leaves in proportion to
       ``c_l`` with leaf ``l`` taking at most its inactive count after the drop
       (:func:`jaxprune.transforms._sparse.apportion`: capped water-filling,
       largest remainders, ties to the lower leaf), in each leaf at the
       inactive entries of largest ``|M|`` (just-pruned ones included).

    So the total number of active weights (the total density) is the same after
    every update; per-leaf densities move. Regrown weights start at exactly 0.
    The momentum buffer is the transformation's own ``M <- momentum * M + g`` of
    the DENSE gradient it receives (PyTorch SGD's buffer without weight decay;
    the paper reads the optimizer's), and the inner optimizer also gets the
    dense gradient (as in the paper's code, whose momentum is dense); inactive
    weights are held at 0 (update ``-w``).

    Defaults: prune rate 0.5 decayed by cosine to 0 at the end of training,
    momentum 0.9, uniform initial densities (the paper's). The paper updates at
    the end of every epoch: pass the steps per epoch as ``update_every``.

    Args:
      inner: the optimizer to wrap. sparsity: fraction of zeros in ``[0, 1)``.
      total_steps: training steps. key: PRNG key of the initial mask.
      prune_rate: in ``[0, 1)``. update_every: ``>= 1``. momentum: in ``[0, 1)``.
      distribution: ``"uniform"`` | ``"erk"``. prunable: pruned leaves.

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"a": jax.random.normal(jax.random.key(1), (20, 10)),
    ...           "b": jax.random.normal(jax.random.key(2), (10, 10))}
    >>> tx = jp.optax.sparse_momentum(optax.sgd(0.1), 0.8, 10, key=jax.random.key(0), update_every=2,
    ...                               prunable={"a": True, "b": True})
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...     updates, state = tx.update(jax.tree.map(jnp.sign, params), state, params)
    ...     params = optax.apply_updates(params, updates)
    >>> int(state.mask["a"].sum() + state.mask["b"].sum())
    60
    """
    check_common(sparsity, update_every, distribution, key)
    check_fraction("prune_rate", prune_rate)
    check_fraction("momentum", momentum)
    _static_int("total_steps", total_steps, 1)
    check_number("total_steps", total_steps, low=1)
    rate = optax.cosine_decay_schedule(float(prune_rate), int(total_steps), alpha=0.0)
    beta = jnp.float32(momentum)

    init_mask = random_init(key, prunable, sparsity, distribution)

    def init_extra(params: PyTree, mask: PyTree) -> tuple:
        leaves = [m for m in jax.tree.leaves(mask)]
        return ([jnp.zeros(m.shape, jnp.float32) for m in leaves],)

    def every_step(t: jax.Array, old: list, w: list, g: list, extra: tuple) -> tuple:
        return ([beta * mo + x.astype(jnp.float32) for mo, x in zip(extra[0], g, strict=True)],)

    def mask_update(t: jax.Array, old: list, w: list, g: list, extra: tuple) -> tuple[list, tuple]:
        mom = extra[0]
        p = jnp.asarray(rate(t), jnp.float32)
        active = [count(m) for m in old]
        contrib = jnp.stack([
            jnp.sum(jnp.where(m, jnp.abs(mo), 0.0)) / jnp.maximum(a, 1).astype(jnp.float32)
            for m, mo, a in zip(old, mom, active, strict=True)
        ])
        drops = [jnp.ceil(p * a.astype(jnp.float32)).astype(jnp.int32) for a in active]
        caps = jnp.stack([m.size - a + d for m, a, d in zip(old, active, drops, strict=True)])
        grows = apportion(contrib, sum(drops), caps)
        new = drop_and_grow(old, w, [jnp.abs(mo) for mo in mom], (drops, [grows[i] for i in range(len(old))]))
        return new, extra

    return sparse_transform(
        "sparse_momentum", inner, SparseMomentumState, init_mask=init_mask, init_extra=init_extra,
        due=lambda t: is_update_step(t, update_every), mask_update=mask_update, every_step=every_step,
        mask_grads=False, needs_grads=True,
    )
