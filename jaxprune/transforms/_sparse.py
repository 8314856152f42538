"""Machinery shared by the sparse-training transformations (static sparse,
SET, RigL, Sparse Momentum, DSR, AC/DC): the initial random mask with exact
per-leaf counts, exact per-leaf top-k by count, drop-and-grow, integer
apportionment across layers, the mask-update cadence and the wrapper around
the inner optimizer.

One convention for all of them (METHODS.md section 7): the transformation
WRAPS the optimizer (``inner``) and returns its final updates, so that it can
hold every inactive weight at exactly 0. At update ``t`` with old mask ``m``
and new mask ``m'`` the returned update is ``u`` (the inner optimizer's update)
where ``m & m'`` and ``-w`` elsewhere: a dropped weight becomes exactly 0, an
inactive weight stays 0 and a regrown weight starts at exactly 0 (it gets its
first nonzero update at the next step). Mask updates run under ``lax.cond``:
other steps pay for one fused ``where`` and the (untaken) conditional. A caller
that knows on the host which steps are due (:func:`mask_update_schedule`) can
trace the other steps with ``tx.update(..., may_update_mask=False)``, which
leaves the conditional out of the program (the engine's ``Trainer`` does, given
``mask_update_due``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxprune import masks as _masks
from jaxprune._validate import check_choice, check_number
from jaxprune.masks.select import score_keys, select_columns
from jaxprune.transforms._common import _static_int, check_may_update_mask, paper_prunable
from jaxprune.tree import PyTree, is_none, path_str, resolve_prunable

DISTRIBUTIONS = ("uniform", "erk")


# --------------------------------------------------------------------------- arguments


def check_fraction(name: str, value: Any) -> None:
    """``value`` must be a number in ``[0, 1)`` (drop fraction, prune rate)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}")
    check_number(name, value, low=0.0, high=1.0, high_open=True)


def check_inner(inner: Any) -> None:
    """``inner`` must be an optax ``GradientTransformation`` (the optimizer)."""
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise TypeError(
            f"inner must be an optax.GradientTransformation (the optimizer to wrap, e.g. "
            f"optax.sgd(0.1, momentum=0.9)), got {inner!r}"
        )


def check_common(sparsity: Any, update_every: int | None, distribution: str | None, key: Any) -> None:
    check_number("sparsity", sparsity, low=0.0, high=1.0, high_open=True)
    if update_every is not None:
        _static_int("update_every", update_every, 1)
    if distribution is not None:
        check_choice("distribution", distribution, DISTRIBUTIONS)
    if key is not None and not (hasattr(key, "shape") and hasattr(key, "dtype")):
        raise TypeError(f"key must be a jax.random key, got {key!r}")


def is_update_step(t: jax.Array, update_every: int, stop: int | None = None) -> jax.Array:
    """The mask-update cadence: ``t > 0``, ``t % update_every == 0`` and (if
    given) ``t < stop``. ``t`` is the 0-based count of ``update`` calls."""
    due = (t > 0) & (t % update_every == 0)
    return due if stop is None else due & (t < stop)


# --------------------------------------------------------------------------- masks


def prunable_flags(params: PyTree, prunable: PyTree | None, distribution: str) -> PyTree:
    """Python-bool flags of the pruned leaves (default :func:`paper_prunable`).
    A pruned leaf with a zero dimension has no density: ``ValueError``."""
    flags = paper_prunable(params) if prunable is None else resolve_prunable(params, prunable)
    chosen = [(p, w) for (p, w), f in zip(jax.tree.leaves_with_path(params, is_leaf=is_none),
                                          jax.tree.leaves(flags), strict=True) if f]
    if not chosen:
        raise ValueError("prunable selects no leaf of params: nothing to prune")
    for path, w in chosen:
        if 0 in jnp.shape(w):
            raise ValueError(
                f"distribution={distribution!r}: the prunable leaf {path_str(path)} has shape {jnp.shape(w)} "
                "with a zero dimension, which has no density to allocate; exclude it with prunable="
            )
    return flags


def random_mask(key: jax.Array, params: PyTree, flags: PyTree, sparsity: float, distribution: str) -> PyTree:
    """A random mask keeping exactly ``round((1 - s_l) * n_l)`` entries of each
    pruned leaf, ``s_l`` from :func:`jaxprune.masks.allocate` (uniform or ERK):
    the top entries of ``jp.masks.random(key, params)`` per leaf."""
    allocation = _masks.allocate(params, sparsity, method=distribution, prunable=flags)
    only = jax.tree.map(lambda w, f: w if f else None, params, flags, is_leaf=is_none)
    return _masks.topk(_masks.random(key, only), allocation, scope="layer", prunable=flags)


def random_init(key: jax.Array, prunable: PyTree | None, sparsity: float, distribution: str) -> Callable:
    """``init_mask(params)``: :func:`random_mask` over :func:`prunable_flags`."""
    return lambda params: random_mask(
        key, params, prunable_flags(params, prunable, distribution), sparsity, distribution
    )


