"""Compaction: physically remove the output units / filters a structured mask
prunes, and everything coupled to them, giving a smaller dense Flax model.

``compact(model, variables, mask, input_shape=...)`` traces the forward pass
(:mod:`jaxprune.compress.graph`), so the coupled dimensions are found from the
program, not from a rule per architecture: a conv's filters, its bias and
BatchNorm (scale, bias, running mean and variance), the next layers' input
channels (through pooling, flatten/reshape and casts), and the channel groups
that residual additions tie together.

Which channels go (METHODS.md section 8). A channel space (all the axes the
trace ties together) shrinks by the channels that

1. every *producer* of the space prunes: every Dense/Conv kernel whose output
   axis is in the space has that unit entirely masked (so channels tied by a
   residual addition go only where every branch, identity paths included,
   prunes them);
2. are then exactly zero wherever a kernel contracts over them: checked by
   propagating exact zeros through the traced program with the masked values;
3. are not pinned (the model's input/output, axes reduced over, padded,
   sliced or concatenated along: zero-padded ``"A"`` shortcuts keep their
   channels).

Channels pruned by some layers but kept for one of these reasons are listed in
``report.not_removable`` with the reason.

BatchNorm decision: a pruned filter followed by BatchNorm outputs the constant
``beta - gamma * mean / sqrt(var + eps)``, not 0, and folding that constant
into the consumer's bias is exact only where no zero padding touches it (not
at the borders of a padded 3x3 conv). So the *structure group* of a removed
channel includes every other parameter along it that is not a kernel's input
axis: the conv/Dense bias and the BatchNorm scale and bias of that channel are
zeroed with the filter. ``report.group_mask`` is the input mask extended to
those leaves (bool arrays where it zeroes something, the input leaf
elsewhere); the compacted model computes exactly
``model.apply(apply_mask(params, report.group_mask))``. When the input mask
already covers the bias/BN of its pruned filters (or they are 0),
``group_mask`` prunes nothing more and the compacted model equals the masked
model. A kernel-only filter mask (``jp.masks.topk(..., scope="filter")``,
the mask structured DPF holds) leaves the pruned filters' BN constants in the
masked model, and compaction drops them: train with the forward pass at
``apply_mask(params, group_mask(mask))``, ``group_mask`` from
:func:`jaxprune.compress.structure_groups` (jittable; the ``dpf`` pipeline's
structured methods do), prune with ``report.group_mask``, or fine-tune after
compaction, to keep the function.

The small model: Flax linen modules take their widths as attributes, so the
compacted model is ``model.clone(widths=...)``: the model must have a
``widths`` attribute, a tuple of ``(module path, features)`` pairs overriding
the features of the Dense/Conv at that path (relative to the model, e.g.
``"stage1_block1/conv1"``, ``"Dense_0"``), whose structure does not otherwise
depend on the widths. Every model of ``jaxprune.train.models`` has one. For
another model pass ``small_model=`` (the same architecture built at the
compacted widths, listed in ``report.layers``); either way the small model's
variable shapes are checked against the compacted variables.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._forward import default_apply_kwargs
from jaxprune.compress.graph import ChannelGraph, trace
from jaxprune.tree import check_same_structure, is_none, path_str

__all__ = ["CompactReport", "Compacted", "KeptChannels", "LayerChange", "compact"]


@dataclasses.dataclass(frozen=True)
class LayerChange:
    """One Dense/Conv kernel: its output units before and after, and how many
    of them the mask pruned (the whole unit masked)."""

    layer: str
    units_before: int
    units_after: int
    pruned: int


@dataclasses.dataclass(frozen=True)
class KeptChannels:
    """Pruned channels of a channel space that could not be removed: the
    producing layers of the space, how many channels, and why."""

    layers: tuple[str, ...]
    channels: int
    reason: str


@dataclasses.dataclass(frozen=True)
class CompactReport:
    """What :func:`compact` did: per producing layer (``layers``), the pruned
    channels it had to keep (``not_removable``), parameter counts (the
    ``"params"`` collection) before and after, and ``group_mask`` (module
    docstring)."""

    layers: tuple[LayerChange, ...]
    not_removable: tuple[KeptChannels, ...]
    params_before: int
    params_after: int
    group_mask: Any

    def widths(self) -> dict[str, int]:
        """The compacted features of every producing layer, by layer path."""
        return {c.layer: c.units_after for c in self.layers}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (``group_mask`` left out)."""
        return {
            "layers": [dataclasses.asdict(c) for c in self.layers],
            "not_removable": [dataclasses.asdict(k) | {"layers": list(k.layers)} for k in self.not_removable],
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


class Compacted(NamedTuple):
    """``(model, variables, report)`` returned by :func:`compact`."""

    model: nn.Module
    variables: dict[str, Any]
    report: CompactReport


def _check_mask(params: Any, mask: Any) -> None:
    check_same_structure(params, mask, "variables['params']", "mask")
    flat = jax.tree.leaves_with_path(params, is_leaf=is_none)
    for (path, w), m in zip(flat, jax.tree.leaves(mask, is_leaf=is_none), strict=True):
        if m is None:
            continue
        name = path_str(path)
        if jnp.result_type(m) != jnp.bool_:
            raise TypeError(
                f"mask leaf at {name} has dtype {jnp.result_type(m)}; expected bool (True = kept)"
            )
        if np.shape(m) != np.shape(w):
            raise ValueError(
                f"mask leaf at {name} has shape {np.shape(m)}, expected the param shape {np.shape(w)}"
            )


def _axis_keep(
    g: ChannelGraph, nodes: list[int], size: int, remove: Mapping[int, np.ndarray], skip=()
) -> np.ndarray:
    """Keep-vector of one axis (row-major over its factors) given removed channels per space."""
    keep = np.ones(1, bool)
    for r in g.expand(nodes):
        k = ~remove[r] if r in remove and r not in skip else np.ones(g.size(r), bool)
        keep = np.logical_and.outer(keep, k).ravel()
    return np.broadcast_to(keep, (size,)) if keep.size == 1 else keep


def _leaf_roots(g: ChannelGraph, vid: int) -> set[int]:
    return {r for axis in g.roots(vid) for r in axis}


def compact(
    model: nn.Module,
    variables: Mapping[str, Any],
    mask: Any,
    *,
    input_shape: tuple[int, ...],
    apply_kwargs: Mapping[str, Any] | None = None,
    small_model: nn.Module | None = None,
) -> Compacted:
    """Remove the units ``mask`` prunes (and their coupled dimensions) from
    ``model``; see the module docstring for the rules and the BatchNorm decision.

    Args:
      model: a Flax linen module, called as ``model.apply(variables, x,
        **apply_kwargs)``.
      variables: its variables (``"params"`` and e.g. ``"batch_stats"``).
      mask: a bool pytree with the structure of ``variables["params"]``
        (``None`` = not prunable); units whose whole kernel slice is ``False``
        are removed.
      input_shape: the shape of one input without the batch axis (the trace
        needs it: e.g. ``(32, 32, 3)``).
      apply_kwargs: keyword arguments of the traced call; default
        ``{"train": False}`` when ``__call__`` takes ``train`` (eval mode:
        BatchNorm uses its running statistics), else ``{}``.
      small_model: the model at the compacted widths, for models without a
        ``widths`` attribute.

    Returns:
      ``Compacted(model, variables, report)``: the smaller model, its
      variables (numpy arrays; the masked values, sliced), and a
      :class:`CompactReport`.

    Raises:
      ValueError: mask structure/shape mismatch; a layer would lose every
        unit (naming it); a primitive the trace cannot see through (naming
        it and the layer); a small model whose shapes do not match.
      TypeError: a non-bool mask; a model without ``widths`` and no ``small_model``.

    >>> import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
    >>> from jaxprune.train.models import get_model
    >>> model = get_model("mlp", 2, hidden=(4, 3))
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 5)))
    >>> mask = jax.tree.map(lambda w: np.ones(w.shape, bool) if w.ndim == 2 else None, variables["params"])
    >>> mask["Dense_0"]["kernel"][:, 1:3] = False                # prune units 1 and 2 of layer 0
    >>> small, small_vars, report = compact(model, variables, mask, input_shape=(5,))
    >>> small.widths, small_vars["params"]["Dense_1"]["kernel"].shape
    ((('Dense_0', 2),), (2, 3))
    """
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError("variables must be a mapping with a 'params' collection (model.init's output)")
    _check_mask(variables["params"], mask)
    if not isinstance(input_shape, tuple | list) or not all(
        isinstance(n, int) and n >= 1 for n in input_shape
    ):
        raise ValueError(f"input_shape={input_shape!r} is not valid; expected a tuple of positive ints")
    kwargs = default_apply_kwargs(model) if apply_kwargs is None else dict(apply_kwargs)
    g = trace(model, variables, tuple(input_shape), kwargs)

    flat, treedef = jax.tree.flatten_with_path(variables)
    names = [path_str(p) for p, _ in flat]
    is_param = [str(getattr(p[0], "key", "")) == "params" for p, _ in flat]
    mask_leaves = iter(jax.tree.leaves(mask, is_leaf=is_none))
    param_masks = [next(mask_leaves) if isinstance_param else None for isinstance_param in is_param]
    # jax.tree.leaves(variables["params"]) and the params leaves of variables come in the same order
    values = [np.asarray(leaf) for _, leaf in flat]
    masked = [
        v if m is None else np.where(np.asarray(m), v, np.zeros((), v.dtype))
        for v, m in zip(values, param_masks, strict=True)
    ]

    # roles of leaves per channel space
    def leaf_of(vid: int) -> int | None:
        return g.vars[vid].leaf

    producers: dict[int, list[int]] = {}
    for vid, axis, _ in g.producers:
        i = leaf_of(vid)
        if i is not None and is_param[i]:
            for r in g.expand(g.vars[vid].axes[axis]):
                if i not in producers.setdefault(r, []):
                    producers[r].append(i)
    consumers = {
        (leaf_of(v), r)
        for v, axis, _ in g.consumers
        if leaf_of(v) is not None
        for r in g.expand(g.vars[v].axes[axis])
    }
    spaces = sorted(producers)
    live = {r for r in spaces if not g.pins(r)}

    # units each producer prunes (whole slice zero in the masked value)
    pruned: dict[tuple[int, int], np.ndarray] = {}
    for r in spaces:
        for i in producers[r]:
            z, _ = g._concrete_zeros(g.leaf_ids[i], masked[i], {r})
            pruned[(i, r)] = z.get(r, np.zeros(g.size(r), bool))
    remove = {r: np.logical_and.reduce([pruned[(i, r)] for i in producers[r]]) for r in live}
    remove = {r: v for r, v in remove.items() if v.any()}
    reasons: dict[int, list[str]] = {r: [] for r in spaces}

    def grouped_values() -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        out, zero_keep = [], []
        for i, v in enumerate(masked):
            if not is_param[i] or not remove:
                out.append(v)
                zero_keep.append(None)
                continue
            vid = g.leaf_ids[i]
            skip = {r for r in _leaf_roots(g, vid) if (i, r) in consumers}
            keeps = [
                _axis_keep(g, a, n, remove, skip) for a, n in zip(g.vars[vid].axes, v.shape, strict=True)
            ]
            keep = np.ones(v.shape, bool)
            for d, k in enumerate(keeps):
                keep &= k.reshape([-1 if j == d else 1 for j in range(v.ndim)])
            changed = not keep.all()
            out.append(np.where(keep, v, np.zeros((), v.dtype)) if changed else v)
            zero_keep.append(keep if changed else None)
        return out, zero_keep

    while True:  # shrink the removal sets until every contraction sees zeros there
        grouped, zero_keep = grouped_values()
        zeros, whole = g.zero_slices(grouped, set(remove))
        changed = False
        for ex in g.exits:
            vid0, axis0 = ex.operands[0]
            for r in g.expand(g.vars[vid0].axes[axis0]):
                if r not in remove:
                    continue
                ok = np.zeros(g.size(r), bool)
                for vid, _ in ex.operands:
                    z = g._operand_zero(vid, r, zeros, whole)
                    if z is not None:
                        ok |= z
                bad = remove[r] & ~ok
                if bad.any():
                    remove[r] = remove[r] & ok
                    reasons[r].append(f"not zero where {ex.primitive} at {ex.where} consumes them")
                    changed = True
        remove = {r: v for r, v in remove.items() if v.any()}
        if not changed:
            break

    layer_name = {i: "/".join(names[i].split("/")[1:-1]) for r in spaces for i in producers[r]}
    for r, v in remove.items():
        if v.all():
            layers = ", ".join(layer_name[i] for i in producers[r])
            raise ValueError(
                f"compact would remove every unit of layer {layers} (all {v.size} channels are pruned); "
                "keep at least one unit per layer"
            )

    # slice every leaf along its removed channels
    small_leaves = []
    for i, v in enumerate(grouped):
        vid = g.leaf_ids[i]
        for d, nodes in enumerate(g.vars[vid].axes):
            keep = _axis_keep(g, nodes, v.shape[d], remove)
            if not keep.all():
                v = np.compress(keep, v, axis=d)
        small_leaves.append(v)
    small_variables = jax.tree.unflatten(treedef, small_leaves)

    changes, widths = [], {}
    for i in sorted({i for r in spaces for i in producers[r]}):
        roots = [
            r
            for r in g.expand([n for a in g.vars[g.leaf_ids[i]].axes for n in a])
            if i in producers.get(r, [])
        ]
        before = math.prod(g.size(r) for r in roots)
        after = math.prod(int((~remove[r]).sum()) if r in remove else g.size(r) for r in roots)
        n_pruned = math.prod(int(pruned[(i, r)].sum()) for r in roots) if len(roots) == 1 else 0
        changes.append(LayerChange(layer_name[i], before, after, n_pruned))
        if after != before:
            widths[layer_name[i]] = after
    kept = []
    for r in spaces:
        wanted = np.logical_or.reduce([pruned[(i, r)] for i in producers[r]])
        left = wanted & ~remove.get(r, np.zeros_like(wanted))
        if not left.any():
            continue
        why = list(g.pins(r)) + reasons[r]
        if (
            len(producers[r]) > 1
            and (wanted & ~np.logical_and.reduce([pruned[(i, r)] for i in producers[r]])).any()
        ):
            why.insert(
                0,
                "tied together (by a residual addition or an elementwise op) and pruned by only some of them",
            )
        kept.append(KeptChannels(tuple(layer_name[i] for i in producers[r]), int(left.sum()), "; ".join(why)))

    group_leaves = []
    for i, m in enumerate(param_masks):
        if not is_param[i]:
            continue
        if zero_keep[i] is None:
            group_leaves.append(m)
        else:
            group_leaves.append(zero_keep[i] if m is None else np.asarray(m) & zero_keep[i])
    group_mask = jax.tree.unflatten(jax.tree.structure(mask, is_leaf=is_none), group_leaves)
    count = lambda tree: sum(int(np.size(x)) for x in jax.tree.leaves(tree))
    report = CompactReport(
        tuple(changes), tuple(kept), count(variables["params"]), count(small_variables["params"]), group_mask
    )
    small = _small_model(model, small_model, widths)
    _check_shapes(small, small_variables, tuple(input_shape), kwargs)
    return Compacted(small, small_variables, report)


def _small_model(model: nn.Module, small_model: nn.Module | None, widths: dict[str, int]) -> nn.Module:
    if small_model is not None:
        return small_model
    fields = {f.name for f in dataclasses.fields(model)} if dataclasses.is_dataclass(model) else set()
    if "widths" not in fields:
        raise TypeError(
            f"{type(model).__name__} has no 'widths' attribute to build it at the compacted widths "
            f"{widths}; add one (see jaxprune.compress.compact) or pass small_model="
        )
    merged = dict(model.widths) | widths
    return model.clone(widths=tuple(sorted(merged.items())))


def _check_shapes(small: nn.Module, variables: Any, input_shape: tuple[int, ...], kwargs: dict) -> None:
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    want = jax.eval_shape(lambda k, x: small.init(k, x, **kwargs), jax.random.key(0), x)
    got = {path_str(p): np.shape(v) for p, v in jax.tree.leaves_with_path(variables)}
    expected = {path_str(p): tuple(v.shape) for p, v in jax.tree.leaves_with_path(want)}
    bad = [
        f"{k}: model {expected.get(k)} vs compacted {got.get(k)}"
        for k in sorted(set(got) | set(expected))
        if got.get(k) != expected.get(k)
    ]
    if bad:
        raise ValueError(
            f"the small model {type(small).__name__} does not build at the compacted shapes "
            f"(its structure must not depend on its widths): {bad[:4]}"
        )
