"""The AP2/AP3 study pipeline (``jaxprune.pipelines.ap_study``): last-layer
detection and masks, the latent measures against numpy/scipy references, the
checkpoint format, and a CI smoke run on ``digits``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg
from flax import linen as nn

from jaxprune.configs.ap_digits_smoke import get_config
from jaxprune.pipelines import PIPELINES
from jaxprune.pipelines import ap_study as aps
from jaxprune.train import get_model
from jaxprune.tree import is_none, path_str


def _mlp_params(hidden=(12, 8), n_out=5, n_in=6, seed=0):
    model = get_model("mlp", n_out, hidden=hidden)
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, n_in)))["params"]
    return model, params


def test_registered():
    assert PIPELINES["ap_study"] is aps.run


def test_head_path_is_the_last_dense_called():
    # 11 dense layers: sorted leaf order puts Dense_10 before Dense_2, call order does not
    model, params = _mlp_params(hidden=(4,) * 10)
    assert aps.head_path(model, {"params": params}, (6,)) == "Dense_10/kernel"

    class Reversed(nn.Module):  # the head is created first but called last
        @nn.compact
        def __call__(self, x, train=False):
            head = nn.Dense(3, name="a_head")
            body = nn.Dense(7, name="z_body")
            return head(nn.relu(body(x)))

    m = Reversed()
    v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    assert aps.head_path(m, v, (4,)) == "a_head/kernel"


def test_get_leaf_unknown_path():
    _, params = _mlp_params()
    with pytest.raises(ValueError, match=r"Dense_9/kernel.*2-D leaves"):
        aps.get_leaf(params, "Dense_9/kernel")


@pytest.mark.parametrize("method", ["lowest", "highest", "random"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.8])
def test_last_layer_mask(method, sparsity):
    _, params = _mlp_params()
    mask = aps.last_layer_mask(params, "Dense_2/kernel", method, sparsity, jax.random.PRNGKey(1))
    flat = {path_str(p): m for p, m in jax.tree.leaves_with_path(mask, is_leaf=is_none)}
    assert [k for k, v in flat.items() if v is not None] == ["Dense_2/kernel"]  # the only mask
    keep = np.asarray(flat["Dense_2/kernel"])
    w = np.abs(np.asarray(params["Dense_2"]["kernel"]))
    n_keep = round((1 - sparsity) * w.size)
    assert keep.shape == w.shape and keep.sum() == n_keep
    order = np.argsort(w, axis=None)  # ascending magnitudes (no ties for random normal weights)
    if method == "lowest":
        expected = order[w.size - n_keep :]
    elif method == "highest":
        expected = order[:n_keep]
    else:
        return
    np.testing.assert_array_equal(np.sort(np.flatnonzero(keep)), np.sort(expected))


def test_last_layer_mask_errors():
    _, params = _mlp_params()
    with pytest.raises(ValueError, match="method"):
        aps.last_layer_mask(params, "Dense_2/kernel", "smallest", 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        aps.last_layer_mask(params, "Dense_2/kernel", "lowest", 1.5)
    with pytest.raises(ValueError, match="key"):
        aps.last_layer_mask(params, "Dense_2/kernel", "random", 0.5)


def test_latent_measures_match_references():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(20, 6)).astype(np.float32)
    w2 = w * (rng.random(w.shape) > 0.4) + 0.01 * rng.normal(size=w.shape).astype(np.float32)
    a = rng.normal(size=(120, 120))
    cov = a @ a.T / 120 + 0.5 * np.eye(120)
    lm = aps.LatentMeasures(w, sigma2=2.0, nondiag_cov=cov, t_key=jax.random.PRNGKey(0))
    out = lm(jnp.asarray(w2), num_samples=20_000)
    d = (w - w2).reshape(-1).astype(np.float64)
    np.testing.assert_allclose(out["ap2"], d @ d, rtol=1e-5)
    np.testing.assert_allclose(out["ap3_gauss"], d @ d / 4.0, rtol=1e-5)
    np.testing.assert_allclose(out["ap3_gauss_nondiag"], 0.5 * d @ scipy.linalg.solve(cov, d), rtol=1e-3)
    assert out["ap3_t"] > 0
    assert (
        aps.LatentMeasures(w, sigma2=1.0, nondiag_cov=None, t_key=jax.random.PRNGKey(0))(
            jnp.asarray(w2), num_samples=1000
        )["ap3_gauss_nondiag"]
        is None
    )
    with pytest.raises(ValueError, match="nondiag_cov"):
        aps.LatentMeasures(w, sigma2=1.0, nondiag_cov=np.eye(3), t_key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="sigma2"):
        aps.LatentMeasures(w, sigma2=0.0, nondiag_cov=None, t_key=jax.random.PRNGKey(0))


def test_variables_roundtrip_and_mismatch(tmp_path):
    _, params = _mlp_params(n_out=5)
    path = aps.save_variables(tmp_path / "v.npz", {"params": params})
    _, fresh = _mlp_params(n_out=5, seed=3)
    loaded, skipped = aps.load_variables(path, {"params": fresh})
    assert skipped == []
    jax.tree.map(np.testing.assert_array_equal, loaded["params"], params)
    _, other_head = _mlp_params(n_out=7, seed=3)  # new number of classes: the head differs
    with pytest.raises(ValueError, match=r"Dense_2/bias.*skip_mismatch"):
        aps.load_variables(path, {"params": other_head})
    loaded, skipped = aps.load_variables(path, {"params": other_head}, skip_mismatch=True)
    assert skipped == ["params/Dense_2/bias", "params/Dense_2/kernel"]
    np.testing.assert_array_equal(loaded["params"]["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    np.testing.assert_array_equal(loaded["params"]["Dense_2"]["kernel"], other_head["Dense_2"]["kernel"])
    with pytest.raises(ValueError, match="not a file"):
        aps.load_variables(tmp_path / "missing.npz", {"params": fresh})


def _small_config(**method):
    c = get_config()
    c.model.kwargs.hidden = (32, 16)  # a 16 x 10 head keeps the non-diagonal covariance small
    for k, v in method.items():
        c.method[k] = v
    return c


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The CI smoke run: 1 trial, lowest magnitude at 0.5, 2 fine-tuning epochs,
    10k Monte Carlo draws; plus the trained original it saved."""
    workdir = tmp_path_factory.mktemp("ap_smoke")
    res = aps.run(_small_config(), str(workdir))
    return res, workdir


