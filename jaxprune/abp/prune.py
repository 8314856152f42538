"""Adaptive backward pruning (ABP, Yang et al., Algorithm 1) of the dense layers
of a flax linen model, with the ABP-M / ABP-L / magnitude sparsifiers.

Every neuron's incoming weight vector ``kernel[:, j]`` is replaced by a sparse
approximation of the neuron's pre-activation on ``inputs``:

- ``"M"`` (Algorithm 2): keep the ``m`` largest ``|w|`` with ``m`` from the
  sparsity index (:func:`jaxprune.measures.abp_retained`), refit those
  weights and the bias by least squares;
- ``"L"`` (Algorithm 3): LASSO on all inputs with penalty ``lam``; its zeros
  are the mask;
- ``"mag"``: drop the fraction ``p`` of each neuron's smallest ``|w|``, no refit.

Layers go from the output layer back to the first. Following the paper, the
regression data of layer k are the ORIGINAL network's activations entering it
(X) and its original pre-activations (y): the layers below k are untouched
when k is pruned. So one pass over ``inputs`` (batched) collects the Gram
statistics of every layer, and each layer's solve is independent of N.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune._validate import (
    check_array_range,
    check_choice,
    check_finite,
    check_finite_number,
    check_int,
    check_number,
)
from jaxprune.abp import solvers
from jaxprune.capture import capture_layers
from jaxprune.measures import abp_retained
from jaxprune.tree import is_none, path_str, resolve_prunable

PyTree = Any
METHODS = ("M", "L", "mag")


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One pruned dense layer.

    path: kernel path (``"Dense_0/kernel"``). kept: (out,) int, nonzero
    incoming weights kept per neuron (ABP-M: the ``m`` of Algorithm 2).
    size: kernel entries M. compression_ratio: M / sum(kept).
    pruning_ratio: 1 - sum(kept) / M.
    """

    path: str
    kept: np.ndarray
    size: int
    compression_ratio: float
    pruning_ratio: float


@dataclasses.dataclass(frozen=True)
class PruneReport:
    """Whole-network figures over the pruned kernels, plus each layer's
    :class:`LayerReport` (ordered input to output). ``lasso``: per layer
    :class:`~jaxprune.abp.solvers.LassoInfo` for method ``"L"`` (else empty)."""

    layers: dict[str, LayerReport]
    kept: int
    size: int
    compression_ratio: float
    pruning_ratio: float
    lasso: dict[str, solvers.LassoInfo]


def keep_largest(w: jax.Array, count: jax.Array) -> jax.Array:
    """Per column of ``w`` (d, o), True at the ``count[j]`` largest ``|w[:, j]|``
    (exact count; ties broken by lower index). ``count``: (o,) ints.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> w = jnp.array([[3.0, -1.0], [-2.0, 5.0], [1.0, 0.0]])     # (d, o): one column per neuron
    >>> jp.abp.keep_largest(w, jnp.array([1, 2])).astype(int).tolist()
    [[1, 1], [0, 1], [0, 0]]
    """
    if jnp.ndim(w) != 2 or jnp.shape(count) != (jnp.shape(w)[1],):
        raise ValueError(f"keep_largest needs w of shape (d, o) and count of shape (o,), got w of shape "
                         f"{jnp.shape(w)} and count of shape {jnp.shape(count)}")
    order = jnp.argsort(-jnp.abs(w), axis=0, stable=True)  # one sort per column: counts vary per column
    ranks = jnp.zeros_like(order).at[order, jnp.arange(w.shape[1])[None, :]].set(
        jnp.arange(w.shape[0])[:, None]
    )
    return ranks < count[None, :]


