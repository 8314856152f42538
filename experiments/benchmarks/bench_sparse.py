"""Benchmark: the per-step overhead of RigL and SET (``jp.optax.rigl`` /
``jp.optax.set_sparse``, Delta T = 100) over dense training on the MLP
784-300-100-10 (batch 256, SGD lr 0.1 momentum 0.9, softmax cross-entropy on a
fixed batch of random data), sibling of ``bench_dpf.py``.

Variants of the same jitted, donated train step:

  dense: plain SGD;
  rigl / set: 90% sparsity over DPF's prunable set (both hidden kernels), the
      mask updated every 100 steps, the forward pass at the params themselves
      (these transformations hold every inactive weight at exactly 0, and the
      params are masked once at step 0), and the engine's dispatch: steps where
      ``jp.optax.mask_update_schedule(tx)`` is False run a second compiled step
      traced with ``may_update_mask=False`` (no mask-update branch), chosen on
      the host by the step count (the Trainer's form, given
      ``mask_update_due``; the sparse_training pipeline's form);
  rigl_cond / set_cond: the same with one compiled step for all steps (the
      mask update under ``lax.cond``): a plain user loop;
  rigl_carried: RigL (dispatched) in the carried form that DPF and STE need
      (``m * w`` for the next forward pass computed at the end of the step):
      one more elementwise pass per step.

Blocks of ``--block`` steps (a multiple of 100: one mask update per block)
run interleaved, (dense, rigl, set, ...) per round, so machine noise hits all
alike; the figure to quote is the median over rounds of each round's wall-time
ratio to dense (paired per round). Goal: <= 1.05.

``--tune-malloc`` first calls ``jaxprune.train.tune_host_malloc`` (glibc
keeps XLA:CPU's per-step scratch mapped between steps; it matters for the
single-program forms, whose untaken mask-update branch enlarges that scratch).

    python -m experiments.benchmarks.bench_sparse
    python -m experiments.benchmarks.bench_sparse --tune-malloc
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from jaxprune.train import tune_host_malloc
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
    def rigl() -> optax.GradientTransformation:
        return jp.optax.rigl(sgd(), 0.9, total, key=key, update_every=100)

    def set_() -> optax.GradientTransformation:
        return jp.optax.set_sparse(sgd(), 0.9, key=key, update_every=100)

    # name: (tx, forward form, dispatch on the host to a step without the mask-update branch)
    variants = {
        "dense": (sgd(), "dense", False),
        "rigl": (rigl(), "direct", True),
        "set": (set_(), "direct", True),
        "rigl_cond": (rigl(), "direct", False),
        "set_cond": (set_(), "direct", False),
        "rigl_carried": (rigl(), "carried", True),
    }
    steps, states = {}, {}
    for name, (tx, form, dispatch) in variants.items():

        def step(params, fwd, opt_state, tx=tx, form=form, may_update_mask=True):
            grads = jax.grad(loss)(params if form in ("dense", "direct") else fwd)
            kwargs = {} if form == "dense" else {"may_update_mask": may_update_mask}
            updates, opt_state = tx.update(grads, opt_state, params, **kwargs)
            params = optax.apply_updates(params, updates)
            fwd = jp.optax.sparse_params(params, opt_state) if form == "carried" else None
            return params, fwd, opt_state

        full = jax.jit(step, donate_argnums=(0, 1, 2))
        if dispatch:
            quiet = jax.jit(functools.partial(step, may_update_mask=False), donate_argnums=(0, 1, 2))
            due = np.asarray(jax.vmap(jp.optax.mask_update_schedule(tx))(jnp.arange(total + 1)))
            steps[name] = lambda t, *state, f=full, q=quiet, due=due: (f if due[t] else q)(*state)
        else:
            steps[name] = lambda t, *state, full=full: full(*state)
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
    parser.add_argument("--tune-malloc", action="store_true",
                        help="call jaxprune.train.tune_host_malloc first (default: glibc's defaults)")
    args = parser.parse_args()
    malloc = f"tuned: {tune_host_malloc()}" if args.tune_malloc else "glibc defaults"
    if args.block % 100:
        raise SystemExit("--block must be a multiple of 100 (one RigL/SET update per 100 steps)")
    # RigL's updates stop at 75% of total_steps: make them cover every measured step.
    total = math.ceil((101 + args.rounds * args.block) / 0.75) + 1
    steps, states = build(total)
    for name, fn in steps.items():  # compile, and run the mask-update branch once
        for t in range(101):
            states[name] = fn(t, *states[name])
        jax.block_until_ready(states[name])
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        first = 101 + r * args.block  # the update count of the round's first step
        for name, fn in steps.items():
            state = states[name]
            start = time.perf_counter()
            for t in range(first, first + args.block):
                state = fn(t, *state)
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - start) / args.block)
            states[name] = state
    print(f"MLP 784-300-100-10, batch 256, {args.rounds} rounds x {args.block} steps per variant, "
          f"{jax.devices()[0].platform}, malloc {malloc}")
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
