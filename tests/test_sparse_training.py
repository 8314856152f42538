"""Tests for the sparse-training transformations of jp.optax (static_sparse,
set_sparse, rigl, sparse_momentum, dsr, ste, acdc) against small NumPy
re-implementations of each paper's rule, plus bad input, None leaves,
sharding and the pipeline smoke run."""

from __future__ import annotations

import math
import tempfile
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.transforms._sparse import apportion

O = jp.optax  # noqa: E741
KEY = jax.random.key(7)


# --------------------------------------------------------------------------- NumPy references


def ref_top(score: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """The k highest ``score`` among ``valid`` entries, ties -> lower flat index."""
    s, v = np.asarray(score, np.float32).ravel(), np.asarray(valid, bool).ravel()
    idx = np.flatnonzero(v)
    order = idx[np.lexsort((idx, -s[idx]))]
    out = np.zeros(s.size, bool)
    out[order[:k]] = True
    return out.reshape(np.shape(score))


def ref_apportion(weights: list[float], total: int, caps: list[int]) -> list[int]:
    """Exact-rational capped water-filling + largest remainders (ties -> lower index)."""
    w = [Fraction(float(x)) for x in weights]
    alloc, free = [0] * len(w), [c > 0 for c in caps]
    total = min(total, sum(caps))
    while True:
        ws = [w[i] if free[i] else Fraction(0) for i in range(len(w))]
        if sum(ws) == 0:
            ws = [Fraction(int(f)) for f in free]
        rest = total - sum(alloc)
        share = [rest * x / sum(ws) if sum(ws) else Fraction(0) for x in ws]
        over = [i for i in range(len(w)) if free[i] and share[i] >= caps[i] - alloc[i]]
        if not over:
            break
        for i in over:
            alloc[i], free[i] = caps[i], False
    base = [math.floor(share[i]) if free[i] else 0 for i in range(len(w))]
    left = total - sum(alloc) - sum(base)
    order = sorted((i for i in range(len(w)) if free[i]), key=lambda i: (-(share[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    return [a + b for a, b in zip(alloc, base, strict=True)]


def draws(key: jax.Array, t: int, shapes: list[tuple]) -> list[np.ndarray]:
    """The documented random regrowth scores of update t (the rule's input)."""
    kt = jax.random.fold_in(key, t)
    return [np.asarray(jax.random.uniform(jax.random.fold_in(kt, i), s, jnp.float32))
            for i, s in enumerate(shapes)]


def make_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((12, 10)).astype(np.float32)
    a[0, :4] = 0.5  # ties in |w|
    a[1, :4] = -0.5
    b = rng.standard_normal((10, 6)).astype(np.float32)
    return {"a": jnp.asarray(a), "b": jnp.asarray(b), "bias": jnp.zeros(6)}


PRUNABLE = {"a": True, "b": True, "bias": False}


def grads_at(step: int) -> dict:
    rng = np.random.default_rng(100 + step)
    shapes = (("a", (12, 10)), ("b", (10, 6)), ("bias", (6,)))
    g = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes}
    g["a"][2, :3] = 1.25  # gradient ties
    g["b"] *= 3.0  # layers of different gradient (momentum) scale: Sparse Momentum moves weights to "b"
    return {k: jnp.asarray(v) for k, v in g.items()}


def run(tx: optax.GradientTransformation, steps: int, params: dict | None = None):
    """``steps`` updates with the gradients of :func:`grads_at`; returns a list of
    (params before, state before, grads, params after, state after)."""
    params = make_params() if params is None else params
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for t in range(steps):
        g = grads_at(t)
        u, new_state = update(g, state, params)
        new_params = optax.apply_updates(params, u)
        out.append((params, state, g, new_params, new_state))
        params, state = new_params, new_state
    return out


def np_mask(state) -> dict:
    return {k: np.asarray(v) for k, v in O.get_mask(state).items() if v is not None}


# --------------------------------------------------------------------------- static


def test_static_counts_uniform_and_erk_and_zero_inactive():
    params = make_params()
    for dist in ("uniform", "erk"):
        tx = O.static_sparse(optax.sgd(0.1, momentum=0.9), 0.8, key=KEY, distribution=dist, prunable=PRUNABLE)
        trace = run(tx, 3, params)
        m0 = np_mask(trace[0][1])
        if dist == "uniform":
            expect = {"a": round(0.2 * 120), "b": round(0.2 * 60)}
        else:  # ERK: density_l = eps * (sum of dims / size), eps solving the total budget
            raw = {"a": 22 / 120, "b": 16 / 60}
            eps = 0.2 * 180 / (raw["a"] * 120 + raw["b"] * 60)
            expect = {k: round(eps * raw[k] * n) for k, n in (("a", 120), ("b", 60))}
        assert {k: int(v.sum()) for k, v in m0.items()} == expect
        assert O.get_mask(trace[0][1])["bias"] is None
        for _, _, _, p, s in trace:
            m = np_mask(s)
            assert all(np.array_equal(m[k], m0[k]) for k in m0)  # fixed
            for k in m0:
                assert np.all(np.asarray(p[k])[~m0[k]] == 0)


# --------------------------------------------------------------------------- SET


def test_set_matches_numpy_rule():
    zeta, every = 0.3, 2
    tx = O.set_sparse(optax.sgd(0.1, momentum=0.9), 0.7, key=KEY, drop_fraction=zeta, update_every=every,
                      prunable=PRUNABLE)
    trace = run(tx, 5)
    for t, (w, s, _g, w_new, s_new) in enumerate(trace):
        old, new = np_mask(s), np_mask(s_new)
        if t == 0 or t % every:
            assert all(np.array_equal(old[k], new[k]) for k in old)
            continue
        scores = draws(KEY, t, [(12, 10), (10, 6)])
        for i, k in enumerate(("a", "b")):
            a = int(old[k].sum())
            d = math.floor(np.float32(zeta) * np.float32(a))
            keep = ref_top(np.abs(np.asarray(w[k])), old[k], a - d)
            grow = ref_top(scores[i], ~keep, d)
            np.testing.assert_array_equal(new[k], keep | grow)
            assert new[k].sum() == old[k].sum()  # the layer's density is fixed
            regrown = new[k] & ~old[k]
            assert regrown.any()
            assert np.all(np.asarray(w_new[k])[regrown] == 0.0)  # regrown start at exactly 0
            assert np.all(np.asarray(w_new[k])[~new[k]] == 0.0)  # dropped / inactive are 0


# --------------------------------------------------------------------------- RigL


def test_rigl_matches_numpy_rule_and_resets_moments():
    zeta, every, total = 0.3, 2, 8  # updates at t = 2, 4 (end_step = 6)
    lr, beta = 0.1, 0.9
    tx = O.rigl(optax.sgd(lr, momentum=beta), 0.7, total, key=KEY, drop_fraction=zeta, update_every=every,
                prunable=PRUNABLE)
    trace = run(tx, 8)
    updates_seen = 0
    for t, (w, s, g, w_new, s_new) in enumerate(trace):
        old, new = np_mask(s), np_mask(s_new)
        trace_old = s.inner_state[0].trace
        trace_new = s_new.inner_state[0].trace
        for k in ("a", "b"):  # the optimizer sees the gradient zeroed at inactive entries
            expect = np.float32(beta) * np.asarray(trace_old[k]) + np.where(old[k], np.asarray(g[k]), 0.0)
            keep_both = old[k] & new[k]
            np.testing.assert_allclose(np.asarray(trace_new[k])[keep_both], expect[keep_both], rtol=1e-5,
                                       atol=1e-6)
        if not (t > 0 and t % every == 0 and t < round(0.75 * total)):
            assert all(np.array_equal(old[k], new[k]) for k in old)
            continue
        updates_seen += 1
        z = zeta / 2 * (1 + math.cos(math.pi * t / round(0.75 * total)))
        for k in ("a", "b"):
            a = int(old[k].sum())
            assert abs(z * a - round(z * a)) > 1e-3  # no float boundary in this example
            d = math.floor(z * a)
            keep = ref_top(np.abs(np.asarray(w[k])), old[k], a - d)
            grow = ref_top(np.abs(np.asarray(g[k])), ~keep, d)
            np.testing.assert_array_equal(new[k], keep | grow)
            regrown = new[k] & ~old[k]
            assert regrown.any() and new[k].sum() == a
            assert np.all(np.asarray(w_new[k])[regrown] == 0.0)
            assert np.all(np.asarray(trace_new[k])[regrown] == 0.0)  # moments reset
            assert np.all(np.asarray(w_new[k])[~new[k]] == 0.0)
    assert updates_seen == 2


def test_rigl_erk_default_and_set_uniform_default():
    p = make_params()
    rigl_mask = np_mask(O.rigl(optax.sgd(0.1), 0.8, 10, key=KEY, prunable=PRUNABLE).init(p))
    set_mask = np_mask(O.set_sparse(optax.sgd(0.1), 0.8, key=KEY, prunable=PRUNABLE).init(p))
    assert rigl_mask["a"].sum() != set_mask["a"].sum()  # ERK vs uniform
    assert set_mask["a"].sum() == 24 and set_mask["b"].sum() == 12


# --------------------------------------------------------------------------- Sparse Momentum


def test_sparse_momentum_matches_numpy_rule():
    rate, every, total, beta = 0.5, 2, 10, 0.9
    tx = O.sparse_momentum(optax.sgd(0.05), 0.7, total, key=KEY, prune_rate=rate, update_every=every,
                           prunable=PRUNABLE)
    trace = run(tx, 5)
    mom = {k: np.zeros(s, np.float32) for k, s in (("a", (12, 10)), ("b", (10, 6)))}
    n_total = None
    for t, (w, s, g, w_new, s_new) in enumerate(trace):
        old, new = np_mask(s), np_mask(s_new)
        n_total = n_total or sum(int(v.sum()) for v in old.values())
        for k in mom:
            mom[k] = np.float32(beta) * mom[k] + np.asarray(g[k])
        for i, k in enumerate(("a", "b")):  # M <- beta M + g (up to fused multiply-add rounding) ...
            np.testing.assert_allclose(np.asarray(s_new.momentum[i]), mom[k], rtol=1e-5, atol=1e-6)
            mom[k] = np.asarray(s_new.momentum[i])  # ... and the rule below ranks the state's M exactly
        assert sum(int(v.sum()) for v in new.values()) == n_total  # total density constant
        if t == 0 or t % every:
            assert all(np.array_equal(old[k], new[k]) for k in old)
            continue
        p = rate / 2 * (1 + math.cos(math.pi * t / total))
        keys = ("a", "b")
        act = [int(old[k].sum()) for k in keys]
        contrib = [np.abs(mom[k])[old[k]].mean() for k in keys]
        drops = [math.ceil(np.float32(p) * np.float32(a)) for a in act]
        keeps = [ref_top(np.abs(np.asarray(w[k])), old[k], a - d)
                 for k, a, d in zip(keys, act, drops, strict=True)]
        caps = [kp.size - int(kp.sum()) for kp in keeps]
        grows = ref_apportion(contrib, sum(drops), caps)
        assert grows != drops  # redistribution moved weights between layers
        for k, kp, n in zip(keys, keeps, grows, strict=True):
            expect = kp | ref_top(np.abs(mom[k]), ~kp, n)
            np.testing.assert_array_equal(new[k], expect)
            regrown = new[k] & ~old[k]
            assert np.all(np.asarray(w_new[k])[regrown] == 0.0)
            assert np.all(np.asarray(w_new[k])[~new[k]] == 0.0)


# --------------------------------------------------------------------------- DSR


def test_dsr_matches_numpy_rule():
    h0, every, frac, tol = 0.6, 2, 0.1, 0.1
    tx = O.dsr(optax.sgd(0.05), 0.6, key=KEY, target_pruned=frac, tolerance=tol, threshold=h0,
               update_every=every, prunable=PRUNABLE)
    trace = run(tx, 5)
    h = h0
    n_total = sum(int(v.sum()) for v in np_mask(trace[0][1]).values())
    for t, (w, s, _g, w_new, s_new) in enumerate(trace):
        old, new = np_mask(s), np_mask(s_new)
        assert sum(int(v.sum()) for v in new.values()) == n_total
        if t == 0 or t % every:
            assert all(np.array_equal(old[k], new[k]) for k in old)
            continue
        keys = ("a", "b")
        keeps = [old[k] & (np.abs(np.asarray(w[k])) >= np.float32(h)) for k in keys]
        pruned = sum(int(old[k].sum() - kp.sum()) for k, kp in zip(keys, keeps, strict=True))
        n_p = round(frac * n_total)
        h = 2 * h if pruned < (1 - tol) * n_p else (h / 2 if pruned > (1 + tol) * n_p else h)
        assert float(s_new.threshold) == pytest.approx(h) and int(s_new.pruned) == pruned
        caps = [kp.size - int(kp.sum()) for kp in keeps]
        grows = ref_apportion([float(kp.sum()) for kp in keeps], pruned, caps)
        scores = draws(KEY, t, [(12, 10), (10, 6)])
        for i, (k, kp) in enumerate(zip(keys, keeps, strict=True)):
            np.testing.assert_array_equal(new[k], kp | ref_top(scores[i], ~kp, grows[i]))
            assert np.all(np.asarray(w_new[k])[new[k] & ~old[k]] == 0.0)
    assert h != h0  # the threshold adapted


def test_apportion_against_exact_rationals():
    cases = [([0.2, 0.5, 0.3], 10, [100, 100, 100]), ([1.0, 1.0, 1.0], 10, [100, 100, 100]),
             ([5.0, 1.0, 1.0], 30, [8, 50, 50]), ([0.0, 0.0], 7, [3, 10]), ([0.7, 0.1, 0.2], 13, [2, 2, 20])]
    for w, total, caps in cases:
        got = np.asarray(apportion(jnp.asarray(w), total, jnp.asarray(caps))).tolist()
        assert got == ref_apportion(w, total, caps), (w, total, caps)
        assert sum(got) == min(total, sum(caps)) and all(g <= c for g, c in zip(got, caps, strict=True))


# --------------------------------------------------------------------------- STE == DPF(p = 1)


def test_ste_magnitude_equals_dpf_update_every_1_bitwise():
    schedule = jp.masks.polynomial_schedule(0.8, 0, 4)
    params = make_params()

    def train(first):
        tx = optax.chain(first, optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9, nesterov=True))
        state, p = tx.init(params), params
        for t in range(5):
            loss = lambda q: jnp.sum((jnp.tanh(q["a"]).sum(0)[:6] @ q["b"].T) ** 2)
            g = jax.grad(loss)(O.sparse_params(p, state))
            g = jax.tree.map(lambda x, y: x + 0.01 * y, g, grads_at(t))
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        return p, O.get_mask(state)

    p1, m1 = train(O.ste(schedule, prunable=PRUNABLE))
    p2, m2 = train(O.dpf(schedule, update_every=1, prunable=PRUNABLE))
    for k in ("a", "b", "bias"):
        np.testing.assert_array_equal(np.asarray(p1[k]), np.asarray(p2[k]))
    for k in ("a", "b"):
        np.testing.assert_array_equal(np.asarray(m1[k]), np.asarray(m2[k]))
        assert int(np.asarray(m1[k]).sum()) < np.size(m1[k])


def test_ste_random_recomputes_every_step():
    tx = O.ste(0.5, scorer=jp.masks.random, key=KEY, prunable=PRUNABLE)
    trace = run(tx, 3)
    masks = [np_mask(s) for *_, s in trace]
    assert all(int(m["a"].sum() + m["b"].sum()) == 90 for m in masks)  # global pool: 180 entries at 0.5
    assert not np.array_equal(masks[1]["a"], masks[2]["a"])  # a new random draw at every step


# --------------------------------------------------------------------------- AC/DC


def test_acdc_phases_and_magnitude_masks():
    total = 20  # warm-up 2, phases of 1 step, final compressed from 17
    assert O.acdc_phases(total) == (2, 1, 17)
    tx = O.acdc(optax.sgd(0.05), 0.75, total, prunable=PRUNABLE)
    trace = run(tx, total)
    for t, (w, _, _, w_new, s_new) in enumerate(trace):
        new = np_mask(s_new)
        compressed = t >= 17 or (t >= 2 and (t - 2) % 2 == 0)
        kept = sum(int(v.sum()) for v in new.values())
        assert kept == (45 if compressed else 180)
        starts = compressed and (t == 17 or t < 17)
        if starts:  # a compressed phase starts: global magnitude top-k of the current weights
            flat = np.concatenate([np.abs(np.asarray(w[k])).ravel() for k in ("a", "b")])
            keep = ref_top(flat, np.ones(flat.size, bool), 45)
            np.testing.assert_array_equal(np.concatenate([new["a"].ravel(), new["b"].ravel()]), keep)
        if compressed:
            assert all(np.all(np.asarray(w_new[k])[~new[k]] == 0) for k in new)


# --------------------------------------------------------------------------- bad input, None leaves, sharding


def test_bad_input_names_the_argument():
    sgd = optax.sgd(0.1)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="drop_fraction"):
            O.set_sparse(sgd, 0.9, key=KEY, drop_fraction=bad)
        with pytest.raises(ValueError, match="drop_fraction"):
            O.rigl(sgd, 0.9, 100, key=KEY, drop_fraction=bad)
        with pytest.raises(ValueError, match="prune_rate"):
            O.sparse_momentum(sgd, 0.9, 100, key=KEY, prune_rate=bad)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="update_every"):
            O.rigl(sgd, 0.9, 100, key=KEY, update_every=bad)
        with pytest.raises(ValueError, match="update_every"):
            O.dsr(sgd, 0.9, key=KEY, update_every=bad)
    with pytest.raises(TypeError, match="update_every"):
        O.set_sparse(sgd, 0.9, key=KEY, update_every=2.5)
    with pytest.raises(ValueError, match="sparsity"):
        O.static_sparse(sgd, 1.0, key=KEY)
    with pytest.raises(ValueError, match="distribution"):
        O.rigl(sgd, 0.9, 100, key=KEY, distribution="er")
    with pytest.raises(TypeError, match="inner"):
        O.rigl("sgd", 0.9, 100, key=KEY)
    # ERK over a leaf with a zero dimension
    zero = {"a": jnp.ones((0, 5)), "b": jnp.ones((4, 5))}
    with pytest.raises(ValueError, match=r"distribution='erk'.*zero dimension"):
        O.rigl(sgd, 0.9, 100, key=KEY, prunable={"a": True, "b": True}).init(zero)
    # a gradient-regrowth method without the gradient
    params = make_params()
    tx = O.rigl(sgd, 0.5, 100, key=KEY, prunable=PRUNABLE)
    state = tx.init(params)
    with pytest.raises(ValueError, match="gradient"):
        tx.update({"a": None, "b": params["b"], "bias": params["bias"]}, state, params)
    with pytest.raises(ValueError, match="params"):
        tx.update(params, state)


def test_none_leaves_pass_through():
    params = {"a": jnp.ones((6, 4)), "skip": None, "bias": jnp.ones(4)}
    for tx in (O.set_sparse(optax.sgd(0.1), 0.5, key=KEY, update_every=1, prunable={"a": True, "skip": False,
                                                                                      "bias": False}),
               O.rigl(optax.sgd(0.1), 0.5, 10, key=KEY, update_every=1, prunable={"a": True, "skip": False,
                                                                                   "bias": False})):
        state = tx.init(params)
        g = {"a": jnp.ones((6, 4)), "skip": None, "bias": jnp.ones(4)}
        for _ in range(3):
            u, state = tx.update(g, state, params)
        mask = O.get_mask(state)
        assert mask["skip"] is None and mask["bias"] is None and int(mask["a"].sum()) == 12
        sp = O.sparse_params(params, state)
        assert sp["skip"] is None and sp["bias"] is params["bias"] and u["skip"] is None


def test_rigl_jit_sharded_8_devices_matches_unsharded():
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("d",))
    params = {"a": jax.random.normal(jax.random.key(3), (16, 8)),
              "b": jax.random.normal(jax.random.key(4), (8, 8))}
    tx = O.rigl(optax.sgd(0.1, momentum=0.9), 0.75, 10, key=KEY, update_every=1, distribution="uniform",
                prunable={"a": True, "b": True})
    update = jax.jit(tx.update)

    def go(p):
        s = tx.init(p)
        for t in range(3):
            g = jax.tree.map(lambda x, t=t: jnp.cos(x * (t + 1)), p)
            u, s = update(g, s, p)
            p = optax.apply_updates(p, u)
        return p, O.get_mask(s)

    sharded = jax.device_put(params, NamedSharding(mesh, P("d")))
    p1, m1 = go(sharded)
    p2, m2 = go(params)
    assert len(p1["a"].sharding.device_set) == 8
    for k in ("a", "b"):
        np.testing.assert_array_equal(np.asarray(m1[k]), np.asarray(m2[k]))
        np.testing.assert_allclose(np.asarray(p1[k]), np.asarray(p2[k]), rtol=1e-6)
    assert int(m1["a"].sum()) == 32


