"""Structure groups of a model, as a jittable mask function: train the model
that compaction will produce.

A structured mask (``scope="filter"``: whole output units of kernels) leaves a
pruned filter's bias and BatchNorm scale and shift in place, so a pruned
filter followed by BatchNorm outputs the constant ``beta - gamma * mean /
sqrt(var + eps)``, not 0. :func:`jaxprune.compress.compact` removes the whole
*structure group* of a channel (METHODS.md section 8): the model it returns
computes ``apply_mask(params, report.group_mask)``, which zeroes those
parameters too. A model trained with the kernel mask alone therefore changes
when compacted.

:func:`structure_groups` traces the forward pass once (the same channel graph
as ``compact``) and returns ``group_mask(mask)``: the mask extended, along
every channel space that all its producers prune, to the parameters indexed
by that space (biases, BatchNorm scale and shift), as a jittable function of
the mask. Training with the forward pass at ``apply_mask(params,
group_mask(mask))`` (structured DPF in the ``dpf`` pipeline does) trains the
function that ``compact`` keeps: its ``report.group_mask`` adds nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune._forward import default_apply_kwargs
from jaxprune.compress.graph import trace
from jaxprune.tree import PyTree, check_same_structure, is_none

__all__ = ["structure_groups"]


def structure_groups(
    model: nn.Module,
    variables: Mapping[str, Any],
    *,
    input_shape: tuple[int, ...],
    apply_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[PyTree], PyTree]:
    """``group_mask(mask) -> mask`` of ``model`` (see the module docstring).

    Args:
      model: a Flax linen module, as for :func:`jaxprune.compress.compact`.
      variables: its variables (only their shapes are read).
      input_shape: the shape of one input without the batch axis.
      apply_kwargs: keyword arguments of the traced call (default as in
        ``compact``).

    Returns:
      A jittable function of a mask with the structure of
      ``variables["params"]`` (bool leaves, ``None`` = not pruned): channel
      ``c`` of a space is pruned when every kernel producing that space has
      output unit ``c`` entirely ``False`` (a producer without a mask leaf
      prunes nothing; a space that a producer also indexes through another
      axis, e.g. a square kernel whose input a residual addition ties to its
      output, is left alone, as ``compact`` leaves it); then every other ``params`` leaf indexed by that space
      (not as a kernel's input axis) gets ``False`` at ``c``. Leaves it does not
      touch are returned as given; a ``None`` leaf it touches becomes a bool
      array. Spaces the model's input or output pins are left alone, as
      ``compact`` leaves them.

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jaxprune.train.models import get_model
    >>> model = get_model("cnn", 10)
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    >>> group_mask = structure_groups(model, variables, input_shape=(8, 8, 1))
    >>> mask = jax.tree.map(lambda w: np.ones(w.shape, bool) if w.ndim == 4 else None, variables["params"])
    >>> mask["Conv_0"]["kernel"][..., :3] = False                 # prune 3 filters of the first conv
    >>> group_mask(mask)["Conv_0"]["bias"][:5].tolist()            # their biases go with them
    [False, False, False, True, True]
    """
    kwargs = default_apply_kwargs(model) if apply_kwargs is None else dict(apply_kwargs)
    g = trace(model, variables, tuple(input_shape), kwargs)
    leaves = jax.tree.leaves_with_path(variables)
    is_param = [str(getattr(path[0], "key", "")) == "params" for path, _ in leaves]
    # index of a variables leaf -> its index among the params leaves
    param_pos = {i: n for n, i in enumerate(i for i, p in enumerate(is_param) if p)}

    def single_root_axes(i: int) -> dict[int, int]:
        """Axis -> channel space, for the axes of leaf ``i`` that index exactly one space."""
        return {d: roots[0] for d, roots in enumerate(g.roots(g.leaf_ids[i])) if len(roots) == 1}

    # space -> (params index, output axis) of each kernel producing it
    producers: dict[int, list[tuple[int, int]]] = {}
    unclear: set[int] = set()  # spaces a producer indexes through more than its output axis
    for vid, axis, _ in g.producers:
        i = g.vars[vid].leaf
        out_roots = g.expand(g.vars[vid].axes[axis])
        if i is None or not is_param[i]:
            continue
        if len(out_roots) != 1:
            unclear.update(out_roots)
            continue
        r = out_roots[0]
        roots = g.roots(g.leaf_ids[i])
        axes = [d for d, rr in enumerate(roots) if r in rr]
        if len(axes) != 1 or roots[axes[0]] != [r]:  # e.g. a square kernel tied to its own input:
            unclear.add(r)  # compact does not remove such channels, so they are not grouped either
            continue
        if (param_pos[i], axes[0]) not in producers.get(r, []):
            producers.setdefault(r, []).append((param_pos[i], axes[0]))
    consumed = {
        (g.vars[vid].leaf, r) for vid, axis, _ in g.consumers for r in g.expand(g.vars[vid].axes[axis])
    }
    spaces = {r for r in producers if not g.pins(r) and r not in unclear}
    # params index -> [(axis, space)] that the group mask zeroes along
    grouped: dict[int, list[tuple[int, int]]] = {}
    for i, param in enumerate(is_param):
        if param:
            for d, r in single_root_axes(i).items():
                if r in spaces and (i, r) not in consumed:
                    grouped.setdefault(param_pos[i], []).append((d, r))
    # shapes only: the returned function must not keep the variables' arrays alive
    param_shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                                variables["params"])
    shapes = [leaf.shape for leaf in jax.tree.leaves(param_shapes)]
    treedef = jax.tree.structure(param_shapes)

    def group_mask(mask: PyTree) -> PyTree:
        check_same_structure(param_shapes, mask, "params", "mask")
        m = jax.tree.leaves(mask, is_leaf=is_none)
        pruned = {}
        for r in spaces:
            if any(m[p] is None for p, _ in producers[r]):
                continue
            per_producer = [
                ~jnp.any(jnp.asarray(m[p], bool), axis=tuple(a for a in range(jnp.ndim(m[p])) if a != d))
                for p, d in producers[r]
            ]
            pruned[r] = jnp.all(jnp.stack(per_producer), axis=0)
        out = list(m)
        for p, axes in grouped.items():
            keep = None
            for d, r in axes:
                if r not in pruned:
                    continue
                along = jnp.reshape(~pruned[r], [-1 if a == d else 1 for a in range(len(shapes[p]))])
                keep = along if keep is None else keep & along
            if keep is not None:
                keep = jnp.broadcast_to(keep, shapes[p])
                out[p] = keep if m[p] is None else jnp.asarray(m[p], bool) & keep
        return jax.tree.unflatten(treedef, out)

    return group_mask
