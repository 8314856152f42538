"""Why a DPF run diverges: per-step dynamics of DPF runs (LeNet-300-100 on
Fashion-MNIST, ``jaxprune/configs/dpf_lenet300_fmnist.py``) around their mask updates.

DPF evaluates the gradient at ``m * w`` and applies it to the dense ``w``. The
gradient of a pruned weight is taken where that weight is 0, so nothing in the
loss pulls it back while it is pruned: a steady gradient, amplified by momentum
(1 / (1 - 0.9) = 10x), lets it drift far past the kept weights, and the next
mask update swaps it back in at that size. This script measures it: for each
mask update, the largest re-entering weight against the largest weight kept
through it, and the train loss of the first step whose forward pass uses the
new mask against the other steps of the period.

    python -m experiments.dpf_divergence --seeds 0,1 --target 0.99    # ~3 min on 2 CPU cores

Writes ``<out>.json`` (per mask update; config included), ``<out>.md`` (with
the text of ``<out>.note.txt`` if present) and ``<out>.png``. A run stopped by
:class:`jaxprune.train.TrainingDiverged` is recorded up to its last step.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--lr", type=float, default=0.0, help="0: the config's (0.1)")
    p.add_argument("--out", default="results/dpf_divergence")
    p.add_argument("--workroot", default="runs/dpf_divergence")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args()


def _step_stats_fn():
    """A jitted ``(state, prev_mask) -> (stats, mask copy)`` over the prunable
    leaves: the weights newly kept by the latest mask update (``n_in``, their
    largest ``|w|``), the largest ``|w|`` kept through it and the largest pruned
    ``|w|``. The returned mask is a fresh buffer (the next step donates the state)."""
    import jax
    import jax.numpy as jnp

    from jaxprune.transforms import get_mask

    @jax.jit
    def stats(state, prev):
        mask = get_mask(state.opt_state)
        flat = lambda tree: jax.tree.leaves(tree, is_leaf=lambda x: x is None)
        rows = [(m, p, jnp.abs(w)) for m, p, w in zip(flat(mask), flat(prev), flat(state.params), strict=True)
                if m is not None]
        biggest = lambda sel: jnp.max(jnp.stack([jnp.max(jnp.where(s, a, 0.0)) for s, a in sel]))
        new = [(m & ~p, a) for m, p, a in rows]
        out = {
            "n_in": sum(jnp.sum(s) for s, _ in new),
            "in_max": biggest(new),
            "kept_max": biggest([(m & p, a) for m, p, a in rows]),
            "pruned_max": biggest([(~m, a) for m, _, a in rows]),
        }
        return out, jax.tree.map(jnp.copy, mask)

    return stats


def run(seed: int, target: float, lr: float, workdir: pathlib.Path) -> dict:
    """One DPF run with a per-step probe; returns the per-mask-update rows."""
    import jax
    import numpy as np

    from jaxprune.configs.dpf_lenet300_fmnist import get_config
    from jaxprune.pipelines.dpf import train_method
    from jaxprune.train import Hook, TrainingDiverged
    from jaxprune.transforms import get_mask

    config = get_config(f"dpf,{target}")
    config.seed = seed
    config.train.progress_bar = False
    if lr:
        config.train.lr = lr
    update_every = int(config.method.update_every)
    stats = _step_stats_fn()

    class Probe(Hook):
        def __init__(self):
            self.rows, self.prev = [], None

        def after_step(self, trainer, state, metrics):
            if trainer.workdir.name != "train":
                return
            if self.prev is None:
                self.prev = jax.tree.map(lambda m: None if m is None else m | True, get_mask(state.opt_state),
                                         is_leaf=lambda x: x is None)
            row, self.prev = stats(state, self.prev)
            self.rows.append((metrics["loss"], row))  # device values: fetched once at the end

    probe = Probe()
    shutil.rmtree(workdir, ignore_errors=True)
    outcome = {"seed": seed, "target": target, "lr": float(config.train.lr), "update_every": update_every}
    try:
        record = train_method(config, workdir, "dpf", hooks=[probe]).record
        outcome.update(diverged=False, test_acc=record["test_acc"])
    except TrainingDiverged as err:
        outcome.update(diverged=True, diverged_step=err.step, test_acc=None)
    shutil.rmtree(workdir, ignore_errors=True)
    losses = np.asarray(jax.device_get([loss for loss, _ in probe.rows]), float)
    per_step = jax.device_get([row for _, row in probe.rows])
    # update t (0-based) with t % p == 0 changes the mask; it is the probe row t and its
    # mask first enters the forward pass of step t + 1, i.e. the loss of row t + 1.
    # Between updates (rows t+1 .. t+p-1) pruned weights may drift; their largest |w| then is
    # what the next update can swap back in.
    updates = []
    for t in range(update_every, len(losses) - update_every, update_every):
        period = losses[t + 1:t + 1 + update_every]
        between = per_step[t + 1:t + update_every]
        row = {k: float(v) for k, v in per_step[t].items()}
        updates.append({"step": t, **row,
                        "loss_first": float(period[0]), "loss_rest": float(np.mean(period[1:])),
                        "pruned_max_between": float(max(x["pruned_max"] for x in between)),
                        "kept_max_between": float(max(x["kept_max"] for x in between))})
    # Stored as columns (a compact JSON); none if the run blew up before its second update.
    outcome["updates"] = {k: [row[k] for row in updates] for k in (updates[0] if updates else ())}
    outcome["last_steps_loss"] = [float(x) for x in losses[-200:]]
    outcome["n_steps"] = len(losses)
    return outcome


def report(results: list[dict], out: pathlib.Path) -> None:
    """``<out>.md`` (per run: spikes at mask updates, re-entry sizes) and ``<out>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    lines = ["# DPF divergence: dynamics at the mask updates", "",
             f"Command: `python -m experiments.dpf_divergence --seeds "
             f"{','.join(str(r['seed']) for r in results)} --target {results[0]['target']}`. "
             "LeNet-300-100 / Fashion-MNIST at the full budget (jaxprune/configs/dpf_lenet300_fmnist.py), lr "
             f"{results[0]['lr']:g}, mask update every {results[0]['update_every']} steps. 'Re-entry ratio': "
             "largest re-entering |w| / largest |w| kept through the update. 'Spike': loss of the first step "
             "with the new mask / mean loss of the other steps of its period.", "",
             "Rows stop at the first update whose period has a loss above 10 (the blow-up); 'drift': the "
             "largest pruned |w| between two updates / the largest kept |w| then.", "",
             "| seed | outcome | updates before blow-up | median spike | spikes > 3x | max spike "
             "| max re-entry ratio | max drift | blow-up: first update t | its re-entry ratio |",
             "|---" * 10 + "|"]
    finished = [r for r in results if not r["diverged"]]
    for r in results:
        columns = r["updates"]
        r["updates"] = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
        u = r["updates"]
        calm = [x["loss_first"] <= 10 and x["loss_rest"] <= 10 for x in u]  # False for nan as well
        blowup = calm.index(False) if False in calm else len(u)
        u = u[:blowup]
        ratio = np.array([x["in_max"] / x["kept_max"] for x in u if x["n_in"] > 0])
        spike = np.array([x["loss_first"] / x["loss_rest"] for x in u])
        drift = np.array([x["pruned_max_between"] / x["kept_max_between"] for x in u])
        outcome = (f"diverged (stopped at step {r['diverged_step']})" if r["diverged"] else
                   f"finished, test acc {100 * r['test_acc']:.2f}%")
        first = r["updates"][blowup] if blowup < len(r["updates"]) else None
        start, start_ratio = ("-", "-") if first is None else (
            first["step"], f"{first['in_max'] / first['kept_max']:.2f}")
        top = lambda a, f=np.max: f(a) if a.size else float("nan")  # nan: blow-up before any calm update
        lines.append(f"| {r['seed']} | {outcome} | {len(u)} | {top(spike, np.median):.2f} "
                     f"| {int(np.sum(spike > 3))} | {top(spike):.2f} "
                     f"| {top(ratio):.2f} | {top(drift):.2f} | {start} | {start_ratio} |")
        # Finished runs in grey (labelled once), diverged runs in colour.
        grey = not r["diverged"]
        label = (f"seed {r['seed']} (diverged)" if not grey else
                 f"{len(finished)} finished runs" if r is finished[0] else None)
        u, order = r["updates"], 1 if grey else 3
        steps = [x["step"] for x in u]
        axes[0].semilogy(steps, [x["loss_first"] for x in u], ".", ms=1.5, color="0.7" if grey else "C3",
                         label=label and f"{label}: first step with a new mask", zorder=order)
        axes[0].semilogy(steps, [x["loss_rest"] for x in u], "-", lw=0.6, color="0.3" if grey else "C0",
                         label=label and f"{label}: rest of the period", zorder=order + 1)
        drift = [x["pruned_max_between"] / x["kept_max_between"] for x in u]
        axes[1].semilogy(steps, drift, lw=0.6, color="0.6" if grey else "C3", label=label, zorder=order)
        if r["diverged"]:  # the onset: per-step loss from 64 steps before the blow-up
            last = np.asarray(r["last_steps_loss"])
            x0 = r["n_steps"] - len(last)
            first = max(x0, int(start) - 64) if start != "-" else x0
            shown = slice(first - x0, min(len(last), first - x0 + 160))
            axes[2].semilogy(np.arange(x0, r["n_steps"])[shown] + 1, last[shown], lw=0.8, color="C3",
                             label=f"seed {r['seed']}")
            for t in range(first + (-first) % r["update_every"], first + 160, r["update_every"]):
                axes[2].axvline(t + 2, color="grey", lw=0.4)  # update t's mask: 1-based step t + 2
    axes[0].set(xlabel="step", ylabel="train loss", title="loss after each mask update", ylim=(1e-2, 1e3))
    axes[1].axhline(1.0, color="k", lw=0.5, ls="--")
    axes[1].set(xlabel="step", ylabel="max pruned |w| / max kept |w|, between updates",
                title="drift of pruned weights", ylim=(1e-2, 1e1))
    axes[2].set(xlabel="step", ylabel="train loss", title="diverged runs: the onset (grey: new mask enters)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"DPF {results[0]['target']:g}, LeNet-300-100 on Fashion-MNIST: each of the {len(results)} "
                 "seeds drawn separately (no averaging, no error bars)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)
    note = out.with_suffix(".note.txt")  # findings written after reading the numbers
    lines += ["", *([note.read_text().strip(), ""] if note.exists() else []),
              f"![dynamics]({out.with_suffix('.png').name})", ""]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _rounded(tree, digits: int = 5):
    """``tree`` (JSON-like) with floats rounded to ``digits`` significant digits."""
    if isinstance(tree, float):
        return float(f"{tree:.{digits}g}")
    if isinstance(tree, dict):
        return {k: _rounded(v, digits) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rounded(v, digits) for v in tree]
    return tree


def main() -> None:
    args = _args()
    os.environ.setdefault("JAXPRUNE_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    out = pathlib.Path(args.out)
    if not args.report_only:
        results = [run(int(s), args.target, args.lr, pathlib.Path(args.workroot) / f"seed{s}")
                   for s in args.seeds.split(",")]
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command_args": vars(args), "runs": results}
        out.with_suffix(".json").write_text(json.dumps(_rounded(record)) + "\n")
    report(json.loads(out.with_suffix(".json").read_text())["runs"], out)


if __name__ == "__main__":
    main()
