"""Benchmark: forward latency of compacted vs dense models (``jaxprune.compress``).

For VGG16 and ResNet-20 (CIFAR, 32x32x3, batch 128, eval mode) at 50% and 75%
filter sparsity: each prunable conv kernel keeps its ``1 - s`` highest-l2-norm
filters (per layer, so that no layer empties; the head stays dense), the model
is compacted, and the jitted dense forward (the masked weights, same shapes as
the original) and the jitted compact forward run interleaved, round after
round; the median round time of each and their ratio (the speed-up) are
printed beside the MAC reduction factor (dense MACs / compacted MACs, exact,
from :func:`jaxprune.measures.cost.cost`). Goal: speed-up >= 0.7x the MAC
factor. Residual-tied channels are removed only where every coupled layer
prunes them, so ResNet-20 keeps most of its residual stream (the report of
``compact`` says how many).

Reference rows ("uniform widths"): the same architecture built with every
conv at ``round((1 - s) * C)`` filters, residual streams included, i.e. the
thinnest model any filter pruning at that sparsity could compact to. Its
speed-up over the full model at its MAC factor bounds what pruning can reach
on the backend: where even this row is below 0.7x, the goal is out of reach
for that model on that backend, whatever the mask.

Also the time of ``compact`` itself for ResNet-50 at 224x224 (goal: seconds).

    python -m experiments.benchmarks.bench_compress                 # all
    python -m experiments.benchmarks.bench_compress --rounds 5 --models resnet20
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from jaxprune.compress import compact
from jaxprune.measures.cost import cost
from jaxprune.train.models import get_model
from jaxprune.tree import apply_mask, is_none


def filter_mask(params: dict, sparsity: float) -> dict:
    """Per conv kernel, the ``1 - sparsity`` highest-norm filters kept; other leaves ``None``."""
    scores = jp.masks.filter_norm(params)

    def one(score, w):
        if w is None or np.ndim(w) != 4:
            return None
        return jp.masks.topk({"k": score}, sparsity, scope="filter", params={"k": w})["k"]

    return jax.tree.map(one, scores, params, is_leaf=is_none)


def timed(fn, *args, repeats: int) -> float:
    """Seconds per call (mean of ``repeats`` calls, results blocked)."""
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats


def paired_times(fns: dict, x: jax.Array, rounds: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each ``name: (fn, variables)`` on ``x``, interleaved round by
    round, after one untimed call of each (compilation)."""
    for fn, variables in fns.values():
        jax.block_until_ready(fn(variables, x))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, variables) in fns.items():
            times[name].append(timed(fn, variables, x, repeats=repeats))
    return times


def bench_model(name: str, sparsity: float, batch: int, rounds: int, repeats: int) -> dict:
    model = get_model(name, 10)
    x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
    variables = model.init(jax.random.key(0), x[:1])
    mask = filter_mask(variables["params"], sparsity)
    small, small_vars, report = compact(model, variables, mask, input_shape=(32, 32, 3))
    dense_vars = {**variables, "params": apply_mask(variables["params"], report.group_mask)}
    dense_fn = jax.jit(lambda v, x: model.apply(v, x))
    small_fn = jax.jit(lambda v, x: small.apply(v, x))
    small_vars = jax.tree.map(jnp.asarray, small_vars)
    err = float(jnp.max(jnp.abs(dense_fn(dense_vars, x) - small_fn(small_vars, x))))
    pair = {"dense": (dense_fn, dense_vars), "compact": (small_fn, small_vars)}
    times = paired_times(pair, x, rounds, repeats)
    dense_t, small_t = statistics.median(times["dense"]), statistics.median(times["compact"])
    macs = cost(model, variables, None, (32, 32, 3))["macs"]
    small_macs = cost(small, small_vars, None, (32, 32, 3))["macs"]
    ratios = [d / c for d, c in zip(times["dense"], times["compact"], strict=True)]
    return {
        "model": name,
        "sparsity": sparsity,
        "dense_ms": 1e3 * dense_t,
        "compact_ms": 1e3 * small_t,
        "speedup": dense_t / small_t,
        "speedup_median_of_round_ratios": statistics.median(ratios),
        "mac_factor": macs / small_macs,
        "params_factor": report.params_before / report.params_after,
        "kept_pruned_channels": sum(k.channels for k in report.not_removable),
        "max_abs_diff": err,
    }


