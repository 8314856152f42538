"""The iterative pruning pipeline (jaxprune.pipelines.iterative): rewinding to
init, a CI smoke run on digits, and resuming a run killed (SIGKILL) in a round."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from jaxprune.configs.sap_cpu import get_config
from jaxprune.pipelines import get_pipeline
from jaxprune.pipelines import iterative as it
from jaxprune.train import create_train_state
from jaxprune.transforms import get_mask, masked_update
from jaxprune.tree import full_mask

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tiny_config(rule: str = "lt", rounds: int = 2):
    """2 rounds x 1 epoch of a linear model on digits: the CI smoke budget."""
    config = get_config(f"linear,{rule},global")
    config.data.name = "digits"
    config.train.epochs = 1
    config.train.batch_size = 64
    config.train.eval_batch_size = 360
    config.method.rounds = rounds
    config.method.grid_p, config.method.grid_q = (0.5,), (1.0, 2.0)
    return config


class _TinyBN(nn.Module):
    """Dense -> BatchNorm -> Dense: kernels, biases, BN scale/offset and statistics."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x))
        return nn.Dense(2)(nn.relu(x))


def test_rewind_restores_init_exactly():
    model = _TinyBN()
    shape = (3,)
    init = create_train_state(model, optax.sgd(0.1), shape, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda m: None if m is None else jnp.asarray(rng.random(m.shape) < 0.5),
                        full_mask(init.params), is_leaf=lambda x: x is None)
    tx = masked_update(full_mask(init.params))
    # a "trained" template: other params, moved BN statistics, a later step
    trained = create_train_state(model, tx, shape, jax.random.PRNGKey(1))
    moved = jax.tree.map(lambda x: x + 1.0, trained.batch_stats)
    trained = trained.replace(step=jnp.int32(7), batch_stats=moved)
    state = it.rewind(trained, init.params, init.batch_stats, mask, tx)
    assert int(state.step) == 0
    assert jax.tree.leaves(init.batch_stats)
    for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(init.batch_stats), strict=True):
        np.testing.assert_array_equal(a, b)
    n_unmasked = 0
    for (path, w0), w, m in zip(jax.tree.leaves_with_path(init.params), jax.tree.leaves(state.params),
                                jax.tree.leaves(mask, is_leaf=lambda x: x is None), strict=True):
        w0, w = np.asarray(w0), np.asarray(w)
        if m is None:  # biases, BN scales/offsets: back to init
            np.testing.assert_array_equal(w, w0, err_msg=str(path))
            n_unmasked += 1
        else:
            m = np.asarray(m)
            np.testing.assert_array_equal(w[m], w0[m])
            assert np.all(w[~m] == 0) and (~m).any()
    assert n_unmasked > 0
    got_mask = get_mask(state.opt_state)
    for a, b in zip(jax.tree.leaves(got_mask), jax.tree.leaves(mask), strict=True):
        np.testing.assert_array_equal(a, b)
    # fresh buffers: donating the state must not delete the caller's init arrays
    assert all(a is not b for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(init.params),
                                           strict=True))


def test_lr_zero_round_trains_from_exact_rewound_weights(tmp_path):
    """With lr = 0 training is the identity, so the weights a prune rule sees in
    round t are exactly the rewound ones: init on survivors, 0 on pruned."""
    seen = []

    @it.register_rule("_record_rewind")
    def rule(params, mask, t, ctx):
        seen.append((jax.device_get(params), jax.device_get(mask), jax.device_get(ctx.init_params)))
        return it.lt_rule(params, mask, t, ctx)

    config = _tiny_config(rounds=1)
    config.method.rule = "_record_rewind"
    config.train.lr = 0.0
    get_pipeline("iterative")(config, str(tmp_path))
    assert len(seen) == 2
    params, mask, init = seen[1]
    k, m, k0 = params["Dense_0"]["kernel"], mask["Dense_0"]["kernel"], init["Dense_0"]["kernel"]
    assert 0 < m.mean() < 1
    np.testing.assert_array_equal(k, np.where(m, k0, 0.0))
    np.testing.assert_array_equal(params["Dense_0"]["bias"], init["Dense_0"]["bias"])


