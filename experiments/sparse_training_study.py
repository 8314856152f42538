"""Sparse training study (issue 18): LeNet-300-100 on Fashion-MNIST, Dense,
Static (ERK), SET, RigL, Sparse Momentum, DSR, STE, DPF and Incremental at
target sparsities 0.9 and 0.98 over seeds, all at the budget of
``jaxprune/configs/sparse_lenet300_fmnist.py`` (the DPF study's); writes
``results/sparse_training.json`` (one record per run), ``results/sparse_training.md``
(mean +- std table, wall time relative to Dense, the DPF paper's claim against
DSR and SM) and ``results/sparse_training.png``.

    python -m experiments.sparse_training_study                          # full budget (60 epochs)
    python -m experiments.sparse_training_study --epochs 8 --train_limit 12000 --seeds 0 --run_only \\
        --out runs/sparse_study/seed0.json                                # one worker per seed
    python -m experiments.sparse_training_study --report_only --merge a.json,b.json,...

Runs are appended to the JSON as they finish and skipped when already there,
so a killed study continues where it stopped.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import scipy.stats
from absl import app, flags

METHODS = ("dense", "static", "set", "rigl", "sparse_momentum", "dsr", "ste", "dpf", "incremental")
LABELS = {"dense": "Dense", "static": "Static (ERK)", "set": "SET", "rigl": "RigL",
          "sparse_momentum": "Sparse Momentum", "dsr": "DSR", "ste": "STE", "dpf": "DPF",
          "incremental": "Incremental"}
CONFIG = "jaxprune.configs.sparse_lenet300_fmnist"
REUSABLE = ("dpf", "incremental")  # the DPF study's runs with this study's config

_EPOCHS = flags.DEFINE_integer("epochs", 0, "Epochs of every method (0: the config's 60).")
_LIMIT = flags.DEFINE_integer("train_limit", 0, "Training examples before the validation split (0: all).")
_EVERY = flags.DEFINE_integer("update_every", 0, "Mask-update period of the sparse_training methods "
                              "(0: each method's default, 100 steps).")
_SEEDS = flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds.")
_TARGETS = flags.DEFINE_string("targets", "0.9,0.98", "Comma-separated target sparsities.")
_METHODS = flags.DEFINE_string("methods", ",".join(METHODS), "Comma-separated methods.")
_OUT = flags.DEFINE_string("out", "results/sparse_training.json", "JSON of the runs.")
_MERGE = flags.DEFINE_string("merge", "", "Comma-separated JSONs to merge into --out before the report.")
_WORKROOT = flags.DEFINE_string("workroot", "runs/sparse_study", "Run directories.")
_RUN_ONLY = flags.DEFINE_bool("run_only", False, "Run, write the JSON, no report.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only the report from the JSON.")
_MD = flags.DEFINE_string("md", "results/sparse_training.md", "Report path.")
_PNG = flags.DEFINE_string("png", "results/sparse_training.png", "Plot path.")
_NOTE = flags.DEFINE_string("note", "", "Text added under the setup line of the report (budget, machine).")
_VERDICT = flags.DEFINE_string("verdict", "", "Text under the claim table (the reading).")
_REUSE = flags.DEFINE_string(
    "reuse", "", "JSON of DPF-study records (e.g. results/dpf_table2.json): its DPF and Incremental runs are "
    "taken instead of rerun when their config equals the one this study would run (Dense always runs "
    "here: it is the wall-time baseline).")


def _key(r: dict) -> tuple:
    return r["method_id"], round(r["target_sparsity"], 4), r["seed"]


def _load(path: pathlib.Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def _save(path: pathlib.Path, runs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")


def study_config(method: str, target: float, seed: int, epochs: int = 0, limit: int = 0,
                 update_every: int = 0):
    """The config of one run of the grid (``epochs``/``limit``/``update_every`` 0: the config's)."""
    import importlib

    config = importlib.import_module(CONFIG).get_config(f"{method},{target}")
    config.seed = seed
    if epochs:
        config.train.epochs = epochs
    if limit:
        config.data.train_limit = limit
    if update_every and config.pipeline == "sparse_training":
        config.method.update_every = update_every
    return config


def _protocol(config: dict) -> dict:
    """``config`` without the keys that change how a run is shown or restarted, not what it computes."""
    config = {k: v for k, v in config.items() if k != "resume"}
    if "train" in config:
        config["train"] = {k: v for k, v in config["train"].items() if k != "progress_bar"}
    return config


def reusable(records: list[dict], method: str, target: float, seed: int, **overrides) -> dict | None:
    """The record among ``records`` (a DPF study's) whose config is exactly the
    one this study runs for ``(method, target, seed)``, or None; the DPF study's
    "+FT" rows (``study_method`` ending in ``_ft``) never match."""
    want = _protocol(json.loads(study_config(method, target, seed, **overrides).to_json()))
    for r in records:
        if r.get("study_method", r.get("method_id")) == method and _protocol(r.get("config", {})) == want:
            return {**r, "method_id": method, "reused_from": "dpf_study"}
    return None


def run_one(method: str, target: float, seed: int, epochs: int, limit: int, workroot: pathlib.Path,
            update_every: int = 0) -> dict:
    from jaxprune.pipelines import get_pipeline

    config = study_config(method, target, seed, epochs, limit, update_every)
    workdir = workroot / f"{method}_{target}_s{seed}"
    shutil.rmtree(workdir, ignore_errors=True)  # an unfinished run (finished ones are in the JSON)
    record = get_pipeline(config.pipeline)(config, str(workdir))
    record["method_id"] = method
    record.pop("history", None)
    return record


def run_grid(out: pathlib.Path) -> list[dict]:
    runs = _load(out)
    done = {_key(r) for r in runs}
    seeds = [int(s) for s in _SEEDS.value.split(",")]
    targets = [float(t) for t in _TARGETS.value.split(",")]
    reuse = _load(pathlib.Path(_REUSE.value)) if _REUSE.value else []
    overrides = dict(epochs=_EPOCHS.value, limit=_LIMIT.value, update_every=_EVERY.value)
    for seed in seeds:
        for method in _METHODS.value.split(","):
            for target in ([0.0] if method == "dense" else targets):
                if (method, round(target, 4), seed) in done:
                    continue
                run_target = target if method != "dense" else 0.9
                r = reusable(reuse, method, run_target, seed, **overrides) if method in REUSABLE else None
                if r is None:
                    r = run_one(method, run_target, seed, _EPOCHS.value, _LIMIT.value,
                                pathlib.Path(_WORKROOT.value), _EVERY.value)
                r.pop("history", None)
                r["target_sparsity"] = target
                runs.append(r)
                _save(out, runs)
                reused = " (reused)" if "reused_from" in r else ""
                print(f"{method} {target} seed {seed}{reused}: test_acc {r['test_acc']:.4f} "
                      f"wall {r['wall_s']:.0f} s", flush=True)
    return runs


def _stats(values: list[float]) -> tuple[float, float, int]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, int(a.size)


def report(runs: list[dict], md: pathlib.Path, png: pathlib.Path, note: str = "", verdict: str = "") -> str:
    """The markdown report (also written to ``md``) and the plot ``png``;
    ``note`` goes under the setup line, ``verdict`` under the claim table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[tuple, list[dict]] = {}
    for r in runs:
        by.setdefault((r["method_id"], round(r["target_sparsity"], 4)), []).append(r)
    targets = sorted({t for (m, t) in by if m != "dense"})
    methods = [m for m in METHODS if any(k[0] == m for k in by)]
    r0 = runs[0]
    seeds = sorted({r["seed"] for r in runs})
    acc = {k: _stats([100 * r["test_acc"] for r in v]) for k, v in by.items()}
    dense_wall = {r["seed"]: r["wall_s"] for r in by.get(("dense", 0.0), [])}
    lines = [f"# Sparse training study: {r0['model']} on {r0['dataset']}", ""]
    lines.append(
        f"Setup: {r0['epochs']} epochs, {r0['train_examples']} training examples, seeds {seeds}; "
        "test accuracy (%) of the final sparse model, mean +- sample std over seeds (n per cell). "
        "Pruned: both hidden kernels (DPF's set; the 100x10 head and the biases stay dense); "
        "the sparsity is over them."
    )
    if note:
        lines += ["", note]
    lines += ["", "| method | " + " | ".join(f"{t:g}" for t in targets) + " | wall / Dense |",
              "|---" * (len(targets) + 2) + "|"]
    for m in methods:
        cells = []
        for t in targets:
            k = (m, 0.0) if m == "dense" else (m, t)
            cells.append("-" if k not in acc else f"{acc[k][0]:.2f} +- {acc[k][1]:.2f} (n={acc[k][2]})")
        ratios = [r["wall_s"] / dense_wall[r["seed"]] for k, v in by.items() if k[0] == m for r in v
                  if r["seed"] in dense_wall and "reused_from" not in r]
        wall = f"{np.median(ratios):.2f}" if ratios else "-"
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {wall} |")
    lines += ["", "Wall / Dense: median over runs of the run's wall time over the Dense run's of the same "
              "seed (whole runs: compilation, per-epoch evaluation and mask bookkeeping included; the "
              "workers shared a loaded machine, so these ratios are rough; '-' for runs reused from "
              "the DPF study, timed under other conditions)."]
    lines += ["", "## The DPF paper's claim against DSR and Sparse Momentum", "",
              "Claim (Lin et al. 2020, Table 1): DPF reaches a higher test accuracy than DSR and SM at the "
              "same target sparsity. Differences of the seed means; p: Welch's two-sided t-test over the "
              "seeds (scipy), so a margin with p > 0.05 is within seed noise.", "",
              "| target | DPF - DSR (pp) | DPF - SM (pp) | holds |", "|---|---|---|---|"]
    for t in targets:
        cells, diffs = [], []
        for other in ("dsr", "sparse_momentum"):
            a, b = by.get(("dpf", t)), by.get((other, t))
            if not a or not b:
                cells.append("n/a")
                diffs.append(None)
                continue
            diffs.append(acc[("dpf", t)][0] - acc[(other, t)][0])
            pval = scipy.stats.ttest_ind([r["test_acc"] for r in a], [r["test_acc"] for r in b],
                                         equal_var=False).pvalue if min(len(a), len(b)) > 1 else float("nan")
            cells.append(f"{diffs[-1]:+.2f} (p={pval:.2g})")
        holds = "n/a" if None in diffs else ("yes" if all(x >= 0 for x in diffs) else "NO")
        lines.append(f"| {t:g} | {cells[0]} | {cells[1]} | {holds} |")
    if verdict:
        lines += ["", verdict]
    lines += ["", f"![sparse_training]({png.name})", ""]
    text = "\n".join(lines)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, m in enumerate(methods):
        xs = [j + (i - len(methods) / 2) * 0.06 for j in range(len(targets))]
        if m == "dense":
            mean, _, _ = acc[("dense", 0.0)]
            ax.axhline(mean, color="k", ls="--", lw=1, label=f"Dense ({mean:.2f})")
            continue
        pts = [acc.get((m, t)) for t in targets]
        ax.errorbar([x for x, p in zip(xs, pts, strict=True) if p], [p[0] for p in pts if p],
                    yerr=[p[1] for p in pts if p], marker="o", capsize=3, label=LABELS[m])
    ax.set_xticks(range(len(targets)), [f"{t:g}" for t in targets])
    ax.set_xlabel("target sparsity (pruned layers)")
    ax.set_ylabel("test accuracy (%)")
    n = min(v[2] for v in acc.values())
    ax.set_title(f"Sparse training, {r0['model']} / {r0['dataset']}: mean ± std over {n} seeds")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    return text


def main(argv: list[str]) -> None:
    del argv
    out = pathlib.Path(_OUT.value)
    runs = _load(out)
    if _MERGE.value:
        have = {_key(r) for r in runs}
        for path in _MERGE.value.split(","):
            for r in _load(pathlib.Path(path)):
                if _key(r) not in have:
                    runs.append(r)
                    have.add(_key(r))
        _save(out, runs)
    if not _REPORT_ONLY.value:
        runs = run_grid(out)
    if not _RUN_ONLY.value:
        print(report(runs, pathlib.Path(_MD.value), pathlib.Path(_PNG.value), _NOTE.value, _VERDICT.value))


if __name__ == "__main__":
    app.run(main)
