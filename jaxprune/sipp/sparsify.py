"""SiPP sparsification (Algorithms 3 and 4): Det (= SiPPSimple, global top-B
by sensitivity), Rand (importance sampling with OptAlloc budgets and unbiased
reweighting) and Hybrid (per group, the variant with the smaller bound).

Per group (layer, sign side t, unit i) with budget ``m`` (from OptAlloc),
sensitivities ``s_j`` of its weights and ``S = sum_j s_j``:

- Rand: ``q_j = s_j / S``; ``N`` solves ``sum_j 1 - (1 - q_j)^N = m`` (expected
  number of unique draws, bisection) and is rounded to the nearest integer;
  ``n ~ Multinomial(N, q)``; ``w^_j = n_j / (N q_j) * w_j`` (unbiased:
  ``E[w^_j] = w_j``). Bound ``eps_rand`` of Lemma 7 at that N. If
  ``m >= nnz`` the group is kept as is; if ``m`` reaches the number of weights
  with ``s_j > 0`` those are kept unchanged (what infinitely many draws give)
  and the ``s_j = 0`` ones dropped; both with bound 0.
- Det within a group (Hybrid): keep the top-``m`` sensitivities (ties: lower
  index), bound ``eps_det = C * sum of the pruned s_j`` (Lemma 6).
- Hybrid: Det unless ``eps_det > eps_rand(m)``, the Lemma 7 bound at ``N = m``:
  both bounds are compared at the group's budget ``m`` (METHODS.md section 4,
  the same evaluation OptAlloc uses), not at the number of draws ``N >= m``
  that Rand then makes. (Algorithm 3 of the paper writes the bound at the
  expected ``N(m)``, which favours Rand; METHODS.md settles on ``m``.) The
  reported bound of a group is that of the variant used: ``eps_det`` for Det,
  Lemma 7 at the realized draws for Rand.

The report gives, per layer, the kept count, density, ``eps`` = the largest
per-group bound of the layer (``eps^l`` of Lemma 11) and, with ``stats`` from
:func:`jaxprune.sipp.layer_stats`, ``delta``, ``kappa`` and ``eps * delta``
(Lemma 11), plus the network bound ``sum_l kappa^l delta^l eps^l`` (Thm. 13).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import _validate
from jaxprune import masks as jp_masks
from jaxprune._validate import check_choice, check_finite_number, check_number
from jaxprune.sipp.optalloc import (
    _allocate_tree,
    _group_stats,
    check_sensitivities,
    eps_rand,
    log_term,
    sign_sides,
)
from jaxprune.tree import apply_mask, check_same_structure, is_none, neuron_view, path_str

PyTree = Any
VARIANTS = ("det", "rand", "hybrid")
_ITERS = 64
_MAX_DRAWS = 1e9


def draws_for_unique(q: jax.Array, m: jax.Array) -> jax.Array:
    """Real ``N >= m`` with ``sum_j 1 - (1 - q_j)^N = m`` for every group.

    ``q``: ``(..., F)`` probabilities (rows sum to 1 or are all 0); ``m``:
    ``(...)`` targets, which must be below the number of ``q_j > 0`` (else the
    result saturates at 1e9). Bisection on ``log N``.

    ``q`` must be finite in ``[0, 1]`` and ``m`` finite ``>= 0`` with shape
    ``q.shape[:-1]``: ``ValueError`` when concrete; under ``jit`` a group with
    a NaN/inf/out-of-range entry gets NaN.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> n = jp.sipp.draws_for_unique(jnp.full(4, 0.25), jnp.array(2.0))   # 4 (1 - 0.75^N) = 2
    >>> round(float(n), 3)                                                # ln(1/2) / ln(3/4)
    2.409
    """
    q, m = jnp.asarray(q), jnp.asarray(m)
    if q.ndim < 1 or m.shape != q.shape[:-1]:
        raise ValueError(f"m must have shape q.shape[:-1] = {q.shape[:-1]}, got {m.shape} (q: {q.shape})")
    _validate.check_array_range("q", q, low=0.0, high=1.0)
    _validate.check_array_range("m", m, low=0.0)
    ok = jnp.all(jnp.isfinite(q) & (q >= 0) & (q <= 1), axis=-1) & jnp.isfinite(m) & (m >= 0)
    log1mq = jnp.log1p(-jnp.clip(q, 0.0, 1.0 - 1e-7))
    target = m.astype(jnp.float32)

    def unique(n: jax.Array) -> jax.Array:
        return jnp.sum(-jnp.expm1(n[..., None] * log1mq), axis=-1)

    lo0 = jnp.log(jnp.maximum(target, 1.0))
    hi0 = jnp.full_like(lo0, np.log(_MAX_DRAWS))

    def body(_, b):
        lo, hi = b
        mid = 0.5 * (lo + hi)
        short = unique(jnp.exp(mid)) < target
        return jnp.where(short, mid, lo), jnp.where(short, hi, mid)

    _, hi = jax.lax.fori_loop(0, _ITERS, body, (lo0, hi0))
    return jnp.where(ok, jnp.exp(hi), jnp.nan)


def _leaf_groups(s: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sides (2, F, c) bool, s per side (2, F, c), 0 outside the side)."""
    sides = sign_sides(w)
    return sides, jnp.where(sides, neuron_view(s).astype(jnp.float32)[None], 0.0)