def keep_top(scores: Sequence[jax.Array], valid: Sequence[jax.Array], ks: Sequence[jax.Array]) -> list:
    """Per leaf ``l``: the ``ks[l]`` highest ``scores[l]`` among entries where
    ``valid[l]`` (exact count; all valid ones if fewer; ties -> lower flat index)."""
    keys = [score_keys(s, v).reshape(-1, 1) for s, v in zip(scores, valid, strict=True)]
    kept = select_columns(keys, [jnp.asarray(k, jnp.int32) for k in ks])
    return [k.reshape(jnp.shape(s)) for k, s in zip(kept, scores, strict=True)]


def count(m: jax.Array) -> jax.Array:
    return jnp.sum(m, dtype=jnp.int32)


def drop_and_grow(
    old: Sequence[jax.Array], w: Sequence[jax.Array], grow_scores: Sequence[jax.Array], n_drop: Sequence
) -> list:
    """Per leaf: drop the ``n_drop`` active entries of smallest ``|w|`` (keep the
    ``active - n_drop`` largest), then activate the ``n_grow`` inactive entries
    (just-dropped ones included) of largest ``grow_scores``, ``n_grow = n_drop``
    when ``n_drop`` is one sequence, else ``n_drop = (drops, grows)``."""
    drops, grows = (n_drop, n_drop) if not isinstance(n_drop, tuple) else n_drop
    keep = keep_top([jnp.abs(x) for x in w], old, [count(m) - d for m, d in zip(old, drops, strict=True)])
    grown = keep_top(grow_scores, [~k for k in keep], grows)
    return [k | g for k, g in zip(keep, grown, strict=True)]


def random_scores(key: jax.Array, t: jax.Array, shapes: Sequence[tuple[int, ...]]) -> list:
    """Random regrowth scores of update ``t``: leaf ``i`` (in the order of the
    pruned leaves) gets ``uniform(fold_in(fold_in(key, t), i), shape)``."""
    kt = jax.random.fold_in(key, t)
    return [jax.random.uniform(jax.random.fold_in(kt, i), s, jnp.float32) for i, s in enumerate(shapes)]


def apportion(weights: jax.Array, total: jax.Array, caps: jax.Array) -> jax.Array:
    """Split the integer ``total`` across layers in proportion to ``weights``
    (``(L,)`` floats >= 0; all zero: equal shares), layer ``l`` getting at most
    ``caps[l]``: layers whose share reaches their cap are filled and the rest is
    re-split among the others (water-filling, at most ``L`` rounds); the final
    shares are floored and the units left over go to the largest fractional
    parts (Hamilton's method; ties -> lower layer index). Returns int32
    ``(L,)`` summing to ``min(total, sum(caps))``."""
    weights = jnp.asarray(weights, jnp.float32)
    caps = jnp.asarray(caps, jnp.int32)
    total = jnp.minimum(jnp.asarray(total, jnp.int32), jnp.sum(caps))
    n = weights.shape[0]
    alloc = jnp.zeros(n, jnp.int32)
    free = caps > 0

    def shares(free: jax.Array, alloc: jax.Array) -> jax.Array:
        w = jnp.where(free, weights, 0.0)
        w = jnp.where(jnp.sum(w) > 0, w, free.astype(jnp.float32))
        rest = (total - jnp.sum(alloc)).astype(jnp.float32)
        return rest * w / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)

    for _ in range(n):
        over = free & (shares(free, alloc) >= (caps - alloc).astype(jnp.float32))
        alloc = jnp.where(over, caps, alloc)
        free = free & ~over
    share = shares(free, alloc)
    room = caps - alloc
    base = jnp.where(free, jnp.minimum(jnp.floor(share).astype(jnp.int32), room), 0)
    left = total - jnp.sum(alloc) - jnp.sum(base)
    frac = jnp.where(free & (base < room), share - base.astype(jnp.float32), -1.0)
    idx = jnp.arange(n)
    row, col = frac[:, None], frac[None, :]
    ahead = (col > row) | ((col == row) & (idx[None, :] < idx[:, None]))
    rank = jnp.sum(ahead, axis=1)
    return alloc + base + ((rank < left) & (frac >= 0)).astype(jnp.int32)


# --------------------------------------------------------------------------- the wrapper

MaskUpdate = Callable[[jax.Array, list, list, list, tuple], tuple[list, tuple]]


