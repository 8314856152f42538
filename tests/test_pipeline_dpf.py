"""The DPF study pipelines (jaxprune.pipelines.dpf): a CI smoke run of every
pipeline (tiny MLP on digits, 2 steps per epoch), DPF's schedule and reached
sparsity against closed forms, One-shot+FT's pruned weights staying exactly 0,
the epoch-end mask statistics against numpy, and exact resume of runs killed
mid-way (DPF mid-epoch, One-shot+FT during fine-tuning)."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from jaxprune.configs.dpf_base import PIPELINES
from jaxprune.configs.dpf_lenet300_fmnist import get_config
from jaxprune.pipelines import ConfigError, get_pipeline
from jaxprune.pipelines import dpf as P
from jaxprune.train import Hook

TARGET = 0.8
EPOCHS = 2
STEPS_PER_EPOCH = 2  # 128 training examples (after the validation split), batch 64


def _config(method: str, **method_kw):
    """2 epochs x 2 steps of a 64-32-10 MLP on digits; the schedule moves every
    step and ends at step 3 (the second lr decay at 75% of 4 steps) and the mask
    is updated every step. One-shot P+FT: 1 dense epoch and 1 fine-tuning epoch."""
    config = get_config(f"{method},{TARGET}")
    config.data.name = "digits"
    config.data.train_limit = 142  # 128 after the 10% validation split
    config.model.name = "mlp"
    config.model.kwargs.hidden = (32,)
    config.train.epochs = EPOCHS
    config.train.batch_size = 64
    config.train.eval_batch_size = 400
    config.train.log_every = 1
    config.train.checkpoint_every = 0  # epoch ends only (the kill tests checkpoint every step)
    config.method.update_every = 1
    config.method.schedule_every = "step"
    if method == "one_shot_ft":
        config.train.epochs, config.method.finetune_epochs = 1, 1
    for k, v in method_kw.items():
        config.method[k] = v
    return config


def _n_pruned(sparsity: float, n: int) -> int:
    return n - round((1.0 - sparsity) * n)


def _leaves(mask, params):
    """``[(mask, weight)]`` numpy pairs of the prunable leaves."""
    pairs = []
    for m, w in zip(jax.tree.leaves(mask, is_leaf=lambda x: x is None), jax.tree.leaves(params), strict=True):
        if m is not None:
            pairs.append((np.asarray(m), np.asarray(w)))
    return pairs


_CACHE: dict[str, P.Outcome] = {}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    """Uninterrupted runs, one per method, shared by the tests of this module."""

    def get(method: str) -> P.Outcome:
        if method not in _CACHE:
            _CACHE[method] = P.train_method(_config(method), tmp_path_factory.mktemp(method), method)
        return _CACHE[method]

    return get


@pytest.mark.parametrize("method", P.METHODS)
def test_every_pipeline_reports_the_fields(method, outcome):
    out = outcome(method)
    rec = out.record
    for key in ("method", "model", "dataset", "target_sparsity", "sparsity_prunable", "sparsity_all", "seed",
                "epochs", "test_acc", "wall_s", "history", "mask_convergence"):
        assert key in rec, key
    assert rec["epochs"] == EPOCHS and len(rec["history"]) == EPOCHS
    assert len(rec["mask_convergence"]) == EPOCHS + 1
    for row in rec["history"]:
        assert {"delta", "mask_flips", "mask_iou", "mask_sparsity", "val_accuracy"} <= set(row)
    pairs = _leaves(out.mask, out.state.params)
    n = sum(m.size for m, _ in pairs)
    assert n == 64 * 32  # the MLP's last layer and the biases are not prunable
    target = 0.0 if method == "dense" else TARGET
    pruned = sum(int((~m).sum()) for m, _ in pairs)
    assert pruned == _n_pruned(target, n)
    assert rec["sparsity_prunable"] == pytest.approx(pruned / n)
    n_all = 64 * 32 + 32 + 32 * 10 + 10
    assert rec["n_params"] == n_all and rec["sparsity_all"] == pytest.approx(pruned / n_all)
    # the evaluated model is m * w: its test accuracy is recomputed from the numpy weights
    x, y = out.trainer.dataset.test.x.reshape(-1, 64), out.trainer.dataset.test.y
    p = jax.device_get(out.state.params)
    w0 = np.where(pairs[0][0], p["Dense_0"]["kernel"], 0.0)
    h = np.maximum(x @ w0 + p["Dense_0"]["bias"], 0.0)
    logits = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    assert rec["test_acc"] == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-6)
    # the registry names of the configs run this driver, and results.json holds the record
    assert get_pipeline(PIPELINES[method]).__name__ == f"run_{method}"
    saved = json.loads((out.trainer.workdir.parent / "results.json").read_text())
    assert saved["test_acc"] == rec["test_acc"] and saved["method_id"] == method


def test_dpf_follows_the_schedule_and_reaches_the_target(outcome):
    out = outcome("dpf")
    n = 64 * 32
    # closed form (Zhu & Gupta): s_t = s_f (1 - (1 - t / 3)^3), end = 0.75 * 4 steps = 3;
    # after epoch 1 the last mask update was at t = 1, after epoch 2 at t = 3 (the target)
    s1 = TARGET * (1.0 - (1.0 - 1.0 / 3.0) ** 3)
    hist = out.record["history"]
    assert hist[0]["mask_sparsity"] == pytest.approx(_n_pruned(s1, n) / n, abs=1e-7)
    assert hist[1]["mask_sparsity"] == pytest.approx(_n_pruned(TARGET, n) / n, abs=1e-7)
    assert out.record["schedule_end_step"] == 3
    # feedback: pruned dense weights keep learning (not 0); delta recomputed in numpy
    (m, w), = _leaves(out.mask, out.state.params)
    assert np.abs(w[~m]).max() > 0 and hist[-1]["pruned_abs_max"] == pytest.approx(np.abs(w[~m]).max())
    assert hist[-1]["delta"] == pytest.approx(np.sum(w[~m] ** 2) / np.sum(w**2), rel=1e-5)


def test_incremental_zeroes_pruned_weights_and_only_shrinks(outcome):
    out = outcome("incremental")
    (m, w), = _leaves(out.mask, out.state.params)
    assert np.all(w[~m] == 0.0)
    assert all(row["pruned_abs_max"] == 0.0 and row["delta"] == 0.0 for row in out.record["history"])
    # the mask only shrinks: the flips of an epoch are exactly the newly pruned entries
    prev = 0.0
    for row in out.record["history"]:
        assert row["mask_flips"] == pytest.approx(row["mask_sparsity"] - prev, abs=1e-6)
        prev = row["mask_sparsity"]
    assert prev == pytest.approx(_n_pruned(TARGET, m.size) / m.size)


@pytest.mark.parametrize("method", ["one_shot_ft", "one_shot_split"])
def test_one_shot_ft_keeps_pruned_weights_at_zero(method, outcome):
    out = outcome(method)
    rec = out.record
    assert rec["dense_epochs"] == 1 and rec["epochs"] == EPOCHS
    (m, w), = _leaves(out.mask, out.state.params)
    assert np.all(w[~m] == 0.0)
    assert np.count_nonzero(w[m]) == m.sum()  # the kept weights were fine-tuned, none is 0
    dense_row, ft_row = rec["history"]
    assert dense_row["mask_sparsity"] == 0.0 and dense_row["mask_iou"] == 1.0
    # epoch 2 holds the one-shot prune: flips = the pruned fraction, IoU = density
    assert ft_row["mask_flips"] == pytest.approx(_n_pruned(TARGET, m.size) / m.size)
    assert ft_row["mask_iou"] == pytest.approx(m.sum() / m.size)
    assert ft_row["pruned_abs_max"] == 0.0 and ft_row["delta"] == 0.0
    assert rec["mask_convergence"] == pytest.approx([1.0 - m.mean(), 1.0 - m.mean(), 0.0])


class _Killed(Exception):
    pass


class _Kill(Hook):
    """Raises after optimizer step ``step`` of the phase ``phase`` (before that
    step's checkpoint: the run resumes from step ``step - 1``)."""

    def __init__(self, phase: str, step: int):
        self.phase, self.step = phase, step

    def after_step(self, trainer, state, metrics):
        if trainer.workdir.name == self.phase and int(state.step) == self.step:
            raise _Killed(f"killed at step {self.step}")


@pytest.mark.parametrize("method,phase,step", [("dpf", "train", 4), ("one_shot_ft", "finetune", 2)])
def test_killed_run_resumes_to_the_same_result(method, phase, step, outcome, tmp_path):
    reference = outcome(method)
    config = _config(method)
    config.train.checkpoint_every = 1  # the run resumes mid-epoch
    with pytest.raises(_Killed):
        P.train_method(config, tmp_path, method, hooks=[_Kill(phase, step)])
    with pytest.raises(ValueError, match="previous run"):
        P.train_method(config, tmp_path, method)
    config.resume = True
    resumed = P.train_method(config, tmp_path, method)
    leaves = zip(jax.tree.leaves(reference.state.params), jax.tree.leaves(resumed.state.params), strict=True)
    for a, b in leaves:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the engine averages an epoch's train loss over the steps run in this session:
    # compare everything else (the mask statistics and validation metrics included)
    def strip(rec):
        # (the killed run's config checkpoints every step: train.checkpoint_every differs)
        out = {k: v for k, v in rec.items() if k not in ("wall_s", "resumed", "history", "config")}
        out["history"] = [{k: v for k, v in r.items() if not k.startswith("train_")} for r in rec["history"]]
        return out

    assert strip(reference.record) == strip(resumed.record)


def test_mask_convergence_against_hand_worked_masks(tmp_path):
    # 4 entries; epoch-end masks 0..3. Entry 0 never changes, entry 1 changes at
    # epoch 1, entry 2 at epochs 1 and 3, entry 3 at epoch 2.
    masks = [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 0], [1, 0, 1, 0]]
    for e, m in enumerate(masks):
        np.savez(tmp_path / f"epoch_{e:04d}.npz", bits=np.packbits(np.array(m, bool)), n=4)
    # last change: [0, 1, 3, 2] -> still changing after e: mean(last > e)
    assert P.mask_convergence(tmp_path, 3) == pytest.approx([0.75, 0.5, 0.25, 0.0])


