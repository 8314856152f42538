"""Compact a finished run: remove the filters / units its mask prunes.

    python -m experiments.compress --workdir runs/X [--phase finetune] [--step N]

Reads ``<workdir>/config.json`` (the model) and the latest checkpoint of the
last phase that has one (``finetune``, ``train``, ``dense``, or the workdir's
own ``checkpoints/``; ``--phase`` / ``--step`` choose), restoring the saved
``TrainState`` without a target (orbax's raw tree). The mask is the bool
subtree of the optimizer state that has the params' structure (the DPF /
masked-training mask); without one, kernels' exact zeros are the mask. The
model is compacted with :func:`jaxprune.compress.compact` and written to
``<workdir>/compact/``:

- ``variables.npz``: the compact variables, one array per leaf, keyed by the
  ``/``-joined path (``params/stage1_block1/conv1/kernel``, ...);
- ``report.json``: the input shape used (``--input_shape``; default from the
  first kernel, see ``_input_shape``), per layer the units before/after and pruned, the pruned
  channels that could not be removed (and why), params before/after, the
  compact model's ``widths``, MACs per example before/after
  (:func:`jaxprune.measures.cost.cost`) and the checkpoint used.

Rebuild the compact model with ``get_model(name, num_outputs,
**kwargs).clone(widths=tuple(report["widths"].items()))``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxprune.compress import compact
from jaxprune.measures.cost import cost
from jaxprune.train.models import get_model
from jaxprune.tree import is_none, path_str

PHASES = ("finetune", "train", "dense", "")


def find_checkpoint(workdir: pathlib.Path, phase: str | None, step: int | None) -> pathlib.Path:
    """The ``<step>/state`` directory of the chosen (default: last) phase's latest checkpoint."""
    for name in [phase] if phase is not None else PHASES:
        directory = workdir / name / "checkpoints"
        steps = (
            sorted(int(p.name) for p in directory.glob("*") if p.name.isdigit()) if directory.is_dir() else []
        )
        if step is not None:
            steps = [s for s in steps if s == step]
        if steps:
            return directory / str(steps[-1]) / "state"
    raise FileNotFoundError(f"no checkpoint found under {workdir} (phase={phase!r}, step={step!r})")


def find_mask(opt_state: Any, params: Any) -> Any | None:
    """The first subtree of ``opt_state`` with ``params``' dict structure whose leaves are bool
    (or missing: ``None`` leaves are saved as empty nodes)."""
    want = {path_str(p): np.shape(w) for p, w in jax.tree.leaves_with_path(params)}
    stack = [opt_state]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            leaves = {path_str(p): m for p, m in jax.tree.leaves_with_path(node)}
            if (
                leaves
                and set(leaves) <= set(want)
                and all(np.asarray(m).dtype == bool and np.shape(m) == want[k] for k, m in leaves.items())
            ):
                return _like(params, leaves)
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return None


def _like(params: Any, leaves: dict[str, Any]) -> Any:
    """``params``' structure with ``leaves[path]`` (``None`` where absent)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: leaves.get(path_str(p)), params)


def zeros_mask(params: Any) -> Any:
    """Kernels' nonzero entries (``ndim >= 2``); ``None`` elsewhere."""
    return jax.tree.map(lambda w: np.asarray(w) != 0 if np.ndim(w) >= 2 else None, params)


def run(
    workdir: pathlib.Path, phase: str | None, step: int | None, input_shape: tuple[int, ...] | None
) -> dict:
    config = json.loads((workdir / "config.json").read_text())
    ckpt = find_checkpoint(workdir, phase, step)
    state = ocp.StandardCheckpointer().restore(ckpt.absolute())
    params, stats = state["params"], state.get("batch_stats") or {}
    mask = find_mask(state.get("opt_state"), params)
    mask_source = "optimizer state"
    if mask is None:
        mask, mask_source = zeros_mask(params), "exact zeros of the kernels"
    head = [w for p, w in jax.tree.leaves_with_path(params) if np.ndim(w) == 2]
    num_outputs = int(np.shape(head[-1])[-1])
    m = config["model"]
    model = get_model(m["name"], num_outputs, dtype=m.get("dtype", "float32"), **dict(m.get("kwargs") or {}))
    if input_shape is None:
        input_shape = _input_shape(params, config)
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    small, small_vars, report = compact(model, variables, mask, input_shape=input_shape)
    out = workdir / "compact"
    out.mkdir(exist_ok=True)
    flat = {path_str(p): np.asarray(v) for p, v in jax.tree.leaves_with_path(small_vars)}
    np.savez(out / "variables.npz", **flat)
    summary = report.to_dict() | {
        "model": m["name"],
        "num_outputs": num_outputs,
        "input_shape": list(input_shape),
        "widths": dict(small.widths),
        "macs_before": cost(model, variables, None, input_shape)["macs"],
        "macs_after": cost(small, small_vars, None, input_shape)["macs"],
        "checkpoint": str(ckpt.parent),
        "mask_source": mask_source,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    return summary


def _input_shape(params: Any, config: dict) -> tuple[int, ...]:
    """The input shape from the first kernel: an MLP's input features, or for a
    conv net ``(S, S, C_in)`` with ``S = config["data"]["image_size"]`` (else 32;
    the compaction does not depend on ``S``, the MACs in the report do)."""
    kernels = [w for w in jax.tree.leaves(params, is_leaf=is_none) if np.ndim(w) >= 2]
    if np.ndim(kernels[0]) == 2:
        return (int(np.shape(kernels[0])[0]),)
    size = int((config.get("data") or {}).get("image_size") or 32)
    return (size, size, int(np.shape(kernels[0])[-2]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument(
        "--phase", default=None, help="finetune | train | dense (default: the last with a checkpoint)"
    )
    parser.add_argument("--step", default=None, type=int)
    parser.add_argument("--input_shape", default=None, type=int, nargs="+")
    args = parser.parse_args(argv)
    shape = tuple(args.input_shape) if args.input_shape else None
    s = run(args.workdir, args.phase, args.step, shape)
    print(
        f"{s['model']}: params {s['params_before']:,} -> {s['params_after']:,}, "
        f"MACs/example {s['macs_before']:,} -> {s['macs_after']:,}; "
        f"{sum(k['channels'] for k in s['not_removable'])} pruned channels kept; "
        f"wrote {args.workdir / 'compact'}",
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()
