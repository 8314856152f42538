"""Jitted, data-parallel train and eval steps.

Batches are dicts ``{"x": (B, ...), "y": (B,), "weight": (B,) float32}``
sharded along B over the mesh's ``"data"`` axis; the state is replicated.
``x`` is float32 model input, or raw data (e.g. uint8 images of the streaming
pipeline) that ``prepare`` turns into it inside the jitted step. The
loss is the ``weight``-weighted mean over the GLOBAL batch (padding rows carry
weight 0): softmax cross-entropy for classification, squared error for
regression (model output ``(B, 1)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxprune._validate import check_choice
from jaxprune.train.mesh import batch_sharding, replicated_sharding
from jaxprune.train.state import TrainState

TASKS = ("classification", "regression")
PyTree = Any
ForwardParams = Callable[[PyTree, PyTree], PyTree]
Augment = Callable[[jax.Array, jax.Array], jax.Array]
Prepare = Callable[[jax.Array], jax.Array]


def per_example_loss(outputs: jax.Array, y: jax.Array, task: str) -> jax.Array:
    """``(B,)`` losses: cross-entropy of logits ``(B, K)`` vs int labels, or
    squared error of ``(B, 1)`` predictions vs float targets."""
    if task == "classification":
        return optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32), y)
    return jnp.square(outputs[:, 0].astype(jnp.float32) - y)


def _correct(outputs: jax.Array, y: jax.Array, weight: jax.Array) -> jax.Array:
    return jnp.sum(weight * (jnp.argmax(outputs, axis=-1) == y))


def _forward(model: nn.Module, params: PyTree, batch_stats: PyTree, x: jax.Array, *, train: bool, key=None):
    """Model outputs and (in training with BN) the updated batch statistics."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    rngs = {"dropout": key} if key is not None else None
    if train and batch_stats:
        outputs, updates = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        return outputs, updates["batch_stats"]
    return model.apply(variables, x, train=train, rngs=rngs), batch_stats


def _train_body(
    model, tx, task: str, augment: Augment | None, prepare: Prepare | None, tx_kwargs: dict | None = None
) -> Callable:
    """``body(state, fwd, batch) -> (state, metrics)``: one optimizer step with
    the forward (and gradient) at the weights ``fwd``, applied to ``state.params``.
    ``tx_kwargs``: static keyword arguments of ``tx.update`` (optax extra args,
    e.g. ``may_update_mask=False``)."""
    if tx_kwargs:
        tx = optax.with_extra_args_support(tx)
    tx_kwargs = dict(tx_kwargs or {})

    def loss_fn(fwd_params, batch_stats, batch, key):
        outputs, new_stats = _forward(model, fwd_params, batch_stats, batch["x"], train=True, key=key)
        weight = batch["weight"].astype(jnp.float32)
        count = jnp.maximum(jnp.sum(weight), 1.0)
        loss = jnp.sum(weight * per_example_loss(outputs, batch["y"], task)) / count
        return loss, (new_stats, outputs, count)

    def body(state: TrainState, fwd: PyTree, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(state.rng, state.step)
        aug_key, dropout_key = jax.random.split(key)
        if prepare is not None:
            batch = {**batch, "x": prepare(batch["x"])}
        if augment is not None:
            batch = {**batch, "x": augment(aug_key, batch["x"])}
        (loss, (new_stats, outputs, count)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            fwd, state.batch_stats, batch, dropout_key
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **tx_kwargs)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss}
        if task == "classification":
            metrics["accuracy"] = _correct(outputs, batch["y"], batch["weight"]) / count
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state
        )
        return new_state, metrics

    return body


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    task: str,
    mesh: Mesh,
    forward_params: ForwardParams | None = None,
    augment: Augment | None = None,
    prepare: Prepare | None = None,
    tx_kwargs: dict | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """``step(state, batch) -> (state, metrics)``, jitted with the state donated.

    ``forward_params(params, opt_state)`` gives the weights of the forward pass
    (DPF: ``m * w``); the gradient is taken w.r.t. THOSE weights and applied to
    the dense ``params`` (``tx.update(grads, opt_state, params)``).
    ``prepare(x) -> x`` (e.g. uint8 -> normalized float32) and then
    ``augment(key, x) -> x`` run on device before the forward pass. ``metrics``
    are device scalars: ``loss`` (weighted mean) and, for classification,
    ``accuracy``. :func:`make_carried_train_step` is the same step, faster with
    ``forward_params``. ``tx_kwargs``: static keyword arguments passed to
    ``tx.update`` (e.g. ``{"may_update_mask": False}`` for the steps a
    sparse-training transformation does not update its mask at, see
    :func:`jaxprune.optax.mask_update_schedule`).
    """
    check_choice("task", task, TASKS)
    body = _train_body(model, tx, task, augment, prepare, tx_kwargs)

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        fwd = state.params if forward_params is None else forward_params(state.params, state.opt_state)
        return body(state, fwd, batch)

    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=(0,))


