"""SiPP: sensitivities vs naive numpy loops, OptAlloc vs brute force, Rand
unbiasedness, Hybrid/Det behaviour, sample size, argument errors."""

import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.sipp import sparsify as sp

EPS32 = np.finfo(np.float32).eps


# ----------------------------------------------------------------------------- references
def ref_patches_conv(x, kh, kw, stride, pad, dil):
    """Naive HWIO-ordered patches: x (N, H, W, C) -> (N, P, kh*kw*C)."""
    n, h, w, c = x.shape
    (pt, pb), (pl, pr) = pad
    xp = np.zeros((n, h + pt + pb, w + pl + pr, c))
    xp[:, pt : pt + h, pl : pl + w] = x
    ho = (h + pt + pb - dil[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + pl + pr - dil[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, ho * wo, kh * kw * c))
    for i in range(ho):
        for j in range(wo):
            win = [
                xp[:, i * stride[0] + a * dil[0], j * stride[1] + b * dil[1], :]
                for a in range(kh)
                for b in range(kw)
            ]
            out[:, i * wo + j] = np.stack(win, axis=1).reshape(n, -1)
    return out


def ref_sensitivity(patches, w2, reduce="max"):
    """Def. 1-3 by loops: patches (N, P, F), kernel (F, c) -> s (F, c)."""
    n_pts, n_p, fan_in = patches.shape
    s = np.zeros_like(w2)
    for i in range(w2.shape[1]):
        for j in range(fan_in):
            w = w2[j, i]
            if w == 0:
                continue
            wt = np.maximum(w2[:, i], 0) if w > 0 else np.maximum(-w2[:, i], 0)
            best = 0.0
            for x in range(n_pts):
                for sign in (1, -1):
                    vals = []
                    for p in range(n_p):
                        a = np.maximum(sign * patches[x, p], 0)
                        den = wt @ a
                        vals.append(abs(w) * a[j] / den if den > EPS32 else 0.0)
                    best = max(best, max(vals) if reduce == "max" else np.mean(vals))
            s[j, i] = best
    return s


class Dense2(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(4)(x))
        return nn.Dense(3)(h)


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Conv(3, (2, 3), strides=(2, 1), padding=((1, 2), (0, 1)), kernel_dilation=(1, 2))(x)
        return nn.Dense(2)(y.reshape(y.shape[0], -1))


def _init(model, x, seed=0):
    params = model.init(jax.random.key(seed), x)["params"]
    return params, (lambda p, v: model.apply({"params": p}, v))


# ----------------------------------------------------------------------------- sensitivity
def test_dense_sensitivity_matches_naive_loop():
    x = np.asarray(jax.random.normal(jax.random.key(1), (6, 5)))  # negative activations included
    model = Dense2()
    params, f = _init(model, x)
    s = jp.sipp.sensitivity(f, params, x)
    assert s["Dense_0"]["bias"] is None and s["Dense_1"]["bias"] is None
    w0, w1 = np.asarray(params["Dense_0"]["kernel"]), np.asarray(params["Dense_1"]["kernel"])
    assert (w0 < 0).any() and (w0 > 0).any()
    h = np.tanh(x @ w0 + np.asarray(params["Dense_0"]["bias"]))
    np.testing.assert_allclose(s["Dense_0"]["kernel"], ref_sensitivity(x[:, None], w0), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(s["Dense_1"]["kernel"], ref_sensitivity(h[:, None], w1), rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_conv_sensitivity_matches_naive_loop(reduce):
    x = np.asarray(jax.random.normal(jax.random.key(2), (3, 5, 6, 2)))
    params, f = _init(ConvNet(), x)
    w = np.asarray(params["Conv_0"]["kernel"])  # (2, 3, 2, 3) HWIO
    patches = ref_patches_conv(x, 2, 3, (2, 1), ((1, 2), (0, 1)), (1, 2))
    expect = ref_sensitivity(patches, w.reshape(-1, 3), reduce).reshape(w.shape)
    s = jp.sipp.sensitivity(f, params, x, patch_reduce=reduce)
    np.testing.assert_allclose(s["Conv_0"]["kernel"], expect, rtol=2e-4, atol=1e-6)
    # a tiny memory budget forces chunking over points and patches: same result
    small = jp.sipp.sensitivity(f, params, x, patch_reduce=reduce, memory_budget_bytes=4 * 18 * 3 * 4)
    np.testing.assert_allclose(small["Conv_0"]["kernel"], s["Conv_0"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(small["Dense_0"]["kernel"], s["Dense_0"]["kernel"], rtol=1e-6)


@pytest.mark.parametrize(
    "spatial, fshape, strides, padding, lhs_dil, rhs_dil",
    [
        ((7, 6), (3, 2), (2, 1), "SAME", (1, 1), (2, 1)),
        ((7, 6), (3, 3), (1, 1), "SAME", (1, 1), (1, 1)),  # CIFAR ResNet 3x3
        ((8, 8), (3, 3), (2, 2), "SAME", (1, 1), (1, 1)),  # its strided conv
        ((7, 6), (2, 3), (3, 2), "VALID", (1, 1), (1, 2)),
        ((7, 6), (2, 2), (2, 3), "SAME_LOWER", (1, 1), (1, 1)),
        ((7, 6), (3, 2), (2, 1), ((1, 2), (0, 1)), (1, 1), (1, 2)),
        ((9,), (3,), (2,), "SAME", (1,), (2,)),  # 1-D
        ((4, 5, 4), (2, 3, 2), (1, 2, 1), ((1, 0), (1, 1), (0, 1)), (1, 1, 1), (1, 1, 2)),  # 3-D
        ((5, 4), (2, 2), (1, 1), ((1, 1), (0, 1)), (2, 1), (1, 1)),  # input dilation: the conv path
    ],
)
def test_conv_patches_follow_hwio_order(spatial, fshape, strides, padding, lhs_dil, rhs_dil):
    """patches @ kernel.reshape(-1, out) must equal the convolution itself, for
    strides, every padding form, kernel and input dilation, 1-3 spatial dims."""
    x = jax.random.normal(jax.random.key(3), (2, *spatial, 3))
    k = jax.random.normal(jax.random.key(4), (*fshape, 3, 5))
    cfg = {"strides": strides, "padding": padding, "lhs_dilation": lhs_dil, "rhs_dilation": rhs_dil}
    p = jp.sipp.conv_patches(x, fshape, cfg)
    dims = "DHW"[-len(spatial):]
    conv = jax.lax.conv_general_dilated(
        x, k, strides, padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
        dimension_numbers=(f"N{dims}C", f"{dims}IO", f"N{dims}C"), precision=jax.lax.Precision.HIGHEST,
    )
    np.testing.assert_allclose(p @ k.reshape(-1, 5), conv.reshape(2, -1, 5), rtol=1e-4, atol=1e-4)


def test_eps_guard_and_dead_unit():
    """A unit whose quadrant sums vanish on every point has sensitivity 0."""
    model = nn.Dense(2)
    params = {"kernel": jnp.array([[1.0, 0.0], [2.0, 0.0]]), "bias": jnp.zeros(2)}
    x = jnp.array([[1.0, 3.0], [-1.0, 0.0]])
    s = jp.sipp.sensitivity(lambda p, v: model.apply({"params": p}, v), params, x)["kernel"]
    np.testing.assert_allclose(s[:, 1], 0.0)
    # point 1, a+: 1/7 and 6/7; point 2: a+ = 0 (guarded), a- = (1, 0) gives 1 and 0
    np.testing.assert_allclose(s[:, 0], [1.0, 6 / 7], rtol=1e-6)


def test_layer_stats_delta_matches_numpy():
    x = np.asarray(jax.random.normal(jax.random.key(5), (4, 5)))
    params, f = _init(Dense2(), x)
    w = np.asarray(params["Dense_0"]["kernel"])
    quads = [np.maximum(sa * x, 0) @ np.maximum(sw * w, 0) for sa in (1, -1) for sw in (1, -1)]
    z = x @ w
    expect = max(sum(np.linalg.norm(q[i]) for q in quads) / np.linalg.norm(z[i]) for i in range(4))
    stats = jp.sipp.layer_stats(f, params, x)
    assert list(stats) == ["Dense_0/kernel", "Dense_1/kernel"]
    np.testing.assert_allclose(stats["Dense_0/kernel"]["delta"], expect, rtol=1e-5)
    assert stats["Dense_1/kernel"]["kappa"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- sample size
def test_sample_size_lenet300():
    assert jp.sipp.sample_size([300, 100, 10]) == 152
    model = jp.train.models.get_model("lenet300", 10)
    x = jnp.zeros((1, 28, 28, 1))
    params = model.init(jax.random.key(0), x, train=False)["params"]
    sizes = jp.sipp.layer_output_sizes(lambda p, v: model.apply({"params": p}, v, train=False), params, x)
    assert sizes == [300, 100, 10]
    eta = 410
    assert jp.sipp.sample_size(sizes) == int(np.ceil(3 * np.log(8 * 300 * eta / 1e-16)))


# ----------------------------------------------------------------------------- OptAlloc
def _objective(s_sum, m, weight, factor):
    """sum_i weight_i eps_i(m_i), Lemma 7 written out in numpy; m (..., G)."""
    u = s_sum * factor / np.asarray(m, np.float64)  # C = 3: S~ = S * log_factor
    return np.sum(weight * (u + np.sqrt(u * (u + 6.0))), axis=-1)


def test_optalloc_matches_brute_force():
    s_sum = np.array([0.5, 2.0, 1.0, 4.0], np.float32)
    size = np.array([5, 8, 3, 10], np.float32)
    weight = np.array([1.0, 1.0, 0.5, 0.5], np.float32)
    budget, factor = 12, 2.0
    m_frac, m_int = jp.sipp.allocate(s_sum, size, weight, budget, log_factor=factor)
    # integral: exhaustive search over all feasible integer allocations
    combos = np.array(list(itertools.product(*[range(1, int(n) + 1) for n in size])))
    best = _objective(s_sum, combos[combos.sum(axis=1) <= budget], weight, factor).min()
    assert int(np.sum(m_int)) <= budget and np.all(m_int <= size) and np.all(m_int >= 0)
    assert _objective(s_sum, m_int, weight, factor) <= best * 1.02
    # the library's eps_rand is the same Lemma 7 formula
    u = s_sum * factor / np.asarray(m_frac, np.float64)
    got_eps = jp.sipp.eps_rand(jnp.asarray(s_sum), jnp.asarray(m_frac), log_factor=factor)
    np.testing.assert_allclose(got_eps, u + np.sqrt(u * (u + 6)), rtol=1e-5)
    # continuous: fine grid over the budget-tight simplex of the first three groups
    assert float(np.sum(m_frac)) == pytest.approx(budget, rel=1e-4)
    grid = np.linspace(0.05, 10, 200)
    a, b, c = np.meshgrid(grid[grid <= 5], grid[grid <= 8], grid[grid <= 3], indexing="ij")
    m4 = np.stack([a, b, c, budget - a - b - c], axis=-1).reshape(-1, 4)
    m4 = m4[(m4[:, 3] >= 0.05) & (m4[:, 3] <= 10)]
    best_c = _objective(s_sum, m4, weight, factor).min()
    got = _objective(s_sum, np.asarray(m_frac), weight, factor)
    assert got <= best_c + 1e-4 and got >= best_c - 0.01


def test_optalloc_tree_respects_budget_and_signs():
    w = jnp.array([[1.0, -1.0], [2.0, 0.5], [-3.0, 0.0]])
    s = jnp.array([[0.2, 0.5], [0.9, 0.5], [0.4, 0.0]])
    m = jp.sipp.optalloc({"k": s, "b": None}, 3, params={"k": w, "b": jnp.zeros(2)})
    assert m["b"] is None and m["k"].shape == (2, 2)
    assert int(m["k"].sum()) <= 3
    assert np.all(np.asarray(m["k"]) <= np.array([[2, 1], [1, 1]]))  # nonzero weights per sign side


def test_draws_for_unique_matches_expectation():
    q = jnp.array([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    m = jnp.array([2.0, 3.0])
    n = np.asarray(jp.sipp.draws_for_unique(q, m), np.float64)
    for row, target, draws in zip(np.asarray(q, np.float64), [2, 3], n, strict=True):
        assert np.sum(1 - (1 - row) ** draws) == pytest.approx(target, rel=1e-4)


# ----------------------------------------------------------------------------- sparsify
def test_rand_is_unbiased():
    k = jax.random.key(6)
    w = jax.random.normal(k, (12, 3))
    s = jax.random.uniform(jax.random.key(7), (12, 3), minval=0.05, maxval=1.0)
    m = jnp.full((2, 3), 3, jnp.int32)
    x = jax.random.normal(jax.random.key(8), (12,))
    keys = jax.random.split(jax.random.key(9), 2000)
    w_hat, kept, _ = jax.jit(jax.vmap(lambda kk: sp._rand_leaf(kk, s, w, m, 3.0, 2.0)))(keys)
    assert float(jnp.mean(jnp.sum(kept, axis=1))) < 12  # actually pruned: about m per group
    z = np.asarray(jnp.einsum("f,kfc->kc", x, w_hat), np.float64)
    se = z.std(axis=0) / np.sqrt(len(z))
    np.testing.assert_array_less(np.abs(z.mean(axis=0) - np.asarray(x @ w)), 4 * se + 1e-6)


def test_hybrid_picks_det_when_one_weight_dominates():
    w = jnp.array([[1.0], [0.5], [0.4], [0.3], [0.2], [0.1]])
    s = jnp.array([[1.0], [1e-4], [1e-4], [1e-4], [1e-4], [1e-4]])
    params, sens = {"k": w}, {"k": s}
    new, mask, rep = jp.sipp.prune(params, sens, 1 / 6, variant="hybrid", key=jax.random.key(0))
    assert rep["layers"]["k"]["det_fraction"] == 1.0
    np.testing.assert_array_equal(mask["k"][:, 0], [True, False, False, False, False, False])
    np.testing.assert_array_equal(new["k"], jnp.where(mask["k"], w, 0.0))  # Det: no reweighting
    # 1000 equal small sensitivities (S = 1), keep half: eps_det = 3 * 0.5 = 1.5, while
    # Lemma 7 with N ~ 693 draws gives u = ln(16e16) / 693 ~ 0.057, eps_rand ~ 0.65: Hybrid samples
    flat = {"k": jnp.full((1000, 1), 1e-3)}
    _, _, rep = jp.sipp.prune({"k": jnp.ones((1000, 1))}, flat, 0.5, variant="hybrid", key=jax.random.key(0))
    assert rep["layers"]["k"]["det_fraction"] == 0.0
    assert 0.5 < rep["layers"]["k"]["eps"] < 0.8


def test_hybrid_compares_bounds_at_budget_not_at_draws():
    """Hand-worked group where the two rules disagree: 10 positive weights, all s_j = 1 (S = 10),
    budget m = 5 (density 0.5, one group), C = 3, eta = 1, delta = 0.5 (ln(16 eta / delta) = ln 32).
    Uniform q = 0.1: E[unique] = 10 (1 - 0.9^N) = 5 gives N = ln 0.5 / ln 0.9 = 6.58 -> 7 draws.
    eps_det = 3 * 5 = 15; Lemma 7 (u = S ln 32 / N): eps_rand(m = 5) = 16.40 >= 15 -> Det,
    whereas eps_rand(N = 7) = 12.31 < 15 would have chosen Rand."""
    log_factor, s_sum, m = math.log(32.0), 10.0, 5

    def lemma7(n):
        u = s_sum * log_factor / n
        return u + math.sqrt(u * (u + 6.0))

    draws = round(math.log(0.5) / math.log(0.9))
    eps_det = 3.0 * 5.0
    assert draws == 7 and lemma7(draws) < eps_det <= lemma7(m)  # the example separates the rules
    w = jnp.linspace(1.0, 2.0, 10)[:, None]
    new, mask, rep = jp.sipp.prune(
        {"k": w}, {"k": jnp.ones((10, 1))}, 0.5, variant="hybrid", key=jax.random.key(0), eta=1.0, delta=0.5
    )
    assert rep["layers"]["k"]["det_fraction"] == 1.0
    np.testing.assert_array_equal(mask["k"][:, 0], [True] * 5 + [False] * 5)  # top-5, ties: lower index
    np.testing.assert_array_equal(new["k"], jnp.where(mask["k"], w, 0.0))  # Det: kept weights unchanged
    assert rep["layers"]["k"]["eps"] == pytest.approx(eps_det, rel=1e-6)  # the bound of the variant used


def test_det_keeps_exactly_budget_and_none_leaves():
    x = np.asarray(jax.random.normal(jax.random.key(10), (8, 5)))
    params, f = _init(Dense2(), x)
    s = jp.sipp.sensitivity(f, params, x)
    new, mask, rep = jp.sipp.prune(params, s, 0.25, stats=jp.sipp.layer_stats(f, params, x))
    n = 5 * 4 + 4 * 3
    assert rep["budget"] == round(0.25 * n) == rep["kept"]
    assert mask["Dense_0"]["bias"] is None
    np.testing.assert_array_equal(new["Dense_0"]["bias"], params["Dense_0"]["bias"])
    kept = np.concatenate([np.asarray(mask[k]["kernel"]).ravel() for k in ("Dense_0", "Dense_1")])
    scores = np.concatenate([np.asarray(s[k]["kernel"]).ravel() for k in ("Dense_0", "Dense_1")])
    assert kept.sum() == rep["budget"]
    assert scores[kept].min() >= scores[~kept].max()
    assert rep["error_bound"] is not None and rep["error_bound"] >= 0
    for v in ("rand", "hybrid"):
        new, mask, rep = jp.sipp.prune(params, s, 0.25, variant=v, key=jax.random.key(1))
        assert mask["Dense_1"]["bias"] is None and rep["kept"] <= n
        np.testing.assert_array_equal(np.asarray(new["Dense_0"]["kernel"]) != 0, mask["Dense_0"]["kernel"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"density": 0.5, "variant": "magic"}, "variant"),
        ({"density": 0.5, "variant": "rand"}, "key"),
        ({"density": 0.5, "variant": "hybrid"}, "key"),
    ],
)
def test_prune_bad_input(kwargs, match):
    params = {"k": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match=match):
        jp.sipp.prune(params, {"k": jnp.ones((3, 2))}, **kwargs)


def test_sensitivity_bad_input():
    x = jnp.ones((2, 5))
    params, f = _init(Dense2(), x)
    with pytest.raises(ValueError, match="patch_reduce"):
        jp.sipp.sensitivity(f, params, x, patch_reduce="median")
    with pytest.raises(ValueError, match="output_sizes"):
        jp.sipp.sample_size([])


# ----------------------------------------------------------------------------- non-finite input (issue 17)
_X6 = np.asarray(jax.random.normal(jax.random.key(11), (6, 5)))
_P6, _F6 = _init(Dense2(), _X6)  # Dense_0: the input layer (5, 4); Dense_1: the output layer (4, 3)


@functools.cache
def _s6():
    """Sensitivities of _P6 on _X6 (computed once, on first use)."""
    return jax.tree.map(np.array, jp.sipp.sensitivity(_F6, _P6, _X6))


_sens_jit = jax.jit(lambda p, v: jp.sipp.sensitivity(_F6, p, v))
_eps_jit = jax.jit(lambda a, n: jp.sipp.eps_rand(a, n, log_factor=2.0))
_alloc_jit = jax.jit(lambda a, size, weight: jp.sipp.allocate(a, size, weight, 6, log_factor=2.0))
_draws_jit = jax.jit(jp.sipp.draws_for_unique)


@given(
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    row=st.integers(0, 5),
    col=st.integers(0, 4),
)
def test_sensitivity_non_finite_inputs(bad, row, col):
    """NaN/inf inputs used to give plausible sensitivities (inf -> ratio 0).
    Outside jit: ValueError. Under jit: the input layer's sensitivities are
    all NaN (never a plausible value), and prune refuses them."""
    x = _X6.copy()
    x[row, col] = bad
    with pytest.raises(ValueError, match="inputs contains NaN or infinite"):
        jp.sipp.sensitivity(_F6, _P6, x)
    with pytest.raises(ValueError, match="inputs contains NaN or infinite"):
        jp.sipp.layer_stats(_F6, _P6, x)
    s = _sens_jit(_P6, x)
    assert np.all(np.isnan(s["Dense_0"]["kernel"]))
    with pytest.raises(ValueError, match=r"sensitivities contains NaN or infinite values at \['Dense_0'\]"):
        jp.sipp.prune(_P6, s, 0.5)


@given(
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    layer=st.sampled_from(["Dense_0", "Dense_1"]),
    pos=st.tuples(st.integers(0, 2), st.integers(0, 2)),
)
def test_sensitivity_non_finite_params(bad, layer, pos):
    """A NaN/inf weight used to leave the rest of its layer plausible."""
    params = jax.tree.map(np.array, _P6)
    params[layer]["kernel"][pos] = bad
    where = rf"\['{layer}'\]\['kernel'\]"
    with pytest.raises(ValueError, match="params contains NaN or infinite values at " + where):
        jp.sipp.sensitivity(_F6, params, _X6)
    s = _sens_jit(params, _X6)
    assert np.all(np.isnan(s[layer]["kernel"]))
    with pytest.raises(ValueError, match="params contains NaN or infinite"):
        jp.sipp.prune(params, _s6(), 0.5)


def test_sensitivity_overflow_and_empty_sample():
    params = jax.tree.map(np.array, _P6)
    params["Dense_0"]["kernel"] *= 1e38  # input-layer pre-activations overflow float32
    with pytest.raises(ValueError, match=r"sensitivities of \['Dense_0/kernel'\] are NaN"):
        jp.sipp.sensitivity(_F6, params, _X6 * 1e10)
    with pytest.raises(ValueError, match=r"\|S\| >= 1"):
        jp.sipp.sensitivity(_F6, _P6, _X6[:0])
    with pytest.raises(ValueError, match=r"\|S\| >= 1"):
        jp.sipp.layer_stats(_F6, _P6, _X6[:0])
    with pytest.raises(ValueError, match="memory_budget_bytes=inf"):
        jp.sipp.sensitivity(_F6, _P6, _X6, memory_budget_bytes=math.inf)


@given(
    bad=st.sampled_from([np.nan, np.inf, -np.inf, -0.5]),
    pos=st.tuples(st.integers(0, 3), st.integers(0, 2)),
    variant=st.sampled_from(sp.VARIANTS),
)
def test_prune_refuses_bad_sensitivities(bad, pos, variant):
    """Rand/Hybrid used to prune with NaN sensitivities (NaN groups got budget 0)."""
    s = jax.tree.map(np.array, _s6())
    s["Dense_0"]["kernel"][pos] = bad
    match = "NaN or infinite" if not np.isfinite(bad) else r"value -0.5 outside the valid range \[0.0, inf\]"
    with pytest.raises(ValueError, match=match):
        jp.sipp.prune(_P6, s, 0.5, variant=variant, key=jax.random.key(0))
    with pytest.raises(ValueError, match=match):
        jp.sipp.optalloc(s, 10, params=_P6)


@given(
    s_sum=st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3),
    bad=st.sampled_from([np.nan, np.inf, -1.0]),
    pos=st.integers(0, 2),
)
def test_optalloc_helpers_non_finite(s_sum, bad, pos):
    """eps_rand, allocate and draws_for_unique used to map NaN to 0 / a valid
    allocation / m. Concrete: ValueError; jit: NaN (allocate: every m_frac NaN, m_int -1)."""
    s = np.array(s_sum, np.float32) + 0.1
    size, weight = np.full(3, 4.0, np.float32), np.full(3, 0.5, np.float32)
    draws = np.full(3, 3.0, np.float32)
    sb = s.copy()
    sb[pos] = bad
    u = s[pos] * 2.0 / 3.0  # the untouched entries keep the Lemma 7 value (numpy)
    with pytest.raises(ValueError, match="s_sum"):
        jp.sipp.eps_rand(sb, draws, log_factor=2.0)
    got = np.asarray(_eps_jit(sb, draws))
    assert np.isnan(got[pos])
    other = [i for i in range(3) if i != pos]
    uo = s[other] * 2.0 / 3.0
    np.testing.assert_allclose(got[other], uo + np.sqrt(uo * (uo + 6)), rtol=1e-5)
    assert np.isfinite(u + np.sqrt(u * (u + 6)))
    with pytest.raises(ValueError, match="s_sum"):
        jp.sipp.allocate(sb, size, weight, 6, log_factor=2.0)
    m_frac, m_int = _alloc_jit(sb, size, weight)
    assert np.all(np.isnan(m_frac)) and np.all(np.asarray(m_int) == -1)
    m_frac, m_int = _alloc_jit(s, size, weight)  # valid: a real allocation
    assert np.all(np.isfinite(m_frac)) and 0 < int(np.sum(m_int)) <= 6
    q = np.stack([s / s.sum(), np.full(3, 1 / 3, np.float32)])
    qb = q.copy()
    qb[0, pos] = bad
    with pytest.raises(ValueError, match="q "):
        jp.sipp.draws_for_unique(qb, np.array([2.0, 2.0], np.float32))
    n = np.asarray(_draws_jit(qb, np.array([2.0, 2.0], np.float32)))
    assert np.isnan(n[0]) and np.sum(1 - (1 - q[1].astype(np.float64)) ** n[1]) == pytest.approx(2, rel=1e-4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: jp.sipp.sample_size([300, 100.5]), "output_sizes"),
        (lambda: jp.sipp.sample_size([math.nan]), "output_sizes"),
        (lambda: jp.sipp.sample_size([math.inf]), "output_sizes"),
        (lambda: jp.sipp.sample_size([True, 3]), "output_sizes"),
        (lambda: jp.sipp.sample_size([10], c=math.inf), "c=inf"),
        (lambda: jp.sipp.sample_size([10], delta=math.nan), "delta=nan"),
        (lambda: jp.sipp.prune(_P6, _s6(), 0.5, c=math.inf), "c=inf"),
        (lambda: jp.sipp.prune(_P6, _s6(), 0.5, eta=math.inf), "eta=inf"),
        (lambda: jp.sipp.prune(_P6, _s6(), 0.5, delta=0.0), "delta=0.0"),
        (
            lambda: jp.sipp.prune(
                _P6, _s6(), 0.5,
                stats={"Dense_0/kernel": {"delta": math.nan, "kappa": 1.0, "output_size": 3}},
            ),
            r"stats\['Dense_0/kernel'\]\['delta'\]=nan",
        ),
        (lambda: jp.sipp.optalloc({"k": np.ones((3, 2))}, math.inf, params={"k": np.ones((3, 2))}), "budget"),
        (lambda: jp.sipp.group_stats({"k": np.ones((1, 2))}, {"k": np.ones((3, 2))}), "have shape"),
        (lambda: jp.sipp.eps_rand(np.ones(2), np.array([1.0, np.nan]), log_factor=2.0), "draws"),
        (lambda: jp.sipp.eps_rand(np.ones(2), np.ones(2), log_factor=math.inf), "log_factor=inf"),
        (lambda: jp.sipp.allocate(np.ones(2), np.ones(3), np.ones(2), 1, log_factor=1.0), "size must be 1-D"),
        (lambda: jp.sipp.allocate(np.ones(2), np.ones(2), np.zeros(2), 1, log_factor=1.0), "weight"),
        (lambda: jp.sipp.allocate(np.ones(2), np.ones(2), np.ones(2), math.nan, log_factor=1.0), "budget"),
        (lambda: jp.sipp.draws_for_unique(np.full((2, 3), 0.3), np.ones(3)), "m must have shape"),
    ],
)
def test_sipp_helpers_bad_scalars_and_shapes(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sample_size_tiny_delta_stays_finite():
    """delta = 5e-324 made 8 eta* eta / delta overflow: OverflowError from ceil(inf)."""
    want = math.ceil(3 * (math.log(8 * 10 * 10) - math.log(5e-324)))
    assert jp.sipp.sample_size([10], delta=5e-324) == want