@pytest.mark.parametrize("name", ["rigl", "set"])
def test_forward_at_params_equals_forward_at_masked_params(name):
    """The sparse_training pipeline's shortcut for methods that hold inactive
    weights at 0: mask the params once at step 0, then take gradients at the
    params themselves. Bitwise the trajectory of gradients at ``m * w``."""
    x = jax.random.normal(jax.random.key(3), (16, 12))

    def loss(p):
        return jnp.mean(jnp.tanh(jnp.tanh(x @ p["a"]) @ p["b"] + p["bias"]) ** 2)

    def make():
        inner = optax.sgd(0.1, momentum=0.9)
        if name == "rigl":
            return O.rigl(inner, 0.7, 12, key=KEY, update_every=3, prunable=PRUNABLE)
        return O.set_sparse(inner, 0.7, key=KEY, update_every=3, prunable=PRUNABLE)

    tx = make()

    @jax.jit
    def step(carried, s1, direct, s2):
        u, s1 = tx.update(jax.grad(loss)(O.sparse_params(carried, s1)), s1, carried)
        u2, s2 = tx.update(jax.grad(loss)(direct), s2, direct)
        return optax.apply_updates(carried, u), s1, optax.apply_updates(direct, u2), s2

    carried = make_params()
    s1 = tx.init(carried)
    direct = O.sparse_params(carried, s1)
    s2 = tx.init(direct)
    for _ in range(8):
        carried, s1, direct, s2 = step(carried, s1, direct, s2)
    for k in carried:
        np.testing.assert_array_equal(np.asarray(carried[k]), np.asarray(direct[k]))
    first, last = np_mask(tx.init(make_params())), np_mask(s1)
    assert any(not np.array_equal(first[k], last[k]) for k in first)  # the masks did change


