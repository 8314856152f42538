"""Tests for jaxprune.transforms (jp.optax): masked_update, DPF / Incremental,
state lookup, checkpointing and sharding. References are plain numpy."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxprune as jp
from jaxprune.transforms import DPFState, dpf_diagnostics, paper_prunable

# ----------------------------------------------------------------------------- helpers


def np_topk_global(weights, sparsity):
    """Numpy reference: keep the round((1-s)*n) largest |w| over all arrays
    (stable argsort: lower flat index wins ties)."""
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    k = round((1.0 - sparsity) * flat.size)
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    out, start = [], 0
    for w in weights:
        out.append(keep[start : start + w.size].reshape(w.shape))
        start += w.size
    return out


def cubic(t, s_f, end):
    return s_f * (1.0 - (1.0 - min(t / end, 1.0)) ** 3)


def lsq_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 10)).astype(np.float32)
    y = rng.normal(size=(32, 3)).astype(np.float32)
    z = rng.normal(size=(32, 5)).astype(np.float32)
    u = rng.normal(size=(32, 4)).astype(np.float32)
    params = {
        "w": rng.normal(size=(10, 3)).astype(np.float32),
        "b": np.zeros(3, np.float32),
        "v": rng.normal(size=(5, 4)).astype(np.float32),
    }
    return (x, y, z, u), params


def lsq_loss(p, data):
    x, y, z, u = data
    return 0.5 * jnp.mean(jnp.sum((x @ p["w"] + p["b"] - y) ** 2, 1)) + 0.5 * jnp.mean(
        jnp.sum((z @ p["v"] - u) ** 2, 1)
    )


PRUNABLE = {"w": True, "b": False, "v": True}


def make_step(tx, loss, data, donate=False):
    def step(params, opt_state):
        grads = jax.grad(loss)(jp.optax.sparse_params(params, opt_state), data)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


# ----------------------------------------------------------------------------- DPF vs numpy


def test_dpf_matches_numpy_reference_loop():
    data, p0 = lsq_problem()
    x, y, z, u = (d.astype(np.float64) for d in data)
    lr, mu, wd, every, steps, s_f, end = 0.05, 0.9, 1e-3, 4, 100, 0.7, 60
    tx = optax.chain(
        jp.optax.dpf(jp.masks.polynomial_schedule(s_f, 0, end), update_every=every, prunable=PRUNABLE),
        optax.add_decayed_weights(wd),
        optax.sgd(lr, momentum=mu),
    )
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    state = tx.init(params)
    step = make_step(tx, lsq_loss, data)

    # reference: Algorithm 1 with the documented timing (mask of w_t used from step t+1)
    w = {k: v.astype(np.float64) for k, v in p0.items()}
    mask = {"w": np.ones((10, 3), bool), "v": np.ones((5, 4), bool)}
    trace = {k: np.zeros_like(v) for k, v in w.items()}
    for t in range(steps):
        wt, vt = w["w"] * mask["w"], w["v"] * mask["v"]
        r1 = x @ wt + w["b"] - y
        g = {"w": x.T @ r1 / 32, "b": r1.mean(0), "v": z.T @ (z @ vt - u) / 32}
        if t % every == 0:
            mask["w"], mask["v"] = np_topk_global([w["w"], w["v"]], cubic(t, s_f, end))
        for k in w:
            trace[k] = g[k] + wd * w[k] + mu * trace[k]
            w[k] = w[k] - lr * trace[k]
        params, state = step(params, state)
        got = jp.optax.get_mask(state)
        assert got["b"] is None
        np.testing.assert_array_equal(np.asarray(got["w"]), mask["w"], err_msg=f"step {t}")
        np.testing.assert_array_equal(np.asarray(got["v"]), mask["v"], err_msg=f"step {t}")
    for k in w:
        np.testing.assert_allclose(np.asarray(params[k]), w[k], rtol=2e-4, atol=2e-5)
    assert 1 - (mask["w"].sum() + mask["v"].sum()) / 50 == pytest.approx(0.7, abs=0.011)


# ----------------------------------------------------------------------------- feedback / incremental


def _push_up_problem(tx):
    # w = [1.0, 0.1]: at 50% sparsity w[1] is pruned first; the loss -w[1] pushes it up.
    params = {"w": jnp.array([1.0, 0.1])}
    state = tx.init(params)
    step = make_step(tx, lambda p, _: -p["w"][1], None)
    history = []
    for _ in range(30):
        params, state = step(params, state)
        history.append((np.asarray(jp.optax.get_mask(state)["w"]), np.asarray(params["w"])))
    return history


def _half_dpf(feedback, inner=None):
    return jp.optax.dpf(0.5, update_every=1, prunable={"w": True}, feedback=feedback, inner=inner)


def test_dpf_reactivates_pruned_weight():
    history = _push_up_problem(_half_dpf(True, inner=optax.sgd(0.1)))
    assert history[0][0].tolist() == [True, False]  # pruned at the first update
    # the gradient at the pruned weight still reaches the dense weight: after 0.1 + 0.1 t > 1 it is back
    assert history[-1][0].tolist() == [False, True]
    assert history[-1][1][1] == pytest.approx(0.1 + 0.1 * 30, rel=1e-5)


@pytest.mark.parametrize("as_inner", [True, False])
def test_incremental_never_reactivates_and_zeroes(as_inner):
    sgd = optax.sgd(0.1, momentum=0.9)
    # as inner=, or placed last in the chain
    tx = _half_dpf(False, inner=sgd) if as_inner else optax.chain(sgd, _half_dpf(False))
    history = _push_up_problem(tx)
    for mask, w in history:
        assert mask.tolist() == [True, False]
        assert w[1] == 0.0  # exactly zero, at every step


def test_incremental_mask_only_shrinks():
    data, p0 = lsq_problem(1)
    tx = jp.optax.dpf(
        jp.masks.polynomial_schedule(0.8, 0, 40),
        update_every=2,
        prunable=PRUNABLE,
        feedback=False,
        inner=optax.sgd(0.1, momentum=0.9),
    )
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    state = tx.init(params)
    step = make_step(tx, lsq_loss, data)
    prev = None
    for _ in range(50):
        params, state = step(params, state)
        m = jp.optax.get_mask(state)
        cur = np.concatenate([np.asarray(m["w"]).ravel(), np.asarray(m["v"]).ravel()])
        if prev is not None:
            assert not np.any(cur & ~prev)  # nothing comes back
        dense = np.concatenate([np.asarray(params["w"]).ravel(), np.asarray(params["v"]).ravel()])
        assert np.all(dense[~cur] == 0.0)
        prev = cur
    assert 1 - prev.mean() == pytest.approx(0.8, abs=0.011)
    assert float(dpf_diagnostics(state)["delta"]) == 0.0  # pruned dense weights are zero


# ----------------------------------------------------------------------------- timing, schedule, diagnostics


def test_mask_updates_exactly_at_multiples_and_follows_schedule():
    data, p0 = lsq_problem(2)
    every, sched = 5, (lambda t: jnp.minimum(jnp.asarray(t, jnp.float32) / 40.0, 0.8))
    tx = optax.chain(
        jp.optax.dpf(sched, update_every=every, prunable=PRUNABLE), optax.sgd(0.05, momentum=0.9)
    )
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    state = tx.init(params)
    step = make_step(tx, lsq_loss, data)
    for t in range(42):
        if t % every == 0:  # the documented rule: mask of the params passed to update t, at schedule(t)
            w_now = [np.asarray(params["w"], np.float64), np.asarray(params["v"], np.float64)]
            expected = np_topk_global(w_now, min(t / 40, 0.8))
            prev = [np.asarray(m) for m in (jp.optax.get_mask(state)["w"], jp.optax.get_mask(state)["v"])]
        params, state = step(params, state)
        m = jp.optax.get_mask(state)
        np.testing.assert_array_equal(np.asarray(m["w"]), expected[0], err_msg=f"step {t}")
        np.testing.assert_array_equal(np.asarray(m["v"]), expected[1], err_msg=f"step {t}")
        diag = dpf_diagnostics(state)
        s_last = min((t - t % every) / 40, 0.8)
        assert int(diag["step"]) == t + 1
        assert float(diag["target_sparsity"]) == pytest.approx(s_last, abs=1e-6)
        assert float(diag["sparsity"]) == pytest.approx(1 - round((1 - s_last) * 50) / 50)
        flips = sum(np.sum(a != b) for a, b in zip(prev, expected, strict=True)) / 50
        assert float(diag["flip_fraction"]) == pytest.approx(flips)
        removed = sum(np.sum((w * ~k) ** 2) for w, k in zip(w_now, expected, strict=True))
        assert float(diag["delta"]) == pytest.approx(
            removed / sum(np.sum(w**2) for w in w_now), rel=1e-4, abs=1e-7
        )


def test_freeze_after_stops_mask_updates():
    data, p0 = lsq_problem(3)
    tx = optax.chain(
        jp.optax.dpf(
            jp.masks.polynomial_schedule(0.6, 0, 8), update_every=2, prunable=PRUNABLE, freeze_after=8
        ),
        optax.sgd(0.2, momentum=0.9),
    )
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    state = tx.init(params)
    step = make_step(tx, lsq_loss, data)
    for _ in range(9):
        params, state = step(params, state)
    frozen = jax.tree.map(np.asarray, jp.optax.get_mask(state))
    for _ in range(40):
        params, state = step(params, state)
    jax.tree.map(np.testing.assert_array_equal, frozen, jp.optax.get_mask(state))


def test_structured_filter_dpf_drops_whole_units():
    rng = np.random.default_rng(4)
    params = {
        "Conv_0": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 8)), jnp.float32), "bias": jnp.zeros(8)},
        "Conv_1": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 8, 6)), jnp.float32), "bias": jnp.zeros(6)},
        "Dense_0": {"kernel": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32), "bias": jnp.zeros(3)},
    }
    tx = jp.optax.dpf(0.5, update_every=1, scorer=jp.masks.filter_norm, scope="filter")
    state = tx.init(params)
    _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
    m = jp.optax.get_mask(state)
    assert m["Dense_0"]["kernel"] is None and m["Conv_0"]["bias"] is None  # paper's set: convs only
    norms = np.concatenate(
        [
            np.linalg.norm(np.asarray(params[c]["kernel"]).reshape(-1, n), axis=0)
            for c, n in (("Conv_0", 8), ("Conv_1", 6))
        ]
    )
    keep = np.zeros(14, bool)
    keep[np.argsort(-norms, kind="stable")[:7]] = True
    for name, lo, hi in (("Conv_0", 0, 8), ("Conv_1", 8, 14)):
        km = np.asarray(m[name]["kernel"])
        np.testing.assert_array_equal(km, np.broadcast_to(keep[lo:hi], km.shape))


def test_random_scorer_uses_key_and_is_reproducible():
    params = {"Dense_0": {"kernel": jnp.ones((6, 5))}, "Dense_1": {"kernel": jnp.ones((5, 2))}}

    def run(seed):
        tx = jp.optax.dpf(0.6, update_every=1, scorer=jp.masks.random, key=jax.random.key(seed))
        state = tx.init(params)
        _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
        return np.asarray(jp.optax.get_mask(state)["Dense_0"]["kernel"])

    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 12 and not np.array_equal(a, c)


def test_paper_prunable_rule():
    mlp = {f"Dense_{i}": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)} for i in range(11)}
    flags = paper_prunable(mlp)
    assert flags["Dense_10"]["kernel"] is False  # natural order: Dense_10 is the last layer
    assert all(flags[f"Dense_{i}"]["kernel"] for i in range(10))
    assert not any(flags[f"Dense_{i}"]["bias"] for i in range(11))


def test_summarize_agrees_with_dpf_diagnostics_on_the_readme_snippet():
    """The README's DPF snippet as written. DPF prunes the paper's set (the last
    dense layer stays dense) while summarize's default set is every kernel:
    summarize over the optimizer's mask (or paper_prunable) reports what
    dpf_diagnostics reports; both are checked against a numpy count of zeros."""
    model = nn.Sequential([nn.Dense(300), nn.relu, nn.Dense(100), nn.relu, nn.Dense(10)])
    batch = {"x": jax.random.normal(jax.random.key(0), (128, 784)), "y": jnp.arange(128) % 10}
    params = model.init(jax.random.key(1), batch["x"])["params"]

    def loss(params, batch):
        logits = model.apply({"params": params}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    tx = optax.chain(jp.optax.dpf(jp.masks.polynomial_schedule(0.9, 0, 64)),
                     optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9, nesterov=True))

    @jax.jit
    def step(params, opt_state, batch):
        w_tilde = jp.optax.sparse_params(params, opt_state)
        grads = jax.grad(loss)(w_tilde, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    for _ in range(65):
        params, opt_state = step(params, opt_state, batch)
    pruned = jp.optax.sparse_params(params, opt_state)
    diag = float(dpf_diagnostics(opt_state)["sparsity"])

    kernels = {k: np.asarray(v["kernel"]) for k, v in pruned.items()}
    pruned_kernels = ["layers_0", "layers_2"]  # the paper's set: all but the last dense kernel
    ref = sum((kernels[k] == 0).sum() for k in pruned_kernels) / sum(kernels[k].size for k in pruned_kernels)
    ref_all = sum(np.count_nonzero(v) for v in kernels.values()) / sum(v.size for v in kernels.values())
    assert abs(ref - 0.9) <= 1 / (784 * 300 + 300 * 100)
    by_mask = jp.summarize(pruned, prunable=jp.optax.get_mask(opt_state))["prunable"]
    by_paper = jp.summarize(pruned, prunable=paper_prunable(params))["prunable"]
    assert by_mask == by_paper
    np.testing.assert_allclose([1 - by_mask["density"], diag], ref, rtol=1e-6)
    np.testing.assert_allclose(jp.summarize(pruned)["prunable"]["density"], ref_all, rtol=1e-12)


# ----------------------------------------------------------------------------- masked_update


def _masked_run(opt, place, pre_masked=True, steps=1000):
    rng = np.random.default_rng(5)
    params = {
        "k": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=6), jnp.float32),
    }
    mask = {"k": jnp.asarray(rng.random((8, 6)) < 0.5), "b": None}
    if pre_masked:
        params = jp.apply_mask(params, mask)
    x = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    loss = lambda p: jnp.mean((jnp.tanh(x @ p["k"] + p["b"]) - 1.0) ** 2)  # nonzero grads everywhere
    if place == "first":
        tx = optax.chain(jp.optax.masked_update(mask), *opt)
    elif place == "last":
        tx = optax.chain(*opt, jp.optax.masked_update(mask))
    else:
        tx = jp.optax.masked_update(mask, inner=optax.chain(*opt))
    state = tx.init(params)

    def body(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (out, _), _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=steps))((params, state))
    return params, mask, out


NESTEROV_WD = (optax.add_decayed_weights(1e-2), optax.sgd(0.05, momentum=0.9, nesterov=True))
ADAM = (optax.adam(1e-2),)


@pytest.mark.parametrize("opt", [NESTEROV_WD, ADAM], ids=["nesterov_wd", "adam"])
@pytest.mark.parametrize("place", ["first", "last", "inner"])
def test_masked_update_keeps_pruned_weights_exactly_zero(opt, place):
    p0, mask, out = _masked_run(opt, place)
    pruned = ~np.asarray(mask["k"])
    assert np.all(np.asarray(out["k"])[pruned] == 0.0)
    assert np.all(np.asarray(out["k"])[~pruned] != np.asarray(p0["k"])[~pruned])  # the rest trained
    assert not np.array_equal(np.asarray(out["b"]), np.asarray(p0["b"]))  # None leaf: trained normally


@pytest.mark.parametrize("opt", [NESTEROV_WD, ADAM], ids=["nesterov_wd", "adam"])
def test_masked_update_last_freezes_pruned_coordinates(opt):
    # placed last, pruned coordinates never move, even from unmasked (nonzero) weights
    p0, mask, out = _masked_run(opt, "last", pre_masked=False, steps=200)
    pruned = ~np.asarray(mask["k"])
    np.testing.assert_array_equal(np.asarray(out["k"])[pruned], np.asarray(p0["k"])[pruned])


# ----------------------------------------------------------------------------- state lookup


@pytest.mark.parametrize(
    "wrap",
    [
        lambda t: optax.named_chain(("dpf", t), ("sgd", optax.sgd(0.1))),
        lambda t: optax.inject_hyperparams(lambda lr: optax.chain(t, optax.sgd(lr)))(lr=0.1),
        lambda t: optax.MultiSteps(optax.chain(t, optax.sgd(0.1)), every_k_schedule=2),
    ],
    ids=["named_chain", "inject_hyperparams", "multisteps"],
)
def test_state_found_inside_wrappers(wrap):
    params = {"Dense_0": {"kernel": jnp.arange(12.0).reshape(4, 3)}, "Dense_1": {"kernel": jnp.ones((3, 2))}}
    tx = wrap(jp.optax.dpf(0.5, update_every=1))
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(2):
        _, state = update(jax.tree.map(jnp.ones_like, params), state, params)
    m = jp.optax.get_mask(state)
    np.testing.assert_array_equal(np.asarray(m["Dense_0"]["kernel"]).ravel(), np.arange(12) >= 6)
    sp = jp.optax.sparse_params(params, state)
    np.testing.assert_array_equal(
        np.asarray(sp["Dense_0"]["kernel"]).ravel(), np.where(np.arange(12) >= 6, np.arange(12.0), 0)
    )
    assert sp["Dense_1"]["kernel"] is params["Dense_1"]["kernel"]


def test_masked_update_state_lookup_and_sparse_params():
    params = {"k": jnp.ones((2, 2)), "b": jnp.ones(2)}
    mask = {"k": jnp.array([[True, False], [False, True]]), "b": None}
    state = optax.chain(optax.sgd(0.1), jp.optax.masked_update(mask)).init(params)
    np.testing.assert_array_equal(np.asarray(jp.optax.sparse_params(params, state)["k"]), np.eye(2))


# ----------------------------------------------------------------------------- checkpoint, donation, sharding


def test_orbax_roundtrip_then_50_steps_bit_identical(tmp_path):
    data, p0 = lsq_problem(6)
    tx = optax.chain(
        jp.optax.dpf(jp.masks.polynomial_schedule(0.7, 0, 40), update_every=3, prunable=PRUNABLE),
        optax.add_decayed_weights(1e-3),
        optax.sgd(0.05, momentum=0.9, nesterov=True),
    )
    step = make_step(tx, lsq_loss, data)
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    state = tx.init(params)
    for _ in range(20):
        params, state = step(params, state)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "ckpt", {"params": params, "opt_state": state})
    rp, rs = restored["params"], restored["opt_state"]
    assert jax.tree.structure(rs) == jax.tree.structure(state)
    assert isinstance(rs[0], DPFState) and rs[0].mask["b"] is None
    for _ in range(50):
        params, state = step(params, state)
        rp, rs = step(rp, rs)
    jax.tree.map(np.testing.assert_array_equal, (params, state), (rp, rs))


def test_jit_with_donation():
    data, p0 = lsq_problem(7)
    tx = optax.chain(jp.optax.dpf(0.5, update_every=2, prunable=PRUNABLE), optax.sgd(0.05, momentum=0.9))
    ref_step, don_step = make_step(tx, lsq_loss, data), make_step(tx, lsq_loss, data, donate=True)
    pa = {k: jnp.asarray(v) for k, v in p0.items()}
    pb = {k: jnp.asarray(v) for k, v in p0.items()}
    sa, sb = tx.init(pa), tx.init(pb)
    for _ in range(6):
        pa, sa = ref_step(pa, sa)
        pb, sb = don_step(pb, sb)
    jax.tree.map(np.testing.assert_array_equal, (pa, sa), (pb, sb))


def test_sharded_params_same_masks_and_params():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (simulated) devices")
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
    p0 = {
        "Dense_0": {"kernel": rng.normal(size=(16, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)},
        "Dense_1": {"kernel": rng.normal(size=(8, 4)).astype(np.float32)},
    }
    loss = lambda p, _: jnp.mean(
        (jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]) @ p["Dense_1"]["kernel"] - y) ** 2
    )
    prunable = {"Dense_0": {"kernel": True, "bias": False}, "Dense_1": {"kernel": True}}
    tx = optax.chain(
        jp.optax.dpf(jp.masks.polynomial_schedule(0.75, 0, 20), update_every=2, prunable=prunable),
        optax.sgd(0.1, momentum=0.9),
    )
    mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
    shard = functools.partial(jax.device_put, device=NamedSharding(mesh, PartitionSpec("d")))

    def run(params):
        state = tx.init(params)
        step = make_step(tx, loss, None)
        for _ in range(30):
            params, state = step(params, state)
        return params, jp.optax.get_mask(state)

    p1, m1 = run(jax.tree.map(jnp.asarray, p0))
    p8, m8 = run(jax.tree.map(shard, p0))
    assert len(p8["Dense_0"]["kernel"].sharding.device_set) == 8
    jax.tree.map(np.testing.assert_array_equal, m1, m8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p8)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"update_every": 0}, ValueError, "update_every"),
        ({"update_every": 2.0}, TypeError, "update_every"),
        ({"scope": "row"}, ValueError, "scope"),
        ({"freeze_after": -1}, ValueError, "freeze_after"),
        ({"scorer": jp.masks.random}, ValueError, "key"),
        ({"scorer": lambda a, b, c: a}, TypeError, "scorer"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        jp.optax.dpf(0.5, **kwargs)


@pytest.mark.parametrize(
    "schedule", [1.5, -0.1, float("nan"), lambda t: 0.1 * t, lambda t: jnp.where(t > 5000, -1.0, 0.5)]
)
def test_bad_schedule(schedule):
    with pytest.raises(ValueError, match=r"schedule.*\[0, 1\]|schedule.*valid range"):
        jp.optax.dpf(schedule)


def test_prunable_mismatch_and_lookup_errors():
    params = {"a": jnp.ones((3, 3)), "b": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match="prunable"):
        jp.optax.dpf(0.5, prunable={"a": True}).init(params)
    with pytest.raises(ValueError, match="prunable selects no leaf"):
        jp.optax.dpf(0.5, prunable={"a": False, "b": False}).init(params)
    with pytest.raises(ValueError, match="holds no"):
        jp.optax.get_mask(optax.sgd(0.1).init(params))
    with pytest.raises(ValueError, match="params"):
        tx = jp.optax.dpf(0.5)
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match="shape"):
        jp.optax.masked_update({"a": jnp.ones((2, 3), bool), "b": None}).init(params)
    with pytest.raises(TypeError, match="boolean"):
        jp.optax.masked_update({"a": jnp.ones((3, 3)), "b": None}).init(params)


def test_set_mask_replaces_the_masked_update_mask():
    params = {"w": jnp.arange(4.0), "b": jnp.ones(2)}
    first = {"w": jnp.array([True, True, False, False]), "b": None}
    second = {"w": jnp.array([False, True, True, False]), "b": None}
    tx = optax.chain(optax.sgd(0.1), jp.optax.masked_update(first))
    state = jp.optax.set_mask(tx.init(params), second)
    np.testing.assert_array_equal(jp.optax.get_mask(state)["w"], second["w"])
    updates, _ = tx.update({"w": jnp.ones(4), "b": jnp.ones(2)}, state, params)
    np.testing.assert_array_equal(updates["w"], np.array([0.0, -0.1, -0.1, 0.0], np.float32))


# ----------------------------------------------------------------------------- issue 17: jit and composition

RUNTIME_ERRORS = (ValueError, jax.errors.JaxRuntimeError)


def _run(tx, params, steps, data, jit_init=False):
    """``steps`` jitted DPF steps on the least-squares problem: (params, state, mask after each step)."""
    state = (jax.jit(tx.init) if jit_init else tx.init)(params)
    step = make_step(tx, lsq_loss, data)
    masks = []
    for _ in range(steps):
        params, state = step(params, state)
        masks.append(jax.tree.map(np.asarray, jp.optax.get_mask(state)))
    return params, state, masks


def _assert_same_run(a, b):
    (pa, _, ma), (pb, _, mb) = a, b
    assert len(ma) == len(mb)
    for t, (x, y) in enumerate(zip(ma, mb, strict=True)):
        jax.tree.map(functools.partial(np.testing.assert_array_equal, err_msg=f"mask after step {t}"), x, y)
    jax.tree.map(np.testing.assert_array_equal, pa, pb)


def test_inject_hyperparams_under_jit_matches_plain_chain():
    # issue 17.1: the schedule used to be probed (float()) on a tracer when the factory ran under jit
    data, p0 = lsq_problem(11)
    sched = jp.masks.polynomial_schedule(0.7, 0, 12)

    def factory(learning_rate):
        return optax.chain(
            jp.optax.dpf(sched, update_every=3, prunable=PRUNABLE), optax.sgd(learning_rate, momentum=0.9)
        )

    params = {k: jnp.asarray(v) for k, v in p0.items()}
    injected = _run(
        optax.inject_hyperparams(factory)(learning_rate=0.05), params, 16, data=data, jit_init=True
    )
    plain = _run(factory(0.05), params, 16, data=data)
    _assert_same_run(injected, plain)
    densities = [m["w"].sum() + m["v"].sum() for m in plain[2]]
    assert densities[2] == 50 and densities[3] < 50 and densities[-1] < densities[3]  # masks did change
    assert float(injected[1].hyperparams["learning_rate"]) == pytest.approx(0.05)


def test_inject_hyperparams_sparsity_as_hyperparameter():
    # the sparsity itself injected: dpf receives a traced scalar each step (schedule evaluated by optax)
    data, p0 = lsq_problem(12)
    sched = jp.masks.polynomial_schedule(0.6, 0, 8)
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    make = lambda sparsity: jp.optax.dpf(sparsity, update_every=2, prunable=PRUNABLE, inner=optax.sgd(0.1))
    injected = _run(optax.inject_hyperparams(make)(sparsity=sched), params, 12, data=data, jit_init=True)
    plain = _run(make(sched), params, 12, data=data)
    _assert_same_run(injected, plain)
    # a constant injected sparsity, init not jitted: a concrete array, validated at construction
    with pytest.raises(ValueError, match=r"schedule.*valid range"):
        optax.inject_hyperparams(make)(sparsity=1.5).init(params)


def _dpf_of_schedule(build):
    return lambda x: jp.optax.dpf(build(x), prunable=PRUNABLE)


def test_inject_hyperparams_schedule_built_from_traced_hyperparameters():
    # the schedule CONSTRUCTOR runs on traced values (final sparsity, end step) under jit
    data, p0 = lsq_problem(17)
    params = {k: jnp.asarray(v) for k, v in p0.items()}

    def make(final, end):
        sched = jp.masks.polynomial_schedule(final, 0, end)
        return jp.optax.dpf(sched, update_every=2, prunable=PRUNABLE, inner=optax.sgd(0.1))

    injected = _run(optax.inject_hyperparams(make)(final=0.6, end=6), params, 9, data=data, jit_init=True)
    plain = _run(make(0.6, 6), params, 9, data=data)
    _assert_same_run(injected, plain)


@pytest.mark.parametrize(
    ("build", "expected"), [(jp.masks.constant_schedule, 0.5), (jp.masks.geometric_schedule, 0.0)]
)
def test_inject_hyperparams_constant_and_geometric_schedules_from_traced_values(build, expected):
    params = {k: jnp.asarray(v) for k, v in lsq_problem(17)[1].items()}
    tx = optax.inject_hyperparams(_dpf_of_schedule(build))(x=0.5)
    _, state = jax.jit(tx.update)(params, jax.jit(tx.init)(params), params)
    assert float(dpf_diagnostics(state)["target_sparsity"]) == pytest.approx(expected)  # schedule(0)


def test_inject_hyperparams_traced_sparsity_out_of_range_fails_at_run_time():
    params = {k: jnp.asarray(v) for k, v in lsq_problem(13)[1].items()}
    make = lambda sparsity: jp.optax.dpf(sparsity, update_every=1, prunable=PRUNABLE)
    tx = optax.inject_hyperparams(make)(sparsity=1.5)
    state = jax.jit(tx.init)(params)  # traced at construction: cannot be checked there
    with pytest.raises(RUNTIME_ERRORS, match=r"schedule\(0\)=1.5 is outside the valid range"):
        jax.block_until_ready(jax.jit(tx.update)(params, state, params))


def test_inject_hyperparams_update_every_needs_static_args():
    params = {k: jnp.asarray(v) for k, v in lsq_problem()[1].items()}
    make = lambda update_every: jp.optax.dpf(0.5, update_every=update_every, prunable=PRUNABLE)
    with pytest.raises(TypeError, match="static_args"):
        optax.inject_hyperparams(make)(update_every=2).init(params)
    tx = optax.inject_hyperparams(make, static_args="update_every")(update_every=2)
    _, state = jax.jit(tx.update)(params, jax.jit(tx.init)(params), params)
    assert float(dpf_diagnostics(state)["sparsity"]) == pytest.approx(0.5)


# --- multi_transform / masked (issue 17.2)


def _conv_params(seed=20):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    return {
        "Conv_0": {"kernel": f(3, 3, 2, 4), "bias": f(4)},
        "Conv_1": {"kernel": f(3, 3, 4, 4), "bias": f(4)},
        "Dense_0": {"kernel": f(4, 3), "bias": f(3)},
    }


def _conv_loss(p, x):
    """A cheap stand-in for two 3x3 convs (each kernel applied as one im2col matmul) and a dense head."""
    h = jnp.tanh(x @ p["Conv_0"]["kernel"].reshape(18, 4) + p["Conv_0"]["bias"])
    h = jnp.tanh(jnp.tile(h, 9) @ p["Conv_1"]["kernel"].reshape(36, 4) + p["Conv_1"]["bias"])
    return jnp.mean((h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"] - 0.5) ** 2)


CONV_X = jnp.asarray(np.random.default_rng(21).normal(size=(16, 18)), jnp.float32)
KERNELS = ("Conv_0", "Conv_1")


def _split(tree):
    """(conv kernels, the rest) as two sub-trees."""
    kernels = {c: {"kernel": tree[c]["kernel"]} for c in KERNELS}
    rest = {c: {k: v for k, v in tree[c].items() if not (c in KERNELS and k == "kernel")} for c in tree}
    return kernels, rest


def _join(kernels, rest):
    return {c: {**rest[c], **kernels.get(c, {})} for c in rest}


def _direct_reference(sparse_tx, steps, mask_of):
    """The same training with ``sparse_tx`` applied to the conv kernels alone and adam to the rest."""
    params = _conv_params()
    pk, pr = _split(params)
    dense_tx = optax.adam(1e-2)
    sk, sr = sparse_tx.init(pk), dense_tx.init(pr)

    @jax.jit
    def step(pk, pr, sk, sr):
        mk = mask_of(sk)
        w_tilde = _join(jax.tree.map(lambda w, m: jnp.where(m, w, 0.0), pk, mk), pr)
        gk, gr = _split(jax.grad(_conv_loss)(w_tilde, CONV_X))
        uk, sk = sparse_tx.update(gk, sk, pk)
        ur, sr = dense_tx.update(gr, sr, pr)
        return optax.apply_updates(pk, uk), optax.apply_updates(pr, ur), sk, sr

    masks = []
    for _ in range(steps):
        pk, pr, sk, sr = step(pk, pr, sk, sr)
        masks.append(jax.tree.map(np.asarray, mask_of(sk)))
    return _join(pk, pr), masks


def _branch_run(tx, steps):
    params = _conv_params()
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        grads = jax.grad(_conv_loss)(jp.optax.sparse_params(p, s), CONV_X)
        u, s = tx.update(grads, s, p)
        return optax.apply_updates(p, u), s

    masks = []
    for _ in range(steps):
        params, state = step(params, state)
        full = jp.optax.get_mask(state, params)
        masks.append({c: {"kernel": np.asarray(full[c]["kernel"])} for c in KERNELS})
        assert all(full[c]["bias"] is None for c in full) and full["Dense_0"]["kernel"] is None
    return params, state, masks


LABELS = {
    c: {"kernel": "sparse" if c in KERNELS else "dense", "bias": "dense"}
    for c in ("Conv_0", "Conv_1", "Dense_0")
}


def test_dpf_as_multi_transform_branch_equals_direct_subtree():
    sched = jp.masks.polynomial_schedule(0.75, 0, 6)
    sparse = lambda: optax.chain(jp.optax.dpf(sched, update_every=2), optax.sgd(0.05, momentum=0.9))
    tx = optax.multi_transform({"sparse": sparse(), "dense": optax.adam(1e-2)}, LABELS)
    params, _, masks = _branch_run(tx, 10)
    ref_params, ref_masks = _direct_reference(sparse(), 10, jp.optax.get_mask)
    for t, (a, b) in enumerate(zip(masks, ref_masks, strict=True)):
        jax.tree.map(functools.partial(np.testing.assert_array_equal, err_msg=f"step {t}"), a, b)
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)
    kept = sum(m["kernel"].sum() for m in masks[-1].values())
    assert kept == round(0.25 * (72 + 144))  # the dense leaves are not in the prunable set


def test_incremental_as_multi_transform_branch_equals_direct_subtree():
    inc = lambda: jp.optax.dpf(
        0.5,
        update_every=2,
        feedback=False,
        inner=optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.05, momentum=0.9)),
    )
    tx = optax.multi_transform({"sparse": inc(), "dense": optax.adam(1e-2)}, LABELS)
    params, _, masks = _branch_run(tx, 6)
    ref_params, ref_masks = _direct_reference(inc(), 6, jp.optax.get_mask)
    jax.tree.map(np.testing.assert_array_equal, masks, ref_masks)
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)
    for c in KERNELS:
        assert np.all(np.asarray(params[c]["kernel"])[~masks[-1][c]["kernel"]] == 0.0)


def test_masked_update_as_multi_transform_branch_equals_direct_subtree():
    rng = np.random.default_rng(22)
    kernel_mask = {
        c: {"kernel": jnp.asarray(rng.random(_conv_params()[c]["kernel"].shape) < 0.4)} for c in KERNELS
    }
    # the mask is given for the FULL params: None on the leaves of the other branch
    full = {c: {"kernel": kernel_mask[c]["kernel"] if c in KERNELS else None, "bias": None} for c in LABELS}
    sub_tx = lambda m: jp.optax.masked_update(m, inner=optax.sgd(0.05, momentum=0.9, nesterov=True))
    tx = optax.multi_transform({"sparse": sub_tx(full), "dense": optax.adam(1e-2)}, LABELS)
    params, _, masks = _branch_run(tx, 5)
    ref_params, _ = _direct_reference(sub_tx(kernel_mask), 5, jp.optax.get_mask)
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)
    jax.tree.map(np.testing.assert_array_equal, masks[-1], jax.tree.map(np.asarray, kernel_mask))


def test_branch_labelled_by_subtree_and_two_masked_branches():
    # labels as a PREFIX of the params: MaskedNode replaces a whole sub-tree (one None in the mask)
    rng = np.random.default_rng(23)
    params = {
        "body": {"a": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32), "b": jnp.ones(5)},
        "head": {"a": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32), "b": jnp.ones(4)},
    }
    m_body = jnp.asarray(rng.random((6, 5)) < 0.5)
    m_head = jnp.asarray(rng.random((5, 4)) < 0.5)
    mask = {"body": {"a": m_body, "b": None}, "head": {"a": m_head, "b": None}}
    only = lambda part: {k: (v if k == part else {"a": None, "b": None}) for k, v in mask.items()}
    tx = optax.multi_transform(
        {
            "body": jp.optax.masked_update(only("body"), inner=optax.sgd(0.1, momentum=0.9)),
            "head": jp.optax.masked_update(only("head"), inner=optax.adam(1e-2)),
        },
        {"body": "body", "head": "head"},
    )
    state = tx.init(params)
    body_state = state.inner_states["body"].inner_state[1]
    assert body_state.mask["head"] is None  # the other branch's sub-tree: one None
    # get_mask / sparse_params combine the two branches
    got = jp.optax.get_mask(state)
    np.testing.assert_array_equal(got["body"]["a"], m_body)
    np.testing.assert_array_equal(got["head"]["a"], m_head)
    sp = jp.optax.sparse_params(params, state)
    np.testing.assert_array_equal(sp["head"]["a"], np.where(m_head, params["head"]["a"], 0.0))
    assert sp["body"]["b"] is params["body"]["b"]
    # pruned coordinates of both branches get exactly 0 updates
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = jax.jit(tx.update)(grads, state, params)
    assert np.all(np.asarray(updates["body"]["a"])[~np.asarray(m_body)] == 0.0)
    assert np.all(np.asarray(updates["head"]["a"])[~np.asarray(m_head)] == 0.0)
    assert np.all(np.asarray(updates["head"]["a"])[np.asarray(m_head)] != 0.0)
    # set_mask routes each part of a full mask to the branch that owns it
    new = {"body": {"a": ~m_body, "b": None}, "head": {"a": ~m_head, "b": None}}
    state2 = jp.optax.set_mask(state, new)
    jax.tree.map(np.testing.assert_array_equal, jp.optax.get_mask(state2, params), new)
    updates, _ = jax.jit(tx.update)(grads, state2, params)
    assert np.all(np.asarray(updates["head"]["a"])[m_head] == 0.0)


def test_multi_transform_branch_errors():
    params = _conv_params()
    full = jax.tree.map(lambda w: jnp.ones(w.shape, bool), params)  # masks EVERY leaf, also the adam branch's
    tx = optax.multi_transform({"sparse": jp.optax.masked_update(full), "dense": optax.adam(1e-2)}, LABELS)
    with pytest.raises(ValueError, match=r"selects \[.*'Dense_0/kernel'.*does not see"):
        tx.init(params)
    everything = jax.tree.map(lambda w: True, params)
    tx = optax.multi_transform(
        {"sparse": jp.optax.dpf(0.5, prunable=everything), "dense": optax.sgd(0.1)}, LABELS
    )
    with pytest.raises(ValueError, match="does not see"):
        tx.init(params)
    # two states masking the same leaf cannot be combined
    m = {"w": jnp.ones(3, bool)}
    tx = optax.chain(jp.optax.masked_update(m), optax.sgd(0.1), jp.optax.masked_update(m))
    with pytest.raises(ValueError, match="both mask w"):
        jp.optax.get_mask(tx.init({"w": jnp.ones(3)}))


# --- state lookup through nested wrappers (issue 17.5)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda t: optax.chain(optax.chain(optax.identity(), optax.chain(t)), optax.sgd(0.1)),
        lambda t: optax.masked(
            optax.chain(t, optax.sgd(0.1)), {"Dense_0": {"kernel": True}, "Dense_1": {"kernel": False}}
        ),
        lambda t: optax.inject_hyperparams(
            lambda lr: optax.multi_transform(
                {"a": optax.chain(t, optax.sgd(lr)), "b": optax.sgd(lr)}, {"Dense_0": "a", "Dense_1": "b"}
            )
        )(lr=0.1),
        lambda t: optax.MultiSteps(
            optax.named_chain(("inner", optax.chain(t, optax.sgd(0.1)))), every_k_schedule=1
        ),
    ],
    ids=["chain_of_chains", "masked", "inject_multi_transform", "multisteps_named_chain"],
)
def test_state_found_inside_nested_wrappers_under_jit(wrap):
    params = {"Dense_0": {"kernel": jnp.arange(12.0).reshape(4, 3)}, "Dense_1": {"kernel": jnp.ones((3, 2))}}
    tx = wrap(
        jp.optax.dpf(
            0.5, update_every=1, prunable={"Dense_0": {"kernel": True}, "Dense_1": {"kernel": False}}
        )
    )
    state = jax.jit(tx.init)(params)
    update = jax.jit(tx.update)
    for _ in range(2):
        _, state = update(jax.tree.map(jnp.ones_like, params), state, params)
    m = jp.optax.get_mask(state)
    np.testing.assert_array_equal(np.asarray(m["Dense_0"]["kernel"]).ravel(), np.arange(12) >= 6)
    sp = jax.jit(jp.optax.sparse_params)(params, state)
    np.testing.assert_array_equal(
        np.asarray(sp["Dense_0"]["kernel"]).ravel(), np.where(np.arange(12) >= 6, np.arange(12.0), 0)
    )
    np.testing.assert_array_equal(sp["Dense_1"]["kernel"], params["Dense_1"]["kernel"])
    assert float(jax.jit(dpf_diagnostics)(state)["sparsity"]) == pytest.approx(0.5)


# --- Incremental placement (issue 17.3)


def _incremental_chain(place, wd=1e-3, momentum=0.9, nesterov=False, every=2):
    inc = jp.optax.dpf(
        jp.masks.polynomial_schedule(0.6, 0, 8), update_every=every, prunable=PRUNABLE, feedback=False
    )
    rest = (optax.add_decayed_weights(wd), optax.sgd(0.05, momentum=momentum, nesterov=nesterov))
    return optax.chain(inc, *rest) if place == "first" else optax.chain(*rest, inc)


def test_incremental_last_keeps_pruned_weights_exactly_zero_with_momentum_and_wd():
    data, p0 = lsq_problem(14)
    params, _, masks = _run(
        _incremental_chain("last"), {k: jnp.asarray(v) for k, v in p0.items()}, 30, data=data
    )
    for k in ("w", "v"):
        assert np.all(np.asarray(params[k])[~masks[-1][k]] == 0.0)
    assert 1 - (masks[-1]["w"].sum() + masks[-1]["v"].sum()) / 50 == pytest.approx(0.6)


def test_incremental_first_in_chain_raises_a_clear_error():
    # placed first, momentum / weight decay / the -lr scaling transform its "-w": pruned weights would drift
    data, p0 = lsq_problem(14)
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    tx = _incremental_chain("first")
    state = tx.init(params)
    step = make_step(tx, lsq_loss, data)
    with pytest.raises(RUNTIME_ERRORS, match=r"place dpf\(feedback=False\) LAST in the chain"):
        for _ in range(8):
            params, state = step(params, state)
            jax.block_until_ready(params)


def test_incremental_first_detected_at_the_step_after_the_first_pruning():
    # constant 50%, mask computed once (freeze_after=0): the only check is update 1
    params = {"w": jnp.array([1.0, 0.1, 2.0, -0.3])}
    inc = jp.optax.dpf(0.5, update_every=4, prunable={"w": True}, feedback=False, freeze_after=0)
    tx = optax.chain(inc, optax.sgd(0.1, momentum=0.9))
    state = tx.init(params)
    update = jax.jit(tx.update)
    g = jax.tree.map(jnp.zeros_like, params)
    u, state = update(g, state, params)
    params = optax.apply_updates(params, u)
    np.testing.assert_allclose(params["w"], [1.0, 0.11, 2.0, -0.33])  # sgd scaled -w by -lr: w grew
    with pytest.raises(RUNTIME_ERRORS, match=r"at update 1, 2 coordinates .*\(max \|w\| = 0.33\)"):
        jax.block_until_ready(update(g, state, params))


@functools.partial(jax.jit, static_argnames=("every", "nesterov"))
def _incremental_last_scan(params, wd, momentum, lr, *, every, nesterov):
    """12 steps of wd + (Nesterov) momentum SGD + Incremental (last); hyper-parameters traced."""
    inc = jp.optax.dpf(
        jp.masks.polynomial_schedule(0.7, 0, 8), update_every=every, prunable=PRUNABLE, feedback=False
    )
    tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=momentum, nesterov=nesterov), inc)
    data = lsq_problem(15)[0]

    def body(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(lsq_loss)(jp.optax.sparse_params(p, s), data), s, p)
        return (optax.apply_updates(p, u), s), None

    (params, state), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=12)
    return params, jp.optax.get_mask(state)


@settings(max_examples=10, deadline=None)
@given(wd=st.floats(0.0, 0.1), momentum=st.floats(0.0, 0.95), lr=st.floats(1e-3, 0.1), nesterov=st.booleans())
def test_incremental_last_property_never_flags_and_stays_zero(wd, momentum, lr, nesterov):
    # hyper-parameters traced: one compilation per `nesterov` (update_every=1 and 2 are covered above)
    p0 = {k: jnp.asarray(v) for k, v in lsq_problem(15)[1].items()}
    params, mask = _incremental_last_scan(p0, wd, momentum, lr, every=3, nesterov=nesterov)
    for k in ("w", "v"):  # no placement error was raised, and pruned weights are exactly 0
        assert np.all(np.asarray(params[k])[~np.asarray(mask[k])] == 0.0)
    assert 50 - int(mask["w"].sum() + mask["v"].sum()) == 35


def test_incremental_under_vmap_no_false_alarm():
    # under vmap the placement check's cond becomes a select: the callback must still only fail when due
    params = {"w": jnp.stack([jnp.arange(6.0), -jnp.arange(6.0)[::-1]])}  # two models
    tx = jp.optax.dpf(
        0.5, update_every=2, prunable={"w": True}, feedback=False, inner=optax.sgd(0.1, momentum=0.9)
    )

    def run(p):
        s = tx.init(p)
        for _ in range(5):
            u, s = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
            p = optax.apply_updates(p, u)
        return p, jp.optax.get_mask(s)

    p, m = jax.jit(jax.vmap(run))(params)
    expected = np.array([[False] * 3 + [True] * 3, [True] * 3 + [False] * 3])
    np.testing.assert_array_equal(m["w"], expected)
    assert np.all(np.asarray(p["w"])[~expected] == 0.0)


# --- schedule validation (issue 17.5)


def test_schedule_out_of_range_at_unprobed_step_fails_at_run_time():
    params = {k: jnp.asarray(v) for k, v in lsq_problem()[1].items()}
    bad = {"over": lambda t: jnp.where(t == 5, 1.5, 0.5), "nan": lambda t: jnp.where(t == 5, jnp.nan, 0.5)}
    for sched in bad.values():
        tx = jp.optax.dpf(sched, update_every=1, prunable=PRUNABLE)  # the probe misses step 5
        state = tx.init(params)
        update = jax.jit(tx.update)
        for _ in range(5):
            _, state = update(params, state, params)
        with pytest.raises(RUNTIME_ERRORS, match=r"schedule\(5\)=(1.5|nan) is outside"):
            jax.block_until_ready(update(params, state, params))


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (lambda t: 0.5 if t > 3 else 0.0, "jittable"),  # Python `if` on the step: fails on the traced step
        (lambda t: jnp.full(2, 0.5), "scalar"),
        (jnp.array([0.5, 0.5]), "scalar"),
        ("0.5", "schedule"),
        (True, "schedule"),
    ],
)
def test_schedule_must_be_a_jittable_scalar(schedule, match):
    with pytest.raises(ValueError, match=match):
        jp.optax.dpf(schedule)


def test_feedback_must_be_bool():
    with pytest.raises(TypeError, match="feedback"):
        jp.optax.dpf(0.5, feedback=1)
    with pytest.raises(TypeError, match="freeze_after"):
        jp.optax.dpf(0.5, freeze_after=jnp.asarray(3))


# --- set_mask (issue 17.4)


def test_set_mask_copies_so_a_donating_step_keeps_the_callers_mask():
    data, p0 = lsq_problem(16)
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    mask = {
        "w": jnp.asarray(np.random.default_rng(0).random((10, 3)) < 0.5),
        "b": None,
        "v": jnp.ones((5, 4), bool),
    }
    expected = jax.tree.map(np.array, mask)
    everything = {"w": jnp.ones((10, 3), bool), "b": None, "v": jnp.ones((5, 4), bool)}
    tx = optax.chain(optax.sgd(0.1, momentum=0.9), jp.optax.masked_update(everything))
    state = jp.optax.set_mask(tx.init(params), mask)
    step = make_step(tx, lsq_loss, data, donate=True)
    params = jp.apply_mask(params, mask)
    for _ in range(3):
        params, state = step(params, state)
    for k in ("w", "v"):  # without the copy, the donating step deletes these arrays
        assert not mask[k].is_deleted()
        np.testing.assert_array_equal(np.asarray(mask[k]), expected[k])
    np.testing.assert_array_equal(np.asarray(params["w"])[~expected["w"]], 0.0)
    # the same for the mask given to masked_update itself
    mine = {"w": jnp.asarray(expected["w"]), "b": None, "v": jnp.asarray(expected["v"])}
    tx = optax.chain(optax.sgd(0.1), jp.optax.masked_update(mine))
    state = tx.init(params)
    params, state = make_step(tx, lsq_loss, data, donate=True)(params, state)
    assert not mine["w"].is_deleted()


def test_set_mask_errors():
    params = {"w": jnp.ones(4), "b": jnp.ones(2)}
    tx = optax.chain(optax.sgd(0.1), jp.optax.masked_update({"w": jnp.ones(4, bool), "b": None}))
    state = tx.init(params)
    with pytest.raises(ValueError, match="no MaskedState"):
        jp.optax.set_mask(
            jp.optax.dpf(0.5, prunable={"w": True, "b": False}).init(params),
            {"w": jnp.ones(4, bool), "b": None},
        )
    with pytest.raises(TypeError, match="boolean"):
        jp.optax.set_mask(state, {"w": jnp.ones(4), "b": None})
    with pytest.raises(ValueError, match="shape"):
        jp.optax.set_mask(state, {"w": jnp.ones(3, bool), "b": None})
    # jittable
    new = jax.jit(jp.optax.set_mask)(state, {"w": jnp.array([True, False, True, False]), "b": None})
    np.testing.assert_array_equal(jp.optax.get_mask(new)["w"], [True, False, True, False])


@pytest.mark.parametrize("scope", ["neuron", "filter"])
def test_dpf_out_axis_equals_the_transposed_default_layout(scope):
    """equinox/PyTorch weights are (out, in): ``out_axis=0`` prunes the same units
    as the default layout on the transposed kernel."""
    import functools

    w = jax.random.normal(jax.random.key(4), (6, 10))  # flax layout (in, out)
    scorer = jp.masks.filter_norm if scope == "filter" else jp.masks.magnitude
    scorer_t = functools.partial(jp.masks.filter_norm, out_axis=0) if scope == "filter" else scorer
    flax_tx = jp.optax.dpf(0.5, update_every=1, scope=scope, scorer=scorer, prunable={"w": True})
    eqx_tx = jp.optax.dpf(0.5, update_every=1, scope=scope, scorer=scorer_t, prunable={"w": True}, out_axis=0)
    grads = {"w": jnp.ones((6, 10))}
    _, s_flax = flax_tx.update(grads, flax_tx.init({"w": w}), {"w": w})
    _, s_eqx = eqx_tx.update({"w": grads["w"].T}, eqx_tx.init({"w": w.T}), {"w": w.T})
    np.testing.assert_array_equal(np.asarray(jp.optax.get_mask(s_eqx)["w"]),
                                  np.asarray(jp.optax.get_mask(s_flax)["w"]).T)


# ----------------------------------------------------------------------------- issue 17 sweep regressions


@pytest.mark.parametrize(("args", "name"), [((-0.3, 100), "drop_fraction"), ((1.5, 100), "drop_fraction"),
                                            ((0.3, 0), "end_step"), ((0.3, 2.5), "end_step")])
def test_rigl_drop_fraction_checks(args, name):
    """A negative drop fraction was returned as a schedule; end_step=0 was optax's message."""
    with pytest.raises((ValueError, TypeError), match=name):
        jp.optax.rigl_drop_fraction(*args)
