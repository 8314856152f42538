"""RigL: Rigging the Lottery (Evci, Gale, Menick, Castro & Elsen, ICML 2020)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune._validate import check_number
from jaxprune.transforms._common import _static_int
from jaxprune.transforms._sparse import (
    check_common,
    check_fraction,
    count,
    drop_and_grow,
    is_update_step,
    random_init,
    sparse_transform,
)
from jaxprune.tree import PyTree


class RigLState(NamedTuple):
    """State of :func:`rigl`: ``count`` (int32 updates so far), ``mask`` (bool on
    pruned leaves, ``None`` elsewhere) and the optimizer's ``inner_state``."""

    count: jax.Array
    mask: PyTree
    inner_state: Any


def rigl_drop_fraction(drop_fraction: float, end_step: int) -> optax.Schedule:
    """RigL's drop-fraction schedule: ``zeta/2 * (1 + cos(pi t / end_step))``
    for ``t < end_step``, 0 after (``optax.cosine_decay_schedule``).

    >>> import jaxprune as jp
    >>> f = jp.optax.rigl_drop_fraction(0.3, 100)
    >>> [round(float(f(t)), 4) for t in (0, 50, 100, 150)]
    [0.3, 0.15, 0.0, 0.0]
    """
    check_number("drop_fraction", drop_fraction, low=0.0, high=1.0)
    _static_int("end_step", end_step, 1)
    return optax.cosine_decay_schedule(float(drop_fraction), int(end_step), alpha=0.0)


def rigl(
    inner: optax.GradientTransformation,
    sparsity: float,
    total_steps: int,
    *,
    key: jax.Array,
    drop_fraction: float = 0.3,
    update_every: int = 100,
    end_fraction: float = 0.75,
    distribution: str = "erk",
    prunable: PyTree | None = None,
    reset_moments: bool = True,
) -> optax.GradientTransformation:
    """RigL (Evci et al. 2020, Algorithm 1): every ``Delta T`` steps, per pruned
    leaf, drop the active weights of smallest magnitude and regrow as many where
    the magnitude of the dense gradient is largest; regrown weights start at 0
    and their optimizer moments are reset.

    Rule at update ``t`` (``t > 0``, ``t % update_every == 0``, ``t < end_step =
    round(end_fraction * total_steps)``), per leaf with ``a`` active entries:
    ``d = floor(zeta_t * a)`` with ``zeta_t`` from :func:`rigl_drop_fraction`
    (cosine decay of ``drop_fraction`` to 0 at ``end_step``); keep the ``a - d``
    largest ``|w|`` among the active entries, then activate the ``d`` entries
    with the largest ``|g|`` among those inactive after the drop (``g``: the
    gradient this transformation receives, i.e. of the loss at the sparse
    weights ``m * w``: pass the DENSE gradient, not one masked by the chain
    rule of ``m * w``). Ties: lower flat index. A newly active weight is exactly
    0 after the update and, with ``reset_moments``, every per-parameter state
    of ``inner`` (momentum, Adam's moments) is 0 there
    (``optax.tree_utils.tree_map_params``; the state is held at 0 at every
    inactive entry, which gives the regrown ones 0). The inner optimizer sees the
    gradient zeroed at inactive entries; an inactive weight's update is ``-w``.

    Defaults are the paper's: ERK initial densities (each leaf keeps its count),
    ``zeta = 0.3``, ``Delta T = 100``, updates stop at 75% of training. The dense
    gradient is only read on update steps (the other steps pay nothing for it).

    Args:
      inner: the optimizer to wrap. sparsity: fraction of zeros in ``[0, 1)``.
      total_steps: training steps (for the schedule). key: PRNG key of the
      initial mask. drop_fraction: ``zeta`` in ``[0, 1)``. update_every:
      ``Delta T >= 1``. end_fraction: in ``(0, 1]``. distribution: ``"erk"`` |
      ``"uniform"``. prunable: pruned leaves (default
      :func:`jaxprune.optax.paper_prunable`). reset_moments: see above.

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jax.random.normal(jax.random.key(1), (20, 10))}
    >>> tx = jp.optax.rigl(optax.sgd(0.1, momentum=0.9), 0.8, 10, key=jax.random.key(0),
    ...                    update_every=2, prunable={"w": True})
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.ones((20, 10))}
    >>> for _ in range(3):
    ...     updates, state = tx.update(grads, state, params)
    ...     params = optax.apply_updates(params, updates)
    >>> int(state.mask["w"].sum())
    40
    """
    check_common(sparsity, update_every, distribution, key)
    check_fraction("drop_fraction", drop_fraction)
    _static_int("total_steps", total_steps, 1)
    check_number("end_fraction", end_fraction, low=0.0, high=1.0, low_open=True)
    end_step = max(round(end_fraction * total_steps), 1)
    zeta = rigl_drop_fraction(drop_fraction, end_step)

    init_mask = random_init(key, prunable, sparsity, distribution)

    def mask_update(t: jax.Array, old: list, w: list, g: list, extra: tuple) -> tuple[list, tuple]:
        z = jnp.asarray(zeta(t), jnp.float32)
        drops = [jnp.floor(z * count(m).astype(jnp.float32)).astype(jnp.int32) for m in old]
        return drop_and_grow(old, w, [jnp.abs(x) for x in g], drops), extra

    return sparse_transform(
        "rigl", inner, RigLState, init_mask=init_mask, mask_update=mask_update,
        due=lambda t: is_update_step(t, update_every, end_step), reset_moments=reset_moments,
        needs_grads=True,
    )
