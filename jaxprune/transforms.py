"""Optax gradient transformations for pruning: the ``jaxprune.optax`` namespace.

- :func:`masked_update`: fine-tuning / retraining with a FIXED mask.
- :func:`dpf`: Dynamic Pruning with Feedback (Lin et al., ICLR 2020, Algorithm 1)
  and, with ``feedback=False``, the Incremental baseline (Zhu & Gupta 2017).
- :func:`sparse_params`, :func:`get_mask`, :func:`dpf_diagnostics`: read the
  pruning state wherever it sits inside an optax state (``optax.chain``,
  ``named_chain``, ``inject_hyperparams``, ``MultiSteps``, ...).

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
import optax
from jax import lax

from jaxprune import masks as _masks
from jaxprune import measures as _measures
from jaxprune._validate import check_choice, check_number
from jaxprune.tree import (
    PyTree,
    apply_mask,
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
    """
    if inner is not None:
        return optax.chain(inner, masked_update(mask))

    def init_fn(params: PyTree) -> MaskedState:
        _check_mask_leaves(params, mask)
        # a copy: donating the state must not invalidate the caller's mask arrays
        return MaskedState(
            mask=jax.tree.map(lambda m: m if m is None else jnp.array(m, bool), mask, is_leaf=is_none)
        )

    def update_fn(
        updates: PyTree, state: MaskedState, params: PyTree | None = None
    ) -> tuple[PyTree, MaskedState]:
        del params
        return apply_mask(updates, state.mask), state

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


