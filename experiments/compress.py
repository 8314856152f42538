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
- ``report.json``: the input shape used (``--input_shape``; default: the one
  the run recorded in ``results.json``, else inferred from the kernels, see
  ``_input_shape``), per layer the units before/after and pruned, the pruned
  channels that could not be removed (and why), params before/after, the
  compact model's ``widths``, MACs per example before/after
  (:func:`jaxprune.measures.cost.cost`) and the checkpoint used; with
  ``--eval`` also the test metrics of the kernel-masked, group-masked and
  compact models (:func:`test_metrics`).

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

from jaxprune._forward import default_apply_kwargs, forward_jaxpr
from jaxprune.compress import compact
from jaxprune.measures.cost import cost
from jaxprune.train.data.sources import SPECS
from jaxprune.train.models import get_model
from jaxprune.tree import apply_mask, path_str

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
    workdir: pathlib.Path, phase: str | None, step: int | None, input_shape: tuple[int, ...] | None,
    evaluate: bool = False,
) -> dict:
    config = json.loads((workdir / "config.json").read_text())
    ckpt = find_checkpoint(workdir, phase, step)
    state = ocp.StandardCheckpointer().restore(ckpt.absolute())
    params, stats = state["params"], state.get("batch_stats") or {}
    mask = find_mask(state.get("opt_state"), params)
    mask_source = "optimizer state"
    if mask is None:
        mask, mask_source = zeros_mask(params), "exact zeros of the kernels"
    m = config["model"]
    num_outputs = _num_outputs(params, config)
    model = get_model(m["name"], num_outputs, dtype=m.get("dtype", "float32"), **dict(m.get("kwargs") or {}))
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    if input_shape is None:
        input_shape = _recorded_input_shape(workdir) or _input_shape(model, variables, config)
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
    if evaluate:
        summary["test"] = test_metrics(config, {
            "kernel-masked": (model, variables | {"params": apply_mask(params, mask)}),
            "group-masked": (model, variables | {"params": apply_mask(params, report.group_mask)}),
            "compact": (small, small_vars),
        })
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    return summary


def test_metrics(config: dict, models: dict[str, tuple[Any, Any]]) -> dict[str, dict]:
    """Test-split metrics (the engine's exact evaluation) of each ``name: (model,
    variables)``, on the run's own dataset and eval batch size. "kernel-masked"
    is ``m * w`` with the kernel mask alone (biases and BatchNorm as trained);
    "group-masked" also zeroes the bias / BatchNorm scale and shift of the
    removed channels (:func:`jaxprune.compress.compact`'s decision), which is
    the compact model's function exactly, and the network that the dpf
    pipeline's structured (``scope="filter"``) methods train and evaluate."""
    import jax.numpy as jnp
    from ml_collections import ConfigDict

    from jaxprune.pipelines import load_data
    from jaxprune.train import Trainer
    from jaxprune.train.state import TrainState

    cfg = ConfigDict(config)
    dataset = load_data(cfg)
    out = {}
    for name, (model, variables) in models.items():
        trainer = Trainer(model, dataset, cfg.train, seed=int(cfg.seed))
        state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables.get("batch_stats", {}),
                           (), jnp.zeros(2, jnp.uint32))
        out[name] = trainer.evaluate(state, "test")
    return out


def _num_outputs(params: Any, config: dict) -> int:
    """The dataset's number of classes (1 for regression); for a dataset name
    outside the built-in table, the output width of the params' last 2-D kernel."""
    from jaxprune.train.data.sources import SPECS

    spec = SPECS.get((config.get("data") or {}).get("name", ""))
    if spec is not None:
        return spec.num_classes if spec.task == "classification" else 1
    head = [w for w in jax.tree.leaves(params) if np.ndim(w) == 2]
    return int(np.shape(head[-1])[-1])


def _recorded_input_shape(workdir: pathlib.Path) -> tuple[int, ...] | None:
    """The input shape the run recorded in ``results.json`` (``summary.input_shape``), if any."""
    path = workdir / "results.json"
    if not path.exists():
        return None
    shape = (json.loads(path.read_text()).get("summary") or {}).get("input_shape")
    return tuple(int(d) for d in shape) if shape else None


def _input_shape(model: Any, variables: Any, config: dict) -> tuple[int, ...]:
    """For a run without a recorded shape: the candidate that the model accepts
    with these params (traced on shapes, no compute): an MLP's input
    features (first dim of a 2-D kernel), or ``(S, S, C_in)`` for a conv net with
    ``S`` the built-in dataset's image side (``DatasetSpec.image_side``; a streaming run's
    ``data.image_size``; else 32: the compaction does not depend on ``S``, the
    MACs in the report do) and ``C_in`` the input channels of one
    of its conv kernels. Saved checkpoints list layers alphabetically, not in
    forward order, so every candidate is tried."""
    data = config.get("data") or {}
    streaming = bool(data.get("streaming"))
    spec = SPECS.get(data.get("name"))
    size = int(data.get("image_size") or 224) if streaming else (spec and spec.image_side) or 32
    leaves = jax.tree.leaves(variables["params"])
    candidates = [(size, size, int(np.shape(w)[-2])) for w in leaves if np.ndim(w) == 4]
    candidates += [(int(np.shape(w)[0]),) for w in leaves if np.ndim(w) == 2]
    kwargs = default_apply_kwargs(model)
    for shape in dict.fromkeys(candidates):
        try:
            forward_jaxpr(lambda v, x: model.apply(v, x, **kwargs), variables,
                          jax.ShapeDtypeStruct((1, *shape), np.float32), shape)
        except ValueError:  # a wrong candidate fails in whatever layer it reaches first
            continue
        return shape
    raise ValueError(f"could not infer the model's input shape from its params; pass --input_shape "
                     f"(tried {list(dict.fromkeys(candidates))})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument(
        "--phase", default=None, help="finetune | train | dense (default: the last with a checkpoint)"
    )
    parser.add_argument("--step", default=None, type=int)
    parser.add_argument("--input_shape", default=None, type=int, nargs="+")
    parser.add_argument("--eval", action="store_true",
                        help="also evaluate the kernel-masked, group-masked and compact models (test split)")
    args = parser.parse_args(argv)
    shape = tuple(args.input_shape) if args.input_shape else None
    s = run(args.workdir, args.phase, args.step, shape, evaluate=args.eval)
    print(
        f"{s['model']}: params {s['params_before']:,} -> {s['params_after']:,}, "
        f"MACs/example {s['macs_before']:,} -> {s['macs_after']:,}; "
        f"{sum(k['channels'] for k in s['not_removable'])} pruned channels kept; "
        f"wrote {args.workdir / 'compact'}",
        file=sys.stdout,
    )
    for name, metrics in (s.get("test") or {}).items():
        print(f"  test {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
