"""SiPP pipelines (jaxprune.pipelines.sipp): random-init + prune + train and
iterative prune + retrain on a tiny MLP on digits, for SiPP / WT / SNIP.

References are independent of the code under test: numpy top-k of |w| for WT,
closed forms for the density ladder and |S|, exact counts round(d * n)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxprune.configs.sipp_base import sipp_config
from jaxprune.pipelines import get_pipeline, setup
from jaxprune.pipelines import sipp as sp
from jaxprune.train import Checkpointer
from jaxprune.transforms import get_mask
from jaxprune.tree import apply_mask, full_mask

REPO = pathlib.Path(__file__).resolve().parents[1]
N_PRUNABLE = 64 * 32 + 32 * 10  # kernels of the (64 -> 32 -> 10) MLP


def _tiny(pipeline: str, method: str, sparsity: float = 0.9):
    """1 epoch of a 64-32-10 MLP on digits: the CI budget."""
    c = sipp_config(pipeline, method, sparsity)
    c.data.name = "digits"
    c.model.name = "mlp"
    c.model.kwargs.hidden = (32,)
    c.train.epochs = 1
    c.train.batch_size = 64
    c.train.eval_batch_size = 360
    c.train.lr = 0.05
    c.train.warmup_epochs = 0.2
    c.method.densities = (0.5, 0.2)
    return c


def _final_state(config, workdir):
    """The last Trainer checkpoint of a random-init run (independent of its record)."""
    dataset, model = setup(config)
    trainer, state0 = sp._masked_trainer(config, model, dataset, pathlib.Path(workdir))
    template = sp.rewind(state0, state0.params, state0.batch_stats, full_mask(state0.params), trainer.tx)
    state, _ = trainer.restore(template)
    return state0, state


def _kernels(tree):
    return {k: np.asarray(v["kernel"]) for k, v in tree.items()}


def _check_fixed_mask(state, want_kept):
    mask = get_mask(state.opt_state)
    assert mask["Dense_0"]["bias"] is None and mask["Dense_1"]["bias"] is None  # non-prunable leaves
    m, w = _kernels(mask), _kernels(state.params)
    assert sum(int(v.sum()) for v in m.values()) == want_kept
    for k in m:
        assert np.all(w[k][~m[k]] == 0.0)  # pruned weights exactly 0 after training
        assert np.count_nonzero(w[k][m[k]]) == m[k].sum()  # survivors trained, not zeroed
    return m


@pytest.mark.parametrize("method", ["sipp_det", "wt", "snip"])
def test_random_init_exact_density_and_fixed_mask(tmp_path, method):
    config = _tiny("rand", method, 0.7)
    rec = get_pipeline("random_init_prune_train")(config, str(tmp_path))
    kept = round(0.3 * N_PRUNABLE)
    assert rec["density"] == kept / N_PRUNABLE and rec["pruned_nonzero"] == 0
    assert rec["sparsity"] == 0.7 and rec["test_acc"] > 0.3  # chance: 0.1
    assert {"pipeline", "method", "model", "dataset", "seed"} <= rec.keys()
    state0, state = _final_state(config, tmp_path)
    m = _check_fixed_mask(state, kept)
    if method == "wt":  # numpy reference: global top-k of |w| at initialization
        w0 = _kernels(state0.params)
        flat = np.concatenate([np.abs(w0[k]).ravel() for k in sorted(w0)])
        thresh = np.sort(flat)[-kept]
        for k in w0:
            np.testing.assert_array_equal(m[k], np.abs(w0[k]) >= thresh)
    if method == "sipp_det":
        assert rec["sample_size"] == math.ceil(3 * math.log(8 * 32 * (32 + 10) / 1e-16))
        assert rec["report"]["kept"] == kept
        layers = rec["report"]["layers"]
        assert set(layers) == {"Dense_0/kernel", "Dense_1/kernel"}
        assert all(v["delta"] >= 1.0 - 1e-6 for v in layers.values())  # triangle inequality
        assert rec["report"]["error_bound"] > 0.0


def test_random_init_sampling_variant(tmp_path):
    """Hybrid (Det or Rand per group) reaches the budget in expectation only;
    the mask still holds through training."""
    config = _tiny("rand", "sipp_hybrid", 0.8)
    rec = get_pipeline("random_init_prune_train")(config, str(tmp_path))
    assert abs(rec["density"] - 0.2) < 0.05 and rec["pruned_nonzero"] == 0
    _, state = _final_state(config, tmp_path)
    m = get_mask(state.opt_state)
    _check_fixed_mask(state, sum(int(np.sum(v)) for v in jax.tree.leaves(m)))


def test_random_init_conv_batchnorm_model(tmp_path):
    """A conv net with BatchNorm (WRN-10-1 on 8x8 digits: 9 conv kernels and
    the head, a few steps): S, the sensitivities and Delta run the model with its BN
    statistics; the exact budget holds over the prunable kernels."""
    config = _tiny("rand", "sipp_det", 0.9)
    config.model.name = "wrn28"
    config.model.kwargs = {"depth": 10, "widen": 1}
    config.data.train_limit = 128
    rec = get_pipeline("random_init_prune_train")(config, str(tmp_path))
    _, state = _final_state(config, tmp_path)
    mask = get_mask(state.opt_state)
    kept = sum(int(np.sum(v)) for v in jax.tree.leaves(mask))
    total = sum(v.size for v in jax.tree.leaves(mask))
    assert kept == rec["report"]["kept"] and rec["density"] == kept / total and rec["pruned_nonzero"] == 0
    kernels = [v for v in jax.tree.leaves(state.params) if v.ndim >= 2]
    assert len(rec["report"]["layers"]) == len(kernels) == 10  # every kernel was scored
    assert all(np.isfinite(v["delta"]) and v["delta"] >= 1.0 - 1e-6 for v in rec["report"]["layers"].values())


def test_sensitivity_sample_from_validation():
    config = _tiny("rand", "sipp_det")
    dataset, model = setup(config)
    params = sp._masked_trainer(config, model, dataset, None)[1].params
    s, n = sp.sensitivity_sample(model, params, dataset, seed=3)
    assert n == math.ceil(3 * math.log(8 * 32 * 42 / 1e-16))
    rows = {r.tobytes() for r in dataset.val.x}
    assert len(s) == min(n, len(dataset.val.x)) and all(r.tobytes() in rows for r in s)


def test_density_ladders():
    m = {"densities": (), "alpha": 0.85, "rounds": 3}
    np.testing.assert_allclose(sp.round_densities(m), [0.85, 0.85**2, 0.85**3])
    with pytest.raises(ValueError, match="non-increasing"):
        sp.round_densities({**m, "densities": (0.5, 0.6)})


def test_invalid_configs(tmp_path):
    with pytest.raises(ValueError, match=r"config\.method\.name='nope'"):
        get_pipeline("random_init_prune_train")(_tiny("rand", "nope"), str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"config\.method\.name='sipp_rand'"):
        get_pipeline("iterative_prune_retrain")(_tiny("iter", "sipp_rand"), str(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"config\.method\.sparsity"):
        get_pipeline("random_init_prune_train")(_tiny("rand", "wt", 1.0), str(tmp_path / "c"))


# Table S1 of the paper, transcribed: epochs, batch, lr, decay factor, decay epochs, Nesterov, weight decay
TABLE_S1 = {
    "resnet20": (182, 128, 0.1, 0.1, (91, 136), False, 1e-4),
    "resnet56": (182, 128, 0.1, 0.1, (91, 136), False, 1e-4),
    "resnet110": (182, 128, 0.1, 0.1, (91, 136), False, 1e-4),
    "vgg16": (300, 256, 0.05, 0.5, (30, 60, 90, 120, 150, 180, 210, 240, 270), False, 5e-4),
    "wrn16_8": (200, 128, 0.1, 0.2, (60, 120, 180), True, 5e-4),
}


@pytest.mark.parametrize("model", sorted(TABLE_S1))
def test_paper_configs_follow_table_s1(model):
    import importlib

    from jaxprune.configs.common import validate_config
    from jaxprune.train import MODEL_NAMES, make_schedule

    epochs, batch, lr, decay, at, nesterov, wd = TABLE_S1[model]
    get_config = importlib.import_module(f"jaxprune.configs.sipp_{model}").get_config
    for arg in ("rand,sipp_det,0.98", "rand,sipp_hybrid", "iter,wt"):
        c = get_config(arg)
        validate_config(c)
        assert c.model.name == model and model in MODEL_NAMES and c.data.name == "cifar10"
        t = c.train
        assert (t.optimizer, t.momentum, t.warmup_epochs) == ("sgd", 0.9, 5.0)
        assert (t.epochs, t.batch_size, t.lr, t.nesterov, t.weight_decay) == (epochs, batch, lr, nesterov, wd)
        assert (c.method.delta, c.method.alpha) == (1e-16, 0.85)
        assert c.method.patch_reduce == ("mean" if "sipp_det" in arg else "max")
    # the lr by epoch (10 steps each): warm-up to lr by epoch 5, then x decay at each listed epoch
    sched = make_schedule(c.train, 10)
    assert float(sched(50)) == pytest.approx(lr)
    for k, e in enumerate(at):
        assert float(sched(10 * e - 1)) == pytest.approx(lr * decay**k), e
        assert float(sched(10 * e)) == pytest.approx(lr * decay ** (k + 1)), e


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("rand", "pipeline,method"),
        ("random,wt", "pipeline='random'"),
        ("rand,sipp", "method='sipp'"),
        ("rand,wt,high", "sparsity='high'"),
        ("rand,wt,1.0", "sparsity='1.0'"),
    ],
)
def test_paper_config_bad_arguments(arg, match):
    from jaxprune.configs.sipp_base import paper_config

    with pytest.raises(ValueError, match=match):
        paper_config("resnet56", arg)
    with pytest.raises(ValueError, match="model='resnet18'"):
        paper_config("resnet18", "rand,wt")


def test_iterative_no_rewind_and_exact_densities(tmp_path, monkeypatch):
    """Rounds prune the previous round's TRAINED weights to round(d n) and
    retrain from them (not from init)."""
    seen = []
    rule = sp.RULES["snip"]

    def spy(params, mask, t, ctx):
        seen.append((jax.device_get(params), jax.device_get(ctx.init_params)))
        new, rec = rule(params, mask, t, ctx)
        seen[-1] += (jax.device_get(new),)
        return new, rec

    monkeypatch.setitem(sp.RULES, "snip", spy)
    config = _tiny("iter", "snip")
    res = get_pipeline("iterative_prune_retrain")(config, str(tmp_path))
    recs = res["records"]
    assert [r["round"] for r in recs] == [0, 1, 2]
    want = [1.0, round(0.5 * N_PRUNABLE) / N_PRUNABLE, round(0.2 * N_PRUNABLE) / N_PRUNABLE]
    np.testing.assert_array_equal([r["density"] for r in recs], want)
    assert all(r["test_acc"] > 0.3 for r in recs)
    (p0, _, m1), (p1, _, m2) = seen
    for k in ("Dense_0", "Dense_1"):
        a, b = np.asarray(m1[k]["kernel"]), np.asarray(m2[k]["kernel"])
        assert np.all(b <= a)  # nested masks: pruned weights stay pruned
        assert np.all(np.asarray(p1[k]["kernel"])[~a] == 0.0)  # mask held in round 1
    # round 1 started from the pruned round-0 weights: 1 epoch moves them little,
    # while the initial weights are far away
    def dist(ref):
        return sum(np.linalg.norm(p1[k]["kernel"] - np.where(m1[k]["kernel"], ref[k]["kernel"], 0.0))
                   for k in p1)

    d_start, d_init = dist(p0), dist(seen[0][1])
    assert d_start < 0.5 * d_init, (d_start, d_init)
    # the last round's checkpoint: final weights 0 outside the final mask
    ckpt = Checkpointer(tmp_path / "rounds", keep=1)
    try:
        target = {"params": p1, "batch_stats": {}, "mask": m2}
        saved, _, _ = ckpt.restore(target)
    finally:
        ckpt.close()
    final = saved["params"]
    masked = apply_mask(final, saved["mask"])
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(masked), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="holds a previous run"):
        get_pipeline("iterative_prune_retrain")(config, str(tmp_path))


def _script(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "run_killable.py"
    path.write_text(textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / "tests")!r})
        from test_pipeline_sipp import _tiny
        from jaxprune.pipelines import sipp as sp

        rule = sp.RULES["wt"]
        def kill_rule(params, mask, t, ctx):
            if t == 1 and os.environ.get("KILL") == "1":  # after round 1's checkpoint
                os.kill(os.getpid(), signal.SIGKILL)
            return rule(params, mask, t, ctx)

        sp.RULES["wt"] = kill_rule
        config = _tiny("iter", "wt")
        config.resume = True
        sp.run_iterative(config, sys.argv[1])
    """))
    return path


@pytest.mark.slow
def test_iterative_resume_after_sigkill(tmp_path):
    ref = get_pipeline("iterative_prune_retrain")(_tiny("iter", "wt"), str(tmp_path / "ref"))["records"]
    script, work = _script(tmp_path), tmp_path / "killed"
    env = {**os.environ, "KILL": "1"}
    proc = subprocess.run([sys.executable, str(script), str(work)], env=env, capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "round 1:" in proc.stdout and "round 2:" not in proc.stdout
    env["KILL"] = "0"
    proc = subprocess.run([sys.executable, str(script), str(work)], env=env, capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "round 0:" not in proc.stdout and "round 1:" not in proc.stdout and "round 2:" in proc.stdout
    got = json.loads((work / "results.json").read_text())["records"]
    keys = ("round", "density", "acc_pruned", "test_acc", "val_acc")
    assert [{k: r.get(k) for k in keys} for r in got] == [{k: r.get(k) for k in keys} for r in ref]
