"""Benchmark: exact global top-k (keep 10%) of jaxprune.masks.topk against the
full-sort baseline (JaxPruner's way: concatenate all scores, sort, take the
threshold at k, mask ``scores >= threshold`` per leaf), both jitted, in the
same run, on (a) the MLP 784-300-100-10 kernels (266,200 scores) and (b) a
ResNet-50-shaped pytree (~25.5M scores).

    python -m experiments.benchmarks.bench_topk [--repeats 5]

Prints the median wall time of each (after one warm-up call), the speed-up
ratio, and the time per element (linear scaling check).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import jaxprune as jp

SPARSITY = 0.9


def mlp_shapes() -> list[tuple[int, ...]]:
    return [(784, 300), (300, 100), (100, 10)]


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Conv (HWIO) and dense kernels of ResNet-50 (ImageNet, 1000 classes)."""
    shapes = [(7, 7, 3, 64)]
    cin = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(1, 1, cin, width), (3, 3, width, width), (1, 1, width, 4 * width)]
            if b == 0:
                shapes.append((1, 1, cin, 4 * width))  # projection shortcut
            cin = 4 * width
    return [*shapes, (2048, 1000)]


def sort_baseline(scores: dict, sparsity: float) -> dict:
    flat = jnp.concatenate([jnp.ravel(s) for s in scores.values()])
    k = round((1 - sparsity) * flat.size)
    threshold = jnp.sort(flat)[flat.size - k]
    return {name: s >= threshold for name, s in scores.items()}


def median_time(fn, scores, repeats: int) -> float:
    jax.block_until_ready(fn(scores))  # compile + warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(scores))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(name: str, shapes: list[tuple[int, ...]], repeats: int) -> None:
    keys = jax.random.split(jax.random.key(0), len(shapes))
    leaves = [jnp.abs(jax.random.normal(k, s)) for k, s in zip(keys, shapes, strict=True)]
    scores = {f"w{i}": leaf for i, leaf in enumerate(leaves)}
    n = sum(s.size for s in scores.values())
    ours = jax.jit(lambda s: jp.masks.topk(s, SPARSITY))
    base = jax.jit(lambda s: sort_baseline(s, SPARSITY))
    kept = sum(int(m.sum()) for m in ours(scores).values())
    assert kept == round((1 - SPARSITY) * n), kept
    t_ours, t_base = median_time(ours, scores, repeats), median_time(base, scores, repeats)
    print(
        f"{name:10s} n={n:>10,d}  topk {t_ours * 1e3:9.2f} ms ({t_ours / n * 1e9:6.2f} ns/elem)  "
        f"sort baseline {t_base * 1e3:9.2f} ms ({t_base / n * 1e9:6.2f} ns/elem)  "
        f"speed-up x{t_base / t_ours:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; keep {1 - SPARSITY:.0%} globally")
    run("MLP", mlp_shapes(), args.repeats)
    run("ResNet-50", resnet50_shapes(), max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