# --------------------------------------------------------------------------- pipeline


def test_sparse_training_pipeline_smoke_digits():
    from jaxprune.configs.sparse_lenet300_fmnist import get_config
    from jaxprune.pipelines import get_pipeline

    c = get_config("rigl,0.9")
    c.data.name, c.model.name = "digits", "mlp"
    c.train.epochs, c.train.eval_batch_size = 1, 128
    c.method.update_every = 5
    r = get_pipeline(c.pipeline)(c, tempfile.mkdtemp() + "/w")
    assert r["method"] == "RigL" and r["sparsity_prunable"] == pytest.approx(0.9, abs=2e-3)
    assert 0.0 <= r["test_acc"] <= 1.0 and r["epochs"] == 1


# --------------------------------------------------------------------------- host dispatch


def _dispatch_tx(name: str) -> optax.GradientTransformation:
    inner = optax.sgd(0.1, momentum=0.9)
    every = {"key": KEY, "update_every": 3, "prunable": PRUNABLE}
    return {
        "rigl": lambda: O.rigl(inner, 0.7, 12, **every),
        "set": lambda: O.set_sparse(inner, 0.7, **every),
        "sparse_momentum": lambda: O.sparse_momentum(inner, 0.7, 12, **every),
        "dsr": lambda: O.dsr(inner, 0.7, threshold=0.5, **every),
        "acdc": lambda: O.acdc(inner, 0.7, 30, prunable=PRUNABLE),  # compressed at update 11
        "dpf": lambda: O.dpf(jp.masks.polynomial_schedule(0.7, 0, 9), update_every=3, prunable=PRUNABLE,
                             inner=inner),
        "incremental": lambda: O.dpf(jp.masks.polynomial_schedule(0.7, 0, 9), update_every=3,
                                     prunable=PRUNABLE, inner=inner, feedback=False),
    }[name]()


