"""Plumbing shared by the ``jaxprune.optax`` transformations: optax composition
(``multi_transform`` / ``masked`` placeholders), argument checks, schedules,
scorer signatures and the mask-update cadence."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxprune._validate import check_number
from jaxprune.tree import (
    PyTree,
    check_same_structure,
    is_none,
    leaves_with_paths,
    path_str,
)

# --------------------------------------------------------------------------- composition helpers


def _is_hidden(x: Any) -> bool:
    """A leaf (or sub-tree) another ``optax.multi_transform`` branch / the
    outside of an ``optax.masked`` owns: optax hands the inner transformation an
    ``optax.MaskedNode`` placeholder there."""
    return isinstance(x, optax.MaskedNode)


def _none_or_hidden(x: Any) -> bool:
    return x is None or _is_hidden(x)


def _hidden_to_none(tree: PyTree) -> PyTree:
    """``tree`` with every ``optax.MaskedNode`` placeholder replaced by ``None``."""
    return jax.tree.map(lambda x: None if _is_hidden(x) else x, tree, is_leaf=_is_hidden)


def _selects(leaf: Any) -> bool:
    """Whether a prunable-flag / mask leaf selects its leaf (``None``/``False`` do not)."""
    if leaf is None:
        return False
    if isinstance(leaf, bool | np.bool_):
        return bool(leaf)
    return True


def _restrict_to_visible(params: PyTree, tree: PyTree, name: str) -> PyTree:
    """``tree`` (a prunable flag tree or a mask, given for the full params or for
    the branch) with ``None`` where ``params`` holds an ``optax.MaskedNode``.

    Selecting a leaf this transformation does not see is an error: it could not
    keep that leaf pruned (the other branch updates it), and silently dropping
    the selection would leave the weights dense."""
    flat, treedef = jax.tree.flatten_with_path(params, is_leaf=_none_or_hidden)
    if not any(_is_hidden(w) for _, w in flat):
        return tree
    try:
        subs = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} does not match the structure of params: {err}") from None
    out, chosen = [], []
    for (path, w), sub in zip(flat, subs, strict=True):
        if not _is_hidden(w):
            out.append(sub)
            continue
        leaves = jax.tree.leaves_with_path(sub, is_leaf=is_none)
        chosen += [path_str(path + p) for p, x in leaves if _selects(x)]
        out.append(None)
    if chosen:
        raise ValueError(
            f"{name} selects {chosen[:8]}, which this transformation does not see: optax passed "
            "optax.MaskedNode there (the leaves belong to another optax.multi_transform branch or are "
            f"outside optax.masked); set those {name} leaves to None/False and prune them in the "
            "branch that owns them"
        )
    return jax.tree.unflatten(treedef, out)


def _map_masked(
    fn: Callable[..., Any], mask: PyTree, tree: PyTree, *rest: PyTree, what: str = "updates"
) -> PyTree:
    """``fn(m, x, *r)`` on every non-``None`` mask leaf; elsewhere ``tree``'s
    sub-tree passes through unchanged (``None`` may stand for a whole sub-tree,
    and ``tree`` may hold ``optax.MaskedNode`` placeholders there)."""
    try:
        jax.tree.structure(mask, is_leaf=is_none).flatten_up_to(tree)
    except (ValueError, TypeError):
        check_same_structure(_hidden_to_none(tree), mask, what, "mask")  # names the differing paths
        raise

    def one(path: tuple, m: Any, x: Any, *r: Any) -> Any:
        if m is None or x is None:
            return x
        if _is_hidden(x):
            raise ValueError(
                f"the mask has an array at {path_str(path)}, but optax passed optax.MaskedNode there "
                "(the leaf belongs to another multi_transform branch): this branch's mask must be None there"
            )
        if not hasattr(x, "shape") or jnp.shape(m) != jnp.shape(x):
            got = jnp.shape(x) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(
                f"mask leaf at {path_str(path)} has shape {jnp.shape(m)}, but the {what} leaf is {got}"
            )
        return fn(m, x, *r)

    return jax.tree.map_with_path(one, mask, tree, *rest, is_leaf=is_none)


def _fail_at_runtime(pred: jax.Array, message: Callable[..., str], *args: jax.Array) -> None:
    """Raise ``ValueError(message(*args))`` from the running computation when the
    traced ``pred`` is true (a host callback, only taken when ``pred`` holds).
    Under ``jit`` the error surfaces as ``jax.errors.JaxRuntimeError`` carrying
    the message, at the call or at the next blocking read of its results."""

    def fail(bad: Any, *vals: Any) -> None:
        # ``pred`` is checked again on the host: under ``vmap`` with a batched ``pred`` the cond
        # becomes a select that runs the callback (once per element) whatever ``pred`` is.
        if np.asarray(bad).item():
            raise ValueError(message(*(np.asarray(v).item() for v in vals)))

    lax.cond(pred, lambda: jax.debug.callback(fail, pred, *args), lambda: None)


def _copy_mask(mask: PyTree) -> PyTree:
    """New boolean buffers (``jnp.array`` copies): donating a state holding them
    cannot delete the caller's arrays."""
    return jax.tree.map(lambda m: m if m is None else jnp.array(m, bool, copy=True), mask, is_leaf=is_none)