def _as_schedule(schedule: float | Schedule, update_every: int) -> Schedule:
    """A float -> constant schedule; a callable is probed on Python int steps."""
    if not callable(schedule):
        check_number("schedule", schedule, low=0.0, high=1.0)
        value = float(schedule)
        return lambda step: jnp.full((), value, jnp.float32)
    for step in sorted({*_CHECK_STEPS, update_every}):
        try:
            value = float(schedule(step))
        except Exception as err:  # a schedule that cannot take a Python int is unusable here
            raise ValueError(
                f"schedule({step}) failed: {err!r}; schedule must map an int step to a sparsity"
            ) from err
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"schedule({step})={value!r} is outside the valid range [0, 1]")
    return schedule


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
        or a constant float. Probed on Python int steps at construction (values
        must lie in ``[0, 1]``); traced values are clipped to ``[0, 1]``.
      update_every: the reparametrization period ``p`` (int >= 1; paper: 16).
      scorer: scores from the DENSE params, called by the names of its
        parameters: ``scorer(params)``, ``scorer(key, params)`` (``key`` =
        ``fold_in(key, t)``) or ``scorer(params, grads)`` (``grads`` = the
        updates this transformation receives). Non-prunable leaves are passed
        as ``None``. ``jp.masks.filter_norm`` with ``scope="filter"`` gives
        structured DPF (whole output units kept or dropped globally).
      scope: ``"global"`` | ``"layer"`` | ``"neuron"`` | ``"filter"`` (see
        :func:`jaxprune.masks.topk`).
      prunable: which leaves are pruned (bool pytree or mask; default
        :func:`default_prunable`, the paper's set).
      feedback: ``True`` = DPF: updates pass through UNMASKED, so pruned dense
        weights keep learning and can come back. ``False`` = Incremental: the
        mask only shrinks (the previous mask is passed to ``topk``) and the
        output update of a pruned coordinate is ``-w``, which sets the dense
        weight to exactly 0 and keeps it there. For this the transformation
        must see the FINAL updates: put it last in the chain or pass the
        optimizer as ``inner``.
      freeze_after: if given (int >= 0), no mask update after this step.
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
    ``lax.cond``, only on mask-update steps; other steps are a pass-through.
    """
    if isinstance(update_every, bool) or not isinstance(update_every, int):
        raise TypeError(f"update_every must be a Python int >= 1, got {update_every!r}")
    check_number("update_every", update_every, low=1)
    check_choice("scope", scope, _masks.SCOPES)
    check_choice("feedback", feedback, (True, False))
    if freeze_after is not None:
        if isinstance(freeze_after, bool) or not isinstance(freeze_after, int):
            raise TypeError(f"freeze_after must be None or a Python int >= 0, got {freeze_after!r}")
        check_number("freeze_after", freeze_after, low=0)
    schedule_fn = _as_schedule(schedule, update_every)
    arg_names = _scorer_args(scorer)
    if "key" in arg_names and key is None:
        raise ValueError(f"scorer {getattr(scorer, '__name__', scorer)!r} takes a PRNG key: pass key=")

    def init_fn(params: PyTree) -> DPFState:
        flags = default_prunable(params) if prunable is None else resolve_prunable(params, prunable)
        if not any(jax.tree.leaves(flags)):
            raise ValueError("prunable selects no leaf of params: nothing to prune")
        zeros = [jnp.zeros((), jnp.float32) for _ in range(3)]  # distinct buffers: donation-safe
        return DPFState(jnp.zeros((), jnp.int32), full_mask(params, flags), *zeros)

    def new_mask(t: jax.Array, old: PyTree, params: PyTree, grads: PyTree) -> tuple:
        """The mask of ``params`` at sparsity ``schedule(t)`` and its statistics.
        ``old``/``params``/``grads`` hold ``None`` on non-prunable leaves."""
        sparsity = jnp.clip(jnp.asarray(schedule_fn(t), jnp.float32), 0.0, 1.0)
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

    def update_fn(updates: PyTree, state: DPFState, params: PyTree | None = None) -> tuple[PyTree, DPFState]:
        if params is None:
            raise ValueError("dpf needs the params: call tx.update(grads, opt_state, params)")
        check_same_structure(params, state.mask, "params", "opt_state mask")
        t = state.count
        due = t % update_every == 0
        if freeze_after is not None:
            due = due & (t <= freeze_after)
        # The cond gets exactly what the mask update reads, as explicit operands:
        # the prunable leaves only (None elsewhere), the grads only if the scorer takes them.
        only_prunable = lambda tree: jax.tree.map(
            lambda m, x: None if m is None else x, state.mask, tree, is_leaf=is_none
        )
        grads_in = only_prunable(updates) if "grads" in arg_names else None
        mask, sparsity, delta, flips = lax.cond(
            due,
            lambda old, w, g: new_mask(t, old, w, g),
            lambda old, w, g: (old, state.target_sparsity, state.delta, state.flip_fraction),
            state.mask,
            only_prunable(params),
            grads_in,
        )
        if not feedback:
            updates = jax.tree.map(
                lambda m, u, w: u if m is None else jnp.where(m, u, -w).astype(jnp.result_type(u)),
                mask,
                updates,
                params,
                is_leaf=is_none,
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


def get_mask(opt_state: PyTree) -> PyTree:
    """The current mask held by the (single) :func:`dpf` or :func:`masked_update`
    state anywhere inside ``opt_state`` (bool leaves, ``None`` = not prunable)."""
    return _one_state(opt_state, (DPFState, MaskedState)).mask


def set_mask(opt_state: PyTree, mask: PyTree) -> PyTree:
    """``opt_state`` with every :func:`masked_update` state holding ``mask``
    (e.g. a new round's mask in a freshly initialized optimizer). Jittable."""
    is_masked = lambda s: isinstance(s, MaskedState)
    return jax.tree.map(lambda s: MaskedState(mask) if is_masked(s) else s, opt_state, is_leaf=is_masked)


def sparse_params(params: PyTree, opt_state: PyTree) -> PyTree:
    """``m * w``: the params with the current mask applied (pruned entries
    exactly 0, non-prunable leaves unchanged); the weights of the forward pass
    and of the final sparse model. Jittable, no recomputation."""
    return apply_mask(params, get_mask(opt_state))


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