def test_pack_roundtrip_keeps_none_leaves():
    rng = np.random.default_rng(0)
    mask = {"a": {"kernel": rng.random((3, 5)) > 0.5, "bias": None}, "b": rng.random((7,)) > 0.3}
    back = P._unpack(P._pack(mask), mask)
    assert back["a"]["bias"] is None
    np.testing.assert_array_equal(np.asarray(back["a"]["kernel"]), mask["a"]["kernel"])
    np.testing.assert_array_equal(np.asarray(back["b"]), mask["b"])


def test_schedule_end_and_last_update():
    train = {"epochs": 300, "milestones": (0.5, 0.75), "schedule": "multistep"}
    assert P.schedule_end_step(train, 391) == round(0.75 * 300 * 391)  # epoch 225 of ResNet-20
    wrn = {"epochs": 200, "milestones": (0.3, 0.6, 0.8), "schedule": "multistep"}
    assert P.schedule_end_step(wrn, 10) == 1200  # the second decay: 60% of 2000 steps
    assert P.schedule_end_step({**train, "schedule": "cosine"}, 10, 0.5) == 1500
    with pytest.raises(ValueError, match="end_fraction"):
        P.schedule_end_step({**train, "schedule": "cosine"}, 10)
    assert P.last_update_step(100, 16) == 112 and P.last_update_step(96, 16) == 96
    assert P.last_update_step(3, 1) == 3 == math.ceil(3 / 1)