def conv_widths(params: dict, keep: float) -> tuple[tuple[str, int], ...]:
    """``(module path, round(keep * filters))`` of every conv kernel in ``params``."""
    return tuple(
        ("/".join(str(k.key) for k in path[:-1]), max(round(keep * w.shape[-1]), 1))
        for path, w in jax.tree.leaves_with_path(params)
        if str(path[-1].key) == "kernel" and np.ndim(w) == 4
    )


def bench_uniform(name: str, sparsity: float, batch: int, rounds: int, repeats: int) -> dict:
    """The full model vs the same architecture at uniform ``1 - sparsity`` conv widths."""
    model = get_model(name, 10)
    x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
    variables = model.init(jax.random.key(0), x[:1])
    thin = model.clone(widths=conv_widths(variables["params"], 1 - sparsity))
    thin_vars = thin.init(jax.random.key(0), x[:1])
    full_fn = jax.jit(lambda v, x: model.apply(v, x))
    thin_fn = jax.jit(lambda v, x: thin.apply(v, x))
    times = paired_times({"full": (full_fn, variables), "thin": (thin_fn, thin_vars)}, x, rounds, repeats)
    full_t, thin_t = statistics.median(times["full"]), statistics.median(times["thin"])
    macs = cost(model, variables, None, (32, 32, 3))["macs"]
    return {"dense_ms": 1e3 * full_t, "compact_ms": 1e3 * thin_t, "speedup": full_t / thin_t,
            "mac_factor": macs / cost(thin, thin_vars, None, (32, 32, 3))["macs"]}


def compaction_time(repeats: int) -> list[float]:
    model = get_model("resnet50", 1000)
    variables = model.init(jax.random.key(0), jnp.ones((1, 224, 224, 3)))
    mask = filter_mask(variables["params"], 0.5)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        compact(model, variables, mask, input_shape=(224, 224, 3))
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet20"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.75])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compaction_repeats", type=int, default=3)
    parser.add_argument("--no_reference", action="store_true", help="skip the uniform-width reference rows")
    args = parser.parse_args()
    print(f"backend {jax.default_backend()}, batch {args.batch}, {args.rounds} rounds x {args.repeats} calls")
    print(
        "| model | filter sparsity | dense ms | compact ms | speed-up | MAC factor | speed-up / MAC factor "
        "| params factor | pruned channels kept | max abs diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        for s in args.sparsities:
            r = bench_model(name, s, args.batch, args.rounds, args.repeats)
            print(
                f"| {name} | {s:.2f} | {r['dense_ms']:.1f} | {r['compact_ms']:.1f} | {r['speedup']:.2f}x "
                f"| {r['mac_factor']:.2f}x | {r['speedup'] / r['mac_factor']:.2f} "
                f"| {r['params_factor']:.2f}x "
                f"| {r['kept_pruned_channels']} | {r['max_abs_diff']:.1e} |",
                flush=True,
            )
            if not args.no_reference:
                u = bench_uniform(name, s, args.batch, args.rounds, args.repeats)
                print(
                    f"| {name} (uniform widths) | {s:.2f} | {u['dense_ms']:.1f} | {u['compact_ms']:.1f} "
                    f"| {u['speedup']:.2f}x | {u['mac_factor']:.2f}x | {u['speedup'] / u['mac_factor']:.2f} "
                    "| - | - | - |",
                    flush=True,
                )
    if args.compaction_repeats:
        t = compaction_time(args.compaction_repeats)
        print(f"compact(ResNet-50, 224x224, 50% filters per layer): {', '.join(f'{v:.2f}' for v in t)} s")


if __name__ == "__main__":
    main()
