"""The training state: one pytree that a step consumes and returns, and that a
checkpoint saves whole."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxprune.train.mesh import replicated_sharding

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
    """``step``: int32 scalar (optimizer steps taken); ``params``: the dense
    trainable weights; ``batch_stats``: BatchNorm running statistics (``{}`` for
    models without BN); ``opt_state``: the optax state (pruning masks live here);
    ``rng``: a raw ``uint32[2]`` key. Per-step randomness is
    ``fold_in(rng, step)``, so it depends only on the step count (exact resume)."""

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    rng: jax.Array

    def replace_params(self, params: PyTree, tx: optax.GradientTransformation | None = None) -> TrainState:
        """New params; with ``tx``, also a fresh optimizer state and step 0 (a new
        round of an iterative pipeline: rewinding, new schedule)."""
        if tx is None:
            return self.replace(params=params)
        return self.replace(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))


def init_variables(model: nn.Module, input_shape: Sequence[int], key: jax.Array) -> dict[str, PyTree]:
    """``model.init`` on a zero batch of one example of ``input_shape`` (no batch axis)."""
    x = jnp.zeros((1, *input_shape), jnp.float32)
    params_key, dropout_key = jax.random.split(key)
    variables = model.init({"params": params_key, "dropout": dropout_key}, x, train=False)
    return dict(variables)


def make_init_fn(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: Sequence[int],
    *,
    mesh: Mesh | None = None,
) -> Callable[[jax.Array], TrainState]:
    """Jitted ``init(key) -> TrainState`` for inputs of ``input_shape`` (no batch
    axis); compiled once, reusable (e.g. a fresh init per round). With ``mesh``,
    the state is placed replicated on its devices."""
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {type(tx).__name__}")

    def init(key: jax.Array) -> TrainState:
        init_key, rng = jax.random.split(key)
        variables = init_variables(model, input_shape, init_key)
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.pop("batch_stats", {}),
            opt_state=tx.init(params),
            rng=rng,
        )

    # One compiled program instead of one per eager op of the model's init.
    return jax.jit(init, out_shardings=None if mesh is None else replicated_sharding(mesh))


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: Sequence[int],
    key: jax.Array,
    *,
    mesh: Mesh | None = None,
) -> TrainState:
    """Initialize ``model`` and ``tx``'s state; ``key`` is a raw PRNG key
    (``jax.random.PRNGKey``). See :func:`make_init_fn`."""
    return make_init_fn(model, tx, input_shape, mesh=mesh)(key)
