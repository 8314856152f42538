"""Tests of jaxprune.sap against hand-worked examples and an independent
float64 NumPy reference of the SAP round (PQ Index -> r -> c -> prune)."""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxprune import sap
from jaxprune.tree import full_mask

# ----------------------------------------------------------------------------- NumPy reference


def _ref_pool(v: np.ndarray, p, q, eta_r, gamma, beta):
    """(I, r, c) of one pool of unmasked magnitudes, float64."""
    d = v.size
    if d == 0 or not np.any(v):
        i = 0.0
    else:
        i = 1.0 - np.mean(v**p) ** (1 / p) / np.mean(v**q) ** (1 / q)
    if d == 0:
        return i, 0, 0
    r = math.ceil(d * (1 + eta_r) ** (-q / (q - p)) * (1 - i) ** (q * p / (q - p)))
    r = min(max(r, 1), d)
    # exact rational arithmetic: in float64, 6 * (1 - 5/6) = 0.999... would floor to 0
    ratio = min(max(Fraction(str(gamma)) * (1 - Fraction(r, d)), Fraction(0)), Fraction(str(beta)))
    return i, r, math.floor(d * ratio)


def _prune_pool(absw: np.ndarray, alive: np.ndarray, c: int) -> np.ndarray:
    """Unmasked flat indices sorted by (|w| ascending, index descending): the
    first c are pruned (so on ties the lower index survives)."""
    idx = np.flatnonzero(alive)
    order = sorted(idx, key=lambda j: (absw[j], -j))
    keep = alive.copy()
    keep[np.asarray(order[:c], dtype=int)] = False
    return keep


def ref_round(kernels, masks, scope, p=0.5, q=1.0, eta_r=0.0, gamma=1.0, beta=0.9):
    """Reference SAP round on a list of kernels/masks -> (new masks, [(I, r, c, d) per pool])."""
    ws = [np.abs(np.asarray(w, np.float64)) for w in kernels]
    ms = [np.asarray(m, bool) for m in masks]
    records = []
    if scope == "global":
        absw = np.concatenate([w.ravel() for w in ws])
        alive = np.concatenate([m.ravel() for m in ms])
        i, r, c = _ref_pool(absw[alive], p, q, eta_r, gamma, beta)
        keep = _prune_pool(absw, alive, c)
        records.append((i, r, c, int(alive.sum())))
        out, start = [], 0
        for w in ws:
            out.append(keep[start : start + w.size].reshape(w.shape))
            start += w.size
        return out, records
    out = []
    for w, m in zip(ws, ms, strict=True):
        cols = [w.reshape(-1)[:, None]] if scope == "layer" else [w.reshape(-1, w.shape[-1])]
        alive2 = m.reshape(-1, 1) if scope == "layer" else m.reshape(-1, w.shape[-1])
        a2 = cols[0]
        keep2 = np.zeros_like(alive2)
        for j in range(a2.shape[1]):
            i, r, c = _ref_pool(a2[alive2[:, j], j], p, q, eta_r, gamma, beta)
            keep2[:, j] = _prune_pool(a2[:, j], alive2[:, j], c)
            records.append((i, r, c, int(alive2[:, j].sum())))
        out.append(keep2.reshape(w.shape))
    return out, records


def _flat_records(record, scope):
    """SapRecord -> [(I, r, c, d) per pool] in the reference's order."""
    fields = []
    for name in ("pqi", "r", "c", "d"):
        leaves = jax.tree.leaves(getattr(record, name))
        fields.append(np.concatenate([np.ravel(np.asarray(x)) for x in leaves]))
    return list(zip(*fields, strict=True))


def _params_and_mask(seed: int, density: float = 0.7):
    rng = np.random.default_rng(seed)
    params = {
        "Dense_0": {"kernel": rng.normal(size=(6, 5)).astype(np.float32), "bias": np.zeros(5, np.float32)},
        "Conv_0": {"kernel": rng.standard_t(3, size=(2, 2, 3, 4)).astype(np.float32)},
        "Dense_1": {"kernel": rng.laplace(size=(5, 3)).astype(np.float32), "bias": np.ones(3, np.float32)},
    }
    mask = {
        "Dense_0": {"kernel": rng.random((6, 5)) < density, "bias": None},
        "Conv_0": {"kernel": rng.random((2, 2, 3, 4)) < density},
        "Dense_1": {"kernel": rng.random((5, 3)) < density, "bias": None},
    }
    mask["Dense_1"]["kernel"][:, 0] = False  # an empty neuron pool: d = 0
    return params, mask


