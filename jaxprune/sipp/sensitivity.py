"""Empirical sensitivity of every weight of every dense / conv kernel (SiPP,
Baykal, Liebenwein et al., Definitions 1-3), and the per-layer sign complexity
Delta (Definition 4) and condition number kappa (Definition 5).

What is computed, precisely. Take a prunable kernel ``W`` and view it as
``(F, c)``: ``c`` output units (parameter groups i; the LAST axis) of ``F``
weights each (dense ``(in, out)``: F = in; conv HWIO ``(kh, kw, C, out)``:
F = kh*kw*C). For every point x of S the layer input yields patches
``a(x) in R^F`` (dense: the input vector, one patch; conv: every sliding window
of ``jax.lax.conv_general_dilated_patches`` with the module's strides, padding,
input and kernel dilation). Split ``W = W+ - W-`` and ``a = a+ - a-`` (all
parts >= 0). For a weight ``w_ji`` with sign side ``t`` (``t = +`` if
``w_ji > 0``, else ``-``) and an activation side ``r in {+, -}``::

    D^{t r}_i(x, a) = sum_k  W^t_ki a^r_k(x)                    (one quadrant of z_i)
    ratio^{r}_ji(x, a) = |w_ji| a^r_j(x) / D^{t r}_i(x, a)      (0 where D <= float32 eps)
    g_ji(x)  = max_{r in {+,-}} max_{patches a} ratio^r_ji(x, a)  (Def. 1 + Def. 3)
    s_ji     = max_{x in S} g_ji(x)                              (Def. 2)

i.e. each weight only uses its own sign side (the two quadrants of the other
side have a zero numerator) and ``a+`` / ``a-`` act as separate inputs, as the
authors do by appending ``-a-`` as extra data points. Zero weights get
``s = 0``. With ``patch_reduce="mean"`` the max over patches is replaced by the
mean over the patches of one (point, activation side), as in the authors' code
for the deterministic variant; the max over S and over the two sides stays.
Every ``s_ji`` lies in ``[0, 1]``.

Speed and memory: the quadrant sums ``D`` are matmuls of the patch rows with
``[W+ | W-]``; the max over rows of ``a^r_j / D`` is a running max over an
``(2c, F)`` accumulator updated by unrolled blocks of rows (one fused
elementwise loop per block, no ``rows x F x c`` product), and the a- side is
skipped when no activation is negative. The work is chunked over points (and,
for one huge point, over its patches) so that one group's patch rows and
quadrant sums, ``rows x (F + 8c)`` float32, stay below ``memory_budget_bytes``
(default 64 MiB); the chunks run in a ``lax.scan`` inside one ``jit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune._validate import check_array_range, check_choice, check_finite_number, is_concrete
from jaxprune.capture import LayerIO, capture_layers
from jaxprune.tree import is_none, leaves_with_paths, resolve_prunable

PyTree = Any
PATCH_REDUCES = ("max", "mean")
DEFAULT_MEMORY_BUDGET = 64 * 2**20
_EPS = float(np.finfo(np.float32).eps)
_BLOCK = 16  # rows unrolled per running-max update


# ----------------------------------------------------------------------------- patches
def _conv_config(module: nn.Module, kernel_ndim: int) -> dict[str, Any]:
    """Static patch-extraction arguments of a linen or NNX ``Conv`` (validated)."""
    rank = kernel_ndim - 2
    if getattr(module, "feature_group_count", 1) != 1:
        raise ValueError(
            f"feature_group_count={module.feature_group_count} is not supported by SiPP sensitivity "
            "(valid: 1)"
        )
    padding = module.padding
    if isinstance(padding, str) and padding.upper() not in ("SAME", "VALID", "SAME_LOWER"):
        raise ValueError(f"conv padding={padding!r} is not supported (valid: SAME, VALID, ints or pairs)")
    padding = nn.linear.canonicalize_padding(padding, rank)
    if not isinstance(padding, str):
        padding = tuple(tuple(int(v) for v in p) for p in padding)

    def tup(v: Any) -> tuple[int, ...]:
        if v is None:
            return (1,) * rank
        return (int(v),) * rank if isinstance(v, int) else tuple(int(s) for s in v)

    return {
        "strides": tup(module.strides),
        "padding": padding,
        "lhs_dilation": tup(module.input_dilation),
        "rhs_dilation": tup(module.kernel_dilation),
    }


def conv_patches(x: jax.Array, filter_shape: tuple[int, ...], cfg: dict[str, Any]) -> jax.Array:
    """Sliding windows of an NHWC-style input ``x`` (N, *spatial, C) as
    ``(N, P, F)`` with ``F = prod(filter_shape) * C`` ordered like a flattened
    HWIO kernel's first axes, i.e. ``(*filter_shape, C)``; the windows of
    ``jax.lax.conv_general_dilated_patches`` with the same arguments.

    Without input dilation the windows are gathered by strided slices of the
    padded input (pure data movement); ``conv_general_dilated_patches`` itself
    is a convolution with a one-hot kernel, ``F`` times the multiply-adds of
    the layer's own forward pass, and is used only for input dilation.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)        # one 3x3 image, one channel
    >>> cfg = {"strides": (1, 1), "padding": "VALID", "lhs_dilation": (1, 1), "rhs_dilation": (1, 1)}
    >>> p = jp.sipp.conv_patches(x, (2, 2), cfg)
    >>> p.shape, p[0, 0].tolist()                         # 4 windows of 2x2: the first is the top left
    ((1, 4, 4), [0.0, 1.0, 3.0, 4.0])
    """
    rank = len(filter_shape)
    if not 1 <= rank <= 3:
        raise ValueError(f"conv kernels with {rank} spatial dims are not supported (valid: 1 to 3)")
    n, c = x.shape[0], x.shape[-1]
    if any(d != 1 for d in cfg["lhs_dilation"]):
        return _dilated_input_patches(x, filter_shape, cfg)
    strides, dilation = cfg["strides"], cfg["rhs_dilation"]
    extent = [(k - 1) * d + 1 for k, d in zip(filter_shape, dilation, strict=True)]
    pads = cfg["padding"]
    if isinstance(pads, str):
        pads = jax.lax.padtype_to_pads(x.shape[1:-1], extent, strides, pads)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    out = [(size - e) // s + 1 for size, e, s in zip(x.shape[1:-1], extent, strides, strict=True)]
    windows = []
    for offset in np.ndindex(*filter_shape):  # row-major over the filter: HWIO flatten order
        start = [o * d for o, d in zip(offset, dilation, strict=True)]
        limit = [b + (m - 1) * s + 1 for b, m, s in zip(start, out, strides, strict=True)]
        windows.append(jax.lax.slice(x, (0, *start, 0), (n, *limit, c), (1, *strides, 1)))
    return jnp.stack(windows, axis=-2).reshape(n, math.prod(out), len(windows) * c)


def _dilated_input_patches(x: jax.Array, filter_shape: tuple[int, ...], cfg: dict[str, Any]) -> jax.Array:
    """:func:`conv_patches` through ``conv_general_dilated_patches`` (any ``lhs_dilation``)."""
    rank = len(filter_shape)
    spatial = "DHW"[-rank:]
    lhs = "N" + spatial + "C"
    p = jax.lax.conv_general_dilated_patches(
        x,
        filter_shape,
        cfg["strides"],
        cfg["padding"],
        lhs_dilation=cfg["lhs_dilation"],
        rhs_dilation=cfg["rhs_dilation"],
        dimension_numbers=(lhs, spatial + "IO", lhs),
        precision=jax.lax.Precision.HIGHEST,
    )
    n, c = x.shape[0], x.shape[-1]
    p = p.reshape(n, -1, c, math.prod(filter_shape))  # (N, P, C, k)
    return jnp.swapaxes(p, -1, -2).reshape(n, p.shape[1], -1)  # (N, P, k*C)


def _layer_patches(layer: LayerIO, kernel: jax.Array) -> tuple[Callable[[jax.Array], jax.Array], int]:
    """``(patch_fn, P)``: ``patch_fn(x_chunk) -> (n, P, F)`` for this layer."""
    x = layer.inputs
    if isinstance(layer.module, nn.Conv | nnx.Conv):
        if x.ndim != kernel.ndim:
            raise ValueError(
                f"layer {layer.path!r}: conv input of shape {x.shape} needs exactly one batch axis "
                f"(ndim {kernel.ndim})"
            )
        cfg = _conv_config(layer.module, kernel.ndim)
        fshape = tuple(kernel.shape[:-2])
        n_patches = jax.eval_shape(lambda v: conv_patches(v, fshape, cfg), x[:1]).shape[1]
        return (lambda v: conv_patches(v, fshape, cfg)), n_patches
    if kernel.ndim != 2:
        raise ValueError(f"layer {layer.path!r}: dense kernel must be 2-D, got shape {kernel.shape}")
    n_patches = math.prod(x.shape[1:-1])
    return (lambda v: v.reshape(v.shape[0], n_patches, v.shape[-1])), n_patches


# ----------------------------------------------------------------------------- core
def _inv_denominators(
    a: jax.Array, w2: jax.Array, has_neg: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``1 / D^{t r}`` for the four quadrants of rows ``a`` (..., F) and kernel
    ``w2`` (F, c), 0 where ``D <= eps``. Returned as (pp, pm, mp, mm) where the
    first letter is the activation side r and the second the weight side t.
    ``has_neg``: ``jnp.any(a < 0)``, computed once by the caller."""
    c = w2.shape[-1]
    w_both = jnp.concatenate([jnp.maximum(w2, 0), jnp.maximum(-w2, 0)], axis=-1)  # (F, 2c)
    hi = jax.lax.Precision.HIGHEST
    d_pos = jnp.matmul(jnp.maximum(a, 0), w_both, precision=hi)  # a+ . [W+ | W-]
    d_neg = jax.lax.cond(  # a- . [W+ | W-]; skipped when no activation is negative (after a ReLU)
        has_neg,
        lambda: jnp.matmul(jnp.maximum(-a, 0), w_both, precision=hi),
        lambda: jnp.zeros_like(d_pos),
    )
    inv = [jnp.where(d > _EPS, 1.0 / jnp.where(d > _EPS, d, 1.0), 0.0) for d in (d_pos, d_neg)]
    return inv[0][..., :c], inv[0][..., c:], inv[1][..., :c], inv[1][..., c:]