def _smoke_checks(records, rounds=2):
    assert [r["round"] for r in records] == list(range(rounds + 1))
    rem = [r["remaining"] for r in records]
    np.testing.assert_allclose(rem, [round(0.8**t * 640) / 640 for t in range(rounds + 1)])
    for r in records:
        assert 0.0 <= r["acc_pruned"] <= 1.0 and r["acc_retrained"] > 0.5
        assert 0.0 < r["pqi"] < 1.0 and set(r["pqi_grid"]) == {"0.5,1", "0.5,2"}
        assert r["would_stop"] in (True, False)


def _script(tmp_path: pathlib.Path, kill_at: int) -> pathlib.Path:
    path = tmp_path / "run_killable.py"
    path.write_text(textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / "tests")!r})
        from test_pipeline_iterative import _tiny_config
        from jaxprune.pipelines import iterative as it

        def kill_rule(params, mask, t, ctx):
            if t == {kill_at} and os.environ.get("KILL") == "1":
                os.kill(os.getpid(), signal.SIGKILL)
            return it.lt_rule(params, mask, t, ctx)

        it.PRUNE_RULES["lt"] = kill_rule  # same name: records must match an uninterrupted run
        config = _tiny_config()
        config.resume = True
        it.run(config, sys.argv[1])
    """))
    return path


@pytest.mark.slow
def test_smoke_and_resume_after_sigkill(tmp_path):
    # uninterrupted reference run (the CI smoke test: 2 rounds x 1 epoch on digits)
    ref = get_pipeline("iterative")(_tiny_config(), str(tmp_path / "ref"))
    _smoke_checks(ref["records"])
    assert json.loads((tmp_path / "ref" / "results.json").read_text())["records"] == ref["records"]
    with pytest.raises(ValueError, match="holds a previous run"):
        get_pipeline("iterative")(_tiny_config(), str(tmp_path / "ref"))

    # killed inside round 1 (after its training, before its round checkpoint), then resumed
    script, work = _script(tmp_path, kill_at=1), tmp_path / "killed"
    env = {**os.environ, "KILL": "1"}
    proc = subprocess.run([sys.executable, str(script), str(work)], env=env, capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "round 0:" in proc.stdout and "round 1:" not in proc.stdout
    assert not (work / "results.json").exists()
    env["KILL"] = "0"
    proc = subprocess.run([sys.executable, str(script), str(work)], env=env, capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # continued at round 1: round 0 is not redone, round 1's training resumed from its checkpoint
    assert "round 0:" not in proc.stdout and "round 1:" in proc.stdout and "round 2:" in proc.stdout
    got = json.loads((work / "results.json").read_text())["records"]
    keys = ("round", "remaining", "remaining_after", "acc_retrained", "acc_pruned", "pqi", "pqi_layers")
    assert [{k: r[k] for k in keys} for r in got] == [{k: r[k] for k in keys} for r in ref["records"]]


def test_invalid_method_config(tmp_path):
    config = _tiny_config()
    config.method.scope = "filter"
    with pytest.raises(ValueError, match=r"config\.method\.scope='filter' is not valid"):
        get_pipeline("iterative")(config, str(tmp_path))
    config = _tiny_config()
    config.method.rule = "nope"
    with pytest.raises(ValueError, match=r"config\.method\.rule='nope' is not valid"):
        get_pipeline("iterative")(config, str(tmp_path))


def test_stop_rule_ends_the_run_when_enabled(tmp_path):
    config = _tiny_config(rounds=3)
    config.method.stop.enabled = True
    config.method.stop.rise_rounds = 0
    config.method.stop.min_ratio = 0.25  # LT prunes 20% < 25% of the remaining weights each round
    records = get_pipeline("iterative")(config, str(tmp_path))["records"]
    assert len(records) == 1 and records[0]["would_stop"]
    assert "pruning ratio 0.2 < min_ratio=0.25" in records[0]["stop_reason"]
