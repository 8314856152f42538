"""One-shot pruning in one call: ``jp.prune(params, sparsity) -> (sparse_params, mask)``.

Scores the params (magnitude by default), selects the kept entries with the
exact sort-free :func:`jaxprune.masks.topk` in any of its scopes (``"global"``,
``"layer"``, ``"neuron"``, ``"filter"``, ``"N:M"``) and zeroes the rest. The
whole computation is one jitted function (compiled once per scorer, scope,
prunable set, ``out_axis`` and param shapes), and it also runs inside a
caller's ``jit``.

Sharding: nothing is gathered to one device; each mask leaf and each sparse
param leaf has the sharding of its param leaf. Called on committed (e.g.
``NamedSharding``) arrays outside ``jit``, this is imposed as the output
sharding of the compiled function; inside a caller's ``jit`` it comes from
XLA's sharding propagation (the mask is ``keys >= t`` elementwise on the param
layout, plus a scalar threshold), which the caller can pin with
``out_shardings``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune._validate import check_number
from jaxprune.masks.scorers import magnitude
from jaxprune.masks.select import check_nm_sparsity, check_scope, topk
from jaxprune.tree import PyTree, apply_mask, check_same_structure, is_none, path_str, resolve_prunable

_INPUTS = ("params", "key")


def _scorer_inputs(scorer: Callable[..., PyTree]) -> tuple[tuple[str, ...], bool]:
    """The names of the required positional inputs of ``scorer`` (a subset of
    ``("params", "key")`` with ``"params"``; one required input of another name
    gets the params) and whether it takes an ``out_axis`` keyword."""
    if not callable(scorer):
        raise TypeError(f"scorer must be callable, got {scorer!r}")
    try:
        sig = inspect.signature(scorer)
    except (TypeError, ValueError):
        return ("params",), False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = tuple(p.name for p in sig.parameters.values() if p.kind in kinds and p.default is p.empty)
    takes_axis = "out_axis" in sig.parameters
    if names and set(names) <= set(_INPUTS) and "params" in names:
        return names, takes_axis
    if len(names) == 1:
        return ("params",), takes_axis
    raise TypeError(
        f"scorer={scorer!r} has required parameters {list(names)}; jp.prune passes only params (and key): "
        "e.g. magnitude(params), random(key, params), filter_norm(params), or "
        "functools.partial(jp.masks.snip, grads=grads)"
    )


def _check_sparsity(sparsity: Any, scope: str, params: PyTree, flags: list[bool]) -> None:
    """The value checks :func:`topk` makes on a concrete sparsity, made here on
    the host because inside :func:`_prune` the sparsity is traced."""
    nm = check_scope(scope)
    if nm is not None:
        check_nm_sparsity(sparsity, *nm)
    elif scope == "layer" and not (isinstance(sparsity, int | float) or getattr(sparsity, "ndim", None) == 0):
        check_same_structure(params, sparsity, "params", "sparsity")
        values = jax.tree.leaves_with_path(sparsity, is_leaf=is_none)
        for (path, value), flag in zip(values, flags, strict=True):
            if flag:
                if value is None:
                    raise ValueError(f"sparsity has no value for the prunable leaf {path_str(path)}")
                check_number(f"sparsity[{path_str(path)}]", value, low=0.0, high=1.0)
    else:
        check_number("sparsity", sparsity, low=0.0, high=1.0)


@functools.partial(jax.jit, static_argnames=("scorer", "scope", "flags", "treedef", "out_axis", "shardings"))
def _prune(
    params: PyTree,
    sparsity: Any,
    key: jax.Array | None,
    *,
    scorer: Callable[..., PyTree],
    scope: str,
    flags: tuple[bool, ...],
    treedef: Any,
    out_axis: int,
    shardings: tuple[Any, ...] | None,
) -> tuple[PyTree, PyTree, jax.Array]:
    """:func:`prune` after the argument checks; also returns whether each
    prunable score leaf holds a NaN (bool vector, checked by the caller)."""
    prunable = jax.tree.unflatten(treedef, list(flags))
    names, takes_axis = _scorer_inputs(scorer)
    # Non-prunable leaves reach the scorer as None: nothing is scored for them.
    visible = jax.tree.map(lambda w, f: w if f else None, params, prunable, is_leaf=is_none)
    inputs = {"params": visible, "key": key}
    scores = scorer(*(inputs[n] for n in names), **({"out_axis": out_axis} if takes_axis else {}))
    extra = {"params": params} if scope == "filter" else {}
    mask = topk(scores, sparsity, scope=scope, prunable=prunable, out_axis=out_axis, **extra)
    nan = [jnp.any(jnp.isnan(s)) for s, f in zip(treedef.flatten_up_to(scores), flags, strict=True) if f]
    if shardings is not None:  # concrete inputs: each mask leaf keeps its param leaf's sharding
        leaves = [
            m if m is None else jax.lax.with_sharding_constraint(m, sh)
            for m, sh in zip(treedef.flatten_up_to(mask), shardings, strict=True)
        ]
        mask = jax.tree.unflatten(treedef, leaves)
    return apply_mask(params, mask), mask, jnp.stack(nan)


def prune(
    params: PyTree,
    sparsity: Any,
    *,
    scorer: Callable[..., PyTree] = magnitude,
    scope: str = "global",
    prunable: PyTree | None = None,
    key: jax.Array | None = None,
    out_axis: int = -1,
) -> tuple[PyTree, PyTree]:
    """Prune ``params`` once: score, keep the top ``1 - sparsity`` per pool, zero the rest.

    Args:
      params: any pytree of arrays (flax linen dicts, ``nnx.State``, equinox
        modules ...); may be sharded, may be traced (inside ``jit``).
      sparsity: fraction in ``[0, 1]`` pruned per pool, as in
        :func:`jaxprune.masks.topk`: a float or (traced) scalar; for
        ``scope="layer"`` also a pytree of per-leaf sparsities (e.g.
        ``jp.masks.allocate(params, 0.9, method="erk")``); for an ``"N:M"``
        scope ``None`` (or ``1 - N/M``).
      scorer: importance scores from the params (larger = kept), called by
        the names of its parameters: ``scorer(params)`` (default
        :func:`jaxprune.masks.magnitude`) or ``scorer(key, params)``
        (:func:`jaxprune.masks.random`); a scorer with an ``out_axis``
        parameter (:func:`jaxprune.masks.filter_norm`) gets ``out_axis``.
        Non-prunable leaves reach it as ``None``. For gradient-based scores
        bind the gradients first: ``functools.partial(jp.masks.snip, grads=g)``.
      scope: ``"global"`` | ``"layer"`` | ``"neuron"`` | ``"filter"`` (with a
        per-unit scorer such as ``jp.masks.filter_norm``) | ``"N:M"`` (e.g.
        ``"2:4"``); see :func:`jaxprune.masks.topk`.
      prunable: which leaves are pruned (bool pytree or mask; default
        :func:`jaxprune.tree.prunable`: the leaves with ``ndim >= 2``).
      key: PRNG key, required by scorers that take ``key``.
      out_axis: the axis of output units of every prunable leaf (default
        ``-1``, flax; ``0`` for equinox/PyTorch ``(out, in, ...)``), for the
        neuron, filter and N:M scopes.

    Returns:
      ``(sparse_params, mask)``: the params with pruned entries exactly 0
      (same structure, dtypes and shardings; non-prunable leaves unchanged)
      and the mask (bool leaves of the param shapes, ``None`` on non-prunable
      leaves). Deterministic (ties: lower flat index kept, as in ``topk``).

    Raises ``ValueError``/``TypeError`` at trace time for a bad scope,
    sparsity, ``out_axis``, scorer or missing key.

    >>> import jax.numpy as jnp, jaxprune as jp
    >>> params = {"dense": {"kernel": jnp.array([[1., -4.], [3., 2.]]), "bias": jnp.ones(2)}}
    >>> sparse, mask = jp.prune(params, 0.5)
    >>> sparse["dense"]["kernel"].tolist(), mask["dense"]["bias"]
    ([[0.0, -4.0], [3.0, 0.0]], None)
    >>> jp.prune(params, None, scope="1:2")[0]["dense"]["kernel"].tolist()   # 1 of every 2 inputs
    [[0.0, -4.0], [3.0, 0.0]]
    """
    check_scope(scope)
    if isinstance(out_axis, bool) or not isinstance(out_axis, int):
        raise TypeError(f"out_axis must be a Python int (the axis of output units), got {out_axis!r}")
    names, _ = _scorer_inputs(scorer)
    if "key" in names and key is None:
        raise ValueError(f"scorer {getattr(scorer, '__name__', scorer)!r} takes a PRNG key: pass key=")
    flag_tree = resolve_prunable(params, prunable)
    flags, treedef = jax.tree.flatten(flag_tree, is_leaf=is_none)
    if not any(flags):
        raise ValueError("prunable selects no leaf of params: nothing to prune")
    _check_sparsity(sparsity, scope, params, flags)
    leaves = treedef.flatten_up_to(params)
    concrete = all(
        isinstance(w, jax.Array) and not isinstance(w, jax.core.Tracer)
        for w, f in zip(leaves, flags, strict=True)
        if f
    )
    shardings = None
    if concrete:
        shardings = tuple(w.sharding if f else None for w, f in zip(leaves, flags, strict=True))
    sparse, mask, nan = _prune(
        params,
        sparsity,
        key,
        scorer=scorer,
        scope=scope,
        flags=tuple(bool(f) for f in flags),
        treedef=treedef,
        out_axis=int(out_axis),
        shardings=shardings,
    )
    if concrete and not isinstance(nan, jax.core.Tracer) and bool(jnp.any(nan)):  # one scalar to the host
        paths = [path_str(p) for p, _ in jax.tree.leaves_with_path(params, is_leaf=is_none)]
        paths = [p for p, f in zip(paths, flags, strict=True) if f]
        bad = [p for p, b in zip(paths, jax.device_get(nan), strict=True) if b]
        raise ValueError(f"scores contain NaN at {bad[0] or '<root>'}; scores must not be NaN (NaN params?)")
    return sparse, mask
