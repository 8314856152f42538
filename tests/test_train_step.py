"""Train/eval steps: gradient at the forward params, weighted loss, global
BatchNorm statistics and identical loss curves on 1 vs 8 devices, donation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special

from jaxprune.train import (
    create_train_state,
    make_eval_step,
    make_mesh,
    make_train_step,
    put_batch,
)


class Linear(nn.Module):
    """y = x @ W + b with one output (regression) or K logits."""

    out: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(self.out)(x)


class BNNet(nn.Module):
    """BatchNorm on the raw input, then Dense: the BN batch mean is the input mean."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))


def _batch(rng, n, f, *, k=None, pad=0):
    x = rng.normal(size=(n, f)).astype(np.float32)
    y = rng.integers(0, k, size=n).astype(np.int32) if k else rng.normal(size=n).astype(np.float32)
    w = np.ones(n, np.float32)
    w[n - pad :] = 0.0
    return {"x": x, "y": y, "weight": w}


def test_gradient_taken_at_forward_params_and_applied_to_dense():
    mesh = make_mesh()
    rng = np.random.default_rng(0)
    model, lr = Linear(), 0.1
    tx = optax.sgd(lr)
    state = create_train_state(model, tx, (4,), jax.random.PRNGKey(0), mesh=mesh)
    w0 = np.asarray(state.params["Dense_0"]["kernel"])
    b0 = np.asarray(state.params["Dense_0"]["bias"])
    mask = np.array([[1.0], [0.0], [1.0], [0.0]], np.float32)
    fwd = lambda p, s: {"Dense_0": {"kernel": p["Dense_0"]["kernel"] * mask, "bias": p["Dense_0"]["bias"]}}
    batch = _batch(rng, 16, 4, pad=5)
    step = make_train_step(model, tx, task="regression", mesh=mesh, forward_params=fwd)
    state, metrics = step(state, put_batch(batch, mesh))
    # Closed form: weighted MSE at w~ = m * w; gradient w.r.t. w~ (NOT masked), applied to w.
    x, y, wt = batch["x"], batch["y"], batch["weight"]
    r = x @ (w0 * mask) + b0 - y[:, None]  # (N, 1)
    n = wt.sum()
    g_w = 2.0 / n * x.T @ (wt[:, None] * r)
    g_b = 2.0 / n * np.sum(wt[:, None] * r, axis=0)
    np.testing.assert_allclose(state.params["Dense_0"]["kernel"], w0 - lr * g_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.params["Dense_0"]["bias"], b0 - lr * g_b, rtol=1e-5, atol=1e-6)
    assert np.all(g_w[mask[:, 0] == 0] != 0)  # the masked rows did get a gradient
    np.testing.assert_allclose(metrics["loss"], np.sum(wt * r[:, 0] ** 2) / n, rtol=1e-5)
    assert int(state.step) == 1


def test_classification_metrics_and_eval_sums_match_numpy():
    mesh = make_mesh()
    rng = np.random.default_rng(1)
    model = Linear(out=5)
    state = create_train_state(model, optax.sgd(0.0), (6,), jax.random.PRNGKey(1), mesh=mesh)
    batch = _batch(rng, 24, 6, k=5, pad=7)
    w = np.asarray(state.params["Dense_0"]["kernel"])
    b = np.asarray(state.params["Dense_0"]["bias"])
    logits = batch["x"] @ w + b
    nll = -scipy.special.log_softmax(logits.astype(np.float64), axis=1)[np.arange(24), batch["y"]]
    right = (logits.argmax(1) == batch["y"]).astype(np.float32)
    wt = batch["weight"]
    sums = make_eval_step(model, task="classification", mesh=mesh)(state, put_batch(batch, mesh))
    np.testing.assert_allclose(sums["loss_sum"], np.sum(wt * nll), rtol=1e-5)
    np.testing.assert_allclose(sums["correct"], np.sum(wt * right))
    np.testing.assert_allclose(sums["count"], wt.sum())
    step = make_train_step(model, optax.sgd(0.0), task="classification", mesh=mesh)
    _, metrics = step(state, put_batch(batch, mesh))
    np.testing.assert_allclose(metrics["loss"], np.sum(wt * nll) / wt.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.sum(wt * right) / wt.sum(), rtol=1e-6)


