"""CPU-scale SiPP study (issue 9): LeNet-300-100 on MNIST, random-init + prune +
train at several sparsities and iterative prune + retrain, SiPP vs WT vs SNIP;
writes ``results/sipp_cpu.json`` (one row per trained network) and the plots
``results/sipp_random_init.png`` / ``results/sipp_iterative.png`` (test
accuracy vs prune ratio per method, the paper's Figures 3-4).

    python -m experiments.sipp_study --epochs 3 --train-limit 10000 --seeds 0,1
    python -m experiments.sipp_study --plot-only

The config defaults (``jaxprune/configs/sipp_cpu.py``) are the issue's values; every
reduction is a flag here and is stored in the JSON (``"budget"``). Finished
runs already in the JSON are skipped, so a killed study resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import time

from experiments import study_cost

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEYS = ("pipeline", "method", "model", "dataset", "sparsity", "seed", "test_acc")
# Stored by the SiPP pipelines since issue 19 (jaxprune.measures.cost of the final mask).
COST_KEYS = ("params_kept", "params_total", "macs_kept", "macs_total")
LABELS = {"sipp_det": "SiPPDet", "sipp_rand": "SiPPRand", "sipp_hybrid": "SiPPHybrid", "wt": "WT",
          "snip": "SNIP"}


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sparsities", default="0.5,0.8,0.9,0.95,0.98,0.99")
    p.add_argument("--methods", default="sipp_det,sipp_rand,sipp_hybrid,wt,snip")
    p.add_argument("--iter-methods", default="sipp_det,wt,snip")
    p.add_argument("--iter-steps", type=int, default=10, help="densities 0.8 -> 0.02 (geometric)")
    p.add_argument("--iter-seeds", default=None, help="default: --seeds")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs (default: config's)")
    p.add_argument("--train-limit", type=int, default=0, help="train subset size (0 = all)")
    p.add_argument("--skip-iter", action="store_true")
    p.add_argument("--skip-rand", action="store_true")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "sipp_cpu.json"))
    p.add_argument("--workdir", default="/tmp/sipp_study")
    p.add_argument("--config", default="jaxprune.configs.sipp_cpu",
                   help="config module with get_config('pipeline,method[,sparsity]'), "
                   "e.g. jaxprune.configs.sipp_resnet20")
    return p.parse_args()


def _config(arg: str, a: argparse.Namespace, seed: int):
    import importlib

    import numpy as np

    c = importlib.import_module(a.config).get_config(arg)
    c.seed = seed
    if a.epochs:
        c.train.epochs = a.epochs
        c.train.warmup_epochs = min(c.train.warmup_epochs, a.epochs / 10)
    c.data.train_limit = a.train_limit
    c.method.densities = tuple(float(d) for d in np.geomspace(0.8, 0.02, a.iter_steps))
    return c


def _save(path: pathlib.Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def run_study(a: argparse.Namespace) -> dict:
    import jax

    from jaxprune.pipelines import get_pipeline

    # the same programs recompile in every run (new closures): cache them on disk
    jax.config.update("jax_compilation_cache_dir", os.path.join(a.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    out = pathlib.Path(a.out)
    data = json.loads(out.read_text()) if out.exists() else {"rows": []}
    data["budget"] = {"config": a.config, "epochs": a.epochs, "train_limit": a.train_limit,
                      "iter_steps": a.iter_steps, "seeds": a.seeds, "date": time.strftime("%Y-%m-%d"),
                      "machine": "2-core CPU container (shared)"}
    done = {(r["pipeline"], r["method"], r["sparsity"], r["seed"]) for r in data["rows"]}
    seeds = [int(s) for s in a.seeds.split(",")]
    work = pathlib.Path(a.workdir)
    if not a.skip_rand:
        for seed in seeds:
            for sp in _floats(a.sparsities):
                for method in a.methods.split(","):
                    if ("random_init_prune_train", method, sp, seed) in done:
                        continue
                    wd = work / f"rand_{method}_{sp}_{seed}"
                    shutil.rmtree(wd, ignore_errors=True)
                    c = _config(f"rand,{method},{sp}", a, seed)
                    tic = time.perf_counter()
                    r = get_pipeline(c.pipeline)(c, str(wd))
                    row = {k: r[k] for k in KEYS} | {"density": r["density"], "val_acc": r["val_acc"],
                                                     "pruned_nonzero": r["pruned_nonzero"]}
                    row |= {k: r[k] for k in COST_KEYS if k in r}
                    data["rows"].append(row)
                    _save(out, data)
                    shutil.rmtree(wd, ignore_errors=True)
                    print(f"rand {method} s={sp} seed={seed}: acc {r['test_acc']:.4f} "
                          f"({time.perf_counter() - tic:.0f}s)", flush=True)
    if not a.skip_iter:
        iter_seeds = [int(s) for s in (a.iter_seeds or a.seeds).split(",")]
        for seed in iter_seeds:
            for method in a.iter_methods.split(","):
                if ("iterative_prune_retrain", method, 0.0, seed) in done:
                    continue
                c = _config(f"iter,{method}", a, seed)
                c.resume = True  # a killed study continues the run at its last round
                res = get_pipeline(c.pipeline)(c, str(work / f"iter_{method}_{seed}"))
                for rec in res["records"]:
                    row = {k: rec[k] for k in KEYS} | {"density": rec["density"], "round": rec["round"],
                                                       "acc_pruned": rec.get("acc_pruned")}
                    row |= {k: rec[k] for k in COST_KEYS if k in rec}
                    data["rows"].append(row)
                _save(out, data)
    return data


def _series(rows: list[dict], pipeline: str, delta: bool = False) -> dict[str, dict[float, list[float]]]:
    """method -> prune ratio (rounded) -> test accuracies over seeds; with
    ``delta``, minus the same run's dense (prune ratio 0) accuracy."""
    dense = {(r["method"], r["seed"]): r["test_acc"] for r in rows
             if r["pipeline"] == pipeline and r["sparsity"] == 0.0}
    out: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        if r["pipeline"] == pipeline:
            acc = r["test_acc"] - (dense[(r["method"], r["seed"])] if delta else 0.0)
            out.setdefault(r["method"], {}).setdefault(round(r["sparsity"], 4), []).append(acc)
    return out


