"""Reading and writing the pruning state inside any optax state: ``get_mask``,
``set_mask``, ``sparse_params``, ``dpf_diagnostics``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.transforms._common import (
    _copy_mask,
    _map_masked,
)
from jaxprune.transforms.acdc import ACDCState
from jaxprune.transforms.dpf import DPFState
from jaxprune.transforms.dsr import DSRState
from jaxprune.transforms.masked import MaskedState
from jaxprune.transforms.rigl import RigLState
from jaxprune.transforms.set_sparse import SETState
from jaxprune.transforms.sparse_momentum import SparseMomentumState
from jaxprune.transforms.static import StaticSparseState
from jaxprune.transforms.ste import STEState
from jaxprune.tree import (
    PyTree,
    is_none,
    path_str,
    unwrap_variables,
)

# Every state type holding a ``mask`` field that get_mask / sparse_params read.
MASK_STATES: tuple[type, ...] = (
    DPFState, MaskedState, STEState, StaticSparseState, SETState, RigLState, SparseMomentumState, DSRState,
    ACDCState,
)

# --------------------------------------------------------------------------- state lookup


def _find(opt_state: PyTree, types: tuple[type, ...]) -> list[Any]:
    return [
        s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, types)) if isinstance(s, types)
    ]


def _one_state(opt_state: PyTree, types: tuple[type, ...]) -> Any:
    found = _find(opt_state, types)
    names = " or ".join(t.__name__ for t in types)
    if not found:
        raise ValueError(f"opt_state holds no {names}: build the optimizer with jp.optax.dpf / masked_update")
    if len(found) > 1:
        raise ValueError(f"opt_state holds {len(found)} {names} states; expected exactly one")
    return found[0]


def _children(node: Any) -> tuple[list[Any], Any]:
    """One level of a pytree node: its children (``None`` kept) and how to rebuild it."""
    return jax.tree.flatten(node, is_leaf=lambda x: x is not node)


def _merge_masks(a: PyTree, b: PyTree, path: str = "") -> PyTree:
    """One mask from the masks of several branches: ``None`` (this branch does
    not prune here, possibly a whole sub-tree) gives way to the other mask; two
    arrays at one leaf are an error."""
    if a is None:
        return b
    if b is None:
        return a
    if hasattr(a, "shape") or hasattr(b, "shape"):
        raise ValueError(
            f"two pruning states of opt_state both mask {path or '<root>'}; expected one mask per leaf "
            "(use one masked_update / dpf per leaf, e.g. one per multi_transform branch)"
        )
    kids_a, def_a = _children(a)
    kids_b, def_b = _children(b)
    if def_a != def_b:
        raise ValueError(f"the masks of opt_state's pruning states differ in structure at {path or '<root>'}")
    keys = [path_str(p) for p, _ in jax.tree.flatten_with_path(a, is_leaf=lambda x: x is not a)[0]]
    merged = [
        _merge_masks(x, y, f"{path}/{k}" if path else k) for x, y, k in zip(kids_a, kids_b, keys, strict=True)
    ]
    return jax.tree.unflatten(def_a, merged)


def _prefix_check(mask: PyTree, tree: PyTree, what: str) -> None:
    """``mask``'s structure (``None`` leaves included) must be a prefix of ``tree``'s."""
    try:
        jax.tree.structure(mask, is_leaf=is_none).flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what} does not match the structure of the mask: {err}") from None


def _expand(mask: PyTree, params: PyTree) -> PyTree:
    """``mask`` with ``params``' full structure: a ``None`` standing for a sub-tree
    becomes ``None`` on each of its leaves."""
    _prefix_check(mask, params, "params")
    none_like = lambda sub: jax.tree.map(lambda _: None, sub, is_leaf=is_none)
    return jax.tree.map(lambda m, sub: none_like(sub) if m is None else m, mask, params, is_leaf=is_none)


def get_mask(opt_state: PyTree, params: PyTree | None = None) -> PyTree:
    """The current mask (bool leaves, ``None`` = not prunable) held by the
    :func:`dpf` / :func:`masked_update` state anywhere inside ``opt_state``.

    Several such states (e.g. one per ``optax.multi_transform`` branch) are
    combined into one mask when they prune disjoint leaves (``ValueError`` if two
    mask the same leaf). A branch labelled by sub-tree holds a single ``None``
    for another branch's whole sub-tree; pass ``params`` to get the mask with
    the params' full structure (``None`` on each of those leaves).

    The arrays are the state's own (no copy): copy them (``jaxprune.tree.fresh_copy``)
    before a train step that donates the state if you keep them.

    >>> import jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    >>> tx = jp.optax.masked_update({"w": jnp.array([True, False, True]), "b": None})
    >>> mask = jp.optax.get_mask(optax.chain(optax.sgd(0.1), tx).init(params))
    >>> mask["w"].tolist(), mask["b"]
    ([True, False, True], None)
    """
    found = _find(opt_state, MASK_STATES)
    if not found:
        raise ValueError(
            "opt_state holds no pruning state (DPFState, MaskedState, RigLState, ...): build the optimizer "
            "with a jp.optax transformation (dpf, masked_update, rigl, set_sparse, ...)"
        )
    mask = found[0].mask
    for other in found[1:]:
        mask = _merge_masks(mask, other.mask)
    return mask if params is None else _expand(mask, params)


def set_mask(opt_state: PyTree, mask: PyTree) -> PyTree:
    """``opt_state`` with its :func:`masked_update` state(s) holding a COPY of
    ``mask`` (e.g. a new round's mask in a freshly initialized optimizer; the
    copy keeps the caller's arrays valid when a train step donates the state).
    Jittable.

    ``mask``: bool arrays with the leaf shapes, ``None`` where not pruned. With
    one ``masked_update`` state it replaces that state's mask. With several
    (e.g. one per ``optax.multi_transform`` branch), each keeps the part of
    ``mask`` on the leaves it already masks (``None`` elsewhere), and every
    array of ``mask`` must land in one of them. ``ValueError`` if ``opt_state``
    holds no ``masked_update`` state (:func:`dpf` computes its own masks), for
    non-boolean leaves or shapes that differ from the current mask's.

    >>> import jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jnp.ones(3)}
    >>> tx = optax.chain(optax.sgd(0.1), jp.optax.masked_update({"w": jnp.ones(3, bool)}))
    >>> state = jp.optax.set_mask(tx.init(params), {"w": jnp.array([False, True, True])})
    >>> jp.optax.get_mask(state)["w"].tolist()
    [False, True, True]
    """
    is_masked = lambda s: isinstance(s, MaskedState)
    states = _find(opt_state, (MaskedState,))
    if not states:
        raise ValueError(
            "set_mask: opt_state holds no MaskedState; build the optimizer with jp.optax.masked_update"
        )
    for path, m in jax.tree.leaves_with_path(mask, is_leaf=is_none):
        if m is not None and jnp.result_type(m) != jnp.bool_:
            raise TypeError(f"mask leaf at {path_str(path)} must be boolean, got {jnp.result_type(m)}")
    new = _copy_mask(mask)
    same = lambda old: jax.tree.structure(old, is_leaf=is_none) == jax.tree.structure(new, is_leaf=is_none)
    if len(states) == 1 and same(states[0].mask):
        parts = [_route(states[0].mask, new, keep_new_leaves=True)]
    else:
        parts = [_route(s.mask, new, keep_new_leaves=False) for s in states]
        placed = {p for part in parts for p in _array_paths(part)}
        lost = sorted(set(_array_paths(new)) - placed)
        if lost:
            raise ValueError(
                f"set_mask: no masked_update state of opt_state masks {lost[:5]} (with several states, e.g. "
                "one per multi_transform branch, each keeps the leaves it already masks)"
            )
    it = iter(parts)
    return jax.tree.map(lambda s: MaskedState(next(it)) if is_masked(s) else s, opt_state, is_leaf=is_masked)


def _array_paths(mask: PyTree) -> list[str]:
    return [path_str(p) for p, m in jax.tree.leaves_with_path(mask, is_leaf=is_none) if m is not None]


def _route(old: PyTree, new: PyTree, keep_new_leaves: bool) -> PyTree:
    """The part of ``new`` a state whose mask is ``old`` takes: shapes must agree
    where both hold arrays; where ``old`` is ``None`` (possibly for a sub-tree),
    ``new`` is kept only if ``keep_new_leaves`` (one state, same structure)."""
    _prefix_check(old, new, "mask")

    def one(path: tuple, o: Any, m: Any) -> Any:
        if o is None:
            return m if keep_new_leaves else None
        if m is not None and jnp.shape(o) != jnp.shape(m):
            raise ValueError(
                f"mask leaf at {path_str(path)} has shape {jnp.shape(m)}, expected {jnp.shape(o)}"
            )
        return m

    return jax.tree.map_with_path(one, old, new, is_leaf=is_none)


def sparse_params(params: PyTree, opt_state: PyTree) -> PyTree:
    """``m * w``: the params with the current mask applied (pruned entries
    exactly 0, non-prunable leaves unchanged, the same objects); the weights of
    the forward pass and of the final sparse model. Jittable, no recomputation.
    Combines the masks of several branches as :func:`get_mask` does. The result
    has ``params``' structure: Flax NNX ``nnx.Param`` params with the state of an
    ``nnx.Optimizer`` (which wraps its arrays in ``OptVariable``) stay ``nnx.Param``.

    >>> import jax.numpy as jnp, jaxprune as jp
    >>> params = {"w": jnp.array([1.0, 2.0, 3.0]), "b": jnp.ones(2)}
    >>> state = jp.optax.masked_update({"w": jnp.array([True, False, True]), "b": None}).init(params)
    >>> jp.optax.sparse_params(params, state)["w"].tolist()
    [1.0, 0.0, 3.0]
    """
    out = _map_masked(
        lambda m, w: jnp.where(m, w, jnp.zeros((), jnp.result_type(w))),
        unwrap_variables(get_mask(opt_state)),
        unwrap_variables(params),
        what="params",
    )
    treedef = jax.tree.structure(params, is_leaf=is_none)  # params' wrappers (nnx.Param), out's values
    return jax.tree.unflatten(treedef, jax.tree.leaves(out, is_leaf=is_none))


def dpf_diagnostics(opt_state: PyTree) -> dict[str, jax.Array]:
    """DPF diagnostics read from the state (no recomputation of the mask):
    ``step`` (updates done), ``target_sparsity``, ``delta`` and ``flip_fraction``
    (all as of the last mask update, see :class:`DPFState`), and ``sparsity``
    (achieved fraction of pruned entries of the current mask, over the leaves
    the dpf prunes: its ``prunable``, by default :func:`paper_prunable`, which
    on an MLP leaves the last layer out while :func:`jaxprune.summarize`'s
    default counts it; ``jp.summarize(w, prunable=get_mask(opt_state))``
    reports over the same leaves). Jittable; values are 0-d arrays.

    >>> import jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jnp.arange(1.0, 5.0)}
    >>> tx = jp.optax.dpf(0.75, update_every=1, prunable={"w": True})
    >>> _, state = tx.update(params, tx.init(params), params)
    >>> {k: round(float(v), 3) for k, v in jp.optax.dpf_diagnostics(state).items()}
    {'step': 1.0, 'target_sparsity': 0.75, 'delta': 0.467, 'flip_fraction': 0.75, 'sparsity': 0.75}
    """
    state = _one_state(opt_state, (DPFState,))
    leaves = [m for m in jax.tree.leaves(state.mask) if m is not None]
    total = sum(m.size for m in leaves)
    kept = sum((jnp.sum(m, dtype=jnp.int32) for m in leaves), jnp.zeros((), jnp.int32))
    return {
        "step": state.count,
        "target_sparsity": state.target_sparsity,
        "delta": state.delta,
        "flip_fraction": state.flip_fraction,
        "sparsity": 1.0 - kept.astype(jnp.float32) / total,
    }

