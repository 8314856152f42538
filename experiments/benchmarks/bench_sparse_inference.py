"""Benchmark: forward latency of unstructured-sparse MLP layers stored as
``jax.experimental.sparse.BCOO`` against the same layers dense, both jitted,
in the same run (issue 19).

Two workloads: (a) the LeNet-300-100 forward pass (784-300-100-10, ReLU, all
three kernels sparse), (b) one 4096x4096 dense layer (``x @ W``). Each at
90/95/99% random unstructured sparsity and batch 128 and 1. The sparse kernel
is ``BCOO.fromdense(m * W)`` (only the kept entries, COO indices) and the
product is ``x @ W_bcoo`` (``bcoo_dot_general``); the dense one is
``x @ (m * W)``.

    python -m experiments.benchmarks.bench_sparse_inference [--rounds 7] [--target_s 0.05]

Timing: paired interleaved rounds (dense and sparse alternate, the order
flipping each round); in a round each variant runs enough calls for about
``--target_s`` seconds and reports the mean per call; the table gives the
median over rounds of each latency and of the per-round ratio sparse / dense
(< 1: sparse is faster).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

SPARSITIES = (0.9, 0.95, 0.99)
BATCHES = (128, 1)
WORKLOADS = {"lenet300": (784, 300, 100, 10), "dense4096": (4096, 4096)}


def make_kernels(sizes: tuple[int, ...], sparsity: float, seed: int = 0) -> list[np.ndarray]:
    """He-scaled normal kernels with exactly round((1 - sparsity) * n) random kept entries."""
    rng = np.random.default_rng(seed)
    kernels = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        w = rng.standard_normal((fan_in, fan_out)).astype(np.float32) * np.sqrt(2.0 / fan_in)
        keep = np.zeros(w.size, bool)
        keep[rng.permutation(w.size)[: round((1 - sparsity) * w.size)]] = True
        kernels.append(np.where(keep.reshape(w.shape), w, np.float32(0)))
    return kernels


def forward(x: jax.Array, kernels: list) -> jax.Array:
    """ReLU between layers, none after the last; works for dense and BCOO kernels."""
    for i, w in enumerate(kernels):
        x = x @ w
        if i < len(kernels) - 1:
            x = jax.nn.relu(x)
    return x


def time_call(fn: Callable, args: tuple, target_s: float) -> float:
    """Mean seconds per call over enough calls to last about ``target_s``."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, min(1000, round(target_s / once)))
    t0 = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / calls


def bench(sizes: tuple[int, ...], sparsity: float, batch: int, rounds: int, target_s: float) -> dict:
    dense_kernels = [jnp.asarray(w) for w in make_kernels(sizes, sparsity)]
    sparse_kernels = [sparse.BCOO.fromdense(w) for w in dense_kernels]
    x = jax.random.normal(jax.random.key(1), (batch, sizes[0]), jnp.float32)
    dense_fn, sparse_fn = jax.jit(forward), jax.jit(forward)
    np.testing.assert_allclose(
        np.asarray(sparse_fn(x, sparse_kernels)), np.asarray(dense_fn(x, dense_kernels)), rtol=1e-4, atol=1e-4
    )
    dense_t, sparse_t, ratios = [], [], []
    for r in range(rounds):
        order = [("dense", dense_fn, dense_kernels), ("sparse", sparse_fn, sparse_kernels)]
        times = {}
        for name, fn, ks in order if r % 2 == 0 else order[::-1]:
            times[name] = time_call(fn, (x, ks), target_s)
        dense_t.append(times["dense"])
        sparse_t.append(times["sparse"])
        ratios.append(times["sparse"] / times["dense"])
    return {
        "dense_us": 1e6 * statistics.median(dense_t),
        "sparse_us": 1e6 * statistics.median(sparse_t),
        "ratio": statistics.median(ratios),
        "nse": sum(int(k.nse) for k in sparse_kernels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--target_s", type=float, default=0.05)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args()
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print("| workload | sparsity | batch | kept entries | dense us | BCOO us | BCOO / dense |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.workloads.split(","):
        for sparsity in SPARSITIES:
            for batch in BATCHES:
                res = bench(WORKLOADS[name], sparsity, batch, args.rounds, args.target_s)
                print(
                    f"| {name} | {sparsity:.0%} | {batch} | {res['nse']:,} | {res['dense_us']:.1f} | "
                    f"{res['sparse_us']:.1f} | {res['ratio']:.2f} |",
                    flush=True,
                )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