@pytest.mark.parametrize(
    "key,value,match",
    [("target_sparsity", 1.0, "target_sparsity"), ("update_every", 0, "update_every"),
     ("dense_fraction", 1.0, "dense_fraction"), ("scope", "row", "scope"), ("typo", 1, "unknown keys"),
     ("schedule_every", "batch", "schedule_every"), ("finetune_optimizer", "rmsprop", "finetune_optimizer"),
     ("reuse_workdir", 3, "reuse_workdir")],
)
def test_bad_method_options_raise(key, value, match):
    with pytest.raises(ValueError, match=match):
        P.method_options({key: value})


def test_too_few_steps_for_the_schedule_raise(tmp_path):
    config = _config("dpf", update_every=16)  # 4 steps: no update reaches the target
    with pytest.raises(ValueError, match="no mask update reaches the target"):
        P.train_method(config, tmp_path, "dpf")
    with pytest.raises(ValueError, match="method"):
        P.train_method(config, tmp_path, "lottery")


def test_per_epoch_schedule_steps_the_target_once_per_epoch(tmp_path):
    """Appendix A.2: Delta t = 1 epoch. 4 epochs x 2 steps, second decay at epoch 3:
    the target during epoch e is s_f (1 - (1 - e / 3)^3) and reaches s_f at step 6."""
    config = _config("dpf", schedule_every="epoch")
    config.train.epochs = 4
    out = P.train_method(config, tmp_path, "dpf")
    n = 64 * 32
    expected = [TARGET * (1.0 - (1.0 - e / 3.0) ** 3) for e in range(4)]  # epoch-end masks: steps 1, 3, 5, 7
    got = [row["mask_sparsity"] for row in out.record["history"]]
    assert got == pytest.approx([_n_pruned(s, n) / n for s in expected], abs=1e-7)
    assert out.record["schedule_end_step"] == 6


