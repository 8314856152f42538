"""The Trainer loop: hooks (order, counts, state replacement), exact evaluation
against a direct NumPy computation, metric files, learning on digits."""

import json

import jax
import numpy as np
import pytest
import scipy.special

from jaxprune.configs.common import base_config
from jaxprune.train import (
    FunctionHook,
    Hook,
    MetricsWriter,
    Trainer,
    TrainingDiverged,
    get_model,
    load_dataset,
    read_metrics,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def trainer(digits):
    """One compiled Trainer shared by the tests (hooks are swapped per test)."""
    return Trainer(get_model("mlp", digits.num_outputs, hidden=(16,)), digits, _cfg(epochs=1))


def _cfg(**kw):
    t = base_config().train
    t.update(dict(epochs=2, batch_size=64, eval_batch_size=256, lr=0.05, log_every=5))
    t.update(kw)
    return t


class Recorder(Hook):
    every_n_steps = 7

    def __init__(self):
        self.events = []

    def before_step(self, trainer, state):
        self.events.append("before")

    def after_step(self, trainer, state, metrics):
        self.events.append("after")
        assert set(metrics) == {"loss", "accuracy"}

    def every_n(self, trainer, state):
        self.events.append(("n", int(state.step)))

    def end_of_epoch(self, trainer, state, epoch, logs):
        self.events.append(("epoch", epoch, logs["step"]))
        assert "val_accuracy" in logs and "train_loss" in logs


def test_fit_runs_hooks_logs_and_learns(digits, tmp_path):
    model = get_model("mlp", digits.num_outputs, hidden=(32,))
    rec = Recorder()
    trainer = Trainer(model, digits, _cfg(epochs=3), hooks=[rec], workdir=tmp_path, seed=0)
    assert trainer.task == "classification"
    spe = len(digits.train) // 64
    assert trainer.steps_per_epoch == spe
    state = trainer.fit(progress=False)
    assert int(state.step) == 3 * spe
    assert rec.events.count("before") == rec.events.count("after") == 3 * spe
    assert [e for e in rec.events if e[0] == "n"] == [("n", s) for s in range(7, 3 * spe + 1, 7)]
    assert [e for e in rec.events if e[0] == "epoch"] == [("epoch", e, (e + 1) * spe) for e in range(3)]
    # A "before" of step s+1 comes after the "after" of step s.
    assert rec.events[:4] == ["before", "after", "before", "after"]
    test = trainer.evaluate(state, "test")
    assert test["accuracy"] > 0.85  # 10 classes: chance is 0.1
    # Files: JSONL train rows every log_every steps, one epoch row per epoch, TensorBoard events.
    train_rows = read_metrics(tmp_path, "train")
    assert [r["step"] for r in train_rows][:3] == [5, 10, 15]
    assert len(read_metrics(tmp_path, "epoch")) == 3
    assert any((tmp_path / "tb").iterdir())
    assert trainer.history[-1]["epoch"] == 3


def test_evaluate_matches_direct_numpy(digits, trainer):
    state = trainer.init_state()
    assert len(digits.test) % trainer.eval_batch_size  # the last batch is padded
    got = trainer.evaluate(state, "test")
    logits = np.asarray(trainer.model.apply({"params": state.params}, digits.test.x, train=False), np.float64)
    y = digits.test.y
    nll = -scipy.special.log_softmax(logits, axis=1)[np.arange(len(y)), y]
    assert got["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-12)
    assert got["loss"] == pytest.approx(nll.mean(), rel=1e-5)


def test_hooks_can_replace_the_state(trainer):
    def zero(tr, st):  # zero params AND a fresh optimizer state (no momentum left)
        params = jax.tree.map(lambda p: p * 0, st.params)
        return st.replace(params=params, opt_state=tr.tx.init(params))

    sums = []  # total |kernel| after each step (host copies: the state's buffers are donated)
    kernel_sum = lambda st: sum(float(abs(p).sum()) for p in jax.tree.leaves(st.params) if p.ndim == 2)
    hook = FunctionHook(periodic=zero, every_n_steps=3, after=lambda tr, st, m: sums.append(kernel_sum(st)))
    trainer.hooks = [hook]
    state = trainer.fit(progress=False)
    trainer.hooks = []
    # The hook zeroes all params and the momentum at step 3 (after the "after" hooks of step 3).
    # With every weight 0 the ReLU MLP's kernel gradients are exactly 0 (dead
    # units), so the kernels stay 0 for the rest of training: the replacement took.
    assert min(sums[:3]) > 0
    assert sums[3:] == [0.0] * (len(sums) - 3)
    assert kernel_sum(state) == 0.0


def test_trainer_rejects_bad_batch_sizes(digits):
    model = get_model("mlp", digits.num_outputs, hidden=(8,))
    with pytest.raises(ValueError, match=r"train\.batch_size=12 must be a positive multiple of the 8"):
        Trainer(model, digits, _cfg(batch_size=12))
    with pytest.raises(ValueError, match="exceeds the"):
        Trainer(model, digits, _cfg(batch_size=8 * 400))
    with pytest.raises(TypeError, match="mask_update_due must be a jittable function"):
        Trainer(model, digits, _cfg(), mask_update_due=100)


def test_metrics_writer_resume_drops_redone_steps(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=False)
    for s in (10, 20, 30):
        w.write(s, "train", {"loss": np.float32(s), "n": 3})
    w.close()
    w = MetricsWriter(tmp_path, tensorboard=False, resume_step=20)
    w.write(30, "train", {"loss": 1.5})
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(10, 10.0), (20, 20.0), (30, 1.5)]
    assert rows[0]["n"] == 3 and isinstance(rows[0]["n"], int)
    MetricsWriter(tmp_path, tensorboard=False)  # a fresh (non-resumed) run starts a new file
    assert not (tmp_path / "metrics.jsonl").exists()


def test_fit_stops_at_the_first_non_finite_window(digits, tmp_path):
    """NaN params injected after step 7: the window ending at step 10 (log_every
    5) has a NaN mean loss, so fit raises there, after logging the row and
    before checkpointing; the latest checkpoint (step 5) precedes the NaN."""

    def poison(tr, st):
        return st.replace(params=jax.tree.map(lambda p: p * np.nan, st.params))

    model = get_model("mlp", digits.num_outputs, hidden=(16,))
    hook = FunctionHook(periodic=poison, every_n_steps=7)
    cfg = _cfg(checkpoint_every=5, schedule="constant")
    trainer = Trainer(model, digits, cfg, hooks=[hook], workdir=tmp_path, seed=0)
    message = r"loss is nan .* step 10 \(epoch 0, lr 0\.05\); lower train\.lr"
    with pytest.raises(TrainingDiverged, match=message) as err:
        trainer.fit(progress=False)
    assert (err.value.step, err.value.epoch) == (10, 0) and err.value.lr == pytest.approx(0.05)
    assert np.isnan(err.value.loss)
    assert isinstance(err.value, FloatingPointError)
    rows = read_metrics(tmp_path, "train")
    assert [(r["step"], np.isnan(r["loss"])) for r in rows] == [(5, False), (10, True)]
    assert trainer.checkpointer().latest_step() == 5


def test_no_checkpoint_holds_a_non_finite_state(digits, tmp_path):
    """Checkpoints every 4 steps, logs every 5: NaN params injected after step 7 would be
    saved at step 8, before any logged window shows them; fit stops there instead."""

    def poison(tr, st):
        return st.replace(params=jax.tree.map(lambda p: p * np.nan, st.params))

    model = get_model("mlp", digits.num_outputs, hidden=(16,))
    cfg = _cfg(checkpoint_every=4, schedule="constant")
    trainer = Trainer(model, digits, cfg, hooks=[FunctionHook(periodic=poison, every_n_steps=7)],
                      workdir=tmp_path, seed=0)
    with pytest.raises(TrainingDiverged, match=r"training state is not finite at step 8") as err:
        trainer.fit(progress=False)
    assert err.value.step == 8 and not err.value.state_finite
    assert np.isnan(err.value.loss)  # the window 6..8 holds the loss of step 8, computed at NaN params
    assert trainer.checkpointer().latest_step() == 4
    state, _ = trainer.restore(trainer.init_state())
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_fit_raises_when_a_too_large_lr_blows_up(digits):
    trainer = Trainer(get_model("mlp", digits.num_outputs, hidden=(16,)), digits, _cfg(lr=1e6, momentum=0.9))
    with pytest.raises(TrainingDiverged, match="training diverged"):
        trainer.fit(progress=False)