KERNELS = (("Conv_0", "kernel"), ("Dense_0", "kernel"), ("Dense_1", "kernel"))  # jax.tree leaf order


# ----------------------------------------------------------------------------- hand-worked example


def test_hand_worked_global_example():
    # |w| unmasked = (0, 0, 1, 9), d = 4. p=.5, q=1: (mean sqrt|w|)^2 = ((0+0+1+3)/4)^2 = 1,
    # mean |w| = 10/4 = 2.5, so I = 1 - 1/2.5 = 0.6. r = ceil(4 * 1 * 0.4^1) = ceil(1.6) = 2.
    # c = floor(4 * clip(1 * (1 - 2/4), 0, .9)) = 2: the two zeros go. 100 is already masked.
    params = {"w": jnp.array([0.0, -0.0, 1.0, -9.0, 100.0]), "b": jnp.ones(2)}
    mask = {"w": jnp.array([True, True, True, True, False]), "b": None}
    new, rec = sap.prune_round(params, mask)
    np.testing.assert_allclose(float(rec.pqi), 0.6, rtol=1e-6)
    assert (int(rec.r), int(rec.c), int(rec.d)) == (2, 2, 4)
    np.testing.assert_array_equal(new["w"], [False, False, True, True, False])
    assert new["b"] is None


@pytest.mark.parametrize(
    ("kwargs", "r", "c"),
    [
        # eta_r = 1: (1+1)^(-q/(q-p)) = 2^-2, r = ceil(4 * .25 * .4) = 1; c = floor(4 * min(.75, .9)) = 3
        ({"eta_r": 1.0}, 1, 3),
        # gamma = .5: c = floor(4 * .5 * (1 - 2/4)) = 1
        ({"gamma": 0.5}, 2, 1),
        # eta_r = 1, beta = .5: c = floor(4 * min(.75, .5)) = 2
        ({"eta_r": 1.0, "beta": 0.5}, 1, 2),
        # p=1, q=2: 1 - I = mean|w| / rms = 2.5 / sqrt(82/4); (1-I)^2 = 6.25/20.5; r = ceil(1.2195) = 2
        ({"p": 1.0, "q": 2.0}, 2, 2),
        # gamma = 3 amplifies the ratio (1 - 2/4) * 3 = 1.5, capped by beta: c = floor(.9 * 4) = 3
        ({"gamma": 3.0}, 2, 3),
    ],
)
def test_hand_worked_variants(kwargs, r, c):
    w = jnp.array([0.0, 0.0, 1.0, 9.0])
    new, rec = sap.prune_round(w, jnp.ones(4, bool), **kwargs)
    assert (int(rec.r), int(rec.c)) == (r, c)
    assert int(jnp.sum(new)) == 4 - c
    assert bool(new[3]) and (c < 4 or not bool(new[2]))


def test_hand_worked_layer_and_neuron():
    # Column 0 = (0, 1, 9) as above minus one zero: d=3, (mean sqrt)^2 = (4/3)^2, mean = 10/3,
    # 1 - I = (16/9) / (10/3) = 8/15, r = ceil(3 * 8/15) = ceil(1.6) = 2, c = 1 (the 0 goes).
    # Column 1 = (2, 2, 2): I = 0, r = 3, c = 0.
    k = jnp.array([[0.0, 2.0], [1.0, 2.0], [9.0, 2.0]])
    params = {"k": k}
    new, rec = sap.prune_round(params, None, scope="neuron", prunable={"k": True})
    np.testing.assert_array_equal(rec.r["k"], [2, 3])
    np.testing.assert_array_equal(rec.c["k"], [1, 0])
    np.testing.assert_array_equal(new["k"], [[False, True], [True, True], [True, True]])
    np.testing.assert_allclose(rec.pqi["k"], [1 - 8 / 15, 0.0], atol=1e-6)
    # layer scope: one pool of 6; |w| = (0,2,1,2,9,2): (mean sqrt)^2 = ((1+3+3*sqrt2)/6)^2,
    new, rec = sap.prune_round(params, None, scope="layer", prunable={"k": True})
    v = np.array([0, 2, 1, 2, 9, 2.0])
    one_minus_i = np.mean(np.sqrt(v)) ** 2 / np.mean(v)
    r = math.ceil(6 * one_minus_i)
    assert int(rec.r["k"]) == r and int(rec.c["k"]) == 6 - r