def _rand_leaf(key, s, w, m, c, log_factor):
    """Rand on one leaf: (w_hat, keep mask, per-group eps (2, units))."""
    sides, s3 = _leaf_groups(s, w)
    nnz = jnp.sum(sides, axis=1)
    support = jnp.sum(s3 > 0, axis=1)
    total = jnp.sum(s3, axis=1)
    q = jnp.where(total[:, None, :] > 0, s3 / jnp.where(total > 0, total, 1.0)[:, None, :], 0.0)
    q_gc = jnp.moveaxis(q, 1, -1)  # (2, c, F)
    sample = m < support
    n_real = draws_for_unique(q_gc, jnp.where(sample, m, 1))
    n_int = jnp.maximum(jnp.round(n_real), 1.0)
    counts = jax.random.multinomial(key, jnp.where(sample, n_int, 0.0), q_gc)  # (2, c, F)
    counts = jnp.moveaxis(counts, -1, 1)  # (2, F, c)
    scale = jnp.where(q > 0, counts / (n_int[:, None, :] * jnp.where(q > 0, q, 1.0)), 0.0)
    keep_all = (m >= nnz)[:, None, :]
    factor = jnp.where(keep_all, 1.0, jnp.where(sample[:, None, :], scale, (s3 > 0).astype(jnp.float32)))
    factor = jnp.sum(jnp.where(sides, factor, 0.0), axis=0)  # (F, c): each weight is in one side
    eps = jnp.where(sample, eps_rand(total, n_int, c=c, log_factor=log_factor), 0.0)
    w2 = neuron_view(w)
    w_hat = (w2 * factor.astype(w2.dtype)).reshape(w.shape)
    keep = (factor > 0).reshape(w.shape)
    return w_hat, keep, eps


def _topm_leaf(s, w, m):
    """Per-group top-m: keep mask (2, F, c) and the kept sensitivity sums (2, c)."""
    sides, s3 = _leaf_groups(s, w)
    ranked = jnp.where(sides, s3, -1.0)
    order = jnp.argsort(-ranked, axis=1, stable=True)
    ranks = (
        jnp.zeros_like(order)
        .at[jnp.arange(2)[:, None, None], order, jnp.arange(order.shape[2])[None, None, :]]
        .set(jnp.arange(order.shape[1])[None, :, None])
    )
    keep = sides & (ranks < m[:, None, :])
    return keep, jnp.sum(jnp.where(keep, s3, 0.0), axis=1)


def _hybrid_leaf(key, s, w, m, c, log_factor):
    """Hybrid on one leaf: (w_hat, keep mask, per-group eps of the variant used,
    groups that use Det, groups actually pruned), each per group ``(2, units)``."""
    w_hat_r, keep_r, eps_r = _rand_leaf(key, s, w, m, c, log_factor)
    keep_d3, kept_sum = _topm_leaf(s, w, m)
    sides, s3 = _leaf_groups(s, w)
    total = jnp.sum(s3, axis=1)
    eps_d = c * jnp.maximum(total - kept_sum, 0.0)
    # the choice compares the bounds at the budget m (METHODS.md section 4), not at the draws N >= m;
    # a group Rand would not sample (m reaches its support) has bound 0, as Det's then is
    sampled = m < jnp.sum(s3 > 0, axis=1)
    eps_r_budget = jnp.where(sampled, eps_rand(total, m, c=c, log_factor=log_factor), 0.0)
    use_det = eps_d <= eps_r_budget  # (2, c)
    det_w = jnp.any(sides & use_det[:, None, :], axis=0).reshape(w.shape)  # weights whose group uses Det
    keep_d = jnp.any(keep_d3, axis=0).reshape(w.shape)
    keep = jnp.where(det_w, keep_d, keep_r)
    w_hat = jnp.where(det_w, jnp.where(keep_d, w, 0), w_hat_r)
    nontrivial = jnp.sum(sides, axis=1) > m  # groups that are actually pruned
    return w_hat, keep, jnp.where(use_det, eps_d, eps_r), use_det & nontrivial, nontrivial


