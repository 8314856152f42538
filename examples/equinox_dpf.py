"""DPF (Lin et al., ICLR 2020) on an equinox MLP, on scikit-learn's bundled
digits (8x8 images, 10 classes; no download).

equinox keeps a module's arrays in the module itself: ``eqx.partition`` splits
it into the params pytree (the float arrays; attribute paths such as
``layers/0/weight``) and the static rest, and ``eqx.combine`` puts them back.
jaxprune works on the params pytree like on any other: ``jp.prunable`` matches
the attribute paths, ``jp.optax.dpf`` prunes the weights, and the train step is
the DPF idiom (forward at ``m * w``, the gradient applied to the dense ``w``).

equinox stores a ``Linear`` weight as ``(out, in)``: the output units are axis
0, not the last axis as in flax. Per-neuron (and per-filter) measures and
masks take ``out_axis=0`` for it; the global sparsity used here does not care.

    python examples/equinox_dpf.py --steps 800 --sparsity 0.9
"""

from __future__ import annotations

import argparse
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxprune as jp


def digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], a seeded split."""
    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(test_fraction * len(x))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def train(
    steps: int = 800,
    sparsity: float = 0.9,
    *,
    hidden: int = 128,
    batch_size: int = 64,
    lr: float = 0.05,
    update_every: int = 16,
    prune_until: float = 0.75,
    seed: int = 0,
) -> dict[str, float]:
    """Train with DPF for ``steps`` steps; the sparsity ramps from 0 to
    ``sparsity`` over the first ``prune_until`` fraction of the steps. Returns
    the sparse model's test accuracy, the final loss, the sparsity reached and
    the per-neuron PQ Index (``out_axis=0``: one value per output unit)."""
    x_train, y_train, x_test, y_test = digits(seed)
    model = eqx.nn.MLP(64, 10, hidden, depth=2, activation=jax.nn.relu, key=jax.random.key(seed))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    prunable = jp.prunable(params, exclude="^layers/2/")  # hidden weights; the output layer stays dense
    schedule = jp.masks.polynomial_schedule(sparsity, 0, max(1, int(prune_until * steps)))
    tx = optax.chain(
        jp.optax.dpf(schedule, update_every=update_every, prunable=prunable),
        optax.sgd(lr, momentum=0.9, nesterov=True),
    )

    def loss_fn(p, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = jax.vmap(eqx.combine(p, static))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, opt_state, x: jax.Array, y: jax.Array):
        w_tilde = jp.optax.sparse_params(p, opt_state)  # forward at m * w
        loss, grads = jax.value_and_grad(loss_fn)(w_tilde, x, y)  # g(m * w), NOT masked
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss  # applied to the dense w

    @jax.jit
    def accuracy(p, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean(jnp.argmax(jax.vmap(eqx.combine(p, static))(x), -1) == y)

    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        idx = rng.choice(len(x_train), batch_size, replace=False)
        x, y = jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx])
        params, opt_state, loss = step(params, opt_state, x, y)
        losses.append(loss)
    losses = [float(v) for v in jax.device_get(losses)]
    sparse = jp.optax.sparse_params(params, opt_state)  # the sparse model: eqx.combine(sparse, static)
    neuron_pqi = jp.measures.pq_index(sparse, scope="neuron", prunable=prunable, out_axis=0)
    pqi = np.concatenate([np.asarray(v) for v in jax.tree.leaves(neuron_pqi)])
    report = jp.summarize(sparse, prunable=prunable)
    return {
        "steps": steps,
        "test_accuracy": float(accuracy(sparse, jnp.asarray(x_test), jnp.asarray(y_test))),
        "first_loss": float(np.mean(losses[:10])),
        "final_loss": float(np.mean(losses[-10:])),
        "target_sparsity": sparsity,
        "sparsity": 1.0 - report["prunable"]["density"],
        "dpf_sparsity": float(jp.optax.dpf_diagnostics(opt_state)["sparsity"]),
        "neuron_pq_index_median": float(np.median(pqi)),
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(train(args.steps, args.sparsity, seed=args.seed), indent=1))


if __name__ == "__main__":
    main()