# ----------------------------------------------------------------------------- numpy reference


S_HALF_ONE = (0.5, 1.0, 0.0, 1.0, 0.9)  # (p, q, eta_r, gamma, beta): the paper's main setting
S_ONE_TWO = (1.0, 2.0, 0.0, 1.0, 0.9)  # the second main setting
S_ABLATE = (0.5, 1.0, 0.05, 2.0, 0.5)  # eta_r, gamma, beta traced: shares S_HALF_ONE's compilation


# (scope, setting, seed) chosen to cover everything with few compilations (p, q, scope are static).
@pytest.mark.parametrize(
    ("scope", "setting", "seed"),
    [
        ("global", S_HALF_ONE, 0),
        ("global", S_HALF_ONE, 1),
        ("layer", S_HALF_ONE, 0),
        ("neuron", S_HALF_ONE, 0),
        ("neuron", S_HALF_ONE, 1),
        ("global", S_ONE_TWO, 0),
        ("neuron", S_ONE_TWO, 0),
        ("global", S_ABLATE, 2),
        ("layer", S_ABLATE, 0),
        ("neuron", S_ABLATE, 1),
    ],
)
def test_matches_numpy_reference(scope, setting, seed):
    p, q, eta_r, gamma, beta = setting
    params, mask = _params_and_mask(seed)
    new, rec = sap.prune_round(params, mask, p=p, q=q, eta_r=eta_r, gamma=gamma, beta=beta, scope=scope)
    kernels = [params[a][b] for a, b in KERNELS]
    masks = [mask[a][b] for a, b in KERNELS]
    want_masks, want_records = ref_round(kernels, masks, scope, p, q, eta_r, gamma, beta)
    for (a, b), want in zip(KERNELS, want_masks, strict=True):
        np.testing.assert_array_equal(np.asarray(new[a][b]), want, err_msg=f"{scope} {a}/{b}")
    assert new["Dense_0"]["bias"] is None and new["Dense_1"]["bias"] is None
    got = _flat_records(rec, scope)
    assert len(got) == len(want_records)
    for (gi, gr, gc, gd), (wi, wr, wc, wd) in zip(got, want_records, strict=True):
        assert (int(gr), int(gc), int(gd)) == (wr, wc, wd)
        np.testing.assert_allclose(gi, wi, rtol=1e-5, atol=1e-6)


def test_jit_with_traced_hyperparameters_matches_eager():
    params, mask = _params_and_mask(3)
    eager = sap.prune_round(params, mask, eta_r=0.1, gamma=1.5, scope="layer")
    fn = jax.jit(lambda pr, m, e, g: sap.prune_round(pr, m, eta_r=e, gamma=g, scope="layer"))
    traced = fn(params, mask, 0.1, 1.5)
    chex_equal = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), eager, traced)
    assert all(jax.tree.leaves(chex_equal))


def test_mask_none_means_all_prunable_kernels():
    params, _ = _params_and_mask(4)
    new, rec = sap.prune_round(params, None)
    want, recs = ref_round([params[a][b] for a, b in KERNELS],
                           [np.ones(params[a][b].shape, bool) for a, b in KERNELS], "global")
    for (a, b), w in zip(KERNELS, want, strict=True):
        np.testing.assert_array_equal(new[a][b], w)
    assert new["Dense_0"]["bias"] is None
    assert int(rec.c) == recs[0][2]


@given(seed=st.integers(0, 10_000), scope=st.sampled_from(["global", "layer", "neuron"]))
def test_rounds_only_shrink_the_mask(seed, scope):
    params, mask = _params_and_mask(seed, density=0.9)
    for _ in range(3):
        new, rec = sap.prune_round(params, mask, scope=scope)
        pruned = sum(int(jnp.sum(jnp.asarray(m) & ~n)) for m, n in zip(
            jax.tree.leaves(mask), jax.tree.leaves(new), strict=True))
        revived = sum(int(jnp.sum(~jnp.asarray(m) & n)) for m, n in zip(
            jax.tree.leaves(mask), jax.tree.leaves(new), strict=True))
        assert revived == 0
        assert pruned == sum(int(np.sum(c)) for c in jax.tree.leaves(rec.c))
        mask = new


# ----------------------------------------------------------------------------- counts, selection, errors