def _rows_max(acc: jax.Array, a: jax.Array, w2: jax.Array, block: int) -> jax.Array:
    """``max(acc, max_rows max_r a^r_j / D^{t r}_i)`` for rows ``a`` (R, F), R a
    multiple of ``block``; ``acc`` is (2c, F) with rows ``[t=+ | t=-]`` (the
    fan-in on the minor axis: measured ~1.2-1.4x faster on CPU than (F, 2c)
    for the narrow conv layers of CIFAR ResNets).

    The rows are visited ``block`` at a time as a ``fori_loop``; each step is
    one elementwise chain ``acc = max(acc, (1 / D^{. r}_k)[:, None] * a^r_k[None])``
    over the ``block`` rows (unrolled, so XLA fuses it into a single vectorised
    loop over the accumulator: no (rows, F, 2c) product is formed). A second
    loop, over the a- side, runs only when some activation is negative (not
    after a ReLU)."""
    has_neg = jnp.any(a < 0)
    pp, pm, mp, mm = _inv_denominators(a, w2, has_neg)
    n_blocks = a.shape[0] // block

    def side(acc: jax.Array, sign: float, inv_all: jax.Array) -> jax.Array:
        def step(i: jax.Array, acc: jax.Array) -> jax.Array:
            rows = jnp.maximum(sign * jax.lax.dynamic_slice_in_dim(a, i * block, block), 0.0)  # a^r
            inv = jax.lax.dynamic_slice_in_dim(inv_all, i * block, block)
            for r in range(block):
                acc = jnp.maximum(acc, inv[r][:, None] * rows[r][None, :])
            return acc

        return jax.lax.fori_loop(0, n_blocks, step, acc)

    acc = side(acc, 1.0, jnp.concatenate([pp, pm], axis=-1))
    return jax.lax.cond(
        has_neg, lambda v: side(v, -1.0, jnp.concatenate([mp, mm], axis=-1)), lambda v: v, acc
    )