def plot(data: dict, results_dir: pathlib.Path, prefix: str = "sipp") -> list[pathlib.Path]:
    """One PNG per pipeline: mean test accuracy (+- std over seeds) vs prune
    ratio; iterative: the difference to the dense network (the paper's Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    titles = {"random_init_prune_train": ("random-init + prune + train", f"{prefix}_random_init.png", False),
              "iterative_prune_retrain": ("iterative prune + retrain", f"{prefix}_iterative.png", True)}
    names = {"lenet300": "LeNet-300-100", "resnet20": "ResNet-20", "mnist": "MNIST", "cifar10": "CIFAR-10"}
    for pipeline, (title, name, delta) in titles.items():
        series = _series(data["rows"], pipeline, delta)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        n_seeds = sorted({len(v) for pts in series.values() for v in pts.values()})
        for method, pts in sorted(series.items()):
            xs = sorted(pts)
            mean = np.array([np.mean(pts[x]) for x in xs]) * 100
            std = np.array([np.std(pts[x]) for x in xs]) * 100
            label = LABELS.get(method, method)
            ax.errorbar(np.array(xs) * 100, mean, yerr=std, marker="o", capsize=3, label=label)
        if delta:
            ax.axhline(0, color="gray", ls=":", lw=1, label="dense network")
        else:
            ax.axhline(10, color="gray", ls=":", lw=1, label="chance")
        ax.set_xlabel("prune ratio (% of prunable weights removed)")
        ax.set_ylabel("test accuracy - dense (%)" if delta else "test accuracy (%)")
        first = next(r for r in data["rows"] if r["pipeline"] == pipeline)
        model, dataset = (names.get(first[k], first[k]) for k in ("model", "dataset"))
        seeds = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}-{n_seeds[-1]}"
        ax.set_title(f"{model} / {dataset}: {title}\nmean ± std over {seeds} seeds", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = results_dir / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def table(data: dict, pipeline: str) -> str:
    """Markdown table: prune ratio x method, mean +- std test accuracy (%) and seed count."""
    import numpy as np

    series = _series(data["rows"], pipeline)
    methods = sorted(series)
    ratios = sorted({x for pts in series.values() for x in pts})
    labels = [LABELS.get(m, m) for m in methods]
    lines = ["| prune ratio | " + " | ".join(labels) + " | params kept | MACs kept |",
             "|---" * (len(methods) + 3) + "|"]
    for x in ratios:
        cells = []
        for m in methods:
            v = series[m].get(x)
            cells.append("" if not v else f"{100 * np.mean(v):.2f} ± {100 * np.std(v):.2f} (n={len(v)})")
        kept = kept_by_method(data["rows"], pipeline, x)
        cells += [study_cost.cell(kept, 0), study_cost.cell(kept, 1)]
        lines.append(f"| {x:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kept_by_method(rows: list[dict], pipeline: str, ratio: float) -> dict[str, tuple]:
    """Method label -> mean (params kept, MACs kept) fractions over the seeds of
    the rows at prune ratio ``ratio`` (``None`` entries where not determined:
    see ``experiments.study_cost``). Rows without cost fields count their
    pruned weights from ``density`` over the model's default prunable set."""
    out: dict[str, list] = {}
    for r in rows:
        if r["pipeline"] != pipeline or round(r["sparsity"], 4) != ratio:
            continue
        dense = study_cost.dense_cost(r["model"], r["dataset"])
        pruned = round((1.0 - r["density"]) * dense["n_prunable"]) if dense else None
        fracs = study_cost.kept_fractions(r["model"], r["dataset"], pruned, r)
        out.setdefault(LABELS.get(r["method"], r["method"]), []).append(fracs)
    return {
        m: tuple(None if any(f[i] is None for f in fs) else sum(f[i] for f in fs) / len(fs) for i in (0, 1))
        for m, fs in sorted(out.items())
    }


def main() -> None:
    a = _args()
    os.environ.setdefault("JAXPRUNE_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    out = pathlib.Path(a.out)
    data = json.loads(out.read_text()) if a.plot_only else run_study(a)
    # results/sipp_cpu.json -> sipp_*.png; results/sipp_resnet20.json -> sipp_resnet20_*.png
    for p in plot(data, out.parent, prefix=out.stem.removesuffix("_cpu")):
        print("wrote", p)
    for pipeline in ("random_init_prune_train", "iterative_prune_retrain"):
        print(f"\n### {pipeline}\n\n{table(data, pipeline)}")


if __name__ == "__main__":
    main()