@jax.jit
def _magnitude(w: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mag: (support, w with the rest zeroed), ``keep[j]`` largest per column."""
    support = keep_largest(w, keep)
    return support, jnp.where(support, w, 0.0)


@jax.jit
def _refit_largest(
    stats: solvers.GramStats, w: jax.Array, keep: jax.Array, ridge: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """ABP-M for one layer: (support, refit w (d, o), refit bias (o,))."""
    support = keep_largest(w, keep)
    new_w, new_b = solvers._masked_lstsq(stats, support, ridge, w)  # ridge towards the original weights
    return support, new_w, new_b


def prune(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    inputs: jax.Array,
    *,
    method: str = "M",
    q: float = 0.5,
    eta: float = 0.0,
    lam: float = 1e-4,
    p: float = 0.5,
    batch_size: int | None = None,
    prunable: PyTree | None = None,
    ridge: float = 1e-6,
    tol: float = 1e-6,
    max_iter: int = 5000,
    stats: dict[str, solvers.GramStats] | None = None,
) -> tuple[PyTree, PyTree, PruneReport]:
    """One-shot ABP of every prunable dense kernel, output layer first.

    Args:
      apply_fn: ``apply_fn(params, x)`` runs the model: linen, e.g.
        ``lambda p, x: model.apply({"params": p}, x)``; NNX (``nnx.Linear``
        layers), ``lambda p, x: nnx.merge(graphdef, p, rest)(x)`` with
        ``graphdef, params, rest = nnx.split(model, nnx.Param, ...)``.
      params: the model's ``"params"`` collection (NNX: the ``nnx.State`` of
        its ``nnx.Param`` variables).
      inputs: (N, ...) training inputs the refits are fitted on.
      method: ``"M"`` (ABP-M), ``"L"`` (ABP-L) or ``"mag"`` (fixed fraction).
      q: sparsity-index exponent in (0, 1) (``"M"``).
      eta: tolerance >= 0 (``"M"``; larger prunes more).
      lam: LASSO penalty >= 0 (``"L"``), scikit-learn's ``alpha``.
      p: fraction of each neuron's weights pruned, in [0, 1) (``"mag"``);
        ``floor(p * d)`` of the d incoming weights are dropped.
      batch_size: rows of ``inputs`` per statistics pass (None: all at once).
      prunable: which leaves to prune (see :func:`jaxprune.tree.prunable`);
        default: every ndim >= 2 leaf. Each must be a dense kernel.
      ridge: relative ridge of the least-squares refit (``"M"``).
      tol: FISTA's duality-gap tolerance (``"L"``).
      max_iter: FISTA's iteration cap (``"L"``).
      stats: precomputed :func:`layer_stats` of these ``params`` on ``inputs``
        (reuse them to prune one network several ways; ``inputs`` is then only
        used to check shapes). Ignored by ``"mag"``.

    Degenerate data (all-zero or constant inputs, a single sample, an all-zero
    kernel, dead ReLUs) give finite weights: an input that is constant on the
    data cannot be identified by a refit, so ABP-M keeps its original weight
    when it is among the kept ones and ABP-L sets it to 0 (``lam > 0``); the
    refit bias absorbs the constant (:func:`~jaxprune.abp.solvers.masked_lstsq`,
    :func:`~jaxprune.abp.solvers.lasso_fista`). Non-finite ``inputs``, ``params``
    or ``stats``, and activations that overflow float32 statistics, raise
    ``ValueError`` naming the argument or the layer.

    Returns:
      ``(new_params, mask, report)``: refitted kernels and biases; mask with
      bool leaves on pruned kernels and ``None`` elsewhere; a :class:`PruneReport`.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import flax.linen as nn, jax
    >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
    >>> x = jax.random.normal(jax.random.key(0), (64, 5))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> f = lambda p, x: model.apply({"params": p}, x)
    >>> new_params, mask, report = jp.abp.prune(f, params, x, method="mag", p=0.5)   # floor(d/2) per neuron
    >>> {path: layer.kept.tolist() for path, layer in report.layers.items()}
    {'layers_0/kernel': [3, 3, 3, 3, 3, 3, 3, 3], 'layers_2/kernel': [4, 4]}
    >>> new_params, mask, report = jp.abp.prune(f, params, x, method="M")   # ABP-M: m from the sparsity index
    >>> list(report.layers), mask["layers_0"]["bias"]      # input to output; biases are refit, never pruned
    (['layers_0/kernel', 'layers_2/kernel'], None)
    >>> all(1 <= k <= 5 for k in report.layers["layers_0/kernel"].kept)   # m in [1, d] per neuron
    True
    """
    check_choice("method", method, METHODS)
    check_number("q", q, low=0.0, high=1.0, low_open=True, high_open=True)
    check_finite_number("eta", eta, low=0.0)
    check_finite_number("lam", lam, low=0.0)
    check_number("p", p, low=0.0, high=1.0, high_open=True)
    check_finite_number("ridge", ridge, low=0.0)
    check_finite_number("tol", tol, low=0.0)
    check_int("max_iter", max_iter, low=1)
    check_array_range("params", params)  # finiteness, reduced on device
    modules = _dense_layers(apply_fn, params, _check_inputs(inputs, batch_size))
    targets = _target_layers(modules, params, prunable)
    if method != "mag":
        if stats is None:
            stats = _collect(apply_fn, params, jnp.asarray(inputs), targets, batch_size)
        missing = [path for path in targets if path not in stats]
        if missing:
            raise ValueError(f"stats lacks the layers {missing}; compute them with layer_stats(...)")
        _check_stats(stats, targets)
    leaves = {path_str(k): v for k, v in jax.tree.leaves_with_path(params, is_leaf=is_none)}
    replace: dict[str, jax.Array] = {}
    masks: dict[str, jax.Array] = {}
    lasso: dict[str, solvers.LassoInfo] = {}
    for path in reversed(targets):  # Algorithm 1: output layer first
        kernel = leaves[path]
        bias_path = _bias_path(path)
        use_bias = modules[path].use_bias
        w = jnp.asarray(kernel, jnp.float32)
        if method == "mag":
            d = w.shape[0]
            support, new_w = _magnitude(w, jnp.full((w.shape[1],), d - math.floor(p * d), jnp.int32))
        else:
            fit_stats = stats[path] if use_bias else solvers.without_intercept(stats[path])
            if method == "M":
                support, new_w, new_b = _refit_largest(fit_stats, w, abp_retained(w.T, q, eta), ridge)
            else:
                # arguments and stats checked above: the jitted core directly
                new_w, new_b, lasso[path] = solvers._lasso_fista(
                    fit_stats, lam, w, tol=tol, max_iter=max_iter
                )
                support = new_w != 0
            if use_bias:
                replace[bias_path] = new_b.astype(jnp.result_type(leaves[bias_path]))
        replace[path] = new_w.astype(jnp.result_type(kernel))
        masks[path] = support

    finite = jax.device_get({path: jnp.all(jnp.isfinite(v)) for path, v in replace.items()})
    bad = [path for path, ok in finite.items() if not ok]
    if bad:  # a last guard: the solvers are built never to get here
        raise ValueError(f"ABP produced non-finite weights for {bad}; the layer's data are degenerate")

    def rebuild(path: tuple, leaf: Any) -> Any:
        return replace.get(path_str(path), leaf)

    new_params = jax.tree.map_with_path(rebuild, params, is_leaf=is_none)
    mask = jax.tree.map_with_path(lambda k, _: masks.get(path_str(k)), params, is_leaf=is_none)
    return new_params, mask, _report(targets, masks, lasso)


def layer_stats(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    inputs: jax.Array,
    *,
    batch_size: int | None = None,
    prunable: PyTree | None = None,
) -> dict[str, solvers.GramStats]:
    """Gram statistics of every prunable dense layer of the ORIGINAL network on
    ``inputs`` (N, ...): X = what the layer receives, y = its pre-activation.
    Keyed by kernel path; pass them to :func:`prune` as ``stats=``. Non-finite
    ``params``/``inputs`` or overflowing activations raise ``ValueError``.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> import flax.linen as nn, jax
    >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
    >>> x = jax.random.normal(jax.random.key(0), (64, 5))
    >>> params = model.init(jax.random.key(1), x)["params"]
    >>> stats = jp.abp.layer_stats(lambda p, x: model.apply({"params": p}, x), params, x)
    >>> {path: s.sxy.shape for path, s in stats.items()}     # (inputs, neurons) per dense layer
    {'layers_0/kernel': (5, 8), 'layers_2/kernel': (8, 2)}
    """
    check_array_range("params", params)
    modules = _dense_layers(apply_fn, params, _check_inputs(inputs, batch_size))
    targets = _target_layers(modules, params, prunable)
    stats = _collect(apply_fn, params, jnp.asarray(inputs), targets, batch_size)
    _check_stats(stats, targets)
    return stats


def _check_stats(stats: dict[str, solvers.GramStats], targets: list[str]) -> None:
    """Every target layer's statistics must be finite (one host round trip)."""
    flags = jax.device_get(
        {path: jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in stats[path]])) for path in targets}
    )
    bad = [path for path, ok in flags.items() if not ok]
    if bad:
        raise ValueError(
            f"the Gram statistics of layers {bad} are not finite: the activations entering or leaving them "
            "overflow float32 (|value| >~ 1e19), or the stats passed in contain NaN/inf"
        )