def _points_mean(a: jax.Array, w2: jax.Array, n_patches: int) -> jax.Array:
    """``max_points max_r mean_patches a^r_j / D^{t(ji) r}_i`` for ``a`` (n, P, F): (F, c)."""
    pp, pm, mp, mm = _inv_denominators(a, w2, jnp.any(a < 0))
    hi = jax.lax.Precision.HIGHEST
    pos_w = (w2 > 0)[None]
    out = []
    for side, inv_p, inv_m in ((jnp.maximum(a, 0), pp, pm), (jnp.maximum(-a, 0), mp, mm)):
        s_p = jnp.einsum("npj,npi->nji", side, inv_p, precision=hi)
        s_m = jnp.einsum("npj,npi->nji", side, inv_m, precision=hi)
        out.append(jnp.max(jnp.where(pos_w, s_p, s_m), axis=0))
    return jnp.maximum(out[0], out[1]) / n_patches


def _chunk_plan(n_points: int, n_patches: int, fan_in: int, units: int, budget: int) -> tuple[int, int]:
    """(points per chunk, rows per inner group) so that one group's patch rows
    and quadrant sums, ``rows x (F + 8c)`` float32, stay within ``budget``
    bytes; the group is a whole number of unrolled blocks."""
    per_row = 4 * (fan_in + 8 * units)
    rows = max(1, budget // per_row)
    if rows >= n_patches:
        pts = max(1, min(n_points, rows // n_patches))
        return pts, pts * n_patches
    block = min(_BLOCK, rows)
    return 1, rows // block * block


def layer_sensitivity(
    patch_fn: Callable[[jax.Array], jax.Array],
    n_patches: int,
    x: jax.Array,
    w2: jax.Array,
    *,
    patch_reduce: str = "max",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> jax.Array:
    """Sensitivities ``(F, c)`` of kernel ``w2`` (F, c) over the points ``x``
    (N, ...) whose patches ``patch_fn`` returns as ``(n, P, F)``. Traceable."""
    w2 = w2.astype(jnp.float32)
    fan_in, units = w2.shape
    n_points = x.shape[0]
    pts, group = _chunk_plan(n_points, n_patches, fan_in, units, memory_budget_bytes)
    if patch_reduce == "mean":  # whole points; each also holds four (F, c) patch sums
        per_point = 4 * (n_patches * (fan_in + 8 * units) + 4 * fan_in * units)
        pts = max(1, min(n_points, memory_budget_bytes // per_point))
    n_chunks = -(-n_points // pts)
    pad = n_chunks * pts - n_points  # zero points: every ratio is 0, the max is unaffected
    xs = jnp.pad(x.astype(jnp.float32), [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    xs = xs.reshape(n_chunks, pts, *x.shape[1:])

    if patch_reduce == "mean":

        def mean_chunk(best: jax.Array, xc: jax.Array) -> tuple[jax.Array, None]:
            return jnp.maximum(best, _points_mean(patch_fn(xc), w2, n_patches)), None

        best, _ = jax.lax.scan(mean_chunk, jnp.zeros((fan_in, units), jnp.float32), xs)
    else:
        rows = pts * n_patches
        block = min(_BLOCK, group)
        n_groups = -(-rows // group)
        group = -(-group // block) * block  # rows of the last (zero-padded) block count too

        def max_chunk(acc: jax.Array, xc: jax.Array) -> tuple[jax.Array, None]:
            a = patch_fn(xc).reshape(rows, fan_in)  # zero rows pad: their ratios are 0
            a = jnp.pad(a, [(0, n_groups * group - rows), (0, 0)]).reshape(n_groups, group, fan_in)
            if n_groups == 1:
                return _rows_max(acc, a[0], w2, block), None
            acc, _ = jax.lax.scan(lambda b, g: (_rows_max(b, g, w2, block), None), acc, a)
            return acc, None

        acc, _ = jax.lax.scan(max_chunk, jnp.zeros((2 * units, fan_in), jnp.float32), xs)
        best = jnp.where(w2 > 0, acc[:units].T, acc[units:].T)
    return jnp.minimum(jnp.abs(w2) * best, 1.0)  # ratios are <= 1; clip float rounding


# ----------------------------------------------------------------------------- public
def _flat_kernel(kernel: jax.Array) -> jax.Array:
    """Kernel as (F, c) with rows in the order of :func:`conv_patches` (HWIO flatten)."""
    return kernel.reshape(-1, kernel.shape[-1])


def _captured(
    apply_fn: Callable, params: PyTree, inputs: jax.Array, prunable: PyTree | None
) -> tuple[list[tuple[str, Any]], dict[str, LayerIO], list[bool]]:
    flags = jax.tree.leaves(resolve_prunable(params, prunable), is_leaf=is_none)
    leaves = leaves_with_paths(params)
    layers = capture_layers(apply_fn, params, inputs)
    wanted = [k for (k, w), f in zip(leaves, flags, strict=True) if f and w is not None]
    if wanted and not any(k in layers for k in wanted):
        raise ValueError(
            f"apply_fn ran no nn.Dense / nn.Conv / nnx.Linear / nnx.Conv layer on a prunable leaf of params "
            f"(prunable: {wanted[:4]}; layers called: {list(layers)[:4]}): pass the params the model runs "
            "on (linen: the 'params' collection; NNX: nnx.state(model, nnx.Param) with "
            "apply_fn=lambda p, x: nnx.merge(graphdef, p, rest)(x), or the NNX model itself as apply_fn)"
        )
    return leaves, layers, flags


def make_sensitivity_fn(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    *,
    patch_reduce: str = "max",
    prunable: PyTree | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> Callable[[PyTree, jax.Array], PyTree]:
    """A jitted ``fn(params, inputs) -> sensitivities`` (see :func:`sensitivity`);
    reuse it to avoid recompiling across calls with the same shapes.

    ``fn`` checks its arguments like :func:`sensitivity`: called on concrete
    arrays it raises ``ValueError`` for NaN/inf ``inputs`` or ``params`` and
    for NaN results (a forward pass that overflows); called inside an outer
    ``jit`` (traced arrays) it cannot raise, and every prunable layer whose
    kernel, input or output activations are not finite gets all-NaN
    sensitivities instead (which :func:`jaxprune.sipp.prune` refuses).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import flax.linen as nn, jax
    >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
    >>> x = jax.random.normal(jax.random.key(0), (32, 5))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> f = lambda p, x: model.apply({"params": p}, x)
    >>> fn = jp.sipp.make_sensitivity_fn(f)          # jitted once, reused for every call
    >>> a, b = fn(params, x), jp.sipp.sensitivity(f, params, x)
    >>> bool(jnp.array_equal(a["layers_2"]["kernel"], b["layers_2"]["kernel"]))
    True
    """
    check_choice("patch_reduce", patch_reduce, PATCH_REDUCES)
    check_finite_number("memory_budget_bytes", memory_budget_bytes, low=1)
    budget = int(memory_budget_bytes)

    def run(params: PyTree, inputs: jax.Array) -> PyTree:
        leaves, layers, flags = _captured(apply_fn, params, inputs, prunable)
        out = []
        for (path, w), flag in zip(leaves, flags, strict=True):
            layer = layers.get(path)
            if not flag or layer is None or w is None:
                out.append(None)
                continue
            patch_fn, n_patches = _layer_patches(layer, w)
            w2 = _flat_kernel(w)
            s2 = layer_sensitivity(
                patch_fn, n_patches, layer.inputs, w2, patch_reduce=patch_reduce, memory_budget_bytes=budget
            )
            finite = _all_finite(layer.inputs, layer.outputs, w)  # else a ratio could read as a plausible 0
            out.append(jnp.where(finite, s2, jnp.nan).reshape(w.shape))
        treedef = jax.tree.structure(params, is_leaf=is_none)
        return jax.tree.unflatten(treedef, out)

    jitted = jax.jit(run)

    def fn(params: PyTree, inputs: jax.Array) -> PyTree:
        _check_sample(params, inputs)
        sens = jitted(params, inputs)
        _raise_on_nan(sens, "sensitivities")
        return sens

    return fn


def _all_finite(*arrays: jax.Array) -> jax.Array:
    ok = jnp.bool_(True)
    for a in arrays:
        ok &= jnp.all(jnp.isfinite(a))
    return ok


def _check_sample(params: PyTree, inputs: Any) -> None:
    """``inputs`` has a non-empty batch axis; concrete ``inputs``/``params`` are finite."""
    shape = jnp.shape(inputs)
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"inputs must have shape (|S|, ...) with |S| >= 1, got shape {shape}")
    check_array_range("inputs", inputs)  # finiteness, reduced on device
    check_array_range("params", params)


def _raise_on_nan(tree: PyTree, what: str) -> None:
    """Concrete results only: name the layers whose values are NaN."""
    leaves = [(k, v) for k, v in leaves_with_paths(tree) if v is not None]
    if not leaves or not all(is_concrete(v) for _, v in leaves):
        return
    flags = jax.device_get([jnp.any(jnp.isnan(v)) for _, v in leaves])
    bad = [k for (k, _), f in zip(leaves, flags, strict=True) if f]
    if bad:
        raise ValueError(
            f"{what} of {bad} are NaN: the activations entering or leaving these layers are not finite "
            "(the forward pass overflows float32 on these inputs)"
        )


def sensitivity(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    inputs: jax.Array,
    *,
    patch_reduce: str = "max",
    prunable: PyTree | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> PyTree:
    """Empirical sensitivity ``s_j in [0, 1]`` of every weight (module docstring).

    Args:
      apply_fn: ``apply_fn(params, x)`` runs a linen model (e.g.
        ``lambda p, x: model.apply({"params": p, "batch_stats": bs}, x, train=False)``)
        or an NNX model (``lambda p, x: nnx.merge(graphdef, p, rest)(x)`` with
        ``graphdef, p, rest = nnx.split(model, nnx.Param, ...)``; or the NNX
        model itself); see :func:`jaxprune.capture.capture_layers`.
      params: the ``"params"`` collection (linen) or the ``nnx.Param`` state
        (NNX) the model runs on.
      inputs: the sample S, shape ``(|S|, ...)`` (see :func:`sample_size`).
      patch_reduce: ``"max"`` (Def. 1, default) or ``"mean"`` over patches.
      prunable: which leaves to score (default :func:`jaxprune.tree.prunable`).
      memory_budget_bytes: bound on the largest chunk intermediate (bytes).

    Returns:
      A pytree like ``params``: float32 sensitivities of each weight's shape on
      prunable leaves that are the kernel of a ``nn.Dense`` / ``nn.Conv`` /
      ``nnx.Linear`` / ``nnx.Conv`` layer the model calls, ``None`` on every
      other leaf.

    Raises ``ValueError`` for an empty sample, NaN/inf ``inputs`` or ``params``,
    a forward pass that calls no such layer on any prunable leaf,
    and a forward pass whose activations overflow (naming the layers). Under
    an outer ``jit`` these cannot be detected: the affected layers' sensitivities
    are NaN (never a plausible value), and :func:`jaxprune.sipp.prune` refuses them.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import flax.linen as nn, jax
    >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
    >>> x = jax.random.normal(jax.random.key(0), (32, 5))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> f = lambda p, x: model.apply({"params": p}, x)
    >>> s = jp.sipp.sensitivity(f, params, x)
    >>> jax.tree.map(jnp.shape, s)                        # one score per weight of each kernel
    {'layers_0': {'bias': None, 'kernel': (5, 8)}, 'layers_2': {'bias': None, 'kernel': (8, 3)}}
    >>> bool(jnp.all((s["layers_0"]["kernel"] >= 0) & (s["layers_0"]["kernel"] <= 1)))
    True
    """
    fn = make_sensitivity_fn(
        apply_fn, patch_reduce=patch_reduce, prunable=prunable, memory_budget_bytes=memory_budget_bytes
    )
    return fn(params, inputs)


def layer_stats(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    inputs: jax.Array,
    *,
    prunable: PyTree | None = None,
) -> dict[str, dict[str, float]]:
    """Per prunable layer (keyed by kernel path, in call order): ``delta`` (sign
    complexity, Def. 4), ``kappa`` (condition number, Def. 5) and
    ``output_size`` (scalars of Z per example: ``eta^l``).

    ``delta = max_x (|Z++| + |Z+-| + |Z-+| + |Z--|) / |Z|`` with the quadrants
    ``Z^{tr} = W^t * A^r`` (no bias; |.| the l2 norm over all outputs of the
    layer; a point with ``|Z| = 0`` counts 0). ``kappa = max_x
    prod_{later layers k} |W^k|_F * |Z(x)| / |f(x)|`` where the later layers are
    the captured ones in call order and ``f(x)`` the last captured layer's
    output: an upper bound in the paper's sense for chain networks only.
    One jitted pass; returns Python floats. An empty sample, NaN/inf
    ``inputs``/``params`` or overflowing activations raise ``ValueError``.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import flax.linen as nn, jax
    >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
    >>> x = jax.random.normal(jax.random.key(0), (32, 5))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> f = lambda p, x: model.apply({"params": p}, x)
    >>> stats = jp.sipp.layer_stats(f, params, x)
    >>> list(stats), sorted(stats["layers_0/kernel"])
    (['layers_0/kernel', 'layers_2/kernel'], ['delta', 'kappa', 'output_size'])
    >>> stats["layers_0/kernel"]["output_size"]
    8
    """
    _check_sample(params, inputs)

    meta: dict[str, list] = {}  # static per-layer facts, filled while tracing

    def run(p: PyTree, x: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
        leaves, layers, flags = _captured(apply_fn, p, x, prunable)
        by_path = dict(leaves)
        flag_of = dict(zip([k for k, _ in leaves], flags, strict=True))
        order = [k for k in layers if flag_of.get(k, False)]
        deltas, znorms, sizes = [], [], []
        for k in order:
            layer, w = layers[k], by_path[k]
            patch_fn, _ = _layer_patches(layer, w)
            a = patch_fn(layer.inputs.astype(jnp.float32))
            w2 = _flat_kernel(w).astype(jnp.float32)
            w_both = jnp.concatenate([jnp.maximum(w2, 0), jnp.maximum(-w2, 0)], axis=-1)
            c = w2.shape[-1]
            hi = jax.lax.Precision.HIGHEST
            d_pos = jnp.matmul(jnp.maximum(a, 0), w_both, precision=hi)
            d_neg = jnp.matmul(jnp.maximum(-a, 0), w_both, precision=hi)
            quads = (d_pos[..., :c], d_pos[..., c:], d_neg[..., :c], d_neg[..., c:])
            z = quads[0] - quads[1] - quads[2] + quads[3]
            norm = lambda t: jnp.sqrt(jnp.sum(t * t, axis=(1, 2)))
            num = sum(norm(q) for q in quads)
            zn = norm(z)
            deltas.append(jnp.max(jnp.where(zn > 0, num / jnp.where(zn > 0, zn, 1.0), 0.0)))
            znorms.append(zn)
            sizes.append(int(z.shape[1] * z.shape[2]))
        fro = [jnp.sqrt(jnp.sum(jnp.square(by_path[k].astype(jnp.float32)))) for k in order]
        out_norm = znorms[-1] if znorms else None
        kappas = []
        for i in range(len(order)):
            lip = math.prod(fro[i + 1 :]) if i + 1 < len(fro) else 1.0
            ratio = jnp.where(out_norm > 0, znorms[i] / jnp.where(out_norm > 0, out_norm, 1.0), 0.0)
            kappas.append(jnp.max(lip * ratio))
        meta.update(order=order, sizes=sizes)
        return deltas, kappas

    deltas, kappas = jax.device_get(jax.jit(run)(params, inputs))
    order, sizes = meta["order"], meta["sizes"]
    bad = [k for k, d, kp in zip(order, deltas, kappas, strict=True) if not np.isfinite([d, kp]).all()]
    if bad:
        raise ValueError(
            f"delta/kappa of {bad} are not finite: the activations of these layers overflow float32 "
            "on these inputs"
        )
    return {
        k: {"delta": float(d), "kappa": float(kp), "output_size": int(n)}
        for k, d, kp, n in zip(order, deltas, kappas, sizes, strict=True)
    }
