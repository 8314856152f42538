"""Checkpoints: TrainState + optax state with None-leaf masks round-trip
exactly; last-n + best retention; in-process exact resume of Trainer.fit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprune.configs.common import base_config
from jaxprune.train import (
    Checkpointer,
    FunctionHook,
    Trainer,
    TrainState,
    get_model,
    load_dataset,
    read_metrics,
)
from jaxprune.train.checkpoint import CheckpointCorrupted


def _state(step):
    params = {"a": jnp.arange(6.0).reshape(2, 3) + step, "b": {"bias": jnp.ones(3)}}
    mask = {"a": jnp.array([[True, False, True], [False, True, True]]), "b": {"bias": None}}
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    return TrainState(
        step=jnp.int32(step),
        params=params,
        batch_stats={},
        opt_state=(tx.init(params), mask),
        rng=jax.random.PRNGKey(step),
    )


def _equal(a, b):
    la = jax.tree.leaves_with_path(a, is_leaf=lambda x: x is None)
    lb = jax.tree.leaves_with_path(b, is_leaf=lambda x: x is None)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (_, x), (_, y) in zip(la, lb, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
            assert np.asarray(x).dtype == np.asarray(y).dtype


def test_round_trip_with_none_mask_leaves_extra_and_meta(tmp_path):
    ck = Checkpointer(tmp_path, keep=3)
    state = _state(5)
    extra = {"init": state.params, "mask": state.opt_state[1], "round": jnp.int32(4)}
    ck.save(5, state, extra=extra, meta={"epoch": 2, "batch": 7, "round": 4})
    target = _state(0)
    restored, got_extra, meta = ck.restore(target, extra_target=extra)
    ck.close()
    _equal(restored, state)
    _equal(got_extra, extra)
    assert restored.opt_state[1]["b"]["bias"] is None
    assert meta == {"epoch": 2, "batch": 7, "round": 4}


@pytest.mark.parametrize("mode", ["max", "min"])
def test_keeps_last_n_and_best(tmp_path, mode):
    ck = Checkpointer(tmp_path, keep=2, mode=mode)
    metrics = {1: 0.5, 2: 0.9, 3: 0.1, 4: 0.3, 5: None, 6: 0.2}
    for step, m in metrics.items():
        ck.save(step, _state(step), meta={"epoch": step}, metric=m)
    ck.wait()
    best = 2 if mode == "max" else 3
    assert ck.best_step() == best
    assert sorted(ck.steps()) == sorted({best, 5, 6})
    restored, _, meta = ck.restore(_state(0), best=True)
    assert int(restored.step) == best and meta["epoch"] == best
    assert int(ck.restore(_state(0))[0].step) == 6
    ck.close()
    with pytest.raises(ValueError, match=r"mode='median'"):
        Checkpointer(tmp_path, mode="median")


def test_restore_without_checkpoint_fails(tmp_path):
    ck = Checkpointer(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ck.restore(_state(0))
    ck.close()


def test_fit_resumes_mid_epoch_exactly(tmp_path):
    """Stop after some steps (a hook raises), resume: bit-identical to a straight run."""
    data = load_dataset("digits", val_fraction=0.1, seed=0)
    cfg = base_config().train
    cfg.update(dict(epochs=2, batch_size=64, lr=0.05, log_every=4, checkpoint_every=5))
    model = get_model("mlp", data.num_outputs, hidden=(16,))

    class Stop(Exception):
        pass

    def stop_at_13(trainer, state, metrics):
        if int(state.step) == 13:
            raise Stop

    # One Trainer (compiled once); workdir and hooks are swapped between the runs.
    trainer = Trainer(model, data, cfg, workdir=tmp_path / "a")
    straight = trainer.fit(progress=False)
    straight_history = trainer.history
    trainer.workdir, trainer.hooks = tmp_path / "b", [FunctionHook(after=stop_at_13)]
    with pytest.raises(Stop):
        trainer.fit(progress=False)
    trainer.hooks = []
    resumed = trainer.fit(resume=True, progress=False)
    assert trainer.steps_per_epoch > 13
    # Latest checkpoint before the stop: step 10 = epoch 0, next batch 10 (mid-epoch),
    # between two logging windows (log_every=4): steps 9-10 were pending.
    data_state = trainer.resumed_meta["data"]
    assert (data_state["epoch"], data_state["batch"]) == (0, 10)
    assert len(trainer.resumed_meta["window"]) == 2 and len(trainer.resumed_meta["epoch_rows"]) == 2
    _equal(resumed, straight)
    # The interrupted epoch's metrics average all its steps, as in the straight run.
    assert trainer.history == straight_history
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert drop_time(read_metrics(tmp_path / "b")) == drop_time(read_metrics(tmp_path / "a"))


def test_resume_refuses_other_data(tmp_path):
    """A checkpoint's data position means nothing for another batch size: clear error."""
    data = load_dataset("digits", val_fraction=0.1, seed=0)
    cfg = base_config().train
    cfg.update(dict(epochs=1, batch_size=64, lr=0.05, checkpoint_every=3))
    model = get_model("mlp", data.num_outputs, hidden=(8,))
    Trainer(model, data, cfg, workdir=tmp_path).fit(progress=False)
    cfg.batch_size = 32
    with pytest.raises(ValueError, match=r"cannot resume exactly.*batch_size 64 -> 32"):
        Trainer(model, data, cfg, workdir=tmp_path).fit(resume=True, progress=False)


