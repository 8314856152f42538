"""Benchmark: size of the sparse file (``jaxprune.compress.save_sparse``) against
the dense float32 npz, for a zoo model pruned at given unstructured sparsities
(issue 19; goal for ResNet-20 at 90%: <= 0.14x).

    python -m experiments.benchmarks.bench_sparse_file [--model resnet20] [--sparsities 0.5,0.8,0.9,0.95,0.99]

The params are the model's initialization (``model.init``, seed 0) and the
mask keeps the ``round((1 - s) * n)`` largest-magnitude entries of every
kernel (``jp.masks.topk``, scope "layer"; biases and BatchNorm stored dense).
The dense file is ``np.savez`` of every param leaf (float32). Printed per
sparsity: both sparse codings (``"bits"``: bitmask; ``"rice"``: Golomb-Rice
coded positions) as bytes and as a fraction of the dense file, the bound
``(H(d) + 32 d) / 32`` of the kernels (binary entropy of the mask plus the
values), the save/load times and a bitwise round-trip check.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from jaxprune.compress import load_sparse, save_sparse
from jaxprune.train.models import get_model
from jaxprune.tree import path_str

INPUT_SHAPES = {
    "resnet20": (32, 32, 3),
    "resnet56": (32, 32, 3),
    "vgg16": (32, 32, 3),
    "lenet300": (28, 28, 1),
}


def entropy_bound(density: float) -> float:
    """Bits per entry of an ideal code of a random mask of ``density`` plus its float32 values, / 32."""
    if density in (0.0, 1.0):
        return density
    h = -(density * math.log2(density) + (1 - density) * math.log2(1 - density))
    return (h + 32 * density) / 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20", choices=sorted(INPUT_SHAPES))
    parser.add_argument("--sparsities", default="0.5,0.8,0.9,0.95,0.99")
    args = parser.parse_args()
    shape = INPUT_SHAPES[args.model]
    model = get_model(args.model, 10)
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)["params"]
    flat = {path_str(p): np.asarray(x) for p, x in jax.tree.leaves_with_path(params)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        np.savez(tmp / "dense.npz", **flat)
        dense = os.path.getsize(tmp / "dense.npz")
        n = sum(x.size for x in flat.values())
        print(f"{args.model}: {n:,} params, dense float32 npz {dense:,} bytes ({4 * n:,} bytes of values)")
        print(
            "| sparsity | bits: bytes | bits / dense | rice: bytes | rice / dense | kernel bound | "
            "save ms | load ms | round trip |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for s in (float(v) for v in args.sparsities.split(",")):
            mask = jp.masks.topk(jp.masks.magnitude(params), s, scope="layer", prunable=jp.prunable(params))
            sizes = {}
            for coding in ("bits", "rice"):
                t0 = time.perf_counter()
                sizes[coding] = save_sparse(tmp / f"{coding}.npz", params, mask, coding=coding)
                save_ms = 1e3 * (time.perf_counter() - t0)
            t0 = time.perf_counter()
            loaded, _ = load_sparse(tmp / "rice.npz")
            load_ms = 1e3 * (time.perf_counter() - t0)
            expected = jax.tree.leaves(jp.apply_mask(params, mask))
            exact = all(
                np.array_equal(np.asarray(a).view(np.uint32), b.view(np.uint32))
                for a, b in zip(expected, jax.tree.leaves(loaded), strict=True)
            )
            print(
                f"| {s:.2f} | {sizes['bits']:,} | {sizes['bits'] / dense:.4f} | {sizes['rice']:,} | "
                f"{sizes['rice'] / dense:.4f} | {entropy_bound(1 - s):.4f} | {save_ms:.0f} | {load_ms:.0f} | "
                f"{'bitwise exact' if exact else 'MISMATCH'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