@pytest.mark.parametrize("name", ["rigl", "set", "sparse_momentum", "dsr", "acdc", "dpf", "incremental"])
def test_steps_without_the_update_branch_are_bitwise_equal(name):
    """``may_update_mask=False`` at the updates where ``mask_update_schedule``
    is False (the Trainer's dispatch) gives bitwise the trajectory of the
    single program with the mask update under ``lax.cond``."""
    tx = _dispatch_tx(name)
    due = jax.vmap(O.mask_update_schedule(tx))(jnp.arange(12)).tolist()
    assert any(due) and not all(due)
    full = jax.jit(tx.update)
    quiet = jax.jit(lambda g, s, p: tx.update(g, s, p, may_update_mask=False))
    one = two = make_params()
    s1 = s2 = tx.init(one)
    for t in range(12):
        g = grads_at(t)
        u1, s1 = full(g, s1, one)
        u2, s2 = (full if due[t] else quiet)(g, s2, two)
        one, two = optax.apply_updates(one, u1), optax.apply_updates(two, u2)
    for a, b in zip(jax.tree.leaves((one, s1)), jax.tree.leaves((two, s2)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not _same_masks(s1, tx.init(make_params()))  # the masks did change


def _same_masks(a, b) -> bool:
    ma, mb = np_mask(a), np_mask(b)
    return ma.keys() == mb.keys() and all(np.array_equal(ma[k], mb[k]) for k in ma)


def test_mask_update_schedule_only_for_mask_updating_transforms():
    tx = O.set_sparse(optax.sgd(0.1), 0.7, key=KEY, update_every=4, prunable=PRUNABLE)
    due = O.mask_update_schedule(tx)
    assert [bool(due(t)) for t in range(9)] == [t in (4, 8) for t in range(9)]
    rigl = O.mask_update_schedule(O.rigl(optax.sgd(0.1), 0.7, 10, key=KEY, update_every=2, prunable=PRUNABLE))
    assert [bool(rigl(t)) for t in range(10)] == [t in (2, 4, 6) for t in range(10)]  # stops at 75%
    assert O.mask_update_schedule(O.static_sparse(optax.sgd(0.1), 0.7, key=KEY, prunable=PRUNABLE)) is None
    dpf = O.mask_update_schedule(O.dpf(0.5, update_every=4))
    incremental = O.mask_update_schedule(O.dpf(0.5, update_every=4, feedback=False, freeze_after=4))
    assert [bool(dpf(t)) for t in range(9)] == [t in (0, 4, 8) for t in range(9)]
    assert [bool(incremental(t)) for t in range(9)] == [t in (0, 1, 4, 5) for t in range(9)]  # + zero checks
    assert O.mask_update_schedule(optax.chain(tx)) is None
    assert O.mask_update_schedule(optax.sgd(0.1)) is None
    # the promise is the caller's: at a due update, may_update_mask=False leaves the mask as it is
    params = make_params()
    state = tx.init(params)
    update = jax.jit(tx.update, static_argnames="may_update_mask")
    for _ in range(4):
        _, state = update(grads_at(0), state, params)
    _, kept = update(grads_at(0), state, params, may_update_mask=False)
    _, moved = update(grads_at(0), state, params)
    assert _same_masks(kept, state) and not _same_masks(moved, state)
    for bad in (O.set_sparse(optax.sgd(0.1), 0.7, key=KEY, prunable=PRUNABLE), O.dpf(0.5)):
        with pytest.raises(TypeError, match="may_update_mask must be a Python bool"):
            bad.update(grads_at(0), bad.init(params), params, may_update_mask=jnp.array(False))


@pytest.mark.parametrize("method", ["rigl", "dpf"])
def test_trainer_dispatch_equals_the_single_step_program(method):
    """A Trainer given ``mask_update_due`` ends bitwise where one without it
    does: the plain step (RigL) and the carried one (DPF, forward at ``m * w``)."""
    from jaxprune.configs.common import base_config
    from jaxprune.train import Trainer, get_model, load_dataset

    ds = load_dataset("digits", val_fraction=0.1, seed=0)
    cfg = base_config().train
    cfg.update(dict(epochs=1, batch_size=128, eval_batch_size=256, lr=0.05, log_every=5))
    model = get_model("mlp", ds.num_outputs, hidden=(16,))
    finals = []
    for dispatch in (False, True):
        inner = optax.sgd(0.05, momentum=0.9)
        if method == "rigl":
            tx, forward = O.rigl(inner, 0.8, 12, key=KEY, update_every=3), None
        else:
            schedule = jp.masks.polynomial_schedule(0.8, 0, 6)
            tx, forward = O.dpf(schedule, update_every=3, inner=inner), O.sparse_params
        due = O.mask_update_schedule(tx) if dispatch else None
        trainer = Trainer(model, ds, cfg, tx=tx, forward_params=forward, mask_update_due=due)
        finals.append(trainer.fit(progress=False))
    assert trainer._quiet_step is not None and (forward is None) == (trainer._quiet_carried is None)
    for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
