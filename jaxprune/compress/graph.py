"""Channel dependency graph of a model's forward pass, read from its jaxpr.

:func:`trace` runs ``jax.make_jaxpr`` on ``model.apply`` and gives every axis
of every value in the program a list of *channel nodes* (row-major factors:
an axis of size ``H*W*C`` made by a flatten is the three factors ``H, W, C``).
Nodes that must index the same channels are merged (union-find) by the rules
of each primitive:

- elementwise ops (``add``, ``mul``, ``max``, ``select_n``, casts, ...): axis
  ``i`` of every operand and of the result is one channel space, so a
  residual addition ties the channels of its two branches;
- ``broadcast_in_dim``, ``transpose``, ``squeeze``, reductions, pooling
  (``reduce_window_*``): the surviving axes keep their nodes;
- ``reshape``: the flat sequences of factors before and after are aligned,
  splitting nodes where a new axis boundary falls inside one (a flatten
  ``(N, H, W, C) -> (N, H*W*C)`` makes the Dense kernel's input axis the
  factors ``H, W, C``);
- ``dot_general`` / ``conv_general_dilated``: contracting axes (the input
  channels of a kernel) join the activation's channels; the kernel's output
  axis becomes the result's channel axis (a *producer*). Depthwise
  convolutions (one input channel per group) keep the input's channels;
- ``pjit``, ``custom_jvp_call``, ``custom_vjp_call``, ``closed_call``,
  ``remat``: traced through their inner jaxprs.

Axes that cannot shrink are *pinned* with the reason: the model's input and
output, axes reduced over, padded, sliced or concatenated along. A primitive
without a rule raises ``ValueError`` naming it and the layer (the Flax module
path from the jaxpr's name stack).

:meth:`ChannelGraph.zero_slices` then propagates, for concrete (masked)
variables, which channel slices of every value are exactly zero (``a + b`` is
zero where both are, ``a * b`` where either is, ``exp`` nowhere, ...). This is
what :mod:`jaxprune.compress.compact` uses to prove that removing a channel
leaves the output unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from jaxprune._forward import default_apply_kwargs, forward_jaxpr

__all__ = ["ChannelGraph", "Exit", "Step", "trace"]

# Elementwise primitives by how exact zeros propagate through them.
_AND = {"add", "add_any", "sub", "max", "min"}  # zero where every operand is zero
_OR = {"mul", "and"}  # zero where any operand is zero
_FIRST = {"div", "rem"}  # zero where the numerator is zero
_PASS_UNARY = {
    "neg", "convert_element_type", "copy", "copy_p", "reduce_precision", "abs", "sign", "sqrt", "cbrt",
    "tanh", "sin", "tan", "asin", "atan", "sinh", "asinh", "atanh", "erf", "expm1", "log1p", "square",
    "floor", "ceil", "round", "real", "imag", "optimization_barrier",
}  # fmt: skip
_NONE_UNARY = {
    "exp", "exp2", "log", "logistic", "cos", "cosh", "acos", "acosh", "rsqrt", "erfc", "erf_inv",
    "is_finite", "not", "lgamma", "digamma", "stop_gradient",
}  # fmt: skip
_NONE_BINARY = {"pow", "atan2", "eq", "ne", "lt", "le", "gt", "ge", "or", "xor", "nextafter", "clamp"}
_REDUCE_PASS = {"reduce_sum", "reduce_max", "reduce_min"}
_REDUCE_NONE = {"reduce_prod", "reduce_and", "reduce_or", "reduce_xor", "argmax", "argmin"}
_WINDOW = {"reduce_window_sum", "reduce_window_max", "reduce_window_min"}
_CUMULATIVE = {"cumsum", "cummax", "cummin", "cumprod", "cumlogsumexp"}
_CALLS = {
    "pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr", "remat": "jaxpr",
    "checkpoint": "jaxpr", "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}  # fmt: skip
_NO_INPUT = {"iota", "rng_bit_generator", "random_seed", "random_bits", "random_wrap", "random_unwrap"}


@dataclasses.dataclass
class _Var:
    shape: tuple[int, ...]
    axes: list[list[int]]  # per axis: channel nodes (row-major factors)
    leaf: int | None = None  # index of the variables leaf this value is (a cast/transposed view of)
    value: np.ndarray | None = None  # constants and literals


@dataclasses.dataclass(frozen=True)
class Step:
    """One traced op for zero propagation: ``mode`` (``"and"``, ``"or"``,
    ``"first"``, ``"pass"``, ``"pad"``, ``"select"``, ``"none"``), output and
    input value ids, and the layer it belongs to."""

    mode: str
    outs: tuple[int, ...]
    ins: tuple[int, ...]
    where: str


@dataclasses.dataclass(frozen=True)
class Exit:
    """A contraction over channels (a kernel's input channels): ``operands``
    are ``(value id, axis)`` pairs of the contracted axis; a channel removed
    there must be zero in one of the operands."""

    operands: tuple[tuple[int, int], ...]
    primitive: str
    where: str


class ChannelGraph:
    """The channel spaces of a traced forward pass (see the module docstring).

    Attributes after :func:`trace`: ``leaf_ids`` (value id of each leaf of
    ``variables``, in ``jax.tree.leaves`` order), ``steps``, ``exits``,
    ``producers`` / ``consumers`` (``(value id, axis, where)`` of kernel output
    and contracted input axes)."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._split: dict[int, list[int]] = {}
        self._pins: dict[int, list[str]] = {}
        self.vars: list[_Var] = []
        self.steps: list[Step] = []
        self.exits: list[Exit] = []
        self.producers: list[tuple[int, int, str]] = []
        self.consumers: list[tuple[int, int, str]] = []
        self.leaf_ids: list[int] = []
        self.input_id = -1
        self.output_ids: list[int] = []

    # -- union-find over channel nodes -------------------------------------------------
    def _node(self, size: int) -> int:
        self._parent.append(len(self._parent))
        self._size.append(int(size))
        return len(self._parent) - 1

    def find(self, node: int) -> int:
        """The representative node of ``node``'s channel space."""
        root = node
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[node] != root:
            self._parent[node], node = root, self._parent[node]
        return root

    def size(self, node: int) -> int:
        """Number of channels of ``node``'s space."""
        return self._size[self.find(node)]

    def expand(self, nodes: list[int]) -> list[int]:
        """The unsplit representative nodes making up ``nodes`` (row-major), size-1 nodes dropped."""
        out: list[int] = []
        for node in nodes:
            root = self.find(node)
            if root in self._split:
                out.extend(self.expand(self._split[root]))
            elif self._size[root] > 1:
                out.append(root)
        return out

    def pins(self, root: int) -> list[str]:
        """Why the space ``root`` cannot shrink (empty: it can)."""
        return self._pins.get(self.find(root), [])

    def _pin(self, nodes: list[int], reason: str) -> None:
        for root in self.expand(nodes):
            reasons = self._pins.setdefault(root, [])
            if reason not in reasons:
                reasons.append(reason)

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self._parent[ra] = rb
        pins = self._pins.pop(ra, [])
        if pins:
            merged = self._pins.setdefault(rb, [])
            merged.extend(p for p in pins if p not in merged)

    def _split_node(self, root: int, first: int) -> None:
        rest = self._size[root] // first
        parts = [self._node(first), self._node(rest)]
        self._split[root] = parts
        for reason in self._pins.get(root, []):
            self._pin(parts, reason)

    def _unify(self, xs: list[int], ys: list[int], where: str) -> None:
        """Make the factor sequences ``xs`` and ``ys`` (same total size) index the same channels."""
        a, b = self.expand(xs), self.expand(ys)
        while a and b:
            x, y = a[0], b[0]
            sx, sy = self._size[x], self._size[y]
            if sx == sy:
                self._union(x, y)
                a.pop(0)
                b.pop(0)
            elif sx > sy and sx % sy == 0:
                self._split_node(x, sy)
                a[:1] = self.expand([x])
            elif sy > sx and sy % sx == 0:
                self._split_node(y, sx)
                b[:1] = self.expand([y])
            else:  # factors that do not nest: these channels cannot be followed
                self._pin(a + b, f"mixed by a reshape at {where}")
                return

    # -- values ------------------------------------------------------------------------
    def _new_var(self, shape: tuple[int, ...], axes: list[list[int]] | None = None, **kw: Any) -> int:
        if axes is None:
            axes = [[self._node(n)] for n in shape]
        self.vars.append(_Var(tuple(int(n) for n in shape), [list(a) for a in axes], **kw))
        return len(self.vars) - 1

    def roots(self, vid: int) -> list[list[int]]:
        """Per axis of value ``vid``: its channel spaces (final, after tracing)."""
        return [self.expand(axis) for axis in self.vars[vid].axes]

    # -- zero propagation --------------------------------------------------------------
    def zero_slices(
        self, values: list[np.ndarray], interesting: set[int]
    ) -> tuple[list[dict[int, np.ndarray]], list[bool]]:
        """For every value id: ``{space: bool vector}`` (channel ``j`` of that
        space is exactly zero in the whole value), restricted to the spaces in
        ``interesting``, and whether the value is entirely zero.

        ``values``: the concrete variables leaves (``leaf_ids`` order)."""
        zeros: list[dict[int, np.ndarray]] = [{} for _ in self.vars]
        whole: list[bool] = [False] * len(self.vars)
        for vid, value in zip(self.leaf_ids, values, strict=True):
            zeros[vid], whole[vid] = self._concrete_zeros(vid, np.asarray(value), interesting)
        for vid, var in enumerate(self.vars):
            if var.value is not None:
                zeros[vid], whole[vid] = self._concrete_zeros(vid, var.value, interesting)
        for step in self.steps:
            self._propagate(step, zeros, whole, interesting)
        return zeros, whole

    def _concrete_zeros(
        self, vid: int, value: np.ndarray, interesting: set[int]
    ) -> tuple[dict[int, np.ndarray], bool]:
        flat = [r for axis in self.roots(vid) for r in axis]
        if value.size == 0:
            return {}, True
        is_zero = value == 0
        if not flat:
            return {}, bool(is_zero.all())
        factored = is_zero.reshape([self._size[r] for r in flat])
        out = {}
        for k, r in enumerate(flat):
            if r in interesting and flat.count(r) == 1:
                out[r] = np.all(np.moveaxis(factored, k, 0).reshape(self._size[r], -1), axis=1)
        return out, bool(is_zero.all())

    def _propagate(
        self, step: Step, zeros: list[dict[int, np.ndarray]], whole: list[bool], interesting: set[int]
    ) -> None:
        ins = step.ins[1:] if step.mode == "select" else step.ins
        if step.mode in ("first", "pass") or (step.mode == "pad" and whole[step.ins[1]]):
            ins = step.ins[:1]
        elif step.mode in ("none", "pad"):
            ins = ()
        for out in step.outs:
            flat = [r for axis in self.roots(out) for r in axis]
            result: dict[int, np.ndarray] = {}
            if not ins:
                whole[out] = False
                zeros[out] = result
                continue
            for r in set(flat) & interesting:
                if flat.count(r) != 1:
                    continue
                parts = [self._operand_zero(v, r, zeros, whole) for v in ins]
                if step.mode == "or":
                    known = [p for p in parts if p is not None]
                    if known:
                        result[r] = np.logical_or.reduce(known)
                elif all(p is not None for p in parts):
                    result[r] = np.logical_and.reduce(parts)
            zeros[out] = result
            whole[out] = any(whole[v] for v in ins) if step.mode == "or" else all(whole[v] for v in ins)

    def _operand_zero(
        self, vid: int, root: int, zeros: list[dict[int, np.ndarray]], whole: list[bool]
    ) -> np.ndarray | None:
        if whole[vid]:
            return np.ones(self._size[root], bool)
        return zeros[vid].get(root)


class _Tracer:
    """Walks a closed jaxpr (recursively into calls), filling a ChannelGraph."""

    def __init__(self, graph: ChannelGraph) -> None:
        self.g = graph

    def walk(self, jaxpr: Any, consts: list[Any], in_ids: list[int], prefix: str) -> list[int]:
        g, env = self.g, {}
        for var, const in zip(jaxpr.constvars, consts, strict=True):
            value = np.asarray(const)
            env[var] = g._new_var(value.shape, value=value)
        for var, vid in zip(jaxpr.invars, in_ids, strict=True):
            env[var] = vid

        def read(atom: Any) -> int:
            if isinstance(atom, jex_core.Literal):
                value = np.asarray(atom.val)
                return g._new_var(value.shape, value=value)
            return env[atom]

        for eqn in jaxpr.eqns:
            stack = str(eqn.source_info.name_stack)
            where = "/".join(p for p in (prefix, stack) if p) or "<top level>"
            outs = self.eqn(eqn, [read(a) for a in eqn.invars], where)
            for var, vid in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, jex_core.DropVar):
                    want = tuple(var.aval.shape)
                    if g.vars[vid].shape != want:  # a rule's bookkeeping is wrong: never silent
                        raise AssertionError(
                            f"{eqn.primitive.name} at {where}: {g.vars[vid].shape} != {want}"
                        )
                    env[var] = vid
        return [read(a) for a in jaxpr.outvars]

    # -- the rules ---------------------------------------------------------------------
    def eqn(self, eqn: Any, ins: list[int], where: str) -> list[int]:
        g, name, p = self.g, eqn.primitive.name, eqn.params
        out_shapes = [tuple(v.aval.shape) for v in eqn.outvars]
        if name in _CALLS and _CALLS[name] in p:
            inner = p[_CALLS[name]]
            jaxpr, consts = (inner.jaxpr, inner.consts) if hasattr(inner, "consts") else (inner, [])
            return self.walk(jaxpr, consts, ins, where)
        if name in _AND | _OR | _FIRST | _PASS_UNARY | _NONE_UNARY | _NONE_BINARY or name == "integer_pow":
            mode = (
                "and" if name in _AND else "or" if name in _OR else "first" if name in _FIRST
                else "none" if name in _NONE_UNARY | _NONE_BINARY or (name == "integer_pow" and p["y"] <= 0)
                else "pass"
            )  # fmt: skip
            if name == "optimization_barrier":
                return [
                    self._elementwise([v], s, "pass", where) for v, s in zip(ins, out_shapes, strict=True)
                ]
            return [self._elementwise(ins, out_shapes[0], mode, where)]
        if name == "select_n":
            return [self._elementwise(ins, out_shapes[0], "select", where)]
        if name == "broadcast_in_dim" and len(ins) == 1:
            x, shape = g.vars[ins[0]], out_shapes[0]
            axes = [[g._node(n)] for n in shape]
            for i, d in enumerate(p["broadcast_dimensions"]):
                if x.shape[i] == shape[d]:
                    axes[d] = x.axes[i]
            return [self._derived(ins[0], shape, axes, where)]
        if name == "reshape" and p.get("dimensions") is None and len(ins) == 1:
            shape = out_shapes[0]
            axes = [[g._node(n)] for n in shape]
            g._unify([n for a in g.vars[ins[0]].axes for n in a], [a[0] for a in axes], where)
            return [self._derived(ins[0], shape, axes, where)]
        if name == "squeeze":
            drop = {d % len(g.vars[ins[0]].shape) for d in p["dimensions"]}
            axes = [a for i, a in enumerate(g.vars[ins[0]].axes) if i not in drop]
            return [self._derived(ins[0], out_shapes[0], axes, where)]
        if name == "transpose":
            axes = [g.vars[ins[0]].axes[i] for i in p["permutation"]]
            return [self._derived(ins[0], out_shapes[0], axes, where)]
        if name in _REDUCE_PASS | _REDUCE_NONE:
            x = g.vars[ins[0]]
            for d in p["axes"]:
                g._pin(x.axes[d], f"reduced over by {name} at {where}")
            axes = [a for i, a in enumerate(x.axes) if i not in set(p["axes"])]
            return [self._step("pass" if name in _REDUCE_PASS else "none", out_shapes[0], axes, ins, where)]
        if name in _CUMULATIVE:
            g._pin(g.vars[ins[0]].axes[p["axis"]], f"accumulated along by {name} at {where}")
            mode = "pass" if name in ("cumsum", "cummax", "cummin") else "none"
            return [self._step(mode, out_shapes[0], g.vars[ins[0]].axes, ins, where)]
        if name in _WINDOW:
            x, shape = g.vars[ins[0]], out_shapes[0]
            axes = []
            for i, n in enumerate(shape):
                trivial = (
                    p["window_dimensions"][i] == 1 and p["window_strides"][i] == 1
                    and tuple(p["padding"][i]) == (0, 0) and p["base_dilation"][i] == 1
                    and p["window_dilation"][i] == 1
                )  # fmt: skip
                if trivial:
                    axes.append(x.axes[i])
                else:
                    g._pin(x.axes[i], f"pooled along by {name} at {where}")
                    axes.append([g._node(n)])
            return [self._step("pass", shape, axes, ins, where)]
        if name == "pad":
            x, shape = g.vars[ins[0]], out_shapes[0]
            axes = []
            for i, cfg in enumerate(p["padding_config"]):
                if tuple(cfg) == (0, 0, 0):
                    axes.append(x.axes[i])
                else:
                    g._pin(x.axes[i], f"padded along by pad at {where}")
                    axes.append([g._node(shape[i])])
                    g._pin(axes[-1], f"padded along by pad at {where}")
            return [self._step("pad", shape, axes, ins, where)]
        if name in ("slice", "dynamic_slice"):
            x, shape = g.vars[ins[0]], out_shapes[0]
            axes = []
            for i, n in enumerate(shape):
                full = n == x.shape[i] and (
                    name == "dynamic_slice" or (p["strides"] or [1] * len(shape))[i] == 1
                )
                if full:
                    axes.append(x.axes[i])
                else:
                    g._pin(x.axes[i], f"sliced along by {name} at {where}")
                    axes.append([g._node(n)])
            return [self._step("pass", shape, axes, ins[:1], where)]
        if name == "concatenate":
            d, shape = p["dimension"], out_shapes[0]
            first = g.vars[ins[0]]
            axes = [list(a) for a in first.axes]
            for v in ins:
                g._pin(g.vars[v].axes[d], f"concatenated along at {where}")
                for i, a in enumerate(g.vars[v].axes):
                    if i != d:
                        g._unify(axes[i], a, where)
            axes[d] = [g._node(shape[d])]
            g._pin(axes[d], f"concatenated along at {where}")
            return [self._step("and", shape, axes, ins, where)]
        if name == "dot_general":
            return [self._dot_general(ins, p, out_shapes[0], where)]
        if name == "conv_general_dilated":
            return [self._conv(ins, p, out_shapes[0], where)]
        if name in _NO_INPUT:
            return [g._new_var(s) for s in out_shapes]
        raise ValueError(
            f"jaxprune.compress cannot trace through the primitive {name!r} at layer {where!r}: it has no "
            "rule for how channels pass through it (supported: elementwise ops, broadcast/reshape/transpose, "
            "reductions, pooling, pad/slice/concatenate, dot_general, conv_general_dilated, and calls)"
        )

    def _step(
        self, mode: str, shape: tuple[int, ...], axes: list[list[int]], ins: list[int], where: str
    ) -> int:
        out = self.g._new_var(shape, axes)
        self.g.steps.append(Step(mode, (out,), tuple(ins), where))
        return out

    def _derived(self, src: int, shape: tuple[int, ...], axes: list[list[int]], where: str) -> int:
        out = self._step("pass", shape, axes, [src], where)
        self.g.vars[out].leaf = self.g.vars[src].leaf
        return out

    def _elementwise(self, ins: list[int], shape: tuple[int, ...], mode: str, where: str) -> int:
        """Operands of the result's shape, of size 1 on some axes (broadcast), or scalars."""
        g = self.g
        axes: list[list[int] | None] = [None] * len(shape)
        for v in ins:
            vshape = g.vars[v].shape
            if vshape == ():
                continue
            if len(vshape) != len(shape) or any(a not in (b, 1) for a, b in zip(vshape, shape, strict=True)):
                raise ValueError(
                    f"jaxprune.compress: operand of shape {vshape} does not broadcast to {shape} "
                    f"at layer {where!r}"
                )
            for d, n in enumerate(vshape):
                if n == shape[d] and n > 1:
                    if axes[d] is None:
                        axes[d] = list(g.vars[v].axes[d])
                    else:
                        g._unify(axes[d], g.vars[v].axes[d], where)
        full = [a if a is not None else [g._node(n)] for a, n in zip(axes, shape, strict=True)]
        out = self._step(mode, shape, full, ins, where)
        if mode == "pass" and len(ins) == 1:
            g.vars[out].leaf = g.vars[ins[0]].leaf
        return out

    def _dot_general(self, ins: list[int], p: Mapping[str, Any], shape: tuple[int, ...], where: str) -> int:
        g = self.g
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        lhs, rhs = g.vars[ins[0]], g.vars[ins[1]]
        for a, b in zip((*lc, *lb), (*rc, *rb), strict=True):
            g._unify(lhs.axes[a], rhs.axes[b], where)
        for a, b in zip(lc, rc, strict=True):
            g.exits.append(Exit(((ins[0], a), (ins[1], b)), "dot_general", where))
            g.consumers += [(ins[0], a, where), (ins[1], b, where)]
        lfree = [i for i in range(len(lhs.shape)) if i not in (*lc, *lb)]
        rfree = [i for i in range(len(rhs.shape)) if i not in (*rc, *rb)]
        g.producers += [(ins[0], i, where) for i in lfree] + [(ins[1], i, where) for i in rfree]
        axes = [lhs.axes[i] for i in lb] + [lhs.axes[i] for i in lfree] + [rhs.axes[i] for i in rfree]
        return self._step("or", shape, axes, ins, where)

    def _conv(self, ins: list[int], p: Mapping[str, Any], shape: tuple[int, ...], where: str) -> int:
        g = self.g
        lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
        lhs, rhs = g.vars[ins[0]], g.vars[ins[1]]
        groups = p["feature_group_count"]
        axes: list[list[int]] = [[] for _ in shape]
        axes[out_spec[0]] = lhs.axes[lhs_spec[0]]
        for d in out_spec[2:]:
            axes[d] = [g._node(shape[d])]
        if p["batch_group_count"] != 1:
            groups = -1
        if groups == 1:
            g._unify(lhs.axes[lhs_spec[1]], rhs.axes[rhs_spec[1]], where)
            g.exits.append(
                Exit(((ins[0], lhs_spec[1]), (ins[1], rhs_spec[1])), "conv_general_dilated", where)
            )
            g.consumers += [(ins[0], lhs_spec[1], where), (ins[1], rhs_spec[1], where)]
            g.producers.append((ins[1], rhs_spec[0], where))
            axes[out_spec[1]] = rhs.axes[rhs_spec[0]]
        elif groups == lhs.shape[lhs_spec[1]] == rhs.shape[rhs_spec[0]] and rhs.shape[rhs_spec[1]] == 1:
            g._unify(lhs.axes[lhs_spec[1]], rhs.axes[rhs_spec[0]], where)  # depthwise: channel-wise
            axes[out_spec[1]] = lhs.axes[lhs_spec[1]]
        else:
            raise ValueError(
                f"jaxprune.compress cannot trace through the primitive 'conv_general_dilated' at layer "
                f"{where!r}: grouped convolution (feature_group_count={p['feature_group_count']}, "
                f"batch_group_count={p['batch_group_count']}); only ordinary and depthwise ones are supported"
            )
        return self._step("or", shape, axes, ins, where)


