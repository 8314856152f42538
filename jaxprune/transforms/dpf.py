"""Dynamic Pruning with Feedback (Lin et al., ICLR 2020) and the Incremental baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxprune import masks as _masks
from jaxprune import measures as _measures
from jaxprune.transforms._common import (
    Schedule,
    _as_schedule,
    _fail_at_runtime,
    _hidden_to_none,
    _map_masked,
    _restrict_to_visible,
    _scorer_args,
    _static_int,
    check_may_update_mask,
    paper_prunable,
)
from jaxprune.tree import (
    PyTree,
    check_same_structure,
    full_mask,
    is_none,
    resolve_prunable,
)

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
    out_axis: int = -1,
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
      scope: ``"global"`` | ``"layer"`` | ``"neuron"`` | ``"filter"`` | ``"N:M"``
        (see :func:`jaxprune.masks.topk`). For N:M (e.g. ``"2:4"``) give the
        constant sparsity ``1 - N/M`` (``dpf(0.5, scope="2:4")``): every mask
        update then recomputes the N:M pattern; a step whose scheduled
        sparsity differs from ``1 - N/M`` prunes nothing.
      prunable: which leaves are pruned (bool pytree or mask; default
        :func:`paper_prunable`, the paper's set, computed over the leaves the
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
      out_axis: the axis of the output units of every prunable leaf, for the
        ``"neuron"``, ``"filter"`` and N:M scopes (see
        :func:`jaxprune.masks.topk`): ``-1`` for flax ``(..., out)`` kernels,
        ``0`` for equinox/PyTorch ``(out, in, ...)`` weights. With
        ``scope="filter"`` give the scorer the same axis, e.g.
        ``scorer=functools.partial(jp.masks.filter_norm, out_axis=0)``.

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
    :func:`mask_update_schedule` gives the updates where the switch may do
    anything (``due(t)``); at the others, ``tx.update(..., may_update_mask=False)``
    traces the pass-through alone, without the switch (same results; the
    engine's ``Trainer`` dispatches between the two given ``mask_update_due``).

    Composition: works inside ``optax.inject_hyperparams`` under ``jit`` (the
    schedule or a constant sparsity may itself be an injected hyperparameter,
    then checked at run time only) and as a branch of
    ``optax.multi_transform`` / inside ``optax.masked`` (other branches'
    leaves are ``None`` in the mask, never pruned by this branch).

    >>> import jax.numpy as jnp, optax, jaxprune as jp
    >>> params = {"w": jnp.array([[0.1, -2.0], [3.0, 0.4]])}
    >>> tx = optax.chain(jp.optax.dpf(0.5, update_every=1, prunable={"w": True}), optax.sgd(0.1))
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, state, params)   # mask of w_0 at 50%
    >>> jp.optax.get_mask(state)["w"].tolist()
    [[False, True], [True, False]]
    >>> updates["w"].tolist()   # feedback: the update reaches every dense weight
    [[-0.10000000149011612, -0.10000000149011612], [-0.10000000149011612, -0.10000000149011612]]
    """
    _static_int("update_every", update_every, 1)
    _masks.check_scope(scope)
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
            flags = paper_prunable(visible)
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
            scores, sparsity, scope=scope, prunable=old, mask=None if feedback else old, out_axis=out_axis,
            **extra,
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

    def branch(t: jax.Array) -> jax.Array:
        """DPF: 0 pass-through, 1 mask update. Incremental: 0 pass-through, 1
        placement check (the update right after a mask update), 2 mask update
        (+ the check)."""
        due = t % update_every == 0
        if freeze_after is not None:
            due = due & (t <= freeze_after)
        if feedback:
            return jnp.asarray(due, jnp.int32)
        after = (t >= 1) & ((t - 1) % update_every == 0)
        if freeze_after is not None:
            after = after & (t - 1 <= freeze_after)
        return jnp.where(due, 2, jnp.asarray(after, jnp.int32))

    def update_fn(
        updates: PyTree, state: DPFState, params: PyTree | None = None, *, may_update_mask: bool = True,
        **extra_args: Any,
    ) -> tuple[PyTree, DPFState]:
        if params is None:
            raise ValueError("dpf needs the params: call tx.update(grads, opt_state, params)")
        check_may_update_mask(may_update_mask)
        check_same_structure(_hidden_to_none(params), state.mask, "params", "opt_state mask")
        t = state.count
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

        if may_update_mask:
            mask, sparsity, delta, flips = lax.switch(
                branch(t),
                [keep, update_mask] if feedback else [keep, check_only, update_mask],
                state.mask,
                only_prunable(params),
                grads_in,
            )
        else:  # the caller's promise: branch(t) == 0 (see mask_update_schedule)
            mask, sparsity, delta, flips = keep(state.mask, None, None)
        if not feedback:
            updates = _map_masked(
                lambda m, u, w: jnp.where(m, u, -w).astype(jnp.result_type(u)), mask, updates, params
            )
        return updates, DPFState(t + 1, mask, sparsity, delta, flips)

    update_fn.mask_update_due = lambda t: branch(t) != 0
    core = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    if inner is None:
        return core
    chained = optax.chain(inner, core)
    chained.update.mask_update_due = update_fn.mask_update_due
    return chained