@pytest.mark.parametrize("beta", [0.9, 0.3, 0.7, 0.55, 1.0, 0.0])
@pytest.mark.parametrize("gamma", [1.0, 0.5, 3.0, 0.1])
def test_sap_counts_exact_rational(beta, gamma):
    d = np.array([0, 1, 7, 10, 20, 100, 1000, 4096, 99_999, 1_000_000])
    r = np.minimum(np.maximum((d * np.array([0, 1, .5, .3, .05, .9, .1, .25, .7, .123])).astype(int), 1), d)
    got = np.asarray(sap.sap_counts(jnp.asarray(d), jnp.asarray(r), gamma, beta))
    fb, fg = Fraction(str(beta)), Fraction(str(gamma))
    for di, ri, ci in zip(d, r, got, strict=True):
        if di == 0:
            assert ci == 0
            continue
        ratio = min(max(fg * (1 - Fraction(int(ri), int(di))), Fraction(0)), fb)
        assert ci == math.floor(int(di) * ratio), (di, ri, gamma, beta)


def test_prune_smallest_ties_keep_lower_index_and_counts_per_neuron():
    w = {"k": jnp.ones((3, 2))}
    m = {"k": jnp.array([[True, True], [True, False], [True, True]])}
    new = sap.prune_smallest(w, m, {"k": jnp.array([1, 5])}, scope="neuron")
    np.testing.assert_array_equal(new["k"], [[True, False], [True, False], [False, False]])
    new = sap.prune_smallest(w, m, jnp.int32(2), scope="global")
    np.testing.assert_array_equal(new["k"], [[True, True], [True, False], [False, False]])


def test_invalid_arguments_raise():
    params = {"k": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match=r"p=1\.0 must be smaller than q=1\.0"):
        sap.prune_round(params, None, p=1.0, q=1.0)
    with pytest.raises(ValueError, match=r"beta=1.5 is outside the valid range \[0.0, 1.0\]"):
        sap.prune_round(params, None, beta=1.5)
    with pytest.raises(ValueError, match=r"eta_r=-0\.1"):
        sap.prune_round(params, None, eta_r=-0.1)
    with pytest.raises(ValueError, match="gamma=-1"):
        sap.prune_round(params, None, gamma=-1)
    with pytest.raises(ValueError, match="scope='filter' is not valid"):
        sap.prune_round(params, None, scope="filter")
    with pytest.raises(ValueError, match="mask does not match"):
        sap.prune_round(params, {"other": jnp.ones((3, 2), bool)})
    with pytest.raises(ValueError, match="NaN"):
        sap.prune_round({"k": jnp.array([[1.0, jnp.nan]])}, None)
    with pytest.raises(ValueError, match="counts leaves must have shape"):
        sap.prune_smallest(params, full_mask(params), {"k": jnp.int32(1)}, scope="neuron")


def test_stop_rule():
    rule = sap.StopRule(rise_rounds=2, min_ratio=0.05)
    assert rule.check([0.5, 0.4, 0.3], [0.2, 0.2, 0.2]) is None
    assert rule.check([0.5, 0.4, 0.45], [0.2, 0.2, 0.2]) is None  # one rise only
    assert "rose 2 rounds" in rule.check([0.5, 0.4, 0.45, 0.5], [0.2] * 4)
    assert "pruning ratio 0.01" in rule.check([0.5, 0.4], [0.2, 0.01])
    assert sap.StopRule(rise_rounds=0).check([0.1, 0.2, 0.3, 0.4, 0.5], [0.0] * 5) is None
    with pytest.raises(ValueError, match="rise_rounds"):
        sap.StopRule(rise_rounds=1.5)
    with pytest.raises(ValueError, match="min_ratio"):
        sap.StopRule(min_ratio=2.0)


# ----------------------------------------------------------------------------- robustness (issue 17)


_jit_round = jax.jit(sap.prune_round, static_argnames=("p", "q", "scope"))


