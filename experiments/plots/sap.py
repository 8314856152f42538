"""Figures of the PQ Index / SAP study, in the style of the paper's appendix,
from the per-round records of ``jaxprune.pipelines.iterative`` (one dict per
(method, scope, model, seed, round); seeds are averaged).

- ``sap_cpu_tradeoff.png``: test accuracy vs percent of remaining weights of
  the retrained (a) and pruned (b) models, and PQ Index vs round (c), per
  model, global scope (appendix Figs. 11-18);
- ``sap_cpu_pqi.png``: PQ Index and retrained accuracy vs round for every
  method and scope (does the PQI rise when accuracy drops?);
- ``sap_cpu_scopes.png``: SAP(0.5, 1) in global / layer / neuron scope:
  trade-off, layer-wise remaining weights and layer-wise PQ Index vs round
  (appendix Figs. 19-26);
- ``sap_cpu_pq_grid_<model>.png``: global PQ Index vs round for a grid of
  (p, q) (appendix Figs. 7-10).
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

GLOBAL_METHODS = ("lt", "os", "sap", "sap_1_2")
NAMES = {"lt": "Lottery Ticket", "os": "One Shot", "sap": "SAP (p=0.5, q=1)", "sap_1_2": "SAP (p=1, q=2)"}


def _series(records: Iterable[dict], method: str, scope: str, model: str) -> dict[str, np.ndarray]:
    """Per-round means over seeds of the scalar fields (plus per-layer dicts)."""
    by_round: dict[int, list[dict]] = collections.defaultdict(list)
    for r in records:
        if (r["method"], r["scope"], r["model"]) == (method, scope, model):
            by_round[r["round"]].append(r)
    rounds = sorted(by_round)
    out: dict = {"round": np.array(rounds)}
    for key in ("remaining", "remaining_after", "acc_retrained", "acc_pruned", "pqi"):
        out[key] = np.array([np.mean([r[key] for r in by_round[t]]) for t in rounds])
    for key in ("pqi_layers", "remaining_layers", "pqi_grid"):
        names = list(by_round[rounds[0]][0][key]) if rounds else []
        out[key] = {n: np.array([np.mean([r[key][n] for r in by_round[t]]) for t in rounds]) for n in names}
    return out


def _models(records: list[dict]) -> list[str]:
    return sorted({r["model"] for r in records})


def _about(records: list[dict], model: str) -> str:
    """``"<model> on <dataset>, mean over <n> seeds"`` for the titles (every curve is a seed mean)."""
    rows = [r for r in records if r["model"] == model]
    seeds = len({r["seed"] for r in rows})
    return f"{model} on {rows[0]['dataset']}, " + ("1 seed" if seeds == 1 else f"mean over {seeds} seeds")


def _short(layer: str) -> str:
    return layer.replace("/kernel", "").replace("params/", "")


def plot_tradeoff(records: list[dict], path: pathlib.Path) -> pathlib.Path:
    models = _models(records)
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 4 * len(models)), squeeze=False)
    for row, model in zip(axes, models, strict=True):
        for method in GLOBAL_METHODS:
            s = _series(records, method, "global", model)
            if not len(s["round"]):
                continue
            row[0].plot(100 * s["remaining"], 100 * s["acc_retrained"], "o-", ms=3, label=NAMES[method])
            row[1].plot(100 * s["remaining_after"], 100 * s["acc_pruned"], "o-", ms=3, label=NAMES[method])
            row[2].plot(s["round"], s["pqi"], "o-", ms=3, label=NAMES[method])
        for ax, title in zip(row, ("(a) retrained", "(b) pruned (before retraining)", "(c) PQ Index"),
                             strict=True):
            ax.set_title(f"{_about(records, model)}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
        for ax in row[:2]:
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("percent of remaining weights")
            ax.set_ylabel("test accuracy (%)")
        row[2].set_xlabel("pruning iteration T")
        row[2].set_ylabel("PQ Index (p=0.5, q=1)")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pqi_rounds(records: list[dict], path: pathlib.Path) -> pathlib.Path:
    models = _models(records)
    runs = sorted({(r["method"], r["scope"]) for r in records})
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4 * len(models)), squeeze=False)
    for row, model in zip(axes, models, strict=True):
        for method, scope in runs:
            s = _series(records, method, scope, model)
            if not len(s["round"]):
                continue
            label = f"{method}/{scope}"
            row[0].plot(s["round"], s["pqi"], "o-", ms=3, label=label)
            row[1].plot(s["round"], 100 * s["acc_retrained"], "o-", ms=3, label=label)
        row[0].set_title(f"{_about(records, model)}: PQ Index (p=0.5, q=1), retrained model", fontsize=9)
        row[1].set_title(f"{_about(records, model)}: test accuracy of the retrained model", fontsize=9)
        row[1].set_ylabel("test accuracy (%)")
        for ax in row:
            ax.set_xlabel("pruning iteration T")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scopes(records: list[dict], path: pathlib.Path) -> pathlib.Path:
    models = _models(records)
    fig, axes = plt.subplots(len(models), 3, figsize=(16, 4.2 * len(models)), squeeze=False)
    styles = {"global": "-", "layer": "--", "neuron": ":"}
    for row, model in zip(axes, models, strict=True):
        for scope, style in styles.items():
            s = _series(records, "sap", scope, model)
            if not len(s["round"]):
                continue
            row[0].plot(100 * s["remaining"], 100 * s["acc_retrained"], "o" + style, ms=3, label=scope)
            for i, (layer, v) in enumerate(s["remaining_layers"].items()):
                row[1].plot(s["round"], 100 * v, style, color=f"C{i}", label=f"{scope} {_short(layer)}")
            for i, (layer, v) in enumerate(s["pqi_layers"].items()):
                row[2].plot(s["round"], v, style, color=f"C{i}", label=f"{scope} {_short(layer)}")
        row[0].set_xscale("log")
        row[0].invert_xaxis()
        row[0].set_xlabel("percent of remaining weights")
        row[0].set_ylabel("test accuracy (%)")
        row[0].set_title(f"{_about(records, model)}: (a) SAP(0.5, 1) by scope", fontsize=9)
        row[1].set_yscale("log")
        row[1].set_ylabel("percent of remaining weights")
        row[1].set_title(f"{_about(records, model)}: (b) layer-wise remaining weights", fontsize=9)
        row[2].set_ylabel("PQ Index (p=0.5, q=1)")
        row[2].set_title(f"{_about(records, model)}: (c) layer-wise PQ Index", fontsize=9)
        for ax in row[1:]:
            ax.set_xlabel("pruning iteration T")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pq_grid(records: list[dict], model: str, path: pathlib.Path) -> pathlib.Path:
    pairs = sorted({k for r in records if r["model"] == model for k in r["pqi_grid"]},
                   key=lambda k: tuple(float(x) for x in k.split(",")))
    ps = sorted({float(k.split(",")[0]) for k in pairs})
    qs = sorted({float(k.split(",")[1]) for k in pairs})
    fig, axes = plt.subplots(len(ps), len(qs), figsize=(3.2 * len(qs), 2.6 * len(ps)), squeeze=False)
    for i, p in enumerate(ps):
        for j, q in enumerate(qs):
            ax, key = axes[i, j], f"{p:g},{q:g}"
            if key not in pairs:
                ax.axis("off")
                continue
            for method in GLOBAL_METHODS:
                s = _series(records, method, "global", model)
                if len(s["round"]):
                    ax.plot(s["round"], s["pqi_grid"][key], "-", label=NAMES[method])
            ax.set_title(f"p={p:g}, q={q:g}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"{_about(records, model)}: global PQ Index vs pruning iteration for several (p, q)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_all(records: list[dict], out: str | pathlib.Path) -> list[pathlib.Path]:
    """Write every figure into ``out``; returns the paths."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not records:
        return []
    paths = [
        plot_tradeoff(records, out / "sap_cpu_tradeoff.png"),
        plot_pqi_rounds(records, out / "sap_cpu_pqi.png"),
        plot_scopes(records, out / "sap_cpu_scopes.png"),
    ]
    paths += [plot_pq_grid(records, m, out / f"sap_cpu_pq_grid_{m}.png") for m in _models(records)]
    return paths
