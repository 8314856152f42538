"""Benchmark: SiPP empirical sensitivities over |S| points.

(a) LeNet-300-100 (784-300-100-10) with |S| = 152: goal <= 1 s run time on
2 CPU cores; (b) ResNet-20 (CIFAR, 32x32x3): ratio to one jitted forward pass
over the same S, goal <= 20x. Compile time (first call minus a warm call) is
reported separately; run times are medians of warm calls.

    python -m experiments.benchmarks.bench_sipp [--repeats 3] [--resnet-points 152]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import jaxprune as jp


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    """(first call seconds, median warm seconds), blocking on the result."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def bench(name: str, n_points: int | None, input_shape: tuple[int, ...], repeats: int) -> None:
    model = jp.train.models.get_model(name, 10)
    x1 = jnp.zeros((1, *input_shape), jnp.float32)
    variables = model.init(jax.random.key(0), x1, train=False)
    extra = {k: v for k, v in variables.items() if k != "params"}
    params = variables["params"]

    def apply_fn(p, x):
        return model.apply({"params": p, **extra}, x, train=False)

    sizes = jp.sipp.layer_output_sizes(apply_fn, params, x1)
    n = n_points or jp.sipp.sample_size(sizes)
    x = jax.random.normal(jax.random.key(1), (n, *input_shape), jnp.float32)
    sens_fn = jp.sipp.make_sensitivity_fn(apply_fn)
    fwd = jax.jit(apply_fn)
    _, f_run = _time(fwd, params, x, repeats=repeats)
    s_first, s_run = _time(sens_fn, params, x, repeats=repeats)
    print(
        f"{name}: |S|={n} ({len(sizes)} layers, eta={sum(sizes)})  sensitivity run {s_run:.3f} s, "
        f"compile {s_first - s_run:.2f} s | forward run {f_run * 1e3:.1f} ms | ratio {s_run / f_run:.1f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--resnet-points", type=int, default=None, help="|S| for ResNet-20 (default: sample_size)"
    )
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    bench("lenet300", None, (28, 28, 1), args.repeats)
    bench("resnet20", args.resnet_points, (32, 32, 3), args.repeats)


if __name__ == "__main__":
    main()
