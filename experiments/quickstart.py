"""``make run``: the library in three minutes, on scikit-learn's bundled digits.

An MLP 64-128-256-10 trained four ways, as in the DPF paper's Table 2 (Dense,
Incremental and DPF at equal epochs; One-shot P+FT adds its fine-tuning epochs
after the Dense run), at three target sparsities of its hidden kernels:

- Dense (no pruning);
- One-shot P+FT: the trained Dense model pruned by global magnitude, then
  fine-tuned with the mask fixed (``jp.optax.masked_update``);
- Incremental (Zhu & Gupta): the cubic sparsity schedule, pruned weights stay 0
  (``jp.optax.dpf(..., feedback=False)``);
- DPF: the same schedule, forward and gradient at the pruned weights ``m * w``,
  the gradient applied to the dense ``w`` (``jp.optax.dpf``).

For each final model it reports the test accuracy, the reached sparsity and
the PQ Index (``jp.measures.pq_index``, p = 0.5, q = 1: 0 for a dense vector
of equal magnitudes, approaching 1 as the weights concentrate) of the prunable
weights, prints the table and writes ``runs/quickstart/quickstart.json`` and
``runs/quickstart/quickstart.png`` (nothing tracked by git changes).

    python -m experiments.quickstart [--out runs/quickstart] [--epochs 20] [--ft-epochs 5]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import time

import jax

import jaxprune as jp
from jaxprune.configs.dpf_base import study_config
from jaxprune.pipelines.dpf import train_method
from jaxprune.train.metrics import quiet_logs
from jaxprune.transforms import paper_prunable

SPARSITIES = (0.5, 0.8, 0.95)
METHODS = ("one_shot_ft", "incremental", "dpf")
LABELS = {"dense": "Dense", "one_shot_ft": "One-shot P+FT", "incremental": "Incremental", "dpf": "DPF"}


def _config(method: str, target: float, epochs: int, ft_epochs: int):
    """The DPF study config (paper defaults: p = 16, cubic schedule stepped per
    epoch ending at the second lr decay) on digits with a small MLP."""
    config = study_config(method, target, finetune_epochs=ft_epochs)
    config.data.name = "digits"
    config.model.name = "mlp"
    config.model.kwargs.hidden = (128, 256)
    t = config.train
    t.update(dict(epochs=epochs, batch_size=64, lr=0.1, weight_decay=1e-4, eval_batch_size=512,
                  log_every=100, keep_checkpoints=1, progress_bar=False))
    return config


def _pq_index(outcome) -> float:
    """PQ Index (p = 0.5, q = 1) of the final sparse model's prunable weights."""
    params = outcome.state.params
    sparse = jp.apply_mask(params, outcome.mask)
    return float(jp.measures.pq_index(sparse, p=0.5, q=1.0, prunable=paper_prunable(params)))


def run(out: pathlib.Path, epochs: int, ft_epochs: int, sparsities: tuple[float, ...] = SPARSITIES) -> dict:
    """Train Dense and every (method, sparsity); returns the results (also written as JSON)."""
    tic = time.perf_counter()
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    rows = []

    def add(method: str, target: float, outcome) -> None:
        rec = outcome.record
        rows.append({"method": LABELS[method], "target": target, "sparsity": rec["sparsity_prunable"],
                     "test_accuracy": rec["test_acc"], "pq_index": _pq_index(outcome),
                     "wall_s": rec["wall_s"]})
        r = rows[-1]
        print(f"  {r['method']:<14} {100 * target:3.0f}%  test {100 * r['test_accuracy']:5.1f}%  "
              f"PQI {r['pq_index']:.4f}  ({r['wall_s']:.0f} s)", flush=True)

    dense_dir = work / "dense"
    add("dense", 0.0, train_method(_config("dense", 0.0, epochs, ft_epochs), dense_dir, "dense"))
    for target in sparsities:
        for method in METHODS:
            config = _config(method, target, epochs, ft_epochs)
            if method == "one_shot_ft":
                config.method.reuse_workdir = str(dense_dir.absolute())  # prune the trained Dense model
            add(method, target, train_method(config, work / f"{method}_{target}", method))
    results = {
        "dataset": "digits",
        "model": "mlp 64-128-256-10",
        "epochs": epochs,
        "one_shot_finetune_epochs": ft_epochs,
        "devices": jax.device_count(),
        "rows": rows,
        "seconds": time.perf_counter() - tic,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "quickstart.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, out / "quickstart.png")
    shutil.rmtree(work, ignore_errors=True)
    return results


def _plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    dense = rows[0]
    fig, (acc, pqi) = plt.subplots(1, 2, figsize=(9, 3.6))
    acc.axhline(100 * dense["test_accuracy"], color="k", ls="--", label="Dense")
    pqi.axhline(dense["pq_index"], color="k", ls="--", label="Dense")
    for method, style in zip(METHODS, ("o-", "s--", "^:"), strict=True):  # the PQI curves nearly overlap
        rs = [r for r in rows if r["method"] == LABELS[method]]
        xs = [100 * r["target"] for r in rs]
        acc.plot(xs, [100 * r["test_accuracy"] for r in rs], style, label=LABELS[method])
        pqi.plot(xs, [r["pq_index"] for r in rs], style, label=LABELS[method], alpha=0.8)
    acc.set(xlabel="sparsity of the hidden kernels (%)", ylabel="test accuracy (%)")
    pqi.set(xlabel="sparsity of the hidden kernels (%)", ylabel="PQ Index (p=0.5, q=1)")
    acc.legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{results['model']} on {results['dataset']}, {results['epochs']} epochs, one seed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_table(results: dict) -> None:
    print(f"\n{'method':<16}{'target':>7}{'reached':>9}{'test acc':>10}{'PQ Index':>10}")
    for r in results["rows"]:
        print(f"{r['method']:<16}{100 * r['target']:>6.0f}%{100 * r['sparsity']:>8.1f}%"
              f"{100 * r['test_accuracy']:>9.1f}%{r['pq_index']:>10.4f}")
    print(f"({results['seconds']:.0f} s on {results['devices']} device(s))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/quickstart"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ft-epochs", type=int, default=5)
    args = parser.parse_args()
    quiet_logs()
    print(f"digits, MLP 64-128-256-10, {args.epochs} epochs: Dense, then "
          f"{', '.join(LABELS[m] for m in METHODS)} at {', '.join(f'{s:.0%}' for s in SPARSITIES)}")
    results = run(args.out, args.epochs, args.ft_epochs)
    _print_table(results)
    print(f"wrote {args.out / 'quickstart.json'} and {args.out / 'quickstart.png'}")


if __name__ == "__main__":
    main()