def _check_inputs(inputs: Any, batch_size: int | None) -> jax.ShapeDtypeStruct:
    """Validate ``inputs`` (array with a batch axis, finite) and ``batch_size``;
    returns the shape of one example (batch axis 1)."""
    if not hasattr(inputs, "shape") or not hasattr(inputs, "dtype"):
        raise TypeError(f"inputs must be an array of shape (N, ...), got {type(inputs).__name__}")
    if inputs.ndim < 2 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must have shape (N, features...) with N >= 1, got {inputs.shape}")
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    check_finite("inputs", inputs)
    return jax.ShapeDtypeStruct((1, *inputs.shape[1:]), inputs.dtype)


# The dense layers ABP prunes: linen ``nn.Dense`` and NNX ``nnx.Linear``.
DENSE_KINDS = (nn.Dense, nnx.Linear)


def _captured(apply_fn: Callable, params: PyTree, x: jax.Array) -> dict[str, Any]:
    """:func:`~jaxprune.capture.capture_layers` of the dense layers, keyed by
    their kernel's leaf path in ``params`` (an NNX layer is captured as
    ``a/kernel``, its leaf in an ``nnx.State`` is ``a/kernel/value``)."""
    leaves = {path_str(k) for k, _ in jax.tree.leaves_with_path(params, is_leaf=is_none)}
    io = capture_layers(apply_fn, params, x, kinds=DENSE_KINDS)
    return {k if k in leaves or f"{k}/value" not in leaves else f"{k}/value": v for k, v in io.items()}