def _det_eps(s, w, keep, c):
    """Lemma 6 bound per group for a given keep mask: C * pruned sensitivity."""
    sides, s3 = _leaf_groups(s, w)
    pruned = sides & ~neuron_view(keep)[None]
    return c * jnp.sum(jnp.where(pruned, s3, 0.0), axis=1)


def prune(
    params: PyTree,
    sensitivities: PyTree,
    density: float,
    *,
    variant: str = "det",
    key: jax.Array | None = None,
    c: float = 3.0,
    delta: float = 1e-16,
    eta: float | None = None,
    stats: dict[str, dict[str, float]] | None = None,
) -> tuple[PyTree, PyTree, dict[str, Any]]:
    """Prune to ``density`` of the prunable weights with a SiPP variant.

    Args:
      params: the weights.
      sensitivities: from :func:`jaxprune.sipp.sensitivity`; its non-``None``
        leaves are the prunable set (budget ``B = round(density * n)``, n their
        total size).
      density: fraction kept, in ``(0, 1]``.
      variant: ``"det"`` (SiPPSimple: global top-B, no reweighting),
        ``"rand"`` or ``"hybrid"`` (OptAlloc budgets per group).
      key: PRNG key, required for ``"rand"`` and ``"hybrid"``.
      c: the constant C of Lemmas 6-7 (3).
      delta: the failure probability delta of Lemmas 6-7 (1e-16).
      eta: total output patches of the network for Lemma 7's log term; default
        from ``stats`` (sum of ``output_size``), else the total number of
        output units of the prunable leaves (exact for dense nets).
      stats: optional :func:`jaxprune.sipp.layer_stats` output for Delta,
        kappa and the network bound.

    Returns:
      ``(new_params, mask, report)``: params with pruned weights 0 (Rand:
      kept weights reweighted), the mask (``None`` on non-prunable leaves), and
      a host-side report ``{"budget", "kept", "density", "error_bound",
      "layers": {path: {"kept", "size", "density", "eps", ...}}}``.

    Raises ``ValueError`` for sensitivities that are NaN/inf or negative (e.g.
    the NaN that :func:`jaxprune.sipp.sensitivity` returns under ``jit`` for
    non-finite inputs), NaN/inf params, non-finite ``stats`` values, and
    out-of-range or non-finite ``density``, ``c``, ``delta``, ``eta``.
    ``prune`` runs on the host (its report is Python numbers): it is not
    jittable, so these checks always run.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> params = {"kernel": jnp.array([[1.0, -2.0], [-3.0, 4.0], [0.5, 5.0]]), "bias": jnp.zeros(2)}
    >>> s = {"kernel": jnp.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]), "bias": None}   # sensitivities
    >>> new_params, mask, report = jp.sipp.prune(params, s, 0.5)      # SiPP-Det: the 3 most sensitive
    >>> mask["kernel"].astype(int).tolist(), mask["bias"]
    ([[0, 0], [0, 1], [1, 1]], None)
    >>> new_params["kernel"].tolist()
    [[0.0, 0.0], [0.0, 4.0], [0.5, 5.0]]
    >>> report["budget"], report["kept"], report["density"]
    (3, 3, 0.5)
    """
    check_choice("variant", variant, VARIANTS)
    check_number("density", density, low=0.0, high=1.0, low_open=True)
    check_finite_number("c", c, low=0.0, low_open=True)
    if variant != "det" and key is None:
        raise ValueError(f"variant={variant!r} samples weights: pass key=jax.random.key(...) (got key=None)")
    check_same_structure(params, sensitivities, "params", "sensitivities")
    check_sensitivities(sensitivities, params)
    _check_stats(stats)
    flags = jax.tree.map(lambda s: s is not None, sensitivities, is_leaf=is_none)
    flat_s = jax.tree.leaves(sensitivities, is_leaf=is_none)
    flat_w = jax.tree.leaves(params, is_leaf=is_none)
    paths = [path_str(p) for p, _ in jax.tree.leaves_with_path(params, is_leaf=is_none)]
    live = [i for i, s in enumerate(flat_s) if s is not None]
    n_total = sum(int(np.prod(jnp.shape(flat_s[i]))) for i in live)
    budget = round(density * n_total)
    if eta is None:
        eta = (
            sum(v["output_size"] for v in stats.values())
            if stats
            else sum(int(jnp.shape(flat_s[i])[-1]) for i in live)
        )
    factor = log_term(eta, delta)

    treedef = jax.tree.structure(params, is_leaf=is_none)
    new_w, keep, eps, det_used, pruned_groups = list(flat_w), [None] * len(flat_w), {}, {}, {}
    if variant == "det":
        mask = jp_masks.topk(sensitivities, 1.0 - density, scope="global", prunable=flags)
        flat_m = jax.tree.leaves(mask, is_leaf=is_none)
        det_eps = _det_jit([flat_s[i] for i in live], [flat_w[i] for i in live], [flat_m[i] for i in live], c)
        for i, e in zip(live, det_eps, strict=True):
            keep[i], eps[i] = flat_m[i], e
    else:
        sums, sizes = _group_stats(sensitivities, params)
        _, m_tree = _allocate_tree(sums, sizes, budget, c=c, log_factor=factor)
        flat_alloc = jax.tree.leaves(m_tree, is_leaf=is_none)
        keys = jax.random.split(key, len(flat_w))
        pick = lambda xs: [xs[i] for i in live]
        outs = _sample_jit(variant, pick(keys), pick(flat_s), pick(flat_w), pick(flat_alloc), c, factor)
        for i, out in zip(live, outs, strict=True):
            if variant == "rand":
                new_w[i], keep[i], eps[i] = out
            else:
                new_w[i], keep[i], eps[i], det_used[i], pruned_groups[i] = out
    mask = jax.tree.unflatten(treedef, keep)
    new_params = jax.tree.unflatten(treedef, new_w) if variant != "det" else apply_mask(params, mask)
    report = _report(paths, live, keep, eps, det_used, pruned_groups, budget, n_total, stats)
    return new_params, mask, report