@pytest.mark.parametrize("scope", ["global", "layer", "neuron"])
def test_jit_non_finite_weight_prunes_nothing_and_says_so(scope):
    params, mask = _params_and_mask(5)
    params["Dense_0"]["kernel"][2, 1] = np.nan
    params["Conv_0"]["kernel"][0, 1, 2, 3] = np.inf
    mask["Dense_0"]["kernel"][2, 1] = mask["Conv_0"]["kernel"][0, 1, 2, 3] = True
    new, rec = _jit_round(params, mask, scope=scope)
    for a, b in KERNELS:
        np.testing.assert_array_equal(np.asarray(new[a][b]), mask[a][b])
    assert not bool(rec.valid)
    assert all(int(np.sum(c)) == 0 for c in jax.tree.leaves(rec.c))
    for name, unit in (("Dense_0", 1), ("Conv_0", 3)):
        pqi = rec.pqi if scope == "global" else rec.pqi[name]["kernel"]
        r = rec.r if scope == "global" else rec.r[name]["kernel"]
        if scope == "neuron":
            pqi, r = pqi[unit], r[unit]
        assert np.isnan(pqi) and int(r) == -1
    if scope == "neuron":  # the other pools are still measured
        assert np.isfinite(np.asarray(rec.pqi["Dense_1"]["kernel"])[1:]).all()
    with pytest.raises(ValueError, match="NaN"):
        sap.prune_round(params, mask, scope=scope)


def test_jit_non_finite_bias_prunes_nothing():
    params, mask = _params_and_mask(5)
    params["Dense_1"]["bias"][0] = np.nan  # not prunable, but eager raises: the jitted round stops too
    new, rec = _jit_round(params, mask)
    assert not bool(rec.valid) and int(rec.c) == 0 and np.isfinite(rec.pqi)
    for a, b in KERNELS:
        np.testing.assert_array_equal(np.asarray(new[a][b]), mask[a][b])


def test_jit_out_of_range_hyperparameters_prune_nothing():
    params, mask = _params_and_mask(5)
    fn = lambda e, g, b: _jit_round(params, mask, eta_r=e, gamma=g, beta=b)
    for e, g, b in ((-0.5, 1.0, 0.9), (0.0, -1.0, 0.9), (0.0, 1.0, 1.5), (0.0, jnp.nan, 0.9),
                    (jnp.nan, 1.0, 0.9), (0.0, 1.0, jnp.nan)):
        new, rec = fn(e, g, b)
        assert not bool(rec.valid) and int(rec.c) == 0, (e, g, b)
        for a, k in KERNELS:
            np.testing.assert_array_equal(np.asarray(new[a][k]), mask[a][k])
    new, rec = fn(0.0, 1.0, 0.9)
    assert bool(rec.valid) and int(rec.c) > 0
    assert bool(sap.prune_round(params, mask)[1].valid)


def test_sap_counts_of_a_non_finite_pool_are_zero():
    got = sap.sap_counts(jnp.array([10, 10, 10]), jnp.array([-1, 4, 4]), jnp.float32(1.0), jnp.float32(0.9))
    np.testing.assert_array_equal(got, [0, 6, 6])
    assert int(sap.sap_counts(10, 4, jnp.nan, 0.9)) == 0


@st.composite
def extreme_params(draw):
    """Kernels whose magnitudes span subnormal ... near float32 max (ties included)."""
    def leaf(shape):
        n = int(np.prod(shape))
        center = draw(st.integers(-150, 120))
        offsets = np.asarray(draw(st.lists(st.integers(-30, 3), min_size=n, max_size=n)))
        exps = np.clip(center + offsets, -155, 127)
        mants = draw(st.lists(st.sampled_from([1.0, 1.25, 1.5, 1.875]), min_size=n, max_size=n))
        zeros = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        v = np.where(zeros & (np.arange(n) % 3 == 0), 0.0, np.ldexp(np.asarray(mants), exps))
        return np.minimum(v, 3.4e38).astype(np.float32).reshape(shape)
    return {"a": {"kernel": leaf((4, 3))}, "b": {"kernel": leaf((2, 3))}}