def sparse_transform(
    name: str,
    inner: optax.GradientTransformation,
    state_type: type,
    *,
    init_mask: Callable[[PyTree], PyTree],
    init_extra: Callable[[PyTree, PyTree], tuple] = lambda params, mask: (),
    due: Callable[[jax.Array], jax.Array] | None = None,
    mask_update: MaskUpdate | None = None,
    every_step: Callable[[jax.Array, list, list, list, tuple], tuple] | None = None,
    mask_grads: bool = True,
    reset_moments: bool = False,
    needs_grads: bool = False,
) -> optax.GradientTransformation:
    """The ``GradientTransformation`` of a sparse-training method.

    ``state_type``: a NamedTuple ``(count, mask, inner_state, *extra)``.
    ``init_mask(params)``: the initial mask (bool on pruned leaves, ``None``
    elsewhere). ``due(t)``: whether update ``t`` changes the mask (``None``:
    never). ``mask_update(t, old, w, g, extra) -> (new, extra)``: the new masks
    of the pruned leaves (lists in leaf order; ``g`` is the gradient received,
    or ``None`` entries unless ``needs_grads``), run under ``lax.cond`` only
    when due. ``every_step(t, old, w, g, extra) -> extra`` runs at every update
    (e.g. a momentum buffer). ``mask_grads``: the inner optimizer gets the
    gradient zeroed at inactive entries (a sparse network's gradient) instead
    of the dense one. ``reset_moments``: the inner optimizer's per-parameter
    state (found with ``optax.tree_utils.tree_map_params``) is held at 0 at
    inactive entries: it is zeroed there (old mask) as each update begins, so
    that an entry regrown at update ``t`` leaves it with state 0, exactly as a
    reset after the update would, and the weights follow the same trajectory
    (an inactive entry's state is never read: its update is ``-w``). Zeroing on
    entry rather than resetting after the update lets XLA fuse the zeroing into
    the inner update instead of copying the moments at every step.

    ``update(updates, state, params, *, may_update_mask=True)`` (an optax
    ``GradientTransformationExtraArgs``: ``optax.chain`` passes the keyword
    on): ``may_update_mask=False`` is a static promise that ``due`` is False at
    this update; the mask-update branch is then not traced at all. It is the
    caller's promise to keep (:func:`mask_update_schedule` gives ``due``):
    at a due update it would leave the mask unchanged."""
    check_inner(inner)
    extra_fields = state_type._fields[3:]

    def init_fn(params: PyTree) -> Any:
        mask = init_mask(params)
        return state_type(jnp.zeros((), jnp.int32), mask, inner.init(params), *init_extra(params, mask))

    def update_fn(
        updates: PyTree, state: Any, params: PyTree | None = None, *, may_update_mask: bool = True,
        **extra_args: Any,
    ) -> tuple[PyTree, Any]:
        if params is None:
            raise ValueError(f"{name} needs the params: call tx.update(grads, opt_state, params)")
        check_may_update_mask(may_update_mask)
        m_leaves, treedef = jax.tree.flatten(state.mask, is_leaf=is_none)
        try:
            w_leaves = treedef.flatten_up_to(params)
            g_leaves = treedef.flatten_up_to(updates)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{name}: params/updates do not match the mask's structure: {err}") from None
        idx = [i for i, m in enumerate(m_leaves) if m is not None]
        old = [m_leaves[i] for i in idx]
        w = [w_leaves[i] for i in idx]
        g = [g_leaves[i] for i in idx]
        if needs_grads:
            paths = [path_str(p) for p, _ in jax.tree.leaves_with_path(state.mask, is_leaf=is_none)]
            for i, x in zip(idx, g, strict=True):
                if not hasattr(x, "shape") or jnp.shape(x) != jnp.shape(m_leaves[i]):
                    raise ValueError(
                        f"{name} regrows by the gradient, but the updates (gradient) leaf at {paths[i]} is "
                        f"{x!r}: pass the dense gradient of the loss as tx.update(grads, opt_state, params)"
                    )
        t = state.count
        extra = tuple(getattr(state, f) for f in extra_fields)
        if every_step is not None:
            extra = every_step(t, old, w, g, extra)
        g_in = updates
        if mask_grads:
            g_flat = list(g_leaves)
            for i, m, x in zip(idx, old, g, strict=True):
                g_flat[i] = jnp.where(m, x, jnp.zeros((), jnp.result_type(x)))
            g_in = jax.tree.unflatten(treedef, g_flat)
        inner_state = state.inner_state
        if reset_moments:
            active = [False] * len(m_leaves)
            for i, m in zip(idx, old, strict=True):
                active[i] = m
            inner_state = optax.tree_utils.tree_map_params(
                inner,
                lambda x, m: x if m is False else jnp.where(m, x, jnp.zeros((), x.dtype)),
                inner_state,
                jax.tree.unflatten(treedef, active),
            )
        u, inner_state = inner.update(g_in, inner_state, params)
        new = old
        if due is not None and may_update_mask:

            def change(old: list, w: list, g: list, extra: tuple) -> tuple:
                return mask_update(t, old, w, g, extra)

            def keep(old: list, w: list, g: list, extra: tuple) -> tuple:
                return old, extra

            # Only the masks (and small extras) go through the cond: passing the optimizer
            # state through it would copy it at every step.
            new, extra = lax.cond(due(t), change, keep, old, w, g if needs_grads else [None] * len(g), extra)
        u_leaves = treedef.flatten_up_to(u)
        for i, a, b, x in zip(idx, old, new, w, strict=True):
            ui = u_leaves[i]
            u_leaves[i] = jnp.where(a & b, ui, -x).astype(jnp.result_type(ui))
        mask = list(m_leaves)
        for i, b in zip(idx, new, strict=True):
            mask[i] = b
        new_state = state_type(t + 1, jax.tree.unflatten(treedef, mask), inner_state, *extra)
        return jax.tree.unflatten(treedef, u_leaves), new_state

    update_fn.mask_update_due = due
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