def _check_stats(stats: dict[str, dict[str, float]] | None) -> None:
    """``layer_stats`` output: finite numbers, ``output_size`` an int >= 1."""
    for path, entry in (stats or {}).items():
        for name in ("delta", "kappa"):
            if name in entry:
                check_finite_number(f"stats[{path!r}][{name!r}]", entry[name], low=0.0)
        if "output_size" in entry:
            _validate.check_int(f"stats[{path!r}]['output_size']", entry["output_size"], low=1)


def _sample_leaves(variant, keys, s, w, m, c, log_factor):
    """Rand or Hybrid on every prunable leaf (lists), traced as one program."""
    leaf = _rand_leaf if variant == "rand" else _hybrid_leaf
    return [leaf(*args, c, log_factor) for args in zip(keys, s, w, m, strict=True)]


def _det_eps_leaves(s, w, keep, c):
    """:func:`_det_eps` on every prunable leaf (lists), traced as one program."""
    return [_det_eps(*args, c) for args in zip(s, w, keep, strict=True)]


# one compilation per (variant, leaf shapes) instead of one per leaf
_sample_jit = jax.jit(_sample_leaves, static_argnums=(0, 5, 6))
_det_jit = jax.jit(_det_eps_leaves, static_argnums=(3,))


def _report(paths, live, keep, eps, det_used, pruned_groups, budget, n_total, stats) -> dict[str, Any]:
    host = jax.device_get(
        {
            "kept": {i: jnp.sum(keep[i]) for i in live},
            "eps": {i: jnp.max(eps[i]) for i in live},
            "det": {i: (jnp.sum(det_used[i]), jnp.sum(pruned_groups[i])) for i in det_used},
        }
    )
    layers: dict[str, dict[str, Any]] = {}
    kept_total, bound = 0, 0.0
    for i in live:
        size = int(np.prod(keep[i].shape))
        kept = int(host["kept"][i])
        kept_total += kept
        entry: dict[str, Any] = {
            "kept": kept,
            "size": size,
            "density": kept / size,
            "eps": float(host["eps"][i]),
        }
        if i in host["det"]:
            used, total = host["det"][i]
            entry["det_fraction"] = float(used) / float(total) if total else 1.0
        if stats is not None and paths[i] in stats:
            st = stats[paths[i]]
            entry.update(delta=st["delta"], kappa=st["kappa"], eps_delta=entry["eps"] * st["delta"])
            bound += st["kappa"] * st["delta"] * entry["eps"]
        layers[paths[i]] = entry
    has_all = stats is not None and all(paths[i] in stats for i in live)
    return {
        "budget": budget,
        "kept": kept_total,
        "density": kept_total / n_total if n_total else 1.0,
        "error_bound": bound if has_all else None,
        "layers": layers,
    }
