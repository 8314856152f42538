"""Optax gradient transformations for pruning: the ``jaxprune.optax`` namespace.

- :func:`masked_update`: fine-tuning / retraining with a FIXED mask.
- :func:`dpf`: Dynamic Pruning with Feedback (Lin et al., ICLR 2020, Algorithm 1)
  and, with ``feedback=False``, the Incremental baseline (Zhu & Gupta 2017).
- :func:`sparse_params`, :func:`get_mask`, :func:`dpf_diagnostics`: read the
  pruning state wherever it sits inside an optax state (``optax.chain``,
  ``named_chain``, ``inject_hyperparams``, ``MultiSteps``, ``masked``,
  ``multi_transform``, chains of chains, ...).

Composition: both transformations work inside ``optax.inject_hyperparams``
(``init`` and ``update`` under ``jit``; the factory is re-run on traced
hyperparameters, so a sparsity given as a hyperparameter is a traced scalar)
and as a branch of ``optax.multi_transform`` / inside ``optax.masked`` (the
leaves the branch does not own arrive as ``optax.MaskedNode`` placeholders;
they are never pruned by that branch and hold ``None`` in its mask, where a
``None`` may stand for a whole sub-tree when the label was given for one).
:func:`get_mask` / :func:`sparse_params` combine the masks of several branches.

The train step with DPF (gradient at the pruned weights, applied unmasked to
the dense weights: error feedback)::

    tx = optax.chain(jp.optax.dpf(schedule), optax.add_decayed_weights(wd),
                     optax.sgd(lr, momentum=0.9, nesterov=True))
    def step(params, opt_state, batch):
        w_tilde = jp.optax.sparse_params(params, opt_state)   # m * w
        grads = jax.grad(loss)(w_tilde, batch)                 # g(m * w), NOT masked
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

The same step, faster where XLA cannot fuse the masking into the matmul (CPU:
~15-20% of an MLP step, see ``experiments/benchmarks/bench_dpf.py``): compute
``m * w`` for the NEXT forward pass at the end of the step, where it fuses
into the parameter update, and carry it (bitwise equal results; the engine's
``Trainer`` does this via ``jaxprune.train.make_carried_train_step``)::

    def step(params, w_tilde, opt_state, batch):            # w_tilde = m * w, carried
        grads = jax.grad(loss)(w_tilde, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, jp.optax.sparse_params(params, opt_state), opt_state

All states are plain pytrees (NamedTuples of arrays; masks hold ``None`` on
non-prunable leaves): they jit with donation, shard with the params and
checkpoint with orbax.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxprune import masks as _masks
from jaxprune import measures as _measures
from jaxprune._validate import check_choice, check_number
from jaxprune.tree import (
    PyTree,
    check_mask_shapes,
    check_same_structure,
    full_mask,
    is_none,
    path_str,
    resolve_prunable,
)

__all__ = [
    "DPFState",
    "MaskedState",
    "default_prunable",
    "dpf",
    "dpf_diagnostics",
    "get_mask",
    "masked_update",
    "set_mask",
    "sparse_params",
]


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


# --------------------------------------------------------------------------- DPF


class DPFState(NamedTuple):
    """State of :func:`dpf` (all scalars are 0-d arrays).

    count: int32, number of ``update`` calls so far (the step ``t`` of the next one).
    mask: the current mask (bool on prunable leaves, ``None`` elsewhere); the
      one :func:`sparse_params` applies in the next forward pass.
    target_sparsity: float32, ``schedule(t)`` at the last mask update (over the
      prunable leaves; the achieved sparsity is ``round``-ed to whole entries/units).
    delta: float32, DPF's pruning quality ``||w - m*w||^2 / ||w||^2`` of the new
      mask on the weights it was computed from, at the last mask update.
    flip_fraction: float32, fraction of prunable mask entries that changed at
      the last mask update.
    """

    count: jax.Array
    mask: PyTree
    target_sparsity: jax.Array
    delta: jax.Array
    flip_fraction: jax.Array


def _natural_key(path: str) -> tuple:
    """Sort key reading digit runs as numbers: ``Dense_10`` after ``Dense_9``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", path) if p)


