"""``make run``: a short, complete pruning experiment on scikit-learn digits.

Dense baseline (MLP in-128-256-10, SGD + Nesterov, cosine) versus one-shot
global magnitude pruning of the trained network to 50%, 80% and 95% sparsity
(kernels only; biases stay dense), each fine-tuned with the mask fixed
(``jp.optax.masked_update`` last in the chain, so pruned weights stay exactly 0).
Prints a table and writes ``results/quickstart.json`` and ``results/quickstart.png``.

    python -m experiments.quickstart [--out results] [--epochs 15] [--ft-epochs 5]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax

import jaxprune as jp
from jaxprune.configs.common import base_config
from jaxprune.pipelines import setup, write_results
from jaxprune.train import Trainer

SPARSITIES = (0.5, 0.8, 0.95)


def _config(epochs: int):
    config = base_config()
    config.data.name = "digits"
    config.model.name = "mlp"
    config.train.update(dict(epochs=epochs, batch_size=64, lr=0.05, log_every=100, progress_bar=False))
    return config


def run(out: pathlib.Path, epochs: int, ft_epochs: int) -> dict:
    """Train dense, prune one-shot at each sparsity, fine-tune; returns the results."""
    t0 = time.perf_counter()
    config = _config(epochs)
    dataset, model = setup(config)
    dense_trainer = Trainer(model, dataset, config.train, seed=config.seed)
    dense = dense_trainer.fit(progress=False)
    rows = [{"method": "dense", "sparsity": 0.0, **_acc(dense_trainer, dense)}]

    ft_cfg = config.train.copy_and_resolve_references()
    ft_cfg.update(dict(epochs=ft_epochs, lr=0.01))
    scores = jp.masks.magnitude(dense.params)
    for sparsity in SPARSITIES:
        mask = jp.masks.topk(scores, sparsity, scope="global")
        pruned_params = jp.apply_mask(dense.params, mask)
        ft = Trainer(model, dataset, ft_cfg, append=[jp.optax.masked_update(mask)], seed=config.seed)
        state = ft.init_state().replace_params(pruned_params, ft.tx)
        before = _acc(ft, state)
        state = ft.fit(state, progress=False)
        density = jp.summarize(state.params)["prunable"]["density"]
        rows.append(
            {
                "method": "one-shot magnitude + FT",
                "sparsity": sparsity,
                "measured_sparsity": 1.0 - density,
                "before_ft_test_accuracy": before["test_accuracy"],
                **_acc(ft, state),
            }
        )
    results = {
        "dataset": dataset.name,
        "model": config.model.name,
        "epochs": epochs,
        "ft_epochs": ft_epochs,
        "devices": jax.device_count(),
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    write_results(out, results, "quickstart.json")
    _plot(rows, out / "quickstart.png")
    return results


def _acc(trainer: Trainer, state) -> dict:
    return {f"{s}_accuracy": trainer.evaluate(state, s)["accuracy"] for s in ("val", "test")}


def _plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = rows[0]["test_accuracy"]
    pruned = rows[1:]
    xs = [100 * r["sparsity"] for r in pruned]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.axhline(100 * dense, color="k", ls="--", label="dense")
    ax.plot(xs, [100 * r["before_ft_test_accuracy"] for r in pruned], "o-", label="one-shot, no FT")
    ax.plot(xs, [100 * r["test_accuracy"] for r in pruned], "s-", label="one-shot + FT (fixed mask)")
    ax.set_xlabel("sparsity of the kernels (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits, MLP 64-128-256-10")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_table(results: dict) -> None:
    print(f"{'method':<26}{'sparsity':>9}{'before FT':>11}{'val acc':>9}{'test acc':>10}")
    for r in results["rows"]:
        before = f"{100 * r['before_ft_test_accuracy']:.1f}" if "before_ft_test_accuracy" in r else "-"
        print(
            f"{r['method']:<26}{100 * r['sparsity']:>8.0f}%{before:>11}"
            f"{100 * r['val_accuracy']:>9.1f}{100 * r['test_accuracy']:>10.1f}"
        )
    print(f"({results['seconds']:.1f} s on {results['devices']} device(s))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--ft-epochs", type=int, default=5)
    args = parser.parse_args()
    results = run(args.out, args.epochs, args.ft_epochs)
    _print_table(results)
    print(f"wrote {args.out / 'quickstart.json'} and {args.out / 'quickstart.png'}")


if __name__ == "__main__":
    main()