@pytest.mark.parametrize("scope", ["global", "layer", "neuron"])
@given(params=extreme_params(), pq=st.sampled_from([(0.5, 1.0), (0.1, 1.0)]))
def test_round_over_all_float32_magnitudes_matches_reference(scope, params, pq):
    """The whole round on subnormal / huge weights against the float64 reference
    (NumPy does not flush subnormals). ``r`` may differ from the reference by the
    float32 guard where the exact bound is within 1e-5 of an integer; ``c`` and
    the mask are then checked for the ``r`` the code chose."""
    p, q = pq
    mask = {k: {"kernel": np.ones(v["kernel"].shape, bool)} for k, v in params.items()}
    new, rec = sap.prune_round(params, mask, p=p, q=q, scope=scope)
    kernels = [params["a"]["kernel"], params["b"]["kernel"]]
    _, want = ref_round(kernels, [np.ones(k.shape, bool) for k in kernels], scope, p, q)
    got = _flat_records(rec, scope)
    assert len(got) == len(want)
    for (gi, gr, gc, gd), (wi, wr, _, wd) in zip(got, want, strict=True):
        assert int(gd) == wd
        np.testing.assert_allclose(gi, wi, atol=3e-6)
        if int(gr) != wr:  # only at an integer boundary of the exact bound
            exact = wd * (1 - wi) ** (q * p / (q - p))
            assert abs(exact - round(exact)) <= 2e-5 * wd and abs(int(gr) - wr) == 1
        assert int(gc) == math.floor(wd * min(max(1 - Fraction(int(gr), wd), Fraction(0)), Fraction("0.9")))
    # the pruned entries are the c smallest magnitudes of each pool (ties: lower index survives)
    counts = iter(int(g[2]) for g in got)
    absw = [np.abs(k.astype(np.float64)) for k in kernels]
    if scope == "global":
        flat = np.concatenate([a.ravel() for a in absw])
        keep = _prune_pool(flat, np.ones(flat.size, bool), next(counts))
        want_masks = [keep[:12].reshape(4, 3), keep[12:].reshape(2, 3)]
    else:
        want_masks = []
        for a in absw:
            cols = a.reshape(-1, 1) if scope == "layer" else a
            keep = np.stack([_prune_pool(cols[:, j], np.ones(cols.shape[0], bool), next(counts))
                             for j in range(cols.shape[1])], 1)
            want_masks.append(keep.reshape(a.shape))
    np.testing.assert_array_equal(np.asarray(new["a"]["kernel"]), want_masks[0])
    np.testing.assert_array_equal(np.asarray(new["b"]["kernel"]), want_masks[1])


def test_out_axis_matches_the_moved_layout():
    # an equinox-style (out, in) / (out, in, kh, kw) tree with out_axis=0 prunes exactly what the
    # default does on the same weights with the unit axis moved last (neuron pools)
    rng = np.random.default_rng(17)
    params = {"lin": jnp.asarray(rng.standard_normal((6, 10)), jnp.float32),
              "conv": jnp.asarray(rng.standard_normal((4, 3, 3, 3)), jnp.float32)}
    moved = lambda t: jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), t)
    mask, rec = sap.prune_round(params, None, scope="neuron", out_axis=0)
    want_mask, want_rec = sap.prune_round(moved(params), None, scope="neuron")
    for k in params:
        np.testing.assert_array_equal(np.moveaxis(np.asarray(mask[k]), 0, -1), np.asarray(want_mask[k]))
        for field in ("c", "d", "r"):
            got, want = getattr(rec, field)[k], getattr(want_rec, field)[k]
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert int(np.sum(~np.asarray(mask[k]))) == int(np.sum(np.asarray(rec.c[k])))  # c pruned per unit
    with pytest.raises(ValueError, match="out_axis=3 is outside the valid range"):
        sap.prune_round(params, None, scope="neuron", out_axis=3)


# ----------------------------------------------------------------------------- issue 17 sweep regressions


def test_prune_round_numeric_mask():
    """A 0/1 float mask works like the bool mask and the round returns a BOOL mask; a NaN
    entry (which a cast to bool would keep) is refused."""
    w = {"k": jnp.array([[4.0, 0.1], [2.0, 0.01], [0.5, 3.0], [1.0, 0.2]])}
    got, rec = sap.prune_round(w, {"k": jnp.ones((4, 2))})
    want, rec_b = sap.prune_round(w, {"k": jnp.ones((4, 2), bool)})
    assert got["k"].dtype == jnp.bool_
    np.testing.assert_array_equal(got["k"], want["k"])
    assert int(rec.c) == int(rec_b.c)
    with pytest.raises(ValueError, match="mask"):
        sap.prune_round(w, {"k": jnp.ones((4, 2)).at[0, 0].set(jnp.nan)})


def test_prune_round_traced_nan_mask_entry_counts_as_pruned():
    w = {"k": jnp.array([[4.0, 0.1], [2.0, 0.01], [0.5, 3.0], [1.0, 0.2]])}
    bad = jnp.ones((4, 2)).at[0, 0].set(jnp.nan)
    got, _ = jax.jit(sap.prune_round)(w, {"k": bad})
    want, _ = sap.prune_round(w, {"k": bad == 1})
    assert not bool(got["k"][0, 0])
    np.testing.assert_array_equal(got["k"], want["k"])
