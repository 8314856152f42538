"""The ABP study (Yang et al., Section 5 / Table 2): train R regression MLPs
(one per seed), prune each one-shot with every ABP-M / ABP-L / Mag setting of
``config.method``, and record compression and the test-MSE increase.

Training runs all R replications at once: the parameters are stacked on a
leading replication axis, the optax step is ``vmap``-ed over it and every
epoch is one ``lax.scan`` (each replication has its own init and its own
per-epoch shuffle; the last partial batch is dropped). The model, data,
optimizer and loss come from the engine (``get_model``, ``load_dataset``,
``make_optimizer``, ``per_example_loss``); the engine's ``Trainer`` is not used
because it trains one network at a time with checkpoints, ~R times slower here.

``config.method``: ``replications``; ``abp_m`` (tuple of (q, eta));
``abp_l`` (tuple of lambda); ``mag`` (tuple of p); ``stats_batch_size``;
``lasso_tol``, ``lasso_max_iter``.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune import abp
from jaxprune._validate import check_number
from jaxprune.pipelines import register, run_summary, setup, write_results
from jaxprune.train import make_optimizer, per_example_loss

PyTree = Any


def grid(method_cfg: Any) -> list[tuple[str, str, dict[str, float]]]:
    """``(method label, param label, prune kwargs)`` for every setting, in the
    paper's Table 2 order (ABP-L, ABP-M, Mag)."""
    out = []
    for lam in method_cfg.abp_l:
        out.append(("ABP-L", f"lambda={lam:g}", {"method": "L", "lam": float(lam)}))
    for q, eta in method_cfg.abp_m:
        out.append(("ABP-M", f"eta={eta:g}, q={q:g}", {"method": "M", "q": float(q), "eta": float(eta)}))
    for p in method_cfg.mag:
        out.append(("Mag", f"p={p:g}", {"method": "mag", "p": float(p)}))
    return out


def train_replicas(model: Any, tx: optax.GradientTransformation, x: np.ndarray, y: np.ndarray,
                   seeds: list[int], *, epochs: int, batch_size: int) -> PyTree:
    """Train ``len(seeds)`` copies of ``model`` on (x (N, F), y (N,)) with MSE,
    one per seed (init and shuffling), simultaneously. Returns params stacked
    on a leading (R,) axis."""
    n = x.shape[0]
    steps = n // batch_size
    if steps < 1:
        raise ValueError(f"train.batch_size={batch_size} exceeds the {n} training examples")
    x, y = jnp.asarray(x), jnp.asarray(y)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    init_keys, data_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    params = jax.vmap(lambda k: model.init(k, x[:1])["params"])(init_keys)
    opt_state = jax.vmap(tx.init)(params)

    def loss_fn(p: PyTree, idx: jax.Array) -> jax.Array:
        out = model.apply({"params": p}, x[idx])
        return jnp.mean(per_example_loss(out, y[idx], "regression"))

    def one_step(p, s, idx):
        grads = jax.grad(loss_fn)(p, idx)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    @jax.jit
    def epoch(params, opt_state, key):
        perms = jax.vmap(lambda k: jax.random.permutation(k, n)[: steps * batch_size])(key)
        batches = perms.reshape(len(seeds), steps, batch_size).swapaxes(0, 1)  # (steps, R, B)

        def body(carry, idx):
            return jax.vmap(one_step)(*carry, idx), None

        (params, opt_state), _ = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state

    for e in range(epochs):
        params, opt_state = epoch(params, opt_state, jax.vmap(jax.random.fold_in, (0, None))(data_keys, e))
    return params


@register("abp")
def run(config: Any, workdir: str | pathlib.Path) -> dict:
    """Train, prune with every grid setting, evaluate on the test split.

    Returns ``{"pipeline", "dataset", "model", "records": [...], "timing"}``
    (also written to ``<workdir>/results.json``); one record per
    (replication, setting): ``method``, ``param``, ``seed``,
    ``compression_ratio``, ``pruning_ratio``, ``mse_orig``, ``mse_pruned``,
    ``mse_increase_ratio``, per-layer ``layer_pruning_ratio``.
    """
    m = config.method
    reps = int(m.replications)
    check_number("method.replications", reps, low=1)
    settings = grid(m)
    dataset, model = setup(config)
    t = config.train
    tx = make_optimizer(t, len(dataset.train.y) // t.batch_size)
    seeds = [int(config.seed) + r for r in range(reps)]

    t0 = time.perf_counter()
    stacked = train_replicas(model, tx, dataset.train.x, dataset.train.y, seeds,
                             epochs=int(t.epochs), batch_size=int(t.batch_size))
    jax.block_until_ready(stacked)
    t_train = time.perf_counter() - t0

    apply_fn = lambda p, x: model.apply({"params": p}, x)
    predict = jax.jit(apply_fn)
    x_train, x_test, y_test = jnp.asarray(dataset.train.x), jnp.asarray(dataset.test.x), dataset.test.y

    def test_mse(p: PyTree) -> float:
        return float(np.mean((np.asarray(predict(p, x_test))[:, 0] - y_test) ** 2))

    records = []
    t0 = time.perf_counter()
    for r, seed in enumerate(seeds):
        params = jax.tree.map(lambda a, r=r: a[r], stacked)
        mse_orig = test_mse(params)
        stats = abp.layer_stats(apply_fn, params, x_train, batch_size=int(m.stats_batch_size))
        for method, label, kwargs in settings:
            pruned, _, report = abp.prune(apply_fn, params, x_train, stats=stats, tol=float(m.lasso_tol),
                                          max_iter=int(m.lasso_max_iter), **kwargs)
            mse = test_mse(pruned)
            records.append({
                "method": method, "param": label, "seed": seed,
                "compression_ratio": report.compression_ratio, "pruning_ratio": report.pruning_ratio,
                "mse_orig": mse_orig, "mse_pruned": mse, "mse_increase_ratio": (mse - mse_orig) / mse_orig,
                "layer_pruning_ratio": {k: v.pruning_ratio for k, v in report.layers.items()},
            })
    t_prune = time.perf_counter() - t0
    results = {
        "pipeline": "abp",
        "dataset": dataset.name,
        "model": {"name": config.model.name, "kwargs": dict(config.model.kwargs)},
        "records": records,
        "timing": {"train_s": t_train, "prune_and_eval_s": t_prune},
    }
    dense_mse = float(np.mean([r["mse_orig"] for r in records]))
    results["summary"] = run_summary("abp", method="ABP study", runs=len(records), replications=reps,
                                     dense_test_mse=f"{dense_mse:.4g}")
    write_results(workdir, results)
    return results
