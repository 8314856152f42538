"""Pytree plumbing shared by every method: leaf paths, the prunable filter,
masks with ``None`` leaves, and density summaries.

Everything here works on ANY pytree (flax linen param dicts, ``nnx.State``,
equinox modules, plain dicts/lists/tuples). A *mask* has the structure of the
params it belongs to; each leaf is a boolean array of the leaf's shape
(``True`` = kept) or ``None`` where the leaf is not prunable.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _validate

PyTree = Any
Patterns = str | Iterable[str] | None


def is_none(x: Any) -> bool:
    """``is_leaf`` predicate that makes ``None`` mask leaves visible to tree maps.

    >>> import jax
    >>> import jaxprune as jp
    >>> mask = {"bias": None, "kernel": True}
    >>> jax.tree.leaves(mask), jax.tree.leaves(mask, is_leaf=jp.tree.is_none)
    ([True], [None, True])
    """
    return x is None


def path_str(path: tuple) -> str:
    """A key path as a ``/``-joined string, e.g. ``params/Dense_0/kernel``.

    This is the raw path: inside a Flax NNX ``Variable`` it ends in ``/value``.
    Use :func:`leaves_with_paths` for the framework-aware form that matching uses.

    >>> path_str((jax.tree_util.DictKey("Dense_0"), jax.tree_util.DictKey("kernel")))
    'Dense_0/kernel'
    """
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _nnx_variable_type() -> type | None:
    """``flax.nnx.Variable`` if flax's NNX is loaded (a tree cannot hold NNX
    variables otherwise, and ``import jaxprune`` need not import NNX)."""
    module = sys.modules.get("flax.nnx.variablelib")
    return getattr(module, "Variable", None)


_VALUE_KEY = jax.tree_util.GetAttrKey("value")


def leaves_with_paths(tree: PyTree) -> list[tuple[str, Any]]:
    """``(path, leaf)`` for every leaf (``None`` counts as a leaf), in
    ``jax.tree.leaves`` order, ``path`` the ``/``-joined string the prunable
    filter and the reports use.

    Framework-aware: a Flax NNX ``Variable`` (``nnx.Param`` ...) holds its array
    under the attribute key ``value``; that key is dropped, so the kernel of an
    ``nnx.Linear`` named ``head`` is ``head/kernel`` in an ``nnx.State``, in an
    ``nnx.split`` state and in the module itself, as in a linen param dict.
    Equinox modules give their attribute names (``layers/0/weight``).

    >>> leaves_with_paths({"dense": {"kernel": jnp.zeros((2, 3)), "bias": None}})[0][0]
    'dense/bias'
    """
    var = _nnx_variable_type()
    if var is None:
        return [(path_str(p), x) for p, x in jax.tree.leaves_with_path(tree, is_leaf=is_none)]
    out = []
    nodes = jax.tree.leaves_with_path(tree, is_leaf=lambda x: x is None or isinstance(x, var))
    for path, node in nodes:
        if not isinstance(node, var):
            out.append((path_str(path), node))
            continue
        for sub, leaf in jax.tree.leaves_with_path(node, is_leaf=is_none):
            sub = sub[1:] if sub[:1] == (_VALUE_KEY,) else sub
            out.append((path_str(path + sub), leaf))
    return out


def map_with_paths(fn: Callable[[str, Any], Any], tree: PyTree) -> PyTree:
    """``fn(path, leaf)`` on every leaf (``None`` included) with the paths of
    :func:`leaves_with_paths`; the result has ``tree``'s structure (NNX
    ``Variable`` wrappers kept).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> jp.tree.map_with_paths(lambda path, w: path, {"Dense_0": {"kernel": jnp.ones(2)}, "scale": None})
    {'Dense_0': {'kernel': 'Dense_0/kernel'}, 'scale': 'scale'}
    """
    treedef = jax.tree.structure(tree, is_leaf=is_none)
    return jax.tree.unflatten(treedef, [fn(p, x) for p, x in leaves_with_paths(tree)])


def leaf_paths(tree: PyTree) -> list[str]:
    """The ``/``-joined path of every leaf (``None`` counts as a leaf; see
    :func:`leaves_with_paths`).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> jp.tree.leaf_paths({"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": None}})
    ['Dense_0/bias', 'Dense_0/kernel']
    """
    return [p for p, _ in leaves_with_paths(tree)]


def unwrap_variables(tree: PyTree) -> PyTree:
    """``tree`` with every Flax NNX ``Variable`` (``nnx.Param``, the
    ``OptVariable`` wrappers of an ``nnx.Optimizer`` state, ...) replaced by its
    value, like ``nnx.as_pure``; any other tree is returned as is.

    >>> unwrap_variables({"w": jnp.ones(2)})
    {'w': Array([1., 1.], dtype=float32)}
    """
    var = _nnx_variable_type()
    if var is None:
        return tree
    return jax.tree.map(
        lambda x: x.get_value() if isinstance(x, var) else x, tree, is_leaf=lambda x: isinstance(x, var)
    )


def check_same_structure(a: PyTree, b: PyTree, name_a: str = "params", name_b: str = "mask") -> None:
    """Raise ``ValueError`` if ``a`` and ``b`` are not the same tree (``None``
    leaves count as leaves), naming the paths that differ. NNX ``Variable``
    wrappers do not count (:func:`unwrap_variables`): ``nnx.Param`` params match
    the plain or ``OptVariable``-wrapped mask an ``nnx.Optimizer`` state holds;
    functions that take both combine them leaf by leaf in flattened order.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> jp.tree.check_same_structure({"kernel": jnp.ones(2), "bias": jnp.ones(2)}, {"kernel": True})
    Traceback (most recent call last):
        ...
    ValueError: mask does not match the structure of params; only in params: ['bias']
    """
    structure = lambda t: jax.tree.structure(unwrap_variables(t), is_leaf=is_none)
    if structure(a) == structure(b):
        return
    pa, pb = leaf_paths(a), leaf_paths(b)
    only_a = [p for p in pa if p not in set(pb)][:5]
    only_b = [p for p in pb if p not in set(pa)][:5]
    detail = []
    if only_a:
        detail.append(f"only in {name_a}: {only_a}")
    if only_b:
        detail.append(f"only in {name_b}: {only_b}")
    if not detail:
        detail.append(f"{name_a} has {len(pa)} leaves, {name_b} has {len(pb)} (container types differ)")
    raise ValueError(f"{name_b} does not match the structure of {name_a}; " + "; ".join(detail))


def check_mask_shapes(params: PyTree, mask: PyTree, name: str = "mask") -> None:
    """Raise ``ValueError`` unless ``mask`` has the structure of ``params`` and
    every non-``None`` mask leaf has its param leaf's shape (naming the path)
    and holds bool or 0/1 values (:func:`jaxprune._validate.check_mask_values`).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> jp.tree.check_mask_shapes({"kernel": jnp.ones((3, 4))}, {"kernel": jnp.ones((4, 3), bool)})
    Traceback (most recent call last):
        ...
    ValueError: mask leaf at kernel has shape (4, 3), expected the param shape (3, 4)
    """
    check_same_structure(params, mask, "params", name)
    flat = leaves_with_paths(params)
    for (path, w), m in zip(flat, jax.tree.leaves(mask, is_leaf=is_none), strict=True):
        if m is not None and (w is None or jnp.shape(m) != jnp.shape(w)):
            raise ValueError(
                f"{name} leaf at {path or '<root>'} has shape {jnp.shape(m)}, expected the "
                f"param shape {None if w is None else jnp.shape(w)}"
            )
        if m is not None:
            _validate.check_mask_values(f"{name} leaf at {path or '<root>'}", m)


def _compile(patterns: Patterns, name: str) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        return [re.compile(p) for p in patterns]
    except (re.error, TypeError) as err:
        raise ValueError(f"{name}={patterns!r} is not a regex or list of regexes: {err}") from None


def prunable(params: PyTree, include: Patterns = None, exclude: Patterns = None) -> PyTree:
    """Which leaves a method may prune: a pytree of Python ``bool`` (one per leaf).

    Default: every array leaf with ``ndim >= 2`` (dense and conv kernels),
    so biases and normalization scales stay dense. ``include`` (regex or list
    of regexes, ``re.search`` on the ``/``-joined path of
    :func:`leaves_with_paths`: ``head/kernel`` for linen, for NNX state and for
    NNX modules alike; ``layers/0/weight`` for equinox) replaces that default:
    matching array leaves are prunable. ``exclude`` then removes matches.

    This is the generic set, the default of the measures, ``jp.masks`` and
    :func:`summarize`. The DPF paper prunes a smaller set (no dense layer in
    conv nets, not the last layer of an MLP): :func:`jaxprune.optax.paper_prunable`,
    the default of ``jp.optax.dpf``.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
    ...           "Dense_1": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}
    >>> jp.prunable(params)                        # kernels only
    {'Dense_0': {'bias': False, 'kernel': True}, 'Dense_1': {'bias': False, 'kernel': True}}
    >>> jp.prunable(params, exclude="Dense_1")     # keep the last layer dense
    {'Dense_0': {'bias': False, 'kernel': True}, 'Dense_1': {'bias': False, 'kernel': False}}
    >>> jp.prunable(params, include="Dense_1/")    # only the last layer, its bias included
    {'Dense_0': {'bias': False, 'kernel': False}, 'Dense_1': {'bias': True, 'kernel': True}}
    """
    inc, exc = _compile(include, "include"), _compile(exclude, "exclude")

    def decide(name: str, leaf: Any) -> bool:
        if leaf is None or not hasattr(leaf, "ndim"):
            return False
        chosen = any(p.search(name) for p in inc) if inc else leaf.ndim >= 2
        return chosen and not any(p.search(name) for p in exc)

    return map_with_paths(decide, params)


def resolve_prunable(params: PyTree, prunable_tree: PyTree | None = None) -> PyTree:
    """Normalize a ``prunable`` argument to a pytree of Python bools.

    Accepts ``None`` (the default filter of :func:`prunable`), a pytree of
    bools, or a mask (array or ``None`` leaves: non-``None`` means prunable).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}
    >>> jp.tree.resolve_prunable(params)                                    # the default filter
    {'bias': False, 'kernel': True}
    >>> jp.tree.resolve_prunable(params, {"kernel": jnp.ones((3, 4), bool), "bias": None})   # from a mask
    {'bias': False, 'kernel': True}
    """
    if prunable_tree is None:
        return prunable(params)
    check_same_structure(params, prunable_tree, "params", "prunable")

    def as_bool(flag: Any) -> bool:
        if flag is None:
            return False
        if isinstance(flag, bool | np.bool_):
            return bool(flag)
        if hasattr(flag, "shape"):  # a mask leaf: its presence marks the leaf prunable
            return True
        raise ValueError(f"prunable leaves must be bool, None or mask arrays, got {type(flag).__name__}")

    return jax.tree.map(as_bool, prunable_tree, is_leaf=is_none)


def full_mask(params: PyTree, prunable_tree: PyTree | None = None) -> PyTree:
    """An all-kept mask: ``True`` arrays on prunable leaves, ``None`` elsewhere.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> mask = jp.tree.full_mask({"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)})
    >>> mask["bias"], mask["kernel"].shape, bool(mask["kernel"].all())
    (None, (3, 4), True)
    """
    flags = resolve_prunable(params, prunable_tree)
    return jax.tree.map(
        lambda w, f: jnp.ones(jnp.shape(w), bool) if f else None, params, flags, is_leaf=is_none
    )


def map_masked(fn: Callable[..., Any], mask: PyTree, *trees: PyTree) -> PyTree:
    """``fn(mask_leaf, *leaves)`` on every non-``None`` mask leaf; ``None`` elsewhere.

    The trees must have the mask's structure (checked; NNX ``Variable``
    wrappers may differ), the result has it.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.array([[1.0, -2.0], [3.0, 4.0]]), "bias": jnp.zeros(2)}
    >>> mask = {"kernel": jnp.array([[True, False], [True, True]]), "bias": None}
    >>> jp.tree.map_masked(lambda m, w: jnp.sum(jnp.where(m, w, 0.0)), mask, params)   # kept sum per leaf
    {'bias': None, 'kernel': Array(8., dtype=float32)}
    """
    for i, tree in enumerate(trees):
        check_same_structure(tree, mask, f"tree[{i}]", "mask")
    flat_mask, treedef = jax.tree.flatten(mask, is_leaf=is_none)
    flat_trees = [jax.tree.leaves(tree, is_leaf=is_none) for tree in trees]
    out = [None if m is None else fn(m, *xs) for m, *xs in zip(flat_mask, *flat_trees, strict=True)]
    return jax.tree.unflatten(treedef, out)


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """``m * w`` leaf by leaf: pruned entries become exactly 0, ``None`` mask
    leaves (and ``None`` params) pass through unchanged. Jittable. The result
    has ``params``' structure: NNX ``nnx.Param`` params with the plain mask of
    an optimizer state stay ``nnx.Param``.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.array([[1.0, -2.0], [3.0, 4.0]]), "bias": jnp.ones(2)}
    >>> mask = {"kernel": jnp.array([[True, False], [True, True]]), "bias": None}
    >>> masked = jp.apply_mask(params, mask)        # None mask leaves pass through
    >>> masked["kernel"].tolist(), masked["bias"].tolist()
    ([[1.0, 0.0], [3.0, 4.0]], [1.0, 1.0])
    """
    check_same_structure(params, mask)

    def one(w: Any, m: Any) -> Any:
        if m is None or w is None:
            return w
        if jnp.shape(m) != jnp.shape(w):
            raise ValueError(f"mask leaf of shape {jnp.shape(m)} does not match param shape {jnp.shape(w)}")
        return jnp.where(m, w, jnp.zeros((), jnp.result_type(w)))

    flat, treedef = jax.tree.flatten(params, is_leaf=is_none)
    masks = jax.tree.leaves(mask, is_leaf=is_none)
    return jax.tree.unflatten(treedef, [one(w, m) for w, m in zip(flat, masks, strict=True)])


def fresh_copy(tree: PyTree) -> PyTree:
    """New buffers for every array leaf (``None`` stays ``None``): what to hand a
    step that donates its input while the caller keeps using the original.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.ones(3), "bias": None}
    >>> copy = jp.tree.fresh_copy(params)
    >>> copy["kernel"] is params["kernel"], bool((copy["kernel"] == params["kernel"]).all()), copy["bias"]
    (False, True, None)
    """
    return jax.tree.map(jnp.copy, tree)


def check_out_axis(out_axis: Any, shape: tuple[int, ...], where: str = "") -> int:
    """``out_axis`` (the axis of output units) as a non-negative axis of a leaf
    of ``shape``: ``TypeError`` unless a Python int, ``ValueError`` (naming the
    leaf ``where``) unless ``-ndim <= out_axis < ndim``.

    >>> check_out_axis(0, (8, 3)), check_out_axis(-1, (3, 3, 4, 8))
    (0, 3)
    """
    if isinstance(out_axis, bool) or not isinstance(out_axis, int | np.integer):
        raise TypeError(f"out_axis must be a Python int (the axis of output units), got {out_axis!r}")
    ndim = len(shape)
    if not -ndim <= out_axis < ndim:
        at = f" for the leaf {where}" if where else ""
        raise ValueError(
            f"out_axis={out_axis} is outside the valid range [{-ndim}, {ndim}){at} of shape {shape}"
        )
    return int(out_axis) % ndim


def neuron_view(x: jax.Array, out_axis: int = -1) -> jax.Array:
    """A leaf as ``(fan_in, units)``: one column per output unit (axis
    ``out_axis``, default the LAST axis as in flax; ``0`` for equinox/PyTorch
    layouts such as Linear ``(out, in)`` and Conv ``(out, in, kh, kw)``).

    A dense kernel ``(in, out)`` is unchanged; a conv kernel ``(kh, kw, in, out)``
    becomes ``(kh*kw*in, out)``; a vector of length n is ``(1, n)``. With
    ``out_axis`` not last, the unit axis is moved last first, so a column
    lists the other axes in their order (row-major).

    >>> neuron_view(jnp.zeros((3, 3, 4, 8))).shape
    (36, 8)
    >>> neuron_view(jnp.zeros((8, 4, 3, 3)), out_axis=0).shape
    (36, 8)
    """
    x = jnp.asarray(x)
    if out_axis != -1 and x.ndim:
        x = jnp.moveaxis(x, check_out_axis(out_axis, x.shape), -1)
    return jnp.reshape(x, (-1, jnp.shape(x)[-1]))


def neuron_unview(cols: jax.Array, shape: tuple[int, ...], out_axis: int = -1) -> jax.Array:
    """Inverse of :func:`neuron_view`: ``(fan_in, units)`` back to a leaf of ``shape``.

    >>> x = jnp.arange(24.0).reshape(2, 3, 4)
    >>> bool(jnp.all(neuron_unview(neuron_view(x, 0), x.shape, 0) == x))
    True
    """
    axis = check_out_axis(out_axis, tuple(shape))
    moved = (*(s for i, s in enumerate(shape) if i != axis), shape[axis])
    return jnp.moveaxis(jnp.reshape(cols, moved), -1, axis)


def summarize(params_or_mask: PyTree, prunable: PyTree | None = None) -> dict[str, Any]:
    """Density report of params (nonzero entries) or a mask (``True`` entries).

    Returns ``{"leaves": {path: {"shape", "size", "nonzero", "density", "prunable"}},
    "prunable": {"size", "nonzero", "density"}, "all": {...}}``. For a mask,
    ``None`` leaves are skipped (their size is unknown); for params, the
    prunable set is ``prunable`` (a flag tree or a mask; default
    :func:`prunable`, every kernel, if ``None``). To report over what a DPF
    optimizer prunes, as ``jp.optax.dpf_diagnostics`` does, pass its mask:
    ``summarize(w, prunable=jp.optax.get_mask(opt_state))``. Host-side
    (NumPy) report, not meant for ``jit``.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.array([[1.0, 0.0], [0.0, 4.0]]), "bias": jnp.ones(2)}
    >>> report = jp.summarize(params)
    >>> report["prunable"]["density"], round(report["all"]["density"], 4)   # the kernel; all leaves
    (0.5, 0.6667)
    >>> report["leaves"]["kernel"]["nonzero"], report["leaves"]["kernel"]["shape"]
    (2, (2, 2))
    """
    tree = params_or_mask
    flags = None if prunable is None else resolve_prunable(tree, prunable)
    flat = leaves_with_paths(tree)
    flag_list = [None] * len(flat) if flags is None else jax.tree.leaves(flags, is_leaf=is_none)
    leaves: dict[str, dict[str, Any]] = {}
    totals = {"prunable": [0, 0], "all": [0, 0]}
    for (path, leaf), flag in zip(flat, flag_list, strict=True):
        if leaf is None or not hasattr(leaf, "shape"):
            continue
        arr = np.asarray(leaf)
        is_mask_leaf = arr.dtype == np.bool_
        nonzero = int(np.count_nonzero(arr))
        is_prunable = bool(flag) if flag is not None else (is_mask_leaf or arr.ndim >= 2)
        leaves[path] = {
            "shape": tuple(arr.shape),
            "size": int(arr.size),
            "nonzero": nonzero,
            "density": nonzero / arr.size if arr.size else 1.0,
            "prunable": is_prunable,
        }
        for key in ("all", "prunable") if is_prunable else ("all",):
            totals[key][0] += int(arr.size)
            totals[key][1] += nonzero
    out: dict[str, Any] = {"leaves": leaves}
    for key, (size, nonzero) in totals.items():
        out[key] = {"size": size, "nonzero": nonzero, "density": nonzero / size if size else 1.0}
    return out