def _bias_path(kernel_path: str) -> str:
    """The bias leaf beside a kernel (``a/kernel`` -> ``a/bias``, NNX
    ``a/kernel/value`` -> ``a/bias/value``)."""
    parts = kernel_path.split("/")
    i = len(parts) - 1 - parts[::-1].index("kernel")
    return "/".join([*parts[:i], "bias", *parts[i + 1 :]])


def _dense_layers(apply_fn: Callable, params: PyTree, example: jax.ShapeDtypeStruct) -> dict[str, nn.Dense]:
    """The model's dense layers, kernel path -> module, input to output, found
    by tracing (not running) the model on one example; a model that rejects the
    inputs' shape raises ``ValueError``."""
    found: dict[str, nn.Dense] = {}

    def trace(prm: PyTree, x: jax.Array) -> int:
        found.update({k: io.module for k, io in _captured(apply_fn, prm, x).items()})
        return 0

    try:
        jax.eval_shape(trace, params, example)
    except Exception as err:  # the model's own error (flax shape mismatch, ...), re-raised with context
        raise ValueError(
            f"inputs with per-example shape {tuple(example.shape[1:])} do not fit the model: "
            f"{type(err).__name__}: {err}"
        ) from err
    return found


def _target_layers(modules: dict[str, nn.Dense], params: PyTree, prunable: PyTree | None) -> list[str]:
    """Kernel paths of the dense layers to prune, input to output; every
    prunable leaf must be one of them."""
    flags = resolve_prunable(params, prunable)
    prunable_paths = [path_str(k) for k, f in jax.tree.leaves_with_path(flags) if f]
    unknown = [path for path in prunable_paths if path not in modules]
    if unknown:
        raise ValueError(
            f"ABP prunes dense layers only; prunable leaves {unknown} are not nn.Dense / nnx.Linear kernels "
            f"(dense layers found: {list(modules)}); exclude them with prunable=jaxprune.prunable(params, "
            "exclude=...)"
        )
    return [path for path in modules if path in set(prunable_paths)]


