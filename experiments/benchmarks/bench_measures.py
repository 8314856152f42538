"""Benchmark of :mod:`jaxprune.measures`.

1. PQ Index over a ResNet-50-shaped pytree (conv kernels HWIO, BN scale/bias
   vectors, final dense; ~25.5M parameters) in the three scopes, as a ratio to
   one jitted ``sum(|w|)`` pass over the same pytree. Both are jitted and timed
   with ``block_until_ready`` after a warm-up, back to back in each of
   ``--rounds`` rounds; the figure is the median over rounds of the per-round
   ratio (a ~6 ms baseline alone scatters by +-30% on a shared machine).
2. ``ap3_student_t`` with 600,000 samples over ~100 dimensions: seconds.

    python -m experiments.benchmarks.bench_measures [--rounds 31]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxprune import measures

SETTINGS = ((0.5, 1.0), (1.0, 2.0), (0.1, 1.0), (0.3, 1.7))


def resnet50_params(key: jax.Array) -> dict:
    """Random params with ResNet-50 shapes (bottleneck blocks [3, 4, 6, 3])."""
    shapes: dict[str, tuple[int, ...]] = {
        "stem/conv": (7, 7, 3, 64), "stem/bn_scale": (64,), "stem/bn_bias": (64,)
    }
    cin = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for b in range(blocks):
            name = f"stage{stage}/block{b}"
            convs = [(1, 1, cin, width), (3, 3, width, width), (1, 1, width, 4 * width)]
            if b == 0:
                convs.append((1, 1, cin, 4 * width))  # projection shortcut
            for i, shape in enumerate(convs):
                shapes[f"{name}/conv{i}"] = shape
                shapes[f"{name}/bn{i}_scale"] = (shape[-1],)
                shapes[f"{name}/bn{i}_bias"] = (shape[-1],)
            cin = 4 * width
    shapes["head/kernel"] = (2048, 1000)
    shapes["head/bias"] = (1000,)
    keys = jax.random.split(key, len(shapes))
    items = zip(shapes.items(), keys, strict=True)
    return {n: 0.05 * jax.random.normal(k, s, jnp.float32) for (n, s), k in items}


def wall(fn: Callable[[], jax.Array]) -> float:
    """Seconds of one call, to ``block_until_ready``."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def paired_ratio(fn: Callable[[], jax.Array], baseline: Callable[[], jax.Array], rounds: int) -> tuple:
    """``(median of fn / baseline per round, median fn seconds)``: the two run
    back to back in every round, after one warm-up (compile) call each."""
    wall(fn), wall(baseline)
    pairs = [(wall(fn), wall(baseline)) for _ in range(rounds)]
    return statistics.median(f / b for f, b in pairs), statistics.median(f for f, _ in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()

    params = resnet50_params(jax.random.key(0))
    size = sum(x.size for x in jax.tree.leaves(params))
    print(f"ResNet-50-shaped pytree: {len(params)} leaves, {size / 1e6:.1f}M params, "
          f"backend {jax.default_backend()}")
    baseline_fn = jax.jit(lambda t: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t)))
    baseline = lambda: baseline_fn(params)
    wall(baseline)
    print(f"baseline sum(|w|): {statistics.median(wall(baseline) for _ in range(args.rounds)) * 1e3:.2f} ms")
    for p, q in SETTINGS:
        for scope in ("global", "layer", "neuron"):
            fn = jax.jit(lambda t, p=p, q=q, scope=scope: measures.pq_index(t, p, q, scope=scope))
            ratio, t = paired_ratio(lambda fn=fn: fn(params), baseline, args.rounds)
            print(f"pq_index p={p} q={q} scope={scope:6s}: {t * 1e3:8.2f} ms  ratio {ratio:5.2f}x")

    w = jax.random.normal(jax.random.key(1), (2048, 1000))
    w_pruned = jnp.where(jnp.abs(w) > 0.5, w, 0.0)
    key = jax.random.key(2)
    ap3 = lambda: measures.ap3_student_t(w, w_pruned, key=key)
    wall(ap3)
    t = statistics.median(wall(ap3) for _ in range(5))
    print(f"ap3_student_t (600,000 samples, 100 dims): {t:.3f} s")


if __name__ == "__main__":
    main()
