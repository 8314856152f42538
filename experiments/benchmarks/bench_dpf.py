"""Benchmark: the per-step overhead of DPF (``jp.optax.dpf``) over dense training.

Variants of the same jitted, donated train step (SGD lr 0.1, momentum 0.9,
softmax cross-entropy on a fixed batch of random data):

  (a) dense;
  (b) DPF, global magnitude mask recomputed every 16 steps, cubic schedule to
      90% sparsity over the run;
  (c) the same with the mask recomputed at every step.

(b) and (c) run in two forms of the step, with bitwise equal results:

  carried: ``m * w`` for the next forward pass is computed at the END of the
      step, after the update (``params, sparse_params(params, opt_state)`` are
      returned and the sparse tree is passed back in), where XLA fuses it into
      the parameter update (``jaxprune.train.make_carried_train_step``).
  plain: the DESIGN.md idiom, ``sparse_params`` at the START of the step: one
      more pass over the weights, which XLA:CPU does not fuse into the matmul.

and (b) also in the form the engine's Trainer runs (``b_dispatch``): carried,
with the steps where ``jp.optax.mask_update_schedule`` is False running a
second compiled step traced with ``may_update_mask=False`` (no ``lax.switch``),
chosen on the host by the step count. The goals apply to it.

``--tune-malloc`` first calls ``jaxprune.train.tune_host_malloc``.

The variants run interleaved in blocks (a, b, c, ...) so that machine noise
hits all of them alike; the mean and the median (over blocks) step time of
each, wall-clock and process CPU time (all threads; less sensitive to a loaded
machine than wall time), are printed with the ratios to (a), and the median
over rounds of each round's wall-time ratio (the figure to quote). Goals: (b)/(a)
<= 1.10 for the MLP, <= 1.03 for ResNet-20; (c)/(a) <= 3.

    python -m experiments.benchmarks.bench_dpf                      # MLP 784-300-100-10
    python -m experiments.benchmarks.bench_dpf --model resnet20     # CIFAR ResNet-20
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from jaxprune.train import tune_host_malloc
from jaxprune.train.models import get_model

# model name -> (input shape without batch, batch size, default steps per variant)
MODELS = {
    "lenet300": ((784,), 256, 2048),  # the MLP 784-300-100-10
    "resnet20": ((32, 32, 3), 128, 128),
}


def build_steps(model_name: str, total_steps: int) -> tuple[dict[str, Callable], dict[str, tuple]]:
    """The jitted step of each variant and its initial ``(params, forward params, extra, opt_state)``.

    This is the slot for further models: any ``jaxprune.train.models.get_model``
    name works once its input shape and batch size are listed in ``MODELS``."""
    shape, batch, _ = MODELS[model_name]
    model = get_model(model_name, 10)
    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (batch, *shape), jnp.float32)
    y = jax.random.randint(ky, (batch,), 0, 10)
    variables = model.init(kp, x, train=False)
    has_bn = "batch_stats" in variables

    def loss(params, extra):
        if has_bn:
            logits, new = model.apply({"params": params, **extra}, x, train=True, mutable=["batch_stats"])
        else:
            logits, new = model.apply({"params": params}, x, train=True), extra
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

    schedule = jp.masks.polynomial_schedule(0.9, 0, total_steps)
    sgd = lambda: optax.sgd(0.1, momentum=0.9)
    dpf = lambda every: jp.optax.dpf(schedule, update_every=every)
    variants = {  # name: (optimizer, form of the step, dispatch to a step without the mask update)
        "a_dense": (sgd(), "dense", False),
        "b_dispatch": (dpf(16), "carried", True),
        "b_dpf16": (dpf(16), "carried", False),
        "c_dpf1": (dpf(1), "carried", False),
        "b_plain": (dpf(16), "plain", False),
        "c_plain": (dpf(1), "plain", False),
    }
    steps, states = {}, {}
    for name, (pruner, form, dispatch) in variants.items():
        tx = pruner if form == "dense" else optax.chain(pruner, sgd())

        def step(params, fwd, extra, opt_state, tx=tx, form=form, may_update_mask=True):
            if form == "plain":
                fwd = jp.optax.sparse_params(params, opt_state)
            grads, new_extra = jax.grad(loss, has_aux=True)(fwd, extra)
            kwargs = {} if form == "dense" else {"may_update_mask": may_update_mask}
            updates, opt_state = tx.update(grads, opt_state, params, **kwargs)
            params = optax.apply_updates(params, updates)
            fwd = jp.optax.sparse_params(params, opt_state) if form == "carried" else params
            return params, fwd, new_extra, opt_state

        full = jax.jit(step, donate_argnums=(0, 1, 2, 3))
        if dispatch:
            quiet = jax.jit(functools.partial(step, may_update_mask=False), donate_argnums=(0, 1, 2, 3))
            due = np.asarray(jax.vmap(jp.optax.mask_update_schedule(pruner))(jnp.arange(total_steps + 100)))
            steps[name] = lambda t, *state, f=full, q=quiet, due=due: (f if due[t] else q)(*state)
        else:
            steps[name] = lambda t, *state, f=full: f(*state)
        params = jax.tree.map(jnp.array, variables["params"])  # own copies: they get donated
        extra = {k: jax.tree.map(jnp.array, v) for k, v in variables.items() if k != "params"}
        opt_state = tx.init(params)
        fwd = jp.optax.sparse_params(params, opt_state) if form == "carried" else params
        states[name] = (params, jax.tree.map(jnp.array, fwd), extra, opt_state)
    return steps, states


def run(model_name: str, steps_per_variant: int, block: int) -> dict[str, dict[str, list[float]]]:
    """Per-block step times (seconds) of each variant, ``{"wall": [...], "cpu": [...]}``,
    measured in interleaved blocks."""
    if block % 16 or steps_per_variant % block:
        raise ValueError("block must be a multiple of 16 dividing steps_per_variant")
    steps, states = build_steps(model_name, steps_per_variant)
    for name, fn in steps.items():  # warm-up: compile and run both branches of the mask update
        for t in range(17):
            states[name] = fn(t, *states[name])
        jax.block_until_ready(states[name])
    times = {name: {"wall": [], "cpu": []} for name in steps}
    for r in range(steps_per_variant // block):
        first = 17 + r * block  # the update count of the round's first step
        for name, fn in steps.items():
            state = states[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            for t in range(first, first + block):
                state = fn(t, *state)
            jax.block_until_ready(state)
            times[name]["wall"].append((time.perf_counter() - start) / block)
            times[name]["cpu"].append((time.process_time() - start_cpu) / block)
            states[name] = state
    density = jp.summarize(jp.optax.get_mask(states["b_dpf16"][3]))["prunable"]["density"]
    print(f"final density of (b) over its prunable leaves: {density:.4f}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="lenet300", choices=sorted(MODELS))
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per variant (multiple of --block)"
    )
    parser.add_argument("--block", type=int, default=64, help="steps per interleaved block (multiple of 16)")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="call jaxprune.train.tune_host_malloc first (default: glibc's defaults)")
    args = parser.parse_args()
    malloc = f"tuned: {tune_host_malloc()}" if args.tune_malloc else "glibc defaults"
    steps = args.steps or MODELS[args.model][2]
    block = min(args.block, steps)
    times = run(args.model, steps, block)
    print(
        f"model={args.model} batch={MODELS[args.model][1]} steps/variant={steps} block={block} "
        f"backend={jax.default_backend()} malloc {malloc}"
    )
    goal_b = 1.10 if args.model == "lenet300" else 1.03
    for clock in ("wall", "cpu"):
        for stat in ("mean", "median"):
            agg = {name: getattr(statistics, stat)(t[clock]) for name, t in times.items()}
            print(f"{clock} {stat}:")
            for name, t in agg.items():
                print(f"  {name:8s} step {t * 1e3:8.3f} ms   ratio to dense {t / agg['a_dense']:.3f}")
            ratio = {name: t / agg["a_dense"] for name, t in agg.items()}
            print(
                f"  engine (dispatched): (b)/(a) = {ratio['b_dispatch']:.3f} (goal <= {goal_b}); "
                f"carried: (b)/(a) = {ratio['b_dpf16']:.3f}; "
                f"(c)/(a) = {ratio['c_dpf1']:.3f} (goal <= 3)\n"
                f"  plain:   (b)/(a) = {ratio['b_plain']:.3f}; (c)/(a) = {ratio['c_plain']:.3f}"
            )
    # Each round times every variant back to back: the median over rounds of the
    # per-round ratio cancels load that drifts slower than one round.
    paired = {
        name: statistics.median(x / d for x, d in zip(t["wall"], times["a_dense"]["wall"], strict=True))
        for name, t in times.items()
    }
    print(
        f"paired wall ratios (median over {len(times['a_dense']['wall'])} rounds): "
        f"engine (b)/(a) = {paired['b_dispatch']:.3f} (goal <= {goal_b}); "
        f"carried (b)/(a) = {paired['b_dpf16']:.3f}, (c)/(a) = {paired['c_dpf1']:.3f}; "
        f"plain (b)/(a) = {paired['b_plain']:.3f}, (c)/(a) = {paired['c_plain']:.3f}"
    )


if __name__ == "__main__":
    main()