def default_prunable(params: PyTree) -> PyTree:
    """DPF's prunable set (Section 5 of the paper): a pytree of Python bools.

    If the params have conv kernels (array leaves with ``ndim == 4``, HWIO),
    exactly those (stem included); biases, normalization parameters and every
    dense layer stay dense. Otherwise (MLPs), every ``ndim == 2`` kernel except
    the LAST one, where "last" is the kernel whose ``/``-joined path sorts last
    in natural order (digit runs compared as numbers, so ``Dense_10`` comes
    after ``Dense_9``; flax linen numbers auto-named layers in call order).
    For other naming schemes pass ``prunable`` explicitly, e.g.
    ``jp.prunable(params, exclude="head")``."""
    flat = jax.tree.leaves_with_path(params, is_leaf=is_none)
    ndims = [getattr(w, "ndim", -1) if w is not None else -1 for _, w in flat]
    if any(n == 4 for n in ndims):
        chosen = [n == 4 for n in ndims]
    else:
        kernels = [i for i, n in enumerate(ndims) if n == 2]
        last = max(kernels, key=lambda i: _natural_key(path_str(flat[i][0])), default=None)
        chosen = [i in kernels and i != last for i in range(len(flat))]
    return jax.tree.unflatten(jax.tree.structure(params, is_leaf=is_none), chosen)


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


def _misplaced_message(t: int, count: int, worst: float) -> str:
    return (
        f"dpf(feedback=False) (Incremental): at update {t}, {count} coordinates pruned by the previous mask "
        f"update are nonzero in the params (max |w| = {worst:.3g}). Its output update -w zeroes a pruned "
        "weight only if nothing transforms it afterwards: place dpf(feedback=False) LAST in the chain or "
        "pass the optimizer as inner= (e.g. optax.chain(add_decayed_weights(wd), sgd(lr, momentum), "
        "dpf(..., feedback=False))), and do not change the params outside the optimizer"
    )


def _bad_schedule_message(t: int, value: float) -> str:
    return f"schedule({t})={value!r} is outside the valid range [0, 1] (target sparsity at mask update {t})"


