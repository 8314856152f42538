"""The DPF study at CPU scale (METHODS.md section 5), in the layout of the
paper's Table 2: Dense, One-shot P+FT, Incremental, Incremental + FT, DPF,
DPF + FT (and SNIP) over target sparsities and seeds; writes
``results/dpf_cpu.json`` (one record per run, per-epoch curves included),
``results/dpf_cpu.md`` (mean +- std table, claim check) and ``results/dpf_*.png``.

    python -m experiments.dpf_study --epochs 20 --seeds 0,1,2          # LeNet-300-100 grid
    python -m experiments.dpf_study --grid resnet20 --epochs 20        # the conv run
    python -m experiments.dpf_study --report_only                      # tables/plots from the JSON
    python -m experiments.dpf_study --ft_grid --seeds 0 --targets 0.95 --out results/dpf_ft_grid.json

Dense, DPF and Incremental train from scratch for the config's epochs; the
fine-tuning rows continue a finished run of the same seed (the config's
``method.reuse_workdir``): One-shot P+FT prunes the Dense run and fine-tunes,
DPF + FT / Incremental + FT fine-tune the final DPF / Incremental model, each
for the config's fine-tuning epochs (the paper's 60, scaled to the budget).
Their run directories are kept under ``--workroot`` for that reason.

``--ft_grid``: the paper tunes the fine-tuning optimizer and lr (SGD with
Nesterov momentum or Adam, a small lr grid; Appendix A.2). This mode runs the
fine-tuning rows for every (optimizer, lr factor) of :data:`FT_GRID` from the
same finished runs, and the report names the winner by validation accuracy
(a split held out from the training data), per method.

Runs are appended to the JSON as they finish and skipped when already there, so
a killed study continues where it stopped. ``--epochs`` overrides the config's
epochs (the issue's 60 for LeNet); the sparsity schedule and lr decays scale
with it (they are fractions of training), and so does the fine-tuning budget.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

from absl import app, flags

from experiments import study_cost
from jaxprune.train.metrics import quiet_logs

GRIDS = {
    # grid: (config module, methods, default targets)
    "lenet300": ("jaxprune.configs.dpf_lenet300_fmnist",
                 ("dense", "dpf", "incremental", "one_shot_ft", "dpf_ft", "incremental_ft", "snip"),
                 "0.9,0.95,0.98,0.99"),
    "resnet20": ("jaxprune.configs.dpf_cifar10_resnet20_cpu",
                 ("dense", "dpf", "incremental", "one_shot_ft", "dpf_ft", "incremental_ft"), "0.9"),
}
LABELS = {"dense": "Dense", "dpf": "DPF", "dpf_ft": "DPF + FT", "incremental": "Incremental",
          "incremental_ft": "Incremental + FT", "one_shot_ft": "One-shot P+FT",
          "one_shot_split": "One-shot+FT (split budget)", "dpf_filter": "Structured DPF", "snip": "SNIP"}
# fine-tuning row -> the run it continues (same seed and target; Dense: target 0)
REUSES = {"one_shot_ft": "dense", "dpf_ft": "dpf", "incremental_ft": "incremental"}
# the paper's fine-tuning grid (Appendix A.2): optimizer x lr factor (fine-tuning lr = train.lr * factor)
FT_GRID = (("sgd", 0.1), ("sgd", 0.01), ("adam", 0.01), ("adam", 0.001))

_GRID = flags.DEFINE_enum("grid", "lenet300", list(GRIDS), "Which study grid to run.")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Training epochs of every method (0: the config's).")
_SEEDS = flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds.")
_TARGETS = flags.DEFINE_string("targets", "", "Comma-separated target sparsities (default: the grid's).")
_METHODS = flags.DEFINE_string("methods", "", "Comma-separated methods (default: the grid's).")
_OUT = flags.DEFINE_string("out", "results/dpf_cpu.json", "Results JSON (appended to).")
_WORKROOT = flags.DEFINE_string("workroot", "runs/dpf_study", "Run directories (deleted after each run).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only write the table and plots from --out.")
_LR = flags.DEFINE_float("lr", 0.0, "Peak learning rate of every method (0: the config's); stored as "
                         "'lr' in each record. Use a separate --out: the run key does not include it.")
_TRAIN_LIMIT = flags.DEFINE_integer("train_limit", 0, "Use only this many training examples (0: all).")
_RUN_ONLY = flags.DEFINE_bool("run_only", False, "Run the grid, write no report (parallel seed workers).")
_MERGE = flags.DEFINE_list("merge", [], "Partial JSON files merged into --out before the report.")
_TIMING_PAIRS = flags.DEFINE_integer(
    "timing_pairs", 0, "Instead of the grid: this many back-to-back Dense / DPF (0.95, seed 0) pairs, "
    "for a wall-time ratio measured under the same machine load.")
_FT_GRID = flags.DEFINE_bool(
    "ft_grid", False,
    "Instead of the grid: the fine-tuning rows for every (optimizer, lr factor) of FT_GRID, "
    "selected by validation accuracy (report: the winner per method).")
_NOTE = flags.DEFINE_string(
    "note", "", "A paragraph on the budget, written into the report (default: the text of <out>.note.txt, "
    "e.g. results/dpf_cpu.note.txt, if that file exists).")


def study_method(r: dict) -> str:
    """The study's method name of a record (a key of :data:`LABELS`). Records
    written before the Table 2 protocol have no ``study_method``; their
    ``one_shot_ft`` was the split-budget protocol."""
    if "study_method" in r:
        return r["study_method"]
    return "one_shot_split" if r["method_id"] == "one_shot_ft" else r["method_id"]


def _key(r: dict) -> tuple:
    return (r["model"], study_method(r), float(r["target_sparsity"]), int(r["seed"]), int(r["epochs"]),
            int(r.get("timing_index", -1)), r.get("finetune_optimizer"), r.get("finetune_lr"))


def _workdir(model: str, method: str, target: float, seed: int, tag: str = "") -> pathlib.Path:
    return pathlib.Path(_WORKROOT.value) / f"{model}_{method}_{float(target)}_{seed}{tag}"


def run_grid(out: pathlib.Path) -> None:
    """Run every (method, target, seed) of the chosen grid not yet in ``out``."""
    import importlib

    import jax

    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(_WORKROOT.value) / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from jaxprune.pipelines.dpf import train_method
    from jaxprune.train import TrainingDiverged

    module, methods, targets = GRIDS[_GRID.value]
    get_config = importlib.import_module(module).get_config
    methods = tuple(_METHODS.value.split(",")) if _METHODS.value else methods
    targets = [float(t) for t in (_TARGETS.value or targets).split(",")]
    seeds = [int(s) for s in _SEEDS.value.split(",")]
    records = json.loads(out.read_text()) if out.exists() else []
    done = {_key(r) for r in records}
    from jaxprune.pipelines import setup

    grid = [(None, None)]
    if _TIMING_PAIRS.value:  # (seed, method, target, timing index) of each run
        runs = [(0, m, 0.0 if m == "dense" else 0.95, i) for i in range(_TIMING_PAIRS.value)
                for m in ("dense", "dpf")]
    else:
        if _FT_GRID.value:  # the bases first, then every grid point of the fine-tuning rows
            methods = tuple(dict.fromkeys([REUSES[m] for m in methods if m in REUSES]
                                          + [m for m in methods if m in REUSES]))
            grid = list(FT_GRID)
        runs = [(seed, m, t, -1) for seed in seeds for m in methods
                for t in ([0.0] if m == "dense" else targets)]
    dataset, dataset_seed = None, None
    for (seed, method, target, timing_index), (optimizer, factor) in (
            (run, g) for run in runs for g in (grid if run[1] in REUSES else [(None, None)])):
        if dataset_seed != seed:
            dataset = None
        config = get_config(f"{method},{target or 0.9}")
        config.seed = seed
        config.train.progress_bar = False
        if _EPOCHS.value:  # the fine-tuning budget scales with the training budget
            ft = int(config.method.get("finetune_epochs", 0))
            if ft:
                config.method.finetune_epochs = max(1, round(ft * _EPOCHS.value / config.train.epochs))
            config.train.epochs = _EPOCHS.value
        config.data.train_limit = _TRAIN_LIMIT.value
        if _LR.value:
            config.train.lr = _LR.value
        tag = ""
        if optimizer is not None:
            config.method.finetune_optimizer, config.method.finetune_lr_factor = optimizer, factor
            tag = f"_{optimizer}_{factor}"
        if dataset is None:
            dataset, _ = setup(config)
            dataset_seed = seed
        model = config.model.name
        ft = int(config.method.finetune_epochs)
        key = (model, method, float(target), seed, int(config.train.epochs) + ft, timing_index,
               config.method.finetune_optimizer if ft else None,
               float(config.train.lr) * float(config.method.finetune_lr_factor) if ft else None)
        if key in done:
            continue
        base = REUSES.get(method)
        if base is not None:  # continue the finished base run when its directory is still there
            base_dir = _workdir(model, base, 0.0 if base == "dense" else target, seed)
            if (base_dir / "results.json").exists():
                config.method.reuse_workdir = str(base_dir.absolute())
        workdir = _workdir(model, method, target, seed, tag)
        shutil.rmtree(workdir, ignore_errors=True)
        tic = time.perf_counter()
        pipeline_method = config.pipeline if config.pipeline != "dpf_dense" else "dense"
        try:
            record = train_method(config, workdir, pipeline_method, dataset=dataset).record
        except TrainingDiverged as err:
            wall = time.perf_counter() - tic
            record = diverged_record(config, pipeline_method, dataset, workdir, err, wall)
        record["study_method"] = method
        record["lr"] = float(config.train.lr)
        if optimizer is not None:
            record["finetune_grid_point"] = True
        if timing_index >= 0:
            record["timing_index"] = timing_index
        records.append(record)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records, indent=1) + "\n")
        if method not in REUSES.values():  # the bases stay for the fine-tuning rows
            shutil.rmtree(workdir, ignore_errors=True)
        outcome = (f"DIVERGED at step {record['diverged_step']}" if record.get("diverged") else
                   f"test acc {record['test_acc']:.4f} sparsity {record['sparsity_prunable']:.4f}")
        print(f"{model} {method:12s} s={target:.2f} seed={seed}: {outcome} wall {record['wall_s']:.1f}s",
              flush=True)


def diverged_record(config, method: str, dataset, workdir: pathlib.Path, err, wall_s: float) -> dict:
    """The record of a run stopped by :class:`TrainingDiverged`: where it diverged
    and its per-epoch rows up to there; ``test_acc`` is None (the report leaves it
    out of the means and counts it)."""
    from jaxprune.train import read_metrics

    history = [row for phase in ("dense", "train", "finetune") if (workdir / phase).exists()
               for row in read_metrics(workdir / phase, "epoch")]
    return dict(
        method_id=method, method=LABELS[method], model=config.model.name, dataset=config.data.name,
        train_examples=len(dataset.train.y), seed=int(config.seed),
        target_sparsity=0.0 if method == "dense" else float(config.method.target_sparsity),
        epochs=int(config.train.epochs), test_acc=None, diverged=True, diverged_step=err.step,
        diverged_epoch=err.epoch, diverged_loss=str(err.loss), diverged_lr=err.lr, history=history,
        wall_s=wall_s,
    )


# --------------------------------------------------------------------------- report

ORDER = ("dense", "one_shot_ft", "incremental", "incremental_ft", "dpf", "dpf_ft", "dpf_filter", "snip",
         "one_shot_split")


def _mean_std(values: list[float]) -> tuple[float, float]:
    import numpy as np

    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _finished(runs: list[dict]) -> list[dict]:
    """The runs that did not diverge (a diverged run has no test accuracy)."""
    return [r for r in runs if not r.get("diverged")]


def _acc_cell(runs: list[dict]) -> str:
    """``mean +- std (n=k)`` of the test accuracy (%) over finished runs, naming
    the diverged ones."""
    ok, bad = _finished(runs), len(runs) - len(_finished(runs))
    diverged = f"; {bad} diverged" if bad else ""
    if not ok:
        return f"all {bad} diverged"
    mu, sd = _mean_std([100 * r["test_acc"] for r in ok])
    return f"{mu:.2f} +- {sd:.2f} (n={len(ok)}{diverged})"


def _groups(records: list[dict]) -> dict[tuple, list[dict]]:
    """Records by ``(model, method_id, target_sparsity)``."""
    out: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("timing_index", -1) >= 0:
            continue
        if r.get("finetune_grid_point"):
            continue
        out.setdefault((r["model"], study_method(r), float(r["target_sparsity"])), []).append(r)
    return out


def table(records: list[dict]) -> list[str]:
    """Markdown rows like the paper's Table 2: test accuracy (%) mean +- std over
    seeds per model, target and method (diverged runs counted, not averaged),
    with the reached sparsities."""
    lines = []
    groups = _groups(records)
    for model in sorted({r["model"] for r in records}):
        dense = groups.get((model, "dense", 0.0), [])
        targets = sorted({t for (mo, me, t) in groups if mo == model and me != "dense"})
        methods = [m for m in ORDER[1:] if any((model, m, t) in groups for t in targets)]
        dataset = next(r["dataset"] for r in records if r["model"] == model)
        lines += [f"### {model} on {dataset}", ""]
        if dense:
            wall = _mean_std([r["wall_s"] for r in dense])[0]
            lines += [f"Dense: {_acc_cell(dense)}, wall {wall:.0f} s", ""]
        lines.append("| target | " + " | ".join(LABELS[m] for m in methods)
                     + " | reached (prunable / all) | params kept | MACs kept |")
        lines.append("|---" * (len(methods) + 4) + "|")
        for t in targets:
            cells, reached = [], ""
            for m in methods:
                g = groups.get((model, m, t), [])
                if not g:
                    cells.append("-")
                    continue
                cells.append(_acc_cell(g))
                g = _finished(g)
                if m == "dpf" and g:
                    reached = (f"{_mean_std([r['sparsity_prunable'] for r in g])[0]:.4f} / "
                               f"{_mean_std([r['sparsity_all'] for r in g])[0]:.4f}")
            kept = {LABELS[m]: _kept(_finished(groups.get((model, m, t), []))) for m in methods}
            kept = {m: v for m, v in kept.items() if v is not None}
            lines.append(f"| {t:.2f} | " + " | ".join(cells) + f" | {reached} | "
                         f"{study_cost.cell(kept, 0)} | {study_cost.cell(kept, 1)} |")
        lines.append("")
    lines.append(KEPT_NOTE)
    lines.append("")
    return lines


KEPT_NOTE = (
    "params kept / MACs kept: % of the dense model's parameters (all of them) and multiply-accumulates "
    "per example, mean over the finished seeds, from the final masks (the record's summary, "
    "jaxprune.measures.cost) or, for the records that stored only the sparsity, from the pruned-weight "
    "count (exact for MACs only for fully connected models, one MAC per weight); n/a: not determined by "
    "the stored records; one value when all methods agree, their range within 0.1 pp, else one per method."
)


def _kept(runs: list[dict]) -> tuple[float | None, float | None] | None:
    """Mean (params kept, MACs kept) fractions over ``runs`` (``None`` entries
    where any run lacks them); ``None`` without runs."""
    if not runs:
        return None
    fracs = []
    for r in runs:
        pruned = round(r["sparsity_all"] * r["n_params"]) if r.get("n_params") else None
        fracs.append(study_cost.kept_fractions(r["model"], r["dataset"], pruned, r.get("summary")))
    return tuple(
        None if any(f[i] is None for f in fracs) else sum(f[i] for f in fracs) / len(fracs) for i in (0, 1)
    )


def claim_check(records: list[dict]) -> list[str]:
    """The three comparisons of the claim, with numbers, per model and target."""
    groups = _groups(records)
    lines = ["Claim: at 0.95 and above, DPF >= Incremental and DPF >= One-shot P+FT in mean test accuracy at "
             "equal epochs, and DPF's wall-time overhead over Dense is small.", ""]
    lines += ["| model | target | DPF - Incremental (pp) | DPF - One-shot P+FT (pp) "
              "| DPF wall / Dense wall (grid, load-confounded) | holds | diverged runs (left out) |",
              "|---|---|---|---|---|---|---|"]
    verdict: dict[str, list[tuple]] = {"inc": [], "os": [], "dpf_diverged": []}
    for model in sorted({r["model"] for r in records}):
        dense = _finished(groups.get((model, "dense", 0.0), []))
        dense_wall = _mean_std([r["wall_s"] for r in dense])[0] if dense else float("nan")
        for t in sorted({t for (mo, me, t) in groups if mo == model and me == "dpf"}):
            runs = {m: groups[(model, m, t)] for m in ("dpf", "incremental", "one_shot_ft")
                    if (model, m, t) in groups}
            acc = {m: _mean_std([100 * r["test_acc"] for r in _finished(g)])[0]
                   for m, g in runs.items() if _finished(g)}
            diverged = ", ".join(f"{LABELS[m]} {len(g) - len(_finished(g))}/{len(g)}"
                                 for m, g in runs.items() if len(_finished(g)) < len(g)) or "none"
            dpf_done = _finished(runs["dpf"])
            wall = (_mean_std([r["wall_s"] for r in dpf_done])[0] if dpf_done else float("nan")) / dense_wall
            d_inc = acc.get("dpf", float("nan")) - acc.get("incremental", float("nan"))
            d_os = acc.get("dpf", float("nan")) - acc.get("one_shot_ft", float("nan"))
            scope = t >= 0.95
            holds = "n/a (< 0.95)" if not scope else ("yes" if d_inc >= 0 and d_os >= 0 else "NO")
            lines.append(f"| {model} | {t:.2f} | {d_inc:+.2f} | {d_os:+.2f} | {wall:.2f} | {holds} "
                         f"| {diverged} |")
            if scope:  # a comparison counts where the baseline was run
                for part, baseline, d in (("inc", "incremental", d_inc), ("os", "one_shot_ft", d_os)):
                    if baseline in runs:
                        verdict[part].append((t, d))
                verdict["dpf_diverged"].append((t, len(runs["dpf"]) - len(dpf_done), len(runs["dpf"])))
    lines.append("")
    for part, name in (("inc", "Incremental"), ("os", "One-shot P+FT")):
        fails = [f"{t:.2f} ({d:+.2f} pp)" for t, d in verdict[part] if not d >= 0]
        outcome = (f"FAILS at {', '.join(fails)}." if fails else f"holds at all {len(verdict[part])} targets."
                   if verdict[part] else f"not tested ({name} not run).")
        lines.append(f"- DPF >= {name} at >= 0.95: {outcome}")
    diverged_at = [f"{k}/{n} runs at {t:.2f}" for t, k, n in verdict["dpf_diverged"] if k]
    if diverged_at:
        lines.append(f"- DPF diverged (non-finite training loss) in {', '.join(diverged_at)}; those runs are "
                     "left out of the means above (a difference is nan where no DPF run finished).")
    lines.append("")
    timing = [r for r in records if r.get("timing_index", -1) >= 0]
    if timing:
        import numpy as np

        walls = {m: [r["wall_s"] for r in timing if r["method_id"] == m] for m in ("dense", "dpf")}
        ratios = [p / d for d, p in zip(walls["dense"], walls["dpf"], strict=False)]
        lines += [f"Back-to-back timing ({len(ratios)} Dense / DPF 0.95 pairs, seed 0, "
                  f"{timing[0]['epochs']} epochs, same machine load within a pair): Dense "
                  f"{np.median(walls['dense']):.1f} s, DPF {np.median(walls['dpf']):.1f} s (medians); "
                  f"DPF / Dense per pair: {', '.join(f'{x:.2f}' for x in ratios)} "
                  f"(median {np.median(ratios):.2f}); whole runs, compilation and per-epoch "
                  "evaluation included.", ""]
    return lines


def ft_grid_report(records: list[dict]) -> list[str]:
    """The fine-tuning grid: validation and test accuracy (%) per (optimizer, lr)
    and the winner by mean validation accuracy, per model, method and target."""
    points = [r for r in records if r.get("finetune_grid_point")]
    if not points:
        return []
    lines = ["## Fine-tuning grid (Appendix A.2: optimizer and lr tuned on held-out validation data)", "",
             "| model | method | target | optimizer | lr | val acc | test acc | n | winner |",
             "|---|---|---|---|---|---|---|---|---|"]
    cells: dict[tuple, dict[tuple, list[dict]]] = {}
    for r in points:
        cell = (r["model"], study_method(r), float(r["target_sparsity"]))
        cells.setdefault(cell, {}).setdefault((r["finetune_optimizer"], r["finetune_lr"]), []).append(r)
    for (model, method, target), grid in sorted(cells.items()):
        val = {g: _mean_std([100 * r["val_acc"] for r in _finished(rs)])[0] for g, rs in grid.items()
               if _finished(rs)}
        best = max(val, key=val.get) if val else None
        for g, rs in sorted(grid.items()):
            done_runs = _finished(rs)
            test = _mean_std([100 * r["test_acc"] for r in done_runs])[0] if done_runs else float("nan")
            lines.append(f"| {model} | {LABELS[method]} | {target:.2f} | {g[0]} | {g[1]:g} | "
                         f"{val.get(g, float('nan')):.2f} | {test:.2f} | {len(rs)} | "
                         f"{'**winner**' if g == best else ''} |")
    return [*lines, ""]


def plots(records: list[dict], outdir: pathlib.Path, stem: str = "dpf") -> list[pathlib.Path]:
    """``<stem>_accuracy.png`` (accuracy vs sparsity per method over the finished runs, diverged
    runs counted beside the point), ``<stem>_mask_convergence.png``
    (paper's Figure 4, DPF, seed-averaged) and ``<stem>_delta.png`` (delta_t per epoch, Figure 7);
    ``<stem>_<model>_*`` for models other than LeNet-300-100."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups, every_run = _groups(_finished(records)), _groups(records)
    paths = []
    for model in sorted({r["model"] for r in records}):
        prefix = stem if model == "lenet300" else f"{stem}_{model}"
        name = f"{model} on {next(r['dataset'] for r in records if r['model'] == model)}"
        seeds = sorted({len(g) for (mo, me, _), g in groups.items() if mo == model and me != "dense"})
        n_seeds = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}" if seeds else "0"
        fig, ax = plt.subplots(figsize=(5.5, 4))
        dense = groups.get((model, "dense", 0.0))
        if dense:
            ax.axhline(100 * np.mean([r["test_acc"] for r in dense]), color="k", ls="--", label="Dense")
        for m in ORDER[1:]:
            ts = sorted(t for (mo, me, t) in groups if mo == model and me == m)
            if not ts:
                continue
            stats = [_mean_std([100 * r["test_acc"] for r in groups[(model, m, t)]]) for t in ts]
            bars = ax.errorbar(ts, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3,
                               label=LABELS[m])
            for t, (mu, _) in zip(ts, stats, strict=True):  # name the runs left out of a mean
                n_all, n_ok = len(every_run[(model, m, t)]), len(groups[(model, m, t)])
                if n_ok < n_all:
                    ax.annotate(f"{n_all - n_ok}/{n_all} diverged", (t, mu), textcoords="offset points",
                                xytext=(-8, -14), ha="right", fontsize=7, color=bars[0].get_color())
        ax.set(xlabel="target sparsity (prunable weights)", ylabel="test accuracy (%)")
        ax.set_title(f"{name}\nmean ± std over {n_seeds} seeds (finished runs)", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(outdir / f"{prefix}_accuracy.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

        dpf_ts = sorted(t for (mo, me, t) in groups if mo == model and me == "dpf")
        for key, fname, ylabel in (("mask_convergence", "mask_convergence",
                                    "mask entries still changing after epoch (%)"),
                                   ("delta", "delta", "delta_t = ||w - m*w||^2 / ||w||^2")):
            fig, ax = plt.subplots(figsize=(5.5, 4))
            for t in dpf_ts:
                g = groups[(model, "dpf", t)]
                if key == "mask_convergence":
                    curve = 100 * np.mean([r["mask_convergence"] for r in g], axis=0)
                    x = np.arange(len(curve))
                else:
                    curve = np.mean([[h["delta"] for h in r["history"]] for r in g], axis=0)
                    x = np.arange(1, len(curve) + 1)
                ax.plot(x, curve, marker=".", label=f"DPF {t:.2f}")
            n_dpf = sorted({len(groups[(model, "dpf", t)]) for t in dpf_ts})
            ax.set(xlabel="epoch", ylabel=ylabel)
            ax.set_title(f"DPF, {name}: mean over {'-'.join(map(str, sorted({n_dpf[0], n_dpf[-1]})))} seeds"
                         if n_dpf else f"DPF, {name}", fontsize=10)
            ax.legend(fontsize=8)
            fig.tight_layout()
            paths.append(outdir / f"{prefix}_{fname}.png")
            fig.savefig(paths[-1], dpi=120)
            plt.close(fig)
    return paths


def write_report(out: pathlib.Path, note: str = "") -> None:
    """``<out>.md`` (table, claim check, per-epoch DPF curves) and the PNGs beside ``out``."""
    records = json.loads(out.read_text())
    lines = ["# DPF study at CPU scale", ""]
    for model in sorted({r["model"] for r in records}):
        rs = [r for r in records if r["model"] == model and r.get("timing_index", -1) < 0]
        epochs = sorted({r["epochs"] for r in rs})
        n_train = sorted({r["train_examples"] for r in rs})
        lrs = sorted({r["lr"] for r in rs if "lr" in r})  # stored since the --lr flag exists
        lr = f"peak lr {lrs}, " if lrs else ""
        lines += [f"Setup ({model} on {rs[0]['dataset']}): {epochs} epochs for every method, {lr}"
                  f"{n_train} training examples, seeds "
                  f"{sorted({r['seed'] for r in rs})}; test accuracy (%) of the final sparse model, "
                  "mean +- sample std over seeds.", ""]
    if note:
        lines += [note, ""]
    lines += [*table(records), "## Claim check", "", *claim_check(records), *ft_grid_report(records)]
    # results/dpf_cpu.json -> dpf_*.png; results/dpf_cpu_full.json -> dpf_full_*.png
    paths = plots(records, out.parent, stem=out.stem.replace("dpf_cpu", "dpf"))
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in paths] + [""]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and {len(paths)} figures")


def main(argv: list[str]) -> None:
    del argv
    quiet_logs()  # orbax logs every file it saves at INFO
    out = pathlib.Path(_OUT.value)
    if not _REPORT_ONLY.value:
        run_grid(out)
    if _MERGE.value:
        merged = {_key(r): r for r in (json.loads(out.read_text()) if out.exists() else [])}
        for part in _MERGE.value:
            merged.update({_key(r): r for r in json.loads(pathlib.Path(part).read_text())})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(sorted(merged.values(), key=_key), indent=1) + "\n")
    if not _RUN_ONLY.value:
        note_file = out.with_suffix(".note.txt")
        note = _NOTE.value or (note_file.read_text().strip() if note_file.exists() else "")
        write_report(out, note=note)


if __name__ == "__main__":
    _shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    os.environ.setdefault("JAXPRUNE_DATA_DIR", str(_shared))
    app.run(main)