def _natural_key(path: str) -> tuple:
    """Sort key reading digit runs as numbers: ``Dense_10`` after ``Dense_9``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", path) if p)


def paper_prunable(params: PyTree) -> PyTree:
    """DPF's prunable set (Lin et al. 2020, Section 5): a pytree of Python bools,
    the default ``prunable`` of the ``jaxprune.optax`` sparse-training
    transformations (:func:`~jaxprune.optax.dpf` ...).

    NOT :func:`jaxprune.prunable` (every kernel, ``ndim >= 2``), the default of
    the measures, ``jp.masks`` and :func:`jaxprune.summarize`: on an MLP the
    two differ by the last dense layer. To report the density of what a DPF
    optimizer prunes, pass its mask or this set to summarize, e.g.
    ``jp.summarize(w, prunable=jp.optax.get_mask(opt_state))``, which then
    agrees with ``1 - jp.optax.dpf_diagnostics(opt_state)["sparsity"]``.

    If the params have conv kernels (array leaves with ``ndim == 4``, HWIO),
    exactly those (stem included); biases, normalization parameters and every
    dense layer stay dense. Otherwise (MLPs), every ``ndim == 2`` kernel except
    the LAST one, where "last" is the kernel whose ``/``-joined path sorts last
    in natural order (digit runs compared as numbers, so ``Dense_10`` comes
    after ``Dense_9``; flax linen numbers auto-named layers in call order).
    For other naming schemes (NNX and equinox attribute names) pass
    ``prunable`` explicitly, e.g. ``jp.prunable(params, exclude="head")``.

    >>> mlp = {f"Dense_{i}": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)} for i in range(3)}
    >>> [k for k, v in paper_prunable(mlp).items() if v["kernel"]]
    ['Dense_0', 'Dense_1']
    """
    flat = leaves_with_paths(params)
    ndims = [getattr(w, "ndim", -1) if w is not None else -1 for _, w in flat]
    if any(n == 4 for n in ndims):
        chosen = [n == 4 for n in ndims]
    else:
        kernels = [i for i, n in enumerate(ndims) if n == 2]
        last = max(kernels, key=lambda i: _natural_key(flat[i][0]), default=None)
        chosen = [i in kernels and i != last for i in range(len(flat))]
    return jax.tree.unflatten(jax.tree.structure(params, is_leaf=is_none), chosen)


# The name used before ``paper_prunable``; kept while callers move over.
default_prunable = paper_prunable


Schedule = Callable[[Any], Any]
_CHECK_STEPS = (0, 1, 2, 10, 100, 1_000, 10_000, 100_000, 1_000_000)


def _as_schedule(schedule: float | Schedule, update_every: int) -> tuple[Schedule, bool]:
    """A number -> constant schedule; a callable must be jittable (traced on an
    int32 step) and return a scalar, and is probed on Python int steps. Returns
    the schedule and whether its values still need the run-time range check
    (all but a validated constant).

    Every check runs on concrete values only, so building ``dpf`` inside a
    traced function (``optax.inject_hyperparams`` re-runs its factory under
    ``jit``) works: the probe evaluates the schedule eagerly
    (``jax.ensure_compile_time_eval``); a schedule, or a constant, that depends
    on traced values (a hyperparameter) cannot be probed and is checked at every
    mask update instead (see :func:`dpf`)."""
    if not callable(schedule):
        if isinstance(schedule, jax.core.Tracer):  # a traced hyperparameter: checked at run time
            if jnp.ndim(schedule) != 0:
                raise ValueError(
                    f"schedule must be a scalar sparsity, got an array of shape {jnp.shape(schedule)}"
                )
            return (lambda step: jnp.asarray(schedule, jnp.float32)), True
        numeric = isinstance(schedule, int | float | np.number | np.ndarray | jax.Array)
        if not numeric or isinstance(schedule, bool | np.bool_) or jnp.ndim(schedule) != 0:
            raise ValueError(
                f"schedule must be a sparsity in [0, 1] (a scalar number) or a callable step -> sparsity, "
                f"got {schedule!r}"
            )
        check_number("schedule", schedule, low=0.0, high=1.0)
        value = float(schedule)
        return (lambda step: jnp.full((), value, jnp.float32)), False
    try:
        out = jax.eval_shape(schedule, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception as err:  # any failure: the schedule cannot run inside the step
        raise ValueError(
            f"schedule(<traced int32 step>) failed: {err!r}; schedule must be jittable (jnp operations "
            "on the step, no Python `if` on it), mapping an int step to a sparsity"
        ) from err
    shapes = [jnp.shape(o) for o in jax.tree.leaves(out)]
    if shapes != [()]:
        raise ValueError(f"schedule must return one scalar sparsity, got shapes {shapes}")
    with jax.ensure_compile_time_eval():
        for step in sorted({*_CHECK_STEPS, update_every}):
            try:
                value = schedule(step)
            except Exception as err:  # cannot take a Python int: unusable
                raise ValueError(
                    f"schedule({step}) failed: {err!r}; schedule must map an int step to a sparsity"
                ) from err
            if isinstance(value, jax.core.Tracer):  # closes over traced values: checked at run time only
                return schedule, True
            value = float(jnp.reshape(jnp.asarray(value), ()))
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise ValueError(f"schedule({step})={value!r} is outside the valid range [0, 1]")
    # jaxprune's own schedules from validated arguments stay in [0, 1] by construction
    return schedule, not getattr(schedule, "in_unit_interval", False)


def _static_int(name: str, value: Any, low: int, none_ok: bool = False) -> None:
    if none_ok and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        hint = (
            f"; under optax.inject_hyperparams pass static_args=({name!r},)"
            if isinstance(value, jax.Array | np.ndarray)
            else ""
        )
        kind = "None or a Python int" if none_ok else "a Python int"
        raise TypeError(f"{name} must be {kind} >= {low}, got {value!r}{hint}")
    check_number(name, value, low=low)


_SCORER_ARGS = ("params", "key", "grads")


def _scorer_args(scorer: Callable[..., PyTree]) -> tuple[str, ...]:
    """The inputs a scorer takes, by the names of its required positional
    parameters (``magnitude(params)``, ``random(key, params)``,
    ``snip(params, grads)``); a one-argument scorer with another name gets params."""
    try:
        sig = inspect.signature(scorer)
    except (TypeError, ValueError):
        return ("params",)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = tuple(p.name for p in sig.parameters.values() if p.kind in kinds and p.default is p.empty)
    if names and set(names) <= set(_SCORER_ARGS) and "params" in names:
        return names
    if len(names) == 1:
        return ("params",)
    raise TypeError(
        f"scorer={scorer!r} has required parameters {list(names)}; expected a subset of {list(_SCORER_ARGS)} "
        "including 'params' (e.g. magnitude(params), random(key, params), snip(params, grads))"
    )


def check_may_update_mask(value: Any) -> None:
    """``may_update_mask`` selects the traced program: a Python bool only."""
    if not isinstance(value, bool):
        raise TypeError(
            f"may_update_mask must be a Python bool (static: it chooses the traced program), got {value!r}"
        )


def mask_update_schedule(tx: Any) -> Callable[[jax.Array], jax.Array] | None:
    """The mask-update cadence of a pruning transformation that updates its
    mask on some steps (DPF / Incremental, SET, RigL, Sparse Momentum, DSR,
    AC/DC): ``due(t)``, a jittable, vmappable function of the 0-based update
    count ``t`` that is True where ``tx.update`` may change the mask (or, for
    Incremental, check it). ``None`` for any other transformation, and once
    wrapped (e.g. by ``optax.chain``; ``dpf(..., inner=opt)`` keeps it).
    Updates where ``due`` is False give the same result traced with
    ``tx.update(..., may_update_mask=False)``: a program without the
    mask-update branch, which a training loop that knows the step count on the
    host can run instead (the engine's ``Trainer``, given ``mask_update_due``).

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> tx = jp.optax.set_sparse(optax.sgd(0.1), 0.9, key=jax.random.key(0), update_every=3)
    >>> jax.vmap(jp.optax.mask_update_schedule(tx))(jnp.arange(7)).tolist()
    [False, False, False, True, False, False, True]
    """
    return getattr(getattr(tx, "update", None), "mask_update_due", None)