def test_structured_masks_keep_whole_filters_by_l2_norm():
    rng = np.random.default_rng(3)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 4, 10)).astype(np.float32)},
              "dense": {"kernel": rng.normal(size=(40, 6)).astype(np.float32),
                        "bias": np.zeros(6, np.float32)}}
    flags = {"conv": {"kernel": True}, "dense": {"kernel": True, "bias": None}}
    mask = P.magnitude_mask(params, 0.5, flags, scope="filter")
    norms = np.concatenate([np.linalg.norm(params["conv"]["kernel"].reshape(-1, 10), axis=0),
                            np.linalg.norm(params["dense"]["kernel"], axis=0)])
    keep = np.zeros(16, bool)
    keep[np.argsort(-norms, kind="stable")[:8]] = True  # global over the 16 units of both layers
    conv, dense = np.asarray(mask["conv"]["kernel"]), np.asarray(mask["dense"]["kernel"])
    assert np.all(conv == conv[:1, :1, :1, :]) and np.all(dense == dense[:1, :])  # whole units
    np.testing.assert_array_equal(np.concatenate([conv[0, 0, 0], dense[0]]), keep)
    assert mask["dense"]["bias"] is None


def test_structured_dpf_prunes_whole_units(outcome, tmp_path):
    """Structured DPF keeps or drops whole units, and trains the network that
    compaction keeps: the pruned units' biases go with them (structure group)."""
    from jaxprune.compress import compact

    out = P.train_method(_config("dpf", scope="filter"), tmp_path, "dpf")
    (m, _), = _leaves(out.mask, out.state.params)
    assert np.all(m == m[:1, :])  # a hidden unit is kept or dropped whole
    assert int((~m[0]).sum()) == _n_pruned(TARGET, 32)
    assert out.record["scope"] == "filter"
    trained = out.trainer.forward_params(out.state.params, out.state.opt_state)
    assert np.all(np.asarray(trained["Dense_0"]["bias"])[~m[0]] == 0)
    x = out.trainer.dataset.test.x[:16]
    small, small_vars, _ = compact(out.trainer.model, {"params": out.state.params}, out.mask,
                                   input_shape=out.trainer.dataset.input_shape)
    expected = out.trainer.model.apply({"params": trained}, x)
    got = small.apply(small_vars, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_finetuning_reuses_a_finished_run_exactly(outcome, tmp_path):
    """DPF + FT from a finished DPF run (reuse_workdir) equals DPF + FT trained in
    one go; the record keeps the accuracy before fine-tuning."""
    base = outcome("dpf")
    whole = P.train_method(_config("dpf", finetune_epochs=1), tmp_path / "whole", "dpf")
    reused = P.train_method(_config("dpf", finetune_epochs=1, reuse_workdir=str(base.trainer.workdir.parent)),
                            tmp_path / "reused", "dpf")
    for a, b in zip(jax.tree.leaves(whole.state.params), jax.tree.leaves(reused.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    before = reused.record["test_acc_before_ft"]
    assert before == base.record["test_acc"] == whole.record["test_acc_before_ft"]
    assert reused.record["method"] == "DPF + FT" and reused.record["epochs"] == EPOCHS + 1
    assert len(reused.record["history"]) == EPOCHS + 1
    other = _config("dpf", finetune_epochs=1, reuse_workdir=str(base.trainer.workdir.parent),
                    target_sparsity=0.5)
    with pytest.raises(ConfigError, match="target_sparsity"):
        P.train_method(other, tmp_path / "other", "dpf")


def test_one_shot_ft_reuses_the_dense_run(tmp_path):
    dense_cfg = _config("dense")
    dense_cfg.train.epochs = 1  # the dense budget of _config("one_shot_ft")
    dense = P.train_method(dense_cfg, tmp_path / "dense", "dense")
    whole = P.train_method(_config("one_shot_ft"), tmp_path / "whole", "one_shot_ft")
    reused = P.train_method(_config("one_shot_ft", reuse_workdir=str(tmp_path / "dense")),
                            tmp_path / "reused", "one_shot_ft")
    assert reused.record["test_acc_dense"] == dense.record["test_acc"] == whole.record["test_acc_dense"]
    for a, b in zip(jax.tree.leaves(whole.state.params), jax.tree.leaves(reused.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_finetuning_optimizer_and_method_rules(tmp_path):
    out = P.train_method(_config("incremental", finetune_epochs=1, finetune_optimizer="adam"),
                         tmp_path / "adam", "incremental")
    assert out.trainer.cfg["optimizer"] == "adam" and out.record["finetune_optimizer"] == "adam"
    assert out.record["method"] == "Incremental + FT"
    with pytest.raises(ConfigError, match="finetune_epochs"):
        P.train_method(_config("one_shot_ft", finetune_epochs=0), tmp_path / "a", "one_shot_ft")
    with pytest.raises(ConfigError, match="reuse_workdir"):
        P.train_method(_config("dense", reuse_workdir=str(tmp_path)), tmp_path / "b", "dense")
    with pytest.raises(ConfigError, match="no finished run"):
        P.train_method(_config("one_shot_ft", reuse_workdir=str(tmp_path / "none")), tmp_path / "c",
                       "one_shot_ft")
