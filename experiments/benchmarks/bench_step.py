"""Engine train step vs a minimal hand-written Flax/optax step.

Both are jitted with the state donated, run the same model, optimizer (SGD +
Nesterov + coupled weight decay) and batch on the default devices; the engine
step adds the mesh shardings, weighted loss, accuracy and per-step keys.
Repeats are interleaved (engine, minimal, engine, ...) and the median time per
step of each is compared. Goal: engine throughput >= 0.95x minimal.

    python -m experiments.benchmarks.bench_step [--repeats 5] [--steps 20]

Without ``--model`` it runs the two fixed cases below (lenet300, resnet20).
``--model NAME`` benchmarks one model of the zoo instead, on ``--batch``
random ``--image_size`` x ``--image_size`` x 3 images. ``--dtype`` (also for
the fixed cases) is the models' computation dtype: params stay float32, see
``jaxprune.train.models``. The first line names the device kind.
E.g. ResNet-50 in bfloat16 on a GPU:

    python -m experiments.benchmarks.bench_step --model resnet50 --dtype bfloat16 --batch 256 --image_size 224
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune.train import MODEL_NAMES, create_train_state, get_model, make_mesh, make_train_step, put_batch

CASES = (("lenet300", 256, (28, 28, 1)), ("resnet20", 128, (32, 32, 3)))


def _tx() -> optax.GradientTransformation:
    return optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9, nesterov=True))


def _minimal_step(model, tx):
    """The reference: plain Flax/optax, no sharding annotations, unweighted mean loss."""

    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(p):
            variables = {"params": p, **({"batch_stats": batch_stats} if batch_stats else {})}
            if batch_stats:
                out, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
                new_stats = upd["batch_stats"]
            else:
                out, new_stats = model.apply(variables, x, train=True), batch_stats
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))


def _time(fn, steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return (time.perf_counter() - start) / steps


def bench(
    name: str, batch_size: int, shape: tuple[int, ...], repeats: int, steps: int, dtype: str = "float32"
) -> dict:
    rng = np.random.default_rng(0)
    model = get_model(name, 10, dtype=dtype)
    tx = _tx()
    mesh = make_mesh()
    batch = {
        "x": rng.normal(size=(batch_size, *shape)).astype(np.float32),
        "y": rng.integers(0, 10, batch_size).astype(np.int32),
        "weight": np.ones(batch_size, np.float32),
    }
    engine_step = make_train_step(model, tx, task="classification", mesh=mesh)
    engine_batch = put_batch(batch, mesh)
    box = {"state": create_train_state(model, tx, shape, jax.random.PRNGKey(0), mesh=mesh)}

    ref_step = _minimal_step(model, tx)
    ref_state = create_train_state(model, tx, shape, jax.random.PRNGKey(0))
    ref = {"p": ref_state.params, "s": ref_state.batch_stats, "o": ref_state.opt_state}
    x, y = jnp.asarray(batch["x"]), jnp.asarray(batch["y"])

    def run_engine(n):
        for _ in range(n):
            box["state"], metrics = engine_step(box["state"], engine_batch)
        jax.block_until_ready(metrics["loss"])

    def run_ref(n):
        for _ in range(n):
            ref["p"], ref["s"], ref["o"], loss = ref_step(ref["p"], ref["s"], ref["o"], x, y)
        jax.block_until_ready(loss)

    run_engine(2)  # compile + warm up
    run_ref(2)
    t_engine, t_ref = [], []
    for _ in range(repeats):
        t_engine.append(_time(run_engine, steps))
        t_ref.append(_time(run_ref, steps))
    te, tr = statistics.median(t_engine), statistics.median(t_ref)
    return {
        "model": name,
        "batch": batch_size,
        "engine_img_s": batch_size / te,
        "minimal_img_s": batch_size / tr,
        "ratio": tr / te,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", choices=MODEL_NAMES, help="one model instead of the fixed cases")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch", type=int, default=64, help="batch size (with --model)")
    parser.add_argument("--image_size", type=int, default=32, help="image height = width (with --model)")
    args = parser.parse_args()
    if args.model is None:
        cases = [
            (n, bs, shape, args.steps if n != "resnet20" else max(2, args.steps // 4))
            for n, bs, shape in CASES
        ]
    else:
        cases = [(args.model, args.batch, (args.image_size, args.image_size, 3), args.steps)]
    device = jax.devices()[0]
    print(f"devices: {jax.device_count()} x {device.platform} ({device.device_kind}), dtype {args.dtype}")
    print(f"{'model':<10}{'batch':>6}{'engine img/s':>14}{'minimal img/s':>15}{'ratio':>7}")
    for name, bs, shape, steps in cases:
        r = bench(name, bs, shape, args.repeats, steps, args.dtype)
        print(
            f"{r['model']:<10}{r['batch']:>6}{r['engine_img_s']:>14.1f}{r['minimal_img_s']:>15.1f}"
            f"{r['ratio']:>7.3f}"
        )


if __name__ == "__main__":
    main()