def _largest_file(step_dir):
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    f = _largest_file(step_dir)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(step_dir):
    """Flip bits inside the stored data: orbax restores this without an error."""
    f = _largest_file(step_dir)
    data = bytearray(f.read_bytes())
    for i in range(100, len(data) - 64, 97):
        data[i] ^= 0x10
    f.write_bytes(bytes(data))


def _delete_item(step_dir):
    import shutil

    shutil.rmtree(step_dir / "state")


def _bad_meta(step_dir):
    (step_dir / "meta" / "metadata").write_text("{not json")


@pytest.mark.parametrize("damage", [_truncate, _flip, _delete_item, _bad_meta])
def test_corrupted_latest_falls_back_to_the_newest_intact_and_keeps_it_aside(tmp_path, damage, caplog):
    ck = Checkpointer(tmp_path / "checkpoints", keep=3)
    big = {"w": jnp.arange(4000.0)}
    for step in (1, 2, 3):
        ck.save(step, _state(step), extra={"w": big["w"] * step}, meta={"epoch": step})
    ck.wait()
    damage(tmp_path / "checkpoints" / "3")
    with caplog.at_level("WARNING"):
        state, extra, meta = ck.restore(_state(0), extra_target=big)
    assert meta == {"epoch": 2} and int(state.step) == 2
    _equal(state, _state(2))
    np.testing.assert_array_equal(extra["w"], big["w"] * 2)
    assert "checkpoint step 3" in caplog.text and "trying the previous checkpoint" in caplog.text
    assert "Traceback" not in caplog.text and len(caplog.text) < 2000  # one line, not pages
    aside = list((tmp_path / "checkpoints.corrupt").iterdir())  # kept, not deleted
    assert len(aside) == 1 and aside[0].name.startswith("3-")
    assert ck.latest_step() == 2
    ck.save(4, _state(4), meta={"epoch": 4})  # the manager carries on after the set-aside
    ck.wait()
    assert sorted(ck.steps()) == [1, 2, 4]
    ck.close()


def test_explicit_step_corruption_is_a_short_error(tmp_path):
    ck = Checkpointer(tmp_path / "checkpoints", keep=2)
    state = {"w": jnp.arange(4000.0)}
    ck.save(1, state)
    ck.wait()
    _flip(tmp_path / "checkpoints" / "1")
    with pytest.raises(
        CheckpointCorrupted, match=r"step 1 in .*checkpoints/1 does not match the fingerprint"
    ):
        ck.restore(state, step=1)
    with pytest.raises(
        FileNotFoundError, match=r"no checkpoint in .*unreadable ones are in .*checkpoints\.corrupt"
    ):
        ck.restore(state)
    ck.close()


def test_fit_resumes_from_the_newest_intact_checkpoint(tmp_path):
    """kill -9 during a save can leave the newest checkpoint damaged: --resume still works."""
    data = load_dataset("digits", val_fraction=0.1, seed=0)
    cfg = base_config().train
    cfg.update(dict(epochs=1, batch_size=64, lr=0.05, checkpoint_every=4, keep_checkpoints=3))
    model = get_model("mlp", data.num_outputs, hidden=(8,))
    trainer = Trainer(model, data, cfg, workdir=tmp_path)
    straight = trainer.fit(progress=False)
    steps = sorted(trainer.checkpointer().steps())
    _truncate(tmp_path / "checkpoints" / str(steps[-1]))
    resumed = trainer.fit(resume=True, progress=False)
    assert trainer.resumed_meta["data"]["batch"] == steps[-2]  # a mid-epoch checkpoint
    _equal(resumed.params, straight.params)
