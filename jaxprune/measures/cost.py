"""Parameter and multiply-accumulate (MAC) accounting of any model, read from
the jaxpr of its forward pass.

``cost(model, variables, mask, input_shape)`` traces ``model.apply`` once on
one example (``jax.make_jaxpr``; nothing is computed, abstract
``jax.ShapeDtypeStruct`` variables work), counts the MACs of every
``dot_general`` and ``conv_general_dilated`` from the operand shapes and
dimension numbers, and attributes each op to the parameter leaf that feeds it
(through dtype casts, reshapes and other size-preserving ops of that leaf
alone), descending into ``jit``, ``custom_jvp``/``custom_vjp``, ``remat``
and ``scan`` (MACs times the scan length) sub-jaxprs. So any model made of
these ops is counted, not only the zoo.

MACs of one op:

- ``dot_general``: ``prod(output shape) * prod(lhs contracting dims)``.
- ``conv_general_dilated``: ``prod(output shape) * I * prod(kernel window)``
  where ``I`` is the kernel's input-feature size (already ``C_in /
  feature_group_count``); strides and padding act through the output shape;
  positions in the zero padding count (the usual convention).

"Kept" figures: an op whose weight operand comes from a masked leaf keeps
``macs * density`` (unstructured sparsity: the work a sparse kernel would
skip), a leaf with a ``None`` mask leaf (or ``mask=None``) keeps everything.
For a compacted model (smaller dense kernels) the dense figures are exact.
A structured mask that is not compacted is counted the same way (its density
only; the channels it would remove downstream are not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from jaxprune._forward import default_apply_kwargs, forward_jaxpr
from jaxprune.tree import check_mask_shapes, is_none, path_str

__all__ = ["cost"]

PyTree = Any
_MAC_PRIMITIVES = ("dot_general", "conv_general_dilated")
# Higher-order primitives whose sub-jaxpr takes the equation's operands in order.
_CALL_PRIMITIVES = (
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "remat2",
    "checkpoint",
    "scan",
)
_NO_PARAM = "(no parameter)"


def _sub_jaxprs(eqn: jex.JaxprEqn) -> list[jex.Jaxpr]:
    out = []
    for value in eqn.params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, jex.ClosedJaxpr):
                out.append(item.jaxpr)
            elif isinstance(item, jex.Jaxpr):
                out.append(item)
    return out


def _has_macs(jaxpr: jex.Jaxpr) -> bool:
    return any(
        eqn.primitive.name in _MAC_PRIMITIVES or any(_has_macs(sub) for sub in _sub_jaxprs(eqn))
        for eqn in jaxpr.eqns
    )


def _op_macs(eqn: jex.JaxprEqn) -> int:
    out_size = math.prod(eqn.outvars[0].aval.shape)
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    if eqn.primitive.name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        return out_size * math.prod(lhs[d] for d in lhs_contract)
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial)
    return out_size * rhs[rhs_spec[1]] * math.prod(rhs[d] for d in rhs_spec[2:])


class _Counter:
    """Walks a jaxpr tracking, per variable, the parameter leaf it is a view of
    (``origin``) and whether it depends on the model input (``data``)."""

    def __init__(self) -> None:
        self.ops: list[tuple[int | None, str, int]] = []  # (leaf index, primitive, MACs)

    def walk(self, jaxpr: jex.Jaxpr, origins: list, data: list, scale: int) -> None:
        origin = dict(zip(jaxpr.invars, origins, strict=True))
        is_data = dict(zip(jaxpr.invars, data, strict=True))

        def get(d: dict, v: Any, default: Any) -> Any:
            return default if isinstance(v, jex.Literal) else d.get(v, default)

        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            in_origin = [get(origin, v, None) for v in eqn.invars]
            in_data = [get(is_data, v, False) for v in eqn.invars]
            subs = _sub_jaxprs(eqn)
            if name in _MAC_PRIMITIVES:
                lhs, rhs = in_origin[:2]
                self.ops.append((rhs if rhs is not None else lhs, name, scale * _op_macs(eqn)))
            elif subs and name in _CALL_PRIMITIVES and all(len(s.invars) == len(eqn.invars) for s in subs):
                times = int(eqn.params.get("length", 1)) if name == "scan" else 1
                # custom_jvp/vjp carry the rule jaxprs too: count the primal one only.
                for sub in subs[:1]:
                    self.walk(sub, in_origin, in_data, scale * times)
            elif subs and any(_has_macs(s) for s in subs):
                where = eqn.source_info.name_stack if hasattr(eqn.source_info, "name_stack") else ""
                raise ValueError(
                    f"cost cannot count the matmuls/convolutions inside primitive {name!r} "
                    f"(at {str(where) or 'top level'}); supported higher-order primitives: "
                    f"{list(_CALL_PRIMITIVES)}"
                )
            out_data = any(in_data)
            carried = [o for o in in_origin if o is not None]
            others_static = all(not d for d, o in zip(in_data, in_origin, strict=True) if o is None)
            for out in eqn.outvars:
                is_data[out] = out_data
                if name not in _MAC_PRIMITIVES and len(set(carried)) == 1 and others_static:
                    src = next(v for v, o in zip(eqn.invars, in_origin, strict=True) if o is not None)
                    if math.prod(out.aval.shape) == math.prod(src.aval.shape):
                        origin[out] = carried[0]


def _densities(variables: PyTree, mask: PyTree | None) -> tuple[list[str], list[int], list[int]]:
    """Per variables leaf: path, size and kept count (the mask's True count, or the size)."""
    flat = jax.tree.leaves_with_path(variables)
    paths = [path_str(p) for p, _ in flat]
    sizes = [math.prod(jnp.shape(x)) for _, x in flat]
    kept = list(sizes)
    if mask is None:
        return paths, sizes, kept
    base, prefix = variables, ""
    if isinstance(variables, Mapping) and "params" in variables:
        same = jax.tree.structure(mask, is_leaf=is_none) == jax.tree.structure(variables, is_leaf=is_none)
        if not same:
            base, prefix = variables["params"], "params/"
    check_mask_shapes(base, mask)
    index = {p: i for i, p in enumerate(paths)}
    for path, m in jax.tree.leaves_with_path(mask, is_leaf=is_none):
        if m is None:
            continue
        arr = np.asarray(m)
        name = prefix + path_str(path)
        if arr.dtype != np.bool_:
            raise TypeError(f"mask leaf {name} has dtype {arr.dtype}; expected bool (True = kept)")
        kept[index[name]] = int(arr.sum())
    return paths, sizes, kept


def cost(
    model: Any,
    variables: PyTree,
    mask: PyTree | None = None,
    input_shape: Sequence[int] = (),
    *,
    input_dtype: Any = jnp.float32,
    apply_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Parameters and MACs of ``model`` on ONE example, dense and kept under ``mask``.

    Args:
      model: a flax linen module (``model.apply(variables, x, **apply_kwargs)``
        is traced) or any function ``f(variables, x)``.
      variables: its variables (``{"params": ..., "batch_stats": ...}``) or
        their ``jax.ShapeDtypeStruct`` shapes (``jax.eval_shape`` of ``init``).
      mask: ``None`` (dense), or a mask (bool leaves, ``None`` = unpruned) with
        the structure of ``variables["params"]`` or of ``variables``.
      input_shape: one example's shape, no batch axis (e.g. ``(32, 32, 3)``);
        the trace runs at batch 1.
      input_dtype: the input's dtype (float32).
      apply_kwargs: keyword arguments of ``model.apply``; default
        ``{"train": False}`` when the module's ``__call__`` takes ``train``.

    Returns a dict: ``"layers"`` maps each weight leaf path that feeds a
    matmul/convolution (``"params/Conv_0/kernel"``; ``"(no parameter)"`` for
    ops between activations) to ``{"params", "params_kept", "macs",
    "macs_kept", "density"}``; the totals ``"params"`` / ``"params_kept"``
    (the ``"params"`` collection, or every leaf if there is none) and
    ``"macs"`` / ``"macs_kept"``; and ``"params_ratio"`` / ``"macs_ratio"``
    (kept / dense). MACs kept are ``round(macs * density)`` per layer.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> model = nn.Dense(3)
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
    >>> mask = {"kernel": jnp.arange(12).reshape(4, 3) < 6, "bias": None}
    >>> c = cost(model, variables, mask, (4,))
    >>> c["macs"], c["macs_kept"], c["params"], c["params_kept"]
    (12, 6, 15, 9)
    """
    shape = tuple(input_shape)
    if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"input_shape={input_shape!r} is not valid; expected a tuple of integers >= 1")
    if hasattr(model, "apply"):
        kwargs = default_apply_kwargs(model) if apply_kwargs is None else dict(apply_kwargs)

        def fn(v: PyTree, x: jax.Array) -> Any:
            return model.apply(v, x, **kwargs)
    elif callable(model):
        fn = model
    else:
        raise TypeError(
            f"model must be a flax module or a function f(variables, x), got {type(model).__name__}"
        )
    paths, sizes, kept = _densities(variables, mask)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.dtype(input_dtype))
    closed = forward_jaxpr(fn, variables, x, shape)
    n_leaves = len(paths)
    n_in = len(closed.jaxpr.invars) - n_leaves
    counter = _Counter()
    origins = list(range(n_leaves)) + [None] * n_in
    counter.walk(closed.jaxpr, origins, [False] * n_leaves + [True] * n_in, 1)
    return _report(counter.ops, paths, sizes, kept, variables)


def _report(
    ops: list[tuple[int | None, str, int]],
    paths: list[str],
    sizes: list[int],
    kept: list[int],
    variables: Any,
) -> dict[str, Any]:
    layers: dict[str, dict[str, Any]] = {}
    for leaf, _, macs in ops:
        if leaf is None:
            entry = layers.setdefault(_NO_PARAM, {"params": 0, "params_kept": 0, "macs": 0, "macs_kept": 0})
            entry["density"] = 1.0
            density = 1.0
        else:
            density = kept[leaf] / sizes[leaf] if sizes[leaf] else 1.0
            entry = layers.setdefault(
                paths[leaf],
                {
                    "params": sizes[leaf],
                    "params_kept": kept[leaf],
                    "macs": 0,
                    "macs_kept": 0,
                    "density": density,
                },
            )
        entry["macs"] += macs
        entry["macs_kept"] += round(macs * density)
    in_params = [
        i
        for i, p in enumerate(paths)
        if not (isinstance(variables, Mapping) and "params" in variables) or p.startswith("params/")
    ]
    total = {
        "params": sum(sizes[i] for i in in_params),
        "params_kept": sum(kept[i] for i in in_params),
        "macs": sum(e["macs"] for e in layers.values()),
        "macs_kept": sum(e["macs_kept"] for e in layers.values()),
    }
    total["params_ratio"] = total["params_kept"] / total["params"] if total["params"] else 1.0
    total["macs_ratio"] = total["macs_kept"] / total["macs"] if total["macs"] else 1.0
    return {"layers": layers, **total}