def _curve(devices, batches):
    mesh = make_mesh(devices)
    model = BNNet()
    tx = optax.sgd(0.2, momentum=0.9)
    state = create_train_state(model, tx, (5,), jax.random.PRNGKey(3), mesh=mesh)
    step = make_train_step(model, tx, task="classification", mesh=mesh)
    losses, means = [], []
    for b in batches:
        state, m = step(state, put_batch(b, mesh))
        losses.append(float(m["loss"]))
        means.append(np.asarray(state.batch_stats["BatchNorm_0"]["mean"]))
    return np.array(losses), means, state


def test_eight_devices_match_one_device_and_batchnorm_is_global():
    assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
    rng = np.random.default_rng(2)
    batches = [_batch(rng, 32, 5, k=3) for _ in range(6)]
    for b in batches:  # learnable labels, so that the curve moves
        b["y"] = np.argmax(b["x"][:, :3], axis=1).astype(np.int32)
    loss8, means8, state8 = _curve(jax.devices(), batches)
    loss1, _, state1 = _curve(jax.devices()[:1], batches)
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5, atol=1e-6)
    assert loss8[-1] < loss8[0]
    for a, b in zip(jax.tree.leaves(state8.params), jax.tree.leaves(state1.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # BN running mean after step 1 = (1 - momentum) * mean of the GLOBAL batch (not one shard's).
    np.testing.assert_allclose(means8[0], 0.1 * batches[0]["x"].mean(0), rtol=1e-5, atol=1e-7)
    assert state8.params["Dense_0"]["kernel"].sharding.is_fully_replicated


def test_state_is_donated_and_no_recompile():
    mesh = make_mesh()
    model = Linear(out=3)
    tx = optax.adam(1e-2)
    state = create_train_state(model, tx, (4,), jax.random.PRNGKey(0), mesh=mesh)
    step = make_train_step(model, tx, task="classification", mesh=mesh)
    rng = np.random.default_rng(0)
    old = state.params["Dense_0"]["kernel"]
    state, _ = step(state, put_batch(_batch(rng, 16, 4, k=3), mesh))
    assert old.is_deleted()
    state, _ = step(state, put_batch(_batch(rng, 16, 4, k=3, pad=3), mesh))
    assert step._cache_size() == 1


def test_augment_and_dropout_keys_depend_on_step():
    mesh = make_mesh()
    seen = []
    model = Linear()

    def augment(key, x):
        seen.append(key)
        return x + jax.random.normal(key, x.shape)

    tx = optax.sgd(0.0)
    state = create_train_state(model, tx, (4,), jax.random.PRNGKey(0), mesh=mesh)
    step = make_train_step(model, tx, task="regression", mesh=mesh, augment=augment)
    batch = put_batch(_batch(np.random.default_rng(0), 8, 4), mesh)
    s1, m1 = step(state, batch)
    _, m2 = step(s1, batch)
    assert len(seen) == 1  # traced once
    assert float(m1["loss"]) != float(m2["loss"])  # fresh augmentation noise each step


def test_bad_arguments():
    mesh = make_mesh()
    with pytest.raises(ValueError, match=r"task='segmentation'.*classification"):
        make_train_step(Linear(), optax.sgd(0.1), task="segmentation", mesh=mesh)
    with pytest.raises(ValueError, match="multiple of the 8 local devices"):
        put_batch({"x": np.zeros((12, 3), np.float32)}, mesh)
    with pytest.raises(TypeError, match=r"optax\.GradientTransformation"):
        create_train_state(Linear(), "sgd", (4,), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="at least one device"):
        make_mesh([])


def test_masks_with_none_leaves_in_opt_state():
    """A pruning transform whose state holds a mask with None leaves (non-prunable)."""
    mesh = make_mesh()
    model = Linear(out=2)

    def init(params):
        return {"Dense_0": {"kernel": jnp.zeros(params["Dense_0"]["kernel"].shape, bool), "bias": None}}

    def update(updates, mask, params=None):
        def one(u, m):
            return u if m is None else jnp.where(m, u, 0.0)

        return jax.tree.map(one, updates, mask, is_leaf=lambda x: x is None), mask

    tx = optax.chain(optax.sgd(0.5), optax.GradientTransformation(init, update))
    state = create_train_state(model, tx, (3,), jax.random.PRNGKey(0), mesh=mesh)
    k0 = np.asarray(state.params["Dense_0"]["kernel"])
    b0 = np.asarray(state.params["Dense_0"]["bias"])
    step = make_train_step(model, tx, task="classification", mesh=mesh)
    state, _ = step(state, put_batch(_batch(np.random.default_rng(0), 8, 3, k=2), mesh))
    np.testing.assert_array_equal(state.params["Dense_0"]["kernel"], k0)  # all-False mask: frozen
    assert not np.array_equal(state.params["Dense_0"]["bias"], b0)  # None leaf: trained


def test_initialize_distributed_only_for_multihost_env(monkeypatch):
    from jaxprune.train import initialize_distributed

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for key in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS",
                "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    assert initialize_distributed() is False and calls == []
    assert initialize_distributed(force=True) is True and calls == [{}]
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert initialize_distributed(force=False) is False and len(calls) == 1
    assert initialize_distributed() is True and calls[-1] == {}
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t0,t1,t2,t3")
    assert initialize_distributed() is True
    # A hand-rolled cluster: JAX reads only the coordinator address; the count and id are passed on.
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert initialize_distributed() is True and calls[-1] == {"num_processes": 2, "process_id": 1}
    monkeypatch.setenv("JAX_PROCESS_ID", "one")
    with pytest.raises(ValueError, match=r"JAX_PROCESS_ID='one'"):
        initialize_distributed()


def test_carried_step_is_bitwise_equal_to_plain_step_with_dpf():
    """The carried form (m * w computed at the end of the previous step) gives the
    same params, masks and losses as the plain step, through mask updates."""
    import jaxprune as jp
    from jaxprune.train import make_carried_train_step

    mesh = make_mesh()
    rng = np.random.default_rng(3)
    model = BNNet()
    tx = optax.chain(
        jp.optax.dpf(jp.masks.polynomial_schedule(0.8, 0, 12), update_every=3),
        optax.sgd(0.1, momentum=0.9),
    )
    kwargs = {"task": "classification", "mesh": mesh, "forward_params": jp.optax.sparse_params}
    plain = make_train_step(model, tx, **kwargs)
    start, carried_step = make_carried_train_step(model, tx, **kwargs)
    state_a = create_train_state(model, tx, (5,), jax.random.PRNGKey(4), mesh=mesh)
    state_b = jax.tree.map(jnp.copy, state_a)
    carried = start(state_b)
    # only the masked leaf (DPF's default: every dense kernel but the last) is carried
    carried_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(carried)]
    assert carried_paths == ["['Dense_0']['kernel']"]
    for i in range(14):
        batch = put_batch(_batch(rng, 16, 5, k=3), mesh)
        state_a, m_a = plain(state_a, batch)
        state_b, carried, m_b = carried_step(state_b, carried, batch)
        assert float(m_a["loss"]) == float(m_b["loss"]), i
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    kernel = np.asarray(carried["Dense_0"]["kernel"])
    mask = np.asarray(jp.optax.get_mask(state_b.opt_state)["Dense_0"]["kernel"])
    assert 0.0 < mask.mean() < 1.0
    np.testing.assert_array_equal(kernel, np.where(mask, state_b.params["Dense_0"]["kernel"], 0.0))