def trace(
    model: nn.Module,
    variables: Mapping[str, Any],
    input_shape: tuple[int, ...],
    apply_kwargs: Mapping[str, Any] | None = None,
) -> ChannelGraph:
    """The :class:`ChannelGraph` of ``model.apply(variables, x, **apply_kwargs)``
    for ``x`` of shape ``(2, *input_shape)`` float32 (nothing is computed:
    ``jax.make_jaxpr`` on shapes). ``apply_kwargs`` defaults to
    :func:`default_apply_kwargs`. The input's and output's axes are pinned.

    >>> import flax.linen as nn, jax, jax.numpy as jnp
    >>> model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> g = trace(model, variables, (3,))
    >>> [e.where for e in g.exits]                  # the two kernels contract over channels
    ['Sequential/layers_0', 'Sequential/layers_2']
    """
    kwargs = default_apply_kwargs(model) if apply_kwargs is None else dict(apply_kwargs)
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), variables)
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    closed = forward_jaxpr(lambda v, x: model.apply(v, x, **kwargs), shapes, x, input_shape)
    graph = ChannelGraph()
    leaves = jax.tree.leaves(shapes)
    graph.leaf_ids = [graph._new_var(leaf.shape, leaf=i) for i, leaf in enumerate(leaves)]
    graph.input_id = graph._new_var(x.shape)
    graph._pin([n for a in graph.vars[graph.input_id].axes[1:] for n in a], "the model's input")
    outs = _Tracer(graph).walk(closed.jaxpr, closed.consts, [*graph.leaf_ids, graph.input_id], "")
    graph.output_ids = outs
    for vid in outs:
        graph._pin([n for a in graph.vars[vid].axes for n in a], "the model's output")
    if math.prod(x.shape) == 0:
        raise ValueError(f"input_shape={input_shape!r} has a zero-size axis")
    return graph