def dpf(
    schedule: float | Schedule,
    *,
    update_every: int = 16,
    scorer: Callable[..., PyTree] = _masks.magnitude,
    scope: str = "global",
    prunable: PyTree | None = None,
    feedback: bool = True,
    freeze_after: int | None = None,
    key: jax.Array | None = None,
    inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """Dynamic Pruning with Feedback as an optax transformation.

    Args:
      schedule: target sparsity of the prunable set (fraction of zeros) as a
        function of the step (e.g. ``jp.masks.polynomial_schedule(0.9, 0, T)``)
        or a constant. A callable must be jittable and return a scalar; it is
        probed on Python int steps at construction (values must lie in
        ``[0, 1]``, else ``ValueError``). Except for a constant number, the
        value is checked again at every mask update: one outside ``[0, 1]`` or
        NaN (a step the probe missed, or a traced hyperparameter) makes the
        step fail at run time with that message (a ``ValueError`` raised from
        a host callback; under ``jit`` it arrives as
        ``jax.errors.JaxRuntimeError``).
      update_every: the reparametrization period ``p`` (Python int >= 1;
        paper: 16). Under ``optax.inject_hyperparams`` it must be a static arg.
      scorer: scores from the DENSE params, called by the names of its
        parameters: ``scorer(params)``, ``scorer(key, params)`` (``key`` =
        ``fold_in(key, t)``) or ``scorer(params, grads)`` (``grads`` = the
        updates this transformation receives). Non-prunable leaves are passed
        as ``None``. ``jp.masks.filter_norm`` with ``scope="filter"`` gives
        structured DPF (whole output units kept or dropped globally).
      scope: ``"global"`` | ``"layer"`` | ``"neuron"`` | ``"filter"`` (see
        :func:`jaxprune.masks.topk`).
      prunable: which leaves are pruned (bool pytree or mask; default
        :func:`default_prunable`, the paper's set, computed over the leaves the
        transformation sees: in an ``optax.multi_transform`` branch, the
        branch's leaves; selecting another branch's leaf is a ``ValueError``).
      feedback: ``True`` = DPF: updates pass through UNMASKED, so pruned dense
        weights keep learning and can come back. ``False`` = Incremental: the
        mask only shrinks (the previous mask is passed to ``topk``) and the
        output update of a pruned coordinate is ``-w``, which sets the dense
        weight to exactly 0 and keeps it there. For this the transformation
        must see the FINAL updates: put it last in the chain or pass the
        optimizer as ``inner``. Placement cannot be made irrelevant: in optax a
        transformation only returns its own output, which every later one
        (momentum, weight decay, the ``-lr`` scaling) transforms again, so
        placed first the ``-w`` does not reach the params and pruned weights
        drift away from 0. This misuse is detected instead: at the update right
        after each mask update (and at every mask update) the params at
        coordinates the previous mask pruned must be exactly 0, which holds in
        the correct placement and fails in any other from the first step after
        something was pruned; otherwise the step fails at run time with a
        ``ValueError`` naming the fix (same mechanism as the schedule check;
        cost: one pass over the prunable params per mask update, none on the
        other steps).
      freeze_after: if given (Python int >= 0), no mask update after this step.
        Default: keep updating every ``p`` steps until the end (paper, Figure 4).
      key: PRNG key, required by scorers that take ``key``.
      inner: optional optimizer to wrap: ``optax.chain(inner, dpf(...))``.

    Timing (precise): ``update`` number ``t`` (``t = state.count``; 0-based)
    with ``t % update_every == 0`` (and ``t <= freeze_after``) recomputes the
    mask from the params ``w_t`` passed to it (the dense weights BEFORE update
    ``t`` is applied) at sparsity ``schedule(t)``; :func:`sparse_params` uses
    it from the forward pass of step ``t + 1`` on. The initial mask (from
    ``init``) keeps everything, as in the paper where ``s_0 = 0``. Compared
    with Algorithm 1 (whose forward pass of step ``t`` already uses the mask of
    ``w_t``), the new mask enters one step later: the forward pass of step
    ``t`` runs before ``update(t)`` is called. The top-k runs under
    ``lax.switch``, only on mask-update steps; other steps are a pass-through
    (Incremental: plus the zero check on the step after a mask update).

    Composition: works inside ``optax.inject_hyperparams`` under ``jit`` (the
    schedule or a constant sparsity may itself be an injected hyperparameter,
    then checked at run time only) and as a branch of
    ``optax.multi_transform`` / inside ``optax.masked`` (other branches'
    leaves are ``None`` in the mask, never pruned by this branch).
    """
    _static_int("update_every", update_every, 1)
    check_choice("scope", scope, _masks.SCOPES)
    if not isinstance(feedback, bool | np.bool_):
        raise TypeError(f"feedback must be a Python bool, got {feedback!r}")
    feedback = bool(feedback)
    _static_int("freeze_after", freeze_after, 0, none_ok=True)
    schedule_fn, check_values = _as_schedule(schedule, update_every)
    arg_names = _scorer_args(scorer)
    if "key" in arg_names and key is None:
        raise ValueError(f"scorer {getattr(scorer, '__name__', scorer)!r} takes a PRNG key: pass key=")

    def init_fn(params: PyTree) -> DPFState:
        visible = _hidden_to_none(params)
        if prunable is None:
            flags = default_prunable(visible)
        else:
            flags = resolve_prunable(visible, _restrict_to_visible(params, prunable, "prunable"))
        if not any(jax.tree.leaves(flags)):
            raise ValueError("prunable selects no leaf of params: nothing to prune")
        zeros = [jnp.zeros((), jnp.float32) for _ in range(3)]  # distinct buffers: donation-safe
        return DPFState(jnp.zeros((), jnp.int32), full_mask(visible, flags), *zeros)

    def new_mask(t: jax.Array, old: PyTree, params: PyTree, grads: PyTree) -> tuple:
        """The mask of ``params`` at sparsity ``schedule(t)`` and its statistics.
        ``old``/``params``/``grads`` hold ``None`` on non-prunable leaves."""
        raw = jnp.reshape(jnp.asarray(schedule_fn(t), jnp.float32), ())
        if check_values:  # NaN included
            _fail_at_runtime(~((raw >= 0.0) & (raw <= 1.0)), _bad_schedule_message, t, raw)
        sparsity = jnp.clip(raw, 0.0, 1.0)
        inputs = {"params": params, "grads": grads}
        if key is not None:
            inputs["key"] = jax.random.fold_in(key, t)
        scores = scorer(*(inputs[name] for name in arg_names))
        extra = {"params": params} if scope == "filter" else {}
        mask = _masks.topk(
            scores, sparsity, scope=scope, prunable=old, mask=None if feedback else old, **extra
        )
        return (
            mask,
            sparsity,
            _measures.pruning_quality(params, mask).astype(jnp.float32),
            _measures.mask_flips(old, mask).astype(jnp.float32),
        )

    def check_pruned_zero(t: jax.Array, old: PyTree, params: PyTree) -> None:
        """Incremental's placement check: coordinates ``old`` prunes are exactly 0."""
        pairs = [
            (m, w)
            for m, w in zip(
                jax.tree.leaves(old, is_leaf=is_none), jax.tree.leaves(params, is_leaf=is_none), strict=True
            )
            if m is not None
        ]
        count = sum((jnp.sum(~m & (w != 0), dtype=jnp.int32) for m, w in pairs), jnp.zeros((), jnp.int32))
        worst = jnp.max(
            jnp.stack([jnp.max(jnp.where(m, 0.0, jnp.abs(w).astype(jnp.float32))) for m, w in pairs])
        )
        _fail_at_runtime(count > 0, _misplaced_message, t, count, worst)

    def update_fn(updates: PyTree, state: DPFState, params: PyTree | None = None) -> tuple[PyTree, DPFState]:
        if params is None:
            raise ValueError("dpf needs the params: call tx.update(grads, opt_state, params)")
        check_same_structure(_hidden_to_none(params), state.mask, "params", "opt_state mask")
        t = state.count
        due = t % update_every == 0
        if freeze_after is not None:
            due = due & (t <= freeze_after)
        # DPF: 0 pass-through, 1 mask update. Incremental: 0 pass-through, 1 placement check
        # (the update right after a mask update), 2 mask update (+ the check).
        index = due.astype(jnp.int32)
        if not feedback:
            after = (t >= 1) & ((t - 1) % update_every == 0)
            if freeze_after is not None:
                after = after & (t - 1 <= freeze_after)
            index = jnp.where(due, 2, after.astype(jnp.int32))
        # The switch gets exactly what the mask update reads, as explicit operands:
        # the prunable leaves only (None elsewhere), the grads only if the scorer takes them.
        only_prunable = lambda tree: jax.tree.map(
            lambda m, x: None if m is None else x, state.mask, tree, is_leaf=is_none
        )
        grads_in = only_prunable(updates) if "grads" in arg_names else None
        stats = (state.target_sparsity, state.delta, state.flip_fraction)

        def keep(old: PyTree, w: PyTree, g: PyTree) -> tuple:
            return (old, *stats)

        def check_only(old: PyTree, w: PyTree, g: PyTree) -> tuple:
            check_pruned_zero(t, old, w)
            return (old, *stats)

        def update_mask(old: PyTree, w: PyTree, g: PyTree) -> tuple:
            if not feedback:
                check_pruned_zero(t, old, w)
            return new_mask(t, old, w, g)

        mask, sparsity, delta, flips = lax.switch(
            index,
            [keep, update_mask] if feedback else [keep, check_only, update_mask],
            state.mask,
            only_prunable(params),
            grads_in,
        )
        if not feedback:
            updates = _map_masked(
                lambda m, u, w: jnp.where(m, u, -w).astype(jnp.result_type(u)), mask, updates, params
            )
        return updates, DPFState(t + 1, mask, sparsity, delta, flips)

    core = optax.GradientTransformation(init_fn, update_fn)
    return core if inner is None else optax.chain(inner, core)


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
    before a train step that donates the state if you keep them."""
    found = _find(opt_state, (DPFState, MaskedState))
    if not found:
        raise ValueError(
            "opt_state holds no DPFState or MaskedState: build the optimizer with jp.optax.dpf / "
            "masked_update"
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
    non-boolean leaves or shapes that differ from the current mask's."""
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
    Combines the masks of several branches as :func:`get_mask` does."""
    return _map_masked(
        lambda m, w: jnp.where(m, w, jnp.zeros((), jnp.result_type(w))),
        get_mask(opt_state),
        params,
        what="params",
    )


def dpf_diagnostics(opt_state: PyTree) -> dict[str, jax.Array]:
    """DPF diagnostics read from the state (no recomputation of the mask):
    ``step`` (updates done), ``target_sparsity``, ``delta`` and ``flip_fraction``
    (all as of the last mask update, see :class:`DPFState`), and ``sparsity``
    (achieved fraction of pruned entries of the current mask, over the
    prunable leaves). Jittable; values are 0-d arrays."""
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
