"""Benchmark: the per-step overhead of RigL and SET (``jp.optax.rigl`` /
``jp.optax.set_sparse``, Delta T = 100) over dense training on the MLP
784-300-100-10 (batch 256, SGD lr 0.1 momentum 0.9, softmax cross-entropy on a
fixed batch of random data), sibling of ``bench_dpf.py``.

Variants of the same jitted, donated train step:

  dense: plain SGD;
  rigl / set: 90% sparsity over DPF's prunable set (both hidden kernels), the
      mask updated every 100 steps, the forward pass at the params themselves
      (the sparse_training pipeline's form: these transformations hold every
      inactive weight at exactly 0, and the params are masked once at step 0);
  rigl_carried: RigL in the carried form that DPF and STE need (``m * w`` for
      the next forward pass computed at the end of the step): one more
      elementwise pass per step.

Blocks of ``--block`` steps (a multiple of 100: one mask update per block)
run interleaved, (dense, rigl, set, ...) per round, so machine noise hits all
alike; the figure to quote is the median over rounds of each round's wall-time
ratio to dense (paired per round). Goal: <= 1.05.

    python -m experiments.benchmarks.bench_sparse
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import jaxprune as jp
from jaxprune.train.models import get_model


def build(total: int) -> tuple[dict, dict]:
    model = get_model("lenet300", 10)
    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (256, 784), jnp.float32)
    y = jax.random.randint(ky, (256,), 0, 10)
    params0 = model.init(kp, x, train=False)["params"]

    def loss(params):
        logits = model.apply({"params": params}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def sgd() -> optax.GradientTransformation:
        return optax.sgd(0.1, momentum=0.9)
    key = jax.random.key(1)
    variants = {
        "dense": (sgd(), "dense"),
        "rigl": (jp.optax.rigl(sgd(), 0.9, total, key=key, update_every=100), "direct"),
        "set": (jp.optax.set_sparse(sgd(), 0.9, key=key, update_every=100), "direct"),
        "rigl_carried": (jp.optax.rigl(sgd(), 0.9, total, key=key, update_every=100), "carried"),
    }
    steps, states = {}, {}
    for name, (tx, form) in variants.items():

        def step(params, fwd, opt_state, tx=tx, form=form):
            grads = jax.grad(loss)(params if form in ("dense", "direct") else fwd)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            fwd = jp.optax.sparse_params(params, opt_state) if form == "carried" else None
            return params, fwd, opt_state

        steps[name] = jax.jit(step, donate_argnums=(0, 1, 2))
        params = jax.tree.map(jnp.array, params0)
        opt_state = tx.init(params)
        if form == "direct":
            params = jp.optax.sparse_params(params, opt_state)
        fwd = jp.optax.sparse_params(params, opt_state) if form == "carried" else None
        fwd = None if fwd is None else jax.tree.map(jnp.array, fwd)
        states[name] = (params, fwd, opt_state)
    return steps, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=200)
    args = parser.parse_args()
    if args.block % 100:
        raise SystemExit("--block must be a multiple of 100 (one RigL/SET update per 100 steps)")
    total = args.rounds * args.block + 200
    steps, states = build(total)
    for name, fn in steps.items():  # compile, and run the mask-update branch once
        for _ in range(101):
            states[name] = fn(*states[name])
        jax.block_until_ready(states[name])
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            state = states[name]
            start = time.perf_counter()
            for _ in range(args.block):
                state = fn(*state)
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - start) / args.block)
            states[name] = state
    print(f"MLP 784-300-100-10, batch 256, {args.rounds} rounds x {args.block} steps per variant, "
          f"{jax.devices()[0].platform}")
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, times["dense"], strict=True)]
        print(f"{name:12s} median step {1e3 * statistics.median(t):7.3f} ms   "
              f"ratio to dense: median over rounds {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    mask = jp.optax.get_mask(states["rigl"][2])
    kept = sum(int(m.sum()) for m in jax.tree.leaves(mask))
    total_n = sum(m.size for m in jax.tree.leaves(mask))
    print(f"rigl mask: {kept} of {total_n} prunable entries kept")


if __name__ == "__main__":
    main()