def test_smoke_records(smoke):
    res, _ = smoke
    recs = res["records"]
    assert res["layer"] == "Dense_2/kernel" and res["layer_shape"] == [16, 10]
    assert [r["epoch"] for r in recs] == [0, 1, 2]
    for r in recs:
        assert set(aps.RECORD_KEYS) <= set(r)
        assert r["method"] == "lowest" and r["sparsity"] == 0.5 and r["trial"] == 0
        assert r["ap2"] > 0 and r["ap3_gauss"] > 0 and r["ap3_gauss_nondiag"] > 0 and r["ap3_t"] > 0
        assert r["ap3_t_samples"] == 10_000
        orig = res["trials"][0]["original"]
        assert r["pd_loss_test"] == pytest.approx(abs(orig["loss_test"] - r["loss_test"]))
        assert r["pd_acc_train"] == pytest.approx(abs(orig["acc_train"] - r["acc_train"]))
    np.testing.assert_allclose(recs[0]["ap3_gauss"], recs[0]["ap2"] / 2, rtol=1e-5)  # sigma2 = 1


def test_smoke_epoch0_ap2_is_the_pruned_energy(smoke):
    res, workdir = smoke
    with np.load(workdir / "trial_0" / "original.npz") as d:
        w = d["params/Dense_2/kernel"]
    kept = np.sort(np.abs(w), axis=None)[w.size // 2 :]  # lowest magnitude at 0.5: 80 of 160 pruned
    np.testing.assert_allclose(res["records"][0]["ap2"], np.sum(w**2) - np.sum(kept**2), rtol=1e-5)


def _refinetune(smoke, mode, epochs=None):
    """Fine-tune the smoke run's saved original again (lowest magnitude at 0.5)
    in ``mode``; returns (original state, mask, records, final state)."""
    from jaxprune.pipelines import setup
    from jaxprune.train import Trainer

    _, workdir = smoke
    config = _small_config()
    if epochs:
        config.method.finetune_train.epochs = epochs
    dataset, model = setup(config)
    tmpl = Trainer(model, dataset, config.train).init_state()
    variables, _ = aps.load_variables(workdir / "trial_0" / "original.npz", {"params": tmpl.params})
    original = tmpl.replace(params=variables["params"])
    layer = "Dense_2/kernel"
    mask = aps.last_layer_mask(original.params, layer, "lowest", 0.5)
    cfg = aps._finetune_cfg(config)
    ft = aps.finetune_trainer(model, dataset, cfg, original.params, layer, mask, mode=mode)
    w0 = np.asarray(original.params["Dense_2"]["kernel"])
    lm = aps.LatentMeasures(w0, sigma2=1.0, nondiag_cov=None, t_key=jax.random.PRNGKey(0))
    orig = aps._metrics(ft, original)
    original = jax.tree.map(np.asarray, original)  # host copy: fit donates its input
    recs, final = aps._finetune(ft, original, mask, layer, lm, orig, {"seed": 0}, (1000, 1000))
    return original, np.asarray(mask["Dense_2"]["kernel"]), recs, final


def test_finetune_pruned_layer_trains_only_that_layer(smoke):
    """The default (paper) protocol: the head mask stays fixed (pruned weights
    exactly 0), surviving head weights and the head bias move, every other leaf
    is bitwise unchanged; the pipeline's own run reached the same final head."""
    res, _ = smoke
    assert res["finetune"] == "pruned_layer" and res["records"][0]["finetune"] == "pruned_layer"
    original, keep, recs, final = _refinetune(smoke, "pruned_layer")
    assert len(recs) == 3
    w0, w = original.params["Dense_2"]["kernel"], np.asarray(final.params["Dense_2"]["kernel"])
    assert np.all(w[~keep] == 0.0)
    assert np.mean(w[keep] != w0[keep]) > 0.5  # surviving weights train (rows of dead ReLUs cannot)
    assert not np.array_equal(final.params["Dense_2"]["bias"], original.params["Dense_2"]["bias"])
    for name in ("Dense_0", "Dense_1"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(final.params[name][leaf], original.params[name][leaf])
            assert np.asarray(final.params[name][leaf]).tobytes() == original.params[name][leaf].tobytes()
    np.testing.assert_allclose(recs[-1]["ap2"], res["records"][-1]["ap2"], rtol=1e-4)


def test_finetune_all_trains_every_layer(smoke):
    original, keep, _, final = _refinetune(smoke, "all", epochs=1)
    assert np.all(np.asarray(final.params["Dense_2"]["kernel"])[~keep] == 0.0)
    for name in ("Dense_0", "Dense_1", "Dense_2"):
        for leaf in ("kernel", "bias"):
            assert not np.array_equal(final.params[name][leaf], original.params[name][leaf]), (name, leaf)


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(nn.relu(x))


@pytest.mark.parametrize("mode", ["pruned_layer", "all"])
def test_finetune_batch_stats(mode):
    """With BatchNorm below the head: "pruned_layer" leaves the BN statistics
    (and every non-head leaf) bitwise unchanged, "all" updates them."""
    from jaxprune.pipelines import setup
    from jaxprune.train import Trainer
    from jaxprune.transforms import set_mask
    from jaxprune.tree import apply_mask

    config = _small_config()
    config.train.epochs = 1
    dataset, _ = setup(config)
    model = _BNNet()
    state = Trainer(model, dataset, config.train).init_state()
    layer = "Dense_1/kernel"
    mask = aps.last_layer_mask(state.params, layer, "lowest", 0.5)
    ft = aps.finetune_trainer(model, dataset, config.train, state.params, layer, mask, mode=mode)
    params = apply_mask(state.params, mask)
    before = jax.tree.map(np.array, {"params": params, "batch_stats": state.batch_stats})
    start = state.replace(params=params, opt_state=set_mask(ft.tx.init(params), mask))
    final = ft.fit(jax.tree.map(jnp.array, start), progress=False)
    changed = lambda a, b: not np.array_equal(np.asarray(a), b)
    assert changed(final.params["Dense_1"]["bias"], before["params"]["Dense_1"]["bias"])
    stats = jax.tree.leaves(jax.tree.map(changed, final.batch_stats, before["batch_stats"]))
    leaves = (("Dense_0", "kernel"), ("Dense_0", "bias"), ("BatchNorm_0", "scale"), ("BatchNorm_0", "bias"))
    body = [changed(final.params[m][k], before["params"][m][k]) for m, k in leaves]
    if mode == "pruned_layer":
        assert not any(stats) and not any(body)
    else:
        assert all(stats) and all(body)


def test_pretrained_checkpoint_and_zero_sparsity(smoke, tmp_path):
    """The saved original as ``pretrained_checkpoint`` IS the trained model (same
    metrics, no training); pruning 0% of it gives AP = PD = 0 at epoch 0."""
    res, workdir = smoke
    config = _small_config(
        pretrained_checkpoint=str(workdir / "trial_0" / "original.npz"),
        sparsities=(0.0,),
        methods=("random",),
    )
    config.method.finetune_train.epochs = 1
    out = aps.run(config, str(tmp_path))
    for key, value in res["trials"][0]["original"].items():
        assert out["trials"][0]["original"][key] == pytest.approx(value, abs=1e-6), key
    r0 = out["records"][0]
    assert r0["epoch"] == 0
    for key in ("ap2", "ap3_gauss", "ap3_gauss_nondiag", "pd_loss_test", "pd_acc_test", "pd_loss_train",
                "pd_acc_train"):  # fmt: skip
        assert r0[key] == 0.0, key
    # identical laws: the Monte Carlo log-ratios cancel up to float32 rounding of the two distances
    assert abs(r0["ap3_t"]) < 1e-5
    assert out["records"][-1]["ap2"] > 0  # fine-tuning moves the unpruned head


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"config\.method\.methods"):
        aps.run(_small_config(methods=("lowest", "largest")), str(tmp_path))
    with pytest.raises(ValueError, match=r"config\.method\.sparsities"):
        aps.run(_small_config(sparsities=(0.5, 1.2)), str(tmp_path))
    with pytest.raises(ValueError, match="train_from_checkpoint"):
        aps.run(_small_config(train_from_checkpoint=True), str(tmp_path))
    c = _small_config()
    c.method.finetune_train.epoch = 3
    with pytest.raises(ValueError, match=r"finetune_train\.epoch "):
        aps.run(c, str(tmp_path))
    with pytest.raises(ValueError, match=r"config\.method\.finetune='head'.*\['pruned_layer', 'all'\]"):
        aps.run(_small_config(finetune="head"), str(tmp_path))
    old = _small_config().to_dict()
    old["method"]["finetune"] = {"epochs": 3}  # the former meaning of the key
    with pytest.raises(ValueError, match=r"config\.method\.finetune is a ConfigDict.*finetune_train"):
        aps.run(ml_collections.ConfigDict(old), str(tmp_path))
