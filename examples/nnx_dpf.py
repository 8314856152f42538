"""DPF (Lin et al., ICLR 2020) on a Flax NNX MLP, trained through ``nnx.Optimizer``
on scikit-learn's bundled digits (8x8 images, 10 classes; no download).

The DPF step, NNX style: the forward and backward pass run at the sparse
weights ``m * w`` (``jp.optax.sparse_params``), the gradient ``g(m * w)`` is
applied unmasked to the dense weights by ``optimizer.update`` (error feedback),
and ``jp.optax.dpf`` re-computes the magnitude mask every ``update_every``
steps, following the Zhu & Gupta schedule to the target sparsity. The output
layer stays dense, as in the paper.

    python examples/nnx_dpf.py --steps 800 --sparsity 0.9
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxprune as jp


class MLP(nnx.Module):
    """64 -> hidden -> hidden -> 10, ReLU."""

    def __init__(self, hidden: int, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(64, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


def digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], a seeded split."""
    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(test_fraction * len(x))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(p: nnx.State) -> jax.Array:
        w_tilde = jp.optax.sparse_params(p, optimizer.opt_state)  # forward at m * w
        return cross_entropy(nnx.merge(graphdef, w_tilde, rest)(x), y)

    loss, grads = jax.value_and_grad(loss_fn)(params)  # g(m * w), NOT masked
    optimizer.update(model, grads)  # applied to the dense w; dpf updates the mask
    return loss


@nnx.jit
def sparse_accuracy(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    logits = nnx.merge(graphdef, jp.optax.sparse_params(params, optimizer.opt_state), rest)(x)
    return jnp.mean(jnp.argmax(logits, -1) == y)


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
    the sparse model's test accuracy, the final loss and the sparsity reached."""
    x_train, y_train, x_test, y_test = digits(seed)
    model = MLP(hidden, nnx.Rngs(seed))
    params = nnx.state(model, nnx.Param)
    prunable = jp.prunable(params, exclude="^head/")  # hidden kernels; the output layer stays dense
    schedule = jp.masks.polynomial_schedule(sparsity, 0, max(1, int(prune_until * steps)))
    tx = optax.chain(
        jp.optax.dpf(schedule, update_every=update_every, prunable=prunable),
        optax.sgd(lr, momentum=0.9, nesterov=True),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(seed)
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        idx = rng.choice(len(x_train), batch_size, replace=False)
        losses.append(train_step(model, optimizer, jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx])))
    losses = [float(v) for v in jax.device_get(losses)]
    accuracy = float(sparse_accuracy(model, optimizer, jnp.asarray(x_test), jnp.asarray(y_test)))
    sparse = jp.optax.sparse_params(nnx.state(model, nnx.Param), optimizer.opt_state)
    nnx.update(model, sparse)  # ship the sparse model: pruned weights are exactly 0
    report = jp.summarize(sparse, prunable=prunable)
    return {
        "steps": steps,
        "test_accuracy": accuracy,
        "first_loss": float(np.mean(losses[:10])),
        "final_loss": float(np.mean(losses[-10:])),
        "target_sparsity": sparsity,
        "sparsity": 1.0 - report["prunable"]["density"],
        "dpf_sparsity": float(jp.optax.dpf_diagnostics(optimizer.opt_state)["sparsity"]),
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
