"""DSR: Dynamic Sparse Reparameterization (Mostafa & Wang, ICML 2019)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune._validate import check_number
from jaxprune.transforms._sparse import (
    apportion,
    check_common,
    check_fraction,
    count,
    is_update_step,
    keep_top,
    random_init,
    random_scores,
    sparse_transform,
)
from jaxprune.tree import PyTree


class DSRState(NamedTuple):
    """State of :func:`dsr`: ``count`` (int32 updates so far), ``mask`` (bool on
    pruned leaves, ``None`` elsewhere), the optimizer's ``inner_state``,
    ``threshold`` (float32 ``H``, the adaptive global magnitude threshold) and
    ``pruned`` (int32 ``K``, the number pruned at the last update)."""

    count: jax.Array
    mask: PyTree
    inner_state: Any
    threshold: jax.Array
    pruned: jax.Array


def dsr(
    inner: optax.GradientTransformation,
    sparsity: float,
    *,
    key: jax.Array,
    target_pruned: float = 0.1,
    tolerance: float = 0.1,
    threshold: float = 1e-3,
    update_every: int = 100,
    distribution: str = "uniform",
    prunable: PyTree | None = None,
) -> optax.GradientTransformation:
    """DSR (Mostafa & Wang 2019, Algorithm 1): prune by an adaptive global
    magnitude threshold, reallocate the freed parameters across layers in
    proportion to their surviving counts and regrow them at random.

    Rule at update ``t`` (``t > 0``, ``t % update_every == 0``) with threshold ``H``:

    1. in every pruned leaf ``l``, prune the active weights with ``|w| < H``:
       ``k_l`` pruned, ``s_l = a_l - k_l`` survive; ``K = sum_l k_l``;
    2. adapt ``H`` for the next update: ``2H`` if ``K < (1 - delta) N_p``,
       ``H / 2`` if ``K > (1 + delta) N_p``, else unchanged;
    3. regrow ``K`` weights, split across leaves in proportion to ``s_l`` with
       leaf ``l`` taking at most its inactive count (capped water-filling,
       largest remainders, ties to the lower leaf), each at the inactive entries
       of largest ``uniform(fold_in(fold_in(key, t), l))`` draw (just-pruned
       ones included); regrown weights start at exactly 0.

    So the total number of active weights stays at the target after every
    update. ``N_p = round(target_pruned * A)`` with ``A`` the total active count
    (``target_pruned`` may also be an int: ``N_p`` itself). The inner optimizer
    sees the gradient zeroed at inactive entries; inactive weights are held at 0.

    Defaults: ``delta = 0.1`` and ``H(0) = 0.001`` are the paper's; the paper
    gives ``N_p`` as an absolute count per network (e.g. 20,000 for WRN-28-2),
    here 10% of the active weights by default (our choice, not the paper's),
    and ``Delta T = 100`` steps (the paper reparameterizes every few hundred
    iterations). Initial densities: uniform (``distribution="erk"`` available).

    Args:
      inner: the optimizer to wrap. sparsity: fraction of zeros in ``[0, 1)``.
      key: PRNG key (initial mask and regrowth). target_pruned: ``N_p`` as a
      fraction in ``[0, 1)`` of the active weights or an int >= 0. tolerance:
      ``delta`` in ``[0, 1)``. threshold: ``H(0) > 0``. update_every: ``>= 1``.
      distribution: ``"uniform"`` | ``"erk"``. prunable: pruned leaves.

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"a": jax.random.normal(jax.random.key(1), (20, 10)),
    ...           "b": jax.random.normal(jax.random.key(2), (10, 10))}
    >>> tx = jp.optax.dsr(optax.sgd(0.1), 0.8, key=jax.random.key(0), threshold=0.5, update_every=2,
    ...                   prunable={"a": True, "b": True})
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...     updates, state = tx.update(params, state, params)
    ...     params = optax.apply_updates(params, updates)
    >>> int(state.mask["a"].sum() + state.mask["b"].sum()), float(state.threshold)
    (60, 0.25)
    """
    check_common(sparsity, update_every, distribution, key)
    if isinstance(target_pruned, int) and not isinstance(target_pruned, bool):
        check_number("target_pruned", target_pruned, low=0)
    else:
        check_fraction("target_pruned", target_pruned)
    check_fraction("tolerance", tolerance)
    check_number("threshold", threshold, low=0.0, low_open=True)

    init_mask = random_init(key, prunable, sparsity, distribution)

    def init_extra(params: PyTree, mask: PyTree) -> tuple:
        return jnp.full((), threshold, jnp.float32), jnp.zeros((), jnp.int32)

    def mask_update(t: jax.Array, old: list, w: list, g: list, extra: tuple) -> tuple[list, tuple]:
        h = extra[0]
        keep = [m & (jnp.abs(x).astype(jnp.float32) >= h) for m, x in zip(old, w, strict=True)]
        pruned = [count(m) - count(k) for m, k in zip(old, keep, strict=True)]
        total_pruned = sum(pruned)
        if isinstance(target_pruned, float):
            n_p = jnp.round(jnp.float32(target_pruned) * sum(count(m) for m in old).astype(jnp.float32))
        else:
            n_p = jnp.float32(target_pruned)
        k = total_pruned.astype(jnp.float32)
        h = jnp.where(k < (1 - tolerance) * n_p, 2 * h, jnp.where(k > (1 + tolerance) * n_p, h / 2, h))
        survivors = jnp.stack([count(x) for x in keep]).astype(jnp.float32)
        caps = jnp.stack([x.size - count(x) for x in keep])
        grows = apportion(survivors, total_pruned, caps)
        grown = keep_top(random_scores(key, t, [m.shape for m in old]), [~x for x in keep],
                         [grows[i] for i in range(len(old))])
        return [a | b for a, b in zip(keep, grown, strict=True)], (h, total_pruned)

    return sparse_transform(
        "dsr", inner, DSRState, init_mask=init_mask, init_extra=init_extra,
        due=lambda t: is_update_step(t, update_every), mask_update=mask_update,
    )