@functools.partial(jax.jit, static_argnames=("apply_fn", "targets"))
def _batch_stats(
    apply_fn: Callable, targets: tuple[str, ...], params: PyTree, xb: jax.Array, wb: jax.Array
) -> dict[str, solvers.GramStats]:
    """Each target layer's statistics on one batch ``xb`` with row weights ``wb``.
    Compiled once per (apply_fn, layers, shapes): reuse one ``apply_fn`` object."""
    io = _captured(apply_fn, params, xb)
    out = {}
    for path in targets:
        x_in, y_out = io[path].inputs, io[path].outputs
        x_in = x_in.reshape(-1, x_in.shape[-1])  # (N, ..., in): every position is a sample
        y_out = y_out.reshape(-1, y_out.shape[-1])
        reps = x_in.shape[0] // wb.shape[0]
        out[path] = solvers.batch_stats(x_in, y_out, jnp.repeat(wb, reps))
    return out


def _collect(
    apply_fn: Callable, params: PyTree, inputs: jax.Array, targets: list[str], batch_size: int | None
) -> dict[str, solvers.GramStats]:
    """One pass of the original network over ``inputs`` in fixed-size batches
    (the last one zero-padded with weight 0, so one compilation) -> each target
    layer's :class:`~jaxprune.abp.solvers.GramStats`. Stays on device."""
    n = inputs.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    total = None
    for start in range(0, n, bs):
        xb = inputs[start : start + bs]
        wb = jnp.ones(xb.shape[0], jnp.float32)
        if xb.shape[0] < bs:
            pad = bs - xb.shape[0]
            xb = jnp.concatenate([xb, jnp.zeros((pad, *xb.shape[1:]), xb.dtype)])
            wb = jnp.concatenate([wb, jnp.zeros(pad, jnp.float32)])
        batch = _batch_stats(apply_fn, tuple(targets), params, xb, wb)
        total = batch if total is None else jax.tree.map(
            solvers.merge_stats, total, batch, is_leaf=lambda s: isinstance(s, solvers.GramStats)
        )
    return total


def _report(
    targets: list[str], masks: dict[str, jax.Array], lasso: dict[str, solvers.LassoInfo]
) -> PruneReport:
    """Host-side counts: per-neuron kept weights, per-layer and total ratios."""
    layers = {}
    for path in targets:
        kept = np.asarray(jnp.sum(masks[path], axis=0), np.int64)
        size = int(masks[path].size)
        layers[path] = LayerReport(path, kept, size, *_ratios(int(kept.sum()), size))
    kept_all = sum(int(r.kept.sum()) for r in layers.values())
    size_all = sum(r.size for r in layers.values())
    return PruneReport(layers, kept_all, size_all, *_ratios(kept_all, size_all), lasso)


def _ratios(kept: int, size: int) -> tuple[float, float]:
    """(compression ratio M/m, pruning ratio 1 - m/M); M/0 = inf."""
    compression = size / kept if kept else math.inf
    return compression, 1.0 - kept / size if size else 0.0

