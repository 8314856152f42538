"""The CPU-scale PQ Index / SAP study (issue 7): Fashion-MNIST, Linear and MLP,
methods LT, One Shot, SAP(0.5, 1) and SAP(1, 2) in global scope and SAP(0.5, 1)
in layer and neuron scopes. Every run is ``experiments.run`` with
``jaxprune/configs/sap_cpu.py`` in its own workdir (resumable: finished runs are
skipped, killed ones continue with ``--resume``); the records are gathered
into ``results/sap_cpu.json`` and plotted by ``experiments/plots/sap.py``.

    python -m experiments.sap_study --epochs 2 --rounds 20 --train_limit 12000 --jobs 2

The config files keep the issue's budget (20 epochs per round, T = 30, seeds
0 and 1); the flags here reduce it for a shared CPU and are recorded in the
output.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

# (method, scope) runs per model, as in the issue.
GRID = (
    ("lt", "global"),
    ("os", "global"),
    ("sap", "global"),
    ("sap_1_2", "global"),
    ("sap", "layer"),
    ("sap", "neuron"),
)


def _command(model: str, method: str, scope: str, seed: int, args: argparse.Namespace, workdir: pathlib.Path):
    cmd = [
        sys.executable, "-m", "experiments.run",
        f"--config=jaxprune/configs/sap_cpu.py:{model},{method},{scope}",
        f"--config.seed={seed}",
        f"--config.train.epochs={args.epochs}",
        f"--config.method.rounds={args.rounds}",
        f"--workdir={workdir}",
        "--resume",
    ]
    if args.train_limit:
        cmd.append(f"--config.data.train_limit={args.train_limit}")
    return cmd


def _run_one(cmd: list[str], workdir: pathlib.Path) -> tuple[str, float, int]:
    if (workdir / "results.json").exists():
        return str(workdir), 0.0, 0
    workdir.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with open(workdir / "log.txt", "a") as log:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return str(workdir), time.perf_counter() - tic, rc


def _series(records: list[dict], model: str, method: str, scope: str) -> list[dict]:
    rows = [r for r in records if (r["model"], r["method"], r["scope"]) == (model, method, scope)]
    return sorted(rows, key=lambda r: (r["round"], r["seed"]))


def summary_table(records: list[dict]) -> str:
    """Markdown table per (model, method, scope): final remaining weights and
    accuracy, the round where the PQ Index is lowest and whether it rises after
    it, the first round the stopping rule would fire, and the mean accuracy gap
    to Lottery Ticket at equal remaining weights (LT's accuracy interpolated
    in log(remaining) at the method's own remaining fractions, within LT's range)."""
    lines = [
        "| model | method | scope | rounds | final remaining % | final acc % | best acc % | PQI min round "
        "(value) | PQI at end | stop rule fires | acc - LT at equal remaining (pp) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in sorted({r["model"] for r in records}):
        lt = _series(records, model, "lt", "global")
        lt_x = np.log([r["remaining"] for r in lt])[::-1]
        lt_y = np.array([r["acc_retrained"] for r in lt])[::-1]
        for method, scope in GRID:
            rows = _series(records, model, method, scope)
            if not rows:
                continue
            pqi = [r["pqi"] for r in rows]
            t_min = int(np.argmin(pqi))
            stop = next((r["round"] for r in rows if r["would_stop"]), None)
            gap = "-"
            if lt and method != "lt":
                x = np.log([r["remaining"] for r in rows])
                inside = (x >= lt_x.min()) & (x <= lt_x.max())
                if inside.any():
                    acc = np.array([r["acc_retrained"] for r in rows])[inside]
                    gap = f"{100 * np.mean(acc - np.interp(x[inside], lt_x, lt_y)):+.2f}"
            best = max(r["acc_retrained"] for r in rows)
            lines.append(
                f"| {model} | {method} | {scope} | {rows[-1]['round']} | {100 * rows[-1]['remaining']:.2f} | "
                f"{100 * rows[-1]['acc_retrained']:.2f} | {100 * best:.2f} | "
                f"{t_min} ({pqi[t_min]:.4f}) | {pqi[-1]:.4f} | {stop if stop is not None else 'no'} | {gap} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="linear,mlp")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--train_limit", type=int, default=0, help="0 = the full training set")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    ap.add_argument("--workdir", default="runs/sap_cpu")
    ap.add_argument("--out", default="results")
    ap.add_argument("--plot_only", action="store_true")
    args = ap.parse_args()

    root, out = pathlib.Path(args.workdir), pathlib.Path(args.out)
    runs = []
    for model in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for method, scope in GRID:
                workdir = root / f"{model}_{method}_{scope}_s{seed}"
                runs.append((_command(model, method, scope, seed, args, workdir), workdir))
    if not args.plot_only:
        tic = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for name, secs, rc in pool.map(lambda r: _run_one(*r), runs):
                print(f"{name}: {'ok' if rc == 0 else f'FAILED rc={rc}'} ({secs:.0f}s)", flush=True)
        print(f"grid done in {time.perf_counter() - tic:.0f}s", flush=True)

    records, commands = [], []
    for cmd, workdir in runs:
        path = workdir / "results.json"
        if path.exists():
            records.extend(json.loads(path.read_text())["records"])
            commands.append(" ".join(cmd[1:]))
    budget = {k: getattr(args, k) for k in ("models", "seeds", "epochs", "rounds", "train_limit")}
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "budget": budget,
        "issue_budget": {"epochs": 20, "rounds": 30, "seeds": "0,1", "train_limit": 0},
        "config": "jaxprune/configs/sap_cpu.py (paper optimizer: SGD 0.1, momentum 0.9, Nesterov, "
        "wd 5e-4, cosine, "
        "batch 250, clip 1; val_fraction 0.1 for best-of-round selection)",
        "commands": commands,
        "records": records,
    }
    (out / "sap_cpu.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "sap_cpu_table.md").write_text(summary_table(records))
    print(summary_table(records))
    from experiments.plots.sap import plot_all

    for path in plot_all(records, out):
        print("wrote", path)


if __name__ == "__main__":
    main()