def _own_leaves(params: PyTree, fwd: PyTree) -> PyTree:
    """``fwd`` with ``None`` where its leaf IS the params leaf (traced identity:
    ``apply_mask`` passes non-prunable leaves through), so that a carried tree
    never aliases the params (a buffer cannot be donated twice)."""
    return jax.tree.map(lambda w, f: None if f is w else f, params, fwd)


def _with_params(params: PyTree, own: PyTree) -> PyTree:
    """Inverse of :func:`_own_leaves`: the full forward weights."""
    return jax.tree.map(lambda w, f: w if f is None else f, params, own, is_leaf=lambda x: x is None)


def make_carried_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    task: str,
    mesh: Mesh,
    forward_params: ForwardParams,
    augment: Augment | None = None,
    prepare: Prepare | None = None,
    tx_kwargs: dict | None = None,
) -> tuple[Callable[[TrainState], PyTree], Callable[[TrainState, PyTree, dict], tuple]]:
    """The step of :func:`make_train_step` with the forward weights carried from
    one step to the next: ``(start, step)`` with

    - ``start(state) -> carried``: ``forward_params(state.params, state.opt_state)``
      on the leaves it changes (``None`` elsewhere); call it after creating,
      restoring or replacing the state.
    - ``step(state, carried, batch) -> (state, carried, metrics)``, jitted with
      ``state`` and ``carried`` donated; the returned ``carried`` is
      ``forward_params`` of the NEW params and optimizer state.

    The results are bitwise equal to :func:`make_train_step`'s: the same
    elementwise ``m * w`` is computed at the end of the previous step instead of
    the start of this one. There XLA fuses it into the parameter update, one
    pass over the weights; at the start of the step it is a separate pass that
    XLA:CPU does not fuse into the matmul (measured: ~15-20% of an MLP step on
    CPU, see ``experiments/benchmarks/bench_dpf.py``). Memory: one extra copy of
    the masked leaves. ``tx_kwargs``: as in :func:`make_train_step`.
    """
    check_choice("task", task, TASKS)
    body = _train_body(model, tx, task, augment, prepare, tx_kwargs)

    def start(state: TrainState) -> PyTree:
        return _own_leaves(state.params, forward_params(state.params, state.opt_state))

    def step(state: TrainState, carried: PyTree, batch: dict) -> tuple[TrainState, PyTree, dict]:
        new_state, metrics = body(state, _with_params(state.params, carried), batch)
        return new_state, start(new_state), metrics

    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    start_jit = jax.jit(start, in_shardings=(rep,), out_shardings=rep)
    step_jit = jax.jit(
        step, in_shardings=(rep, rep, data), out_shardings=(rep, rep, rep), donate_argnums=(0, 1)
    )
    return start_jit, step_jit


def make_eval_step(
    model: nn.Module,
    *,
    task: str,
    mesh: Mesh,
    forward_params: ForwardParams | None = None,
    prepare: Prepare | None = None,
) -> Callable[[TrainState, dict], dict]:
    """``eval_step(state, batch) -> sums``: ``loss_sum`` (weighted sum of
    per-example losses), ``count`` (sum of weights) and, for classification,
    ``correct`` (weighted count of right argmax predictions). Sums, not means, so
    that a split's metrics are exact over padded batches. ``prepare``: as in
    :func:`make_train_step`."""
    check_choice("task", task, TASKS)

    def eval_step(state: TrainState, batch: dict) -> dict:
        params = state.params if forward_params is None else forward_params(state.params, state.opt_state)
        x = batch["x"] if prepare is None else prepare(batch["x"])
        outputs, _ = _forward(model, params, state.batch_stats, x, train=False)
        weight = batch["weight"].astype(jnp.float32)
        sums = {
            "loss_sum": jnp.sum(weight * per_example_loss(outputs, batch["y"], task)),
            "count": jnp.sum(weight),
        }
        if task == "classification":
            sums["correct"] = _correct(outputs, batch["y"], weight)
        return sums

    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    return jax.jit(eval_step, in_shardings=(rep, data), out_shardings=rep)
