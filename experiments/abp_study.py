"""Run the ABP study (jaxprune/configs/abp_california.py) and write
results/abp_california.json (every record), .md (Table 2 layout: mean (standard
error) next to the paper's numbers) and .png (MSE increase vs compression).

    python -m experiments.abp_study [--replications 20] [--epochs 40] [--out results/abp_california]
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import tempfile

import numpy as np

from jaxprune.configs.abp_california import get_config
from jaxprune.configs.common import validate_config

# Yang et al., Table 2: (compression ratio, pruning ratio, MSE increase ratio), means and standard errors.
PAPER = {
    ("ABP-L", "lambda=0.001"): ((12.97, 0.22), (0.92, 0.00), (0.30, 0.02)),
    ("ABP-L", "lambda=0.0001"): ((4.68, 0.07), (0.79, 0.00), (0.05, 0.00)),
    ("ABP-L", "lambda=1e-05"): ((2.33, 0.04), (0.57, 0.01), (0.03, 0.00)),
    ("ABP-M", "eta=0, q=0.3"): ((1.52, 0.01), (0.34, 0.00), (0.01, 0.00)),
    ("ABP-M", "eta=0, q=0.5"): ((1.80, 0.02), (0.44, 0.01), (0.01, 0.00)),
    ("ABP-M", "eta=0, q=0.7"): ((2.10, 0.02), (0.52, 0.01), (0.02, 0.00)),
    ("ABP-M", "eta=0.1, q=0.5"): ((2.46, 0.03), (0.59, 0.01), (0.04, 0.01)),
    ("ABP-M", "eta=0.2, q=0.5"): ((3.12, 0.06), (0.68, 0.01), (0.17, 0.06)),
    ("ABP-M", "eta=0.3, q=0.5"): ((3.88, 0.08), (0.74, 0.01), (0.31, 0.09)),
    ("Mag", "p=0.3"): ((1.55, 0.00), (0.35, 0.00), (0.07, 0.01)),
    ("Mag", "p=0.5"): ((2.32, 0.01), (0.57, 0.00), (0.41, 0.06)),
    ("Mag", "p=0.7"): ((4.71, 0.10), (0.79, 0.00), (0.85, 0.10)),
}
METRICS = ("compression_ratio", "pruning_ratio", "mse_increase_ratio")


def summarize(records: list[dict]) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(method, param) -> metric -> (mean, standard error over replications)."""
    groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for r in records:
        groups[(r["method"], r["param"])].append(r)
    out = {}
    for key, rows in groups.items():
        out[key] = {}
        for m in (*METRICS, "mse_orig"):
            v = np.array([r[m] for r in rows], np.float64)
            se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
            out[key][m] = (float(v.mean()), float(se))
    return out


def markdown(summary: dict, results: dict, config) -> str:
    """Table 2 layout, ours next to the paper's."""
    reps = config.method.replications
    t = config.train
    mse = summary[next(iter(summary))]["mse_orig"]
    lines = [
        "# ABP on California Housing (Yang et al., Table 2), reproduced with jaxprune",
        "",
        f"Model: {config.model.name} {tuple(config.model.kwargs.hidden)} ReLU, MSE; Adam lr {t.lr}, batch "
        f"{t.batch_size}, {t.epochs} epochs; {reps} replications (seeds {config.seed}.."
        f"{config.seed + reps - 1}); features standardized with train statistics, target in 100k USD; "
        f"16512 train / 4128 test rows. Original test MSE: {mse[0]:.4f} ({mse[1]:.4f}). "
        "Every dense kernel is pruned, output layer included. "
        f"Training {results['timing']['train_s']:.0f} s, pruning + evaluation "
        f"{results['timing']['prune_and_eval_s']:.0f} s (2-core CPU container, shared).",
        "",
        "Mean (standard error) over replications; `paper` = the paper's Table 2.",
        "",
        "| Method | Compression ratio | paper | Pruning ratio | paper | MSE increase ratio | paper |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (method, param), ours in summary.items():
        paper = PAPER.get((method, param))
        cells = []
        for i, m in enumerate(METRICS):
            mean, se = ours[m]
            cells.append(f"{mean:.2f} ({se:.2f})")
            cells.append("-" if paper is None else f"{paper[i][0]:.2f} ({paper[i][1]:.2f})")
        lines.append(f"| {method} ({param}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: pathlib.Path, replications: int, hidden: tuple[int, ...]) -> None:
    """MSE increase ratio vs compression ratio, one series per method, ours and the paper's;
    error bars: standard error of the mean over ``replications``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"ABP-L": "tab:blue", "ABP-M": "tab:orange", "Mag": "tab:green"}
    for method, color in colors.items():
        keys = [k for k in summary if k[0] == method]
        keys.sort(key=lambda k: summary[k]["compression_ratio"][0])
        cr = [summary[k]["compression_ratio"] for k in keys]
        mi = [summary[k]["mse_increase_ratio"] for k in keys]
        ax.errorbar([c[0] for c in cr], [m[0] for m in mi], xerr=[c[1] for c in cr], yerr=[m[1] for m in mi],
                    marker="o", color=color, label=f"{method} (jaxprune)", capsize=2)
        paper = sorted((PAPER[k] for k in keys if k in PAPER), key=lambda v: v[0][0])
        ax.plot([v[0][0] for v in paper], [v[2][0] for v in paper], marker="x", ls="--", color=color,
                alpha=0.6, label=f"{method} (paper)")
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio M/m (all dense kernels)")
    ax.set_ylabel("test MSE increase ratio")
    mlp = "-".join(str(h) for h in hidden)
    ax.set_title(f"ABP, MLP {mlp} on California Housing\n"
                 f"mean ± standard error over {replications} replications", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", default="results/abp_california", help="output path without extension")
    args = parser.parse_args()
    config = get_config()
    if args.replications is not None:
        config.method.replications = args.replications
    if args.epochs is not None:
        config.train.epochs = args.epochs
    validate_config(config)

    from jaxprune.pipelines import get_pipeline

    with tempfile.TemporaryDirectory() as workdir:
        results = get_pipeline(config.pipeline)(config, workdir)
    summary = summarize(results["records"])
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results["config"] = json.loads(config.to_json_best_effort())
    results["summary"] = {f"{m} ({p})": v for (m, p), v in summary.items()}
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(summary, results, config))
    plot(summary, out.with_suffix(".png"), config.method.replications, tuple(config.model.kwargs.hidden))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
