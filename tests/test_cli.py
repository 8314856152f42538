"""Configs and the CLI: validation of keys and names, locked overrides, and a
run killed with SIGKILL that resumes to bit-identical final parameters."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from jaxprune.configs.common import base_config, validate_config
from jaxprune.pipelines import PIPELINES, get_pipeline, register, setup
from jaxprune.train import Trainer, read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "jaxprune/configs/dense_digits.py"


def test_base_and_shipped_configs_validate():
    validate_config(base_config())
    for path in sorted((ROOT / "jaxprune" / "configs").glob("*.py")):
        if "def get_config" not in path.read_text():  # shared helpers (common.py, *_base.py)
            continue
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file("config", str(path), flag_values=fv, lock_config=True)
        fv(["prog"])
        validate_config(fv.config)


@pytest.mark.parametrize(
    ("edit", "msg"),
    [
        (lambda c: setattr(c.train, "epoch", 3), r"unknown config key 'train\.epoch'.*'epochs'"),
        (lambda c: setattr(c, "trian", 3), r"unknown config key 'trian'.*'train'"),
        (lambda c: setattr(c.train, "optimizer", "sdg"), r"config\.train\.optimizer='sdg'.*'sgd'"),
        (lambda c: setattr(c.train, "schedule", "cos"), r"train\.schedule='cos'.*'cosine'"),
        (lambda c: setattr(c.data, "name", "digit"), r"config\.data\.name='digit'.*'digits'"),
        (lambda c: setattr(c.model, "name", "resnet21"), r"config\.model\.name='resnet21'.*'resnet20'"),
        (lambda c: setattr(c, "pipeline", "lottery"), r"config\.pipeline='lottery'.*'dense'"),
    ],
)
def test_validate_config_rejects_typos_with_valid_choices(edit, msg):
    config = base_config()
    edit(config)
    with pytest.raises(ValueError, match=msg):
        validate_config(config)


def test_free_sections_accept_any_keys():
    config = base_config()
    config.model.kwargs.hidden = (16,)
    config.method.sparsities = (0.5, 0.9)
    validate_config(config)


def _parse(*overrides):
    """Parse ``--config`` plus overrides like the CLI does (fresh flag registry)."""
    argv = ["prog", f"--config={ROOT / CONFIG}", *overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    return fv.config


def test_locked_config_rejects_unknown_override():
    config = _parse("--config.train.epochs=3")
    assert config.train.epochs == 3
    with pytest.raises(AttributeError, match=r"Did you mean \"epochs\""):
        _parse("--config.train.epoch=3")
    with pytest.raises(AttributeError):
        config.train.new_key = 1


def test_pipeline_registry():
    assert get_pipeline("dense") is PIPELINES["dense"]
    with pytest.raises(ValueError, match=r"pipeline='nope'.*'dense'"):
        get_pipeline("nope")
    with pytest.raises(ValueError, match="already registered"):
        register("dense")(lambda config, workdir: {})


def _cli(workdir, *extra):
    args = [
        sys.executable, "-m", "experiments.run", f"--config={CONFIG}", f"--workdir={workdir}",
        "--config.train.epochs=2", "--config.train.batch_size=16", "--config.train.checkpoint_every=20",
        "--config.train.keep_checkpoints=2", "--config.train.log_every=10", *extra,
    ]
    # Non-partitionable threefry only shortens XLA's compile of the init on CPU (about 2x);
    # exact resume does not depend on the PRNG implementation.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_THREEFRY_PARTITIONABLE": "0"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _final_params(workdir):
    config = _parse("--config.train.epochs=2", "--config.train.batch_size=16")
    dataset, model = setup(config)
    trainer = Trainer(model, dataset, config.train, workdir=workdir)
    state, step = trainer.restore(trainer.init_state())
    return state, step


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    straight = _cli(tmp_path / "straight")
    victim = _cli(tmp_path / "victim")
    ckpts = tmp_path / "victim" / "checkpoints"
    deadline = time.time() + 240
    # Kill once a mid-run checkpoint (step >= 30) is on disk.
    while time.time() < deadline and victim.poll() is None:
        done = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
        if done and max(done) >= 30:
            break
        time.sleep(0.05)
    assert victim.poll() is None, victim.communicate()[0].decode()[-3000:]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "victim" / "results.json").exists()  # it really died mid-run
    resumed = _cli(tmp_path / "victim", "--resume")
    out_r = resumed.communicate(timeout=300)[0].decode()
    out_s = straight.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, out_r[-3000:]
    assert straight.returncode == 0, out_s[-3000:]
    a, step_a = _final_params(tmp_path / "straight")
    b, step_b = _final_params(tmp_path / "victim")
    assert step_a == step_b == int(a.step)
    # Bit for bit (same compiled program, same data order, per-step keys from the step count).
    leaves_a = jax.tree.leaves((a.params, a.opt_state, a.batch_stats))
    leaves_b = jax.tree.leaves((b.params, b.opt_state, b.batch_stats))
    for u, v in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    # The resumed run's metric log has no duplicated steps and matches the straight run's steps.
    steps = [r["step"] for r in read_metrics(tmp_path / "victim", "train")]
    assert steps == [r["step"] for r in read_metrics(tmp_path / "straight", "train")]
    assert steps == sorted(set(steps))


def test_start_run_refuses_a_previous_run_before_writing(tmp_path):
    from jaxprune.pipelines import WorkdirError, start_run

    config = _parse("--config.train.epochs=2")
    start_run(config, tmp_path / "new")  # a new (missing) directory is fine
    saved = (tmp_path / "new" / "config.json").read_text()
    assert '"epochs": 2' in saved
    other = _parse("--config.train.epochs=5")
    with pytest.raises(WorkdirError, match=r"holds a previous run \(config\.json\).*--resume"):
        start_run(other, tmp_path / "new")
    assert (tmp_path / "new" / "config.json").read_text() == saved  # untouched
    (tmp_path / "ckpt_only" / "train" / "checkpoints").mkdir(parents=True)
    with pytest.raises(WorkdirError, match=r"train/checkpoints"):
        start_run(config, tmp_path / "ckpt_only")


def test_resume_with_a_changed_config_is_refused_unless_allowed(tmp_path):
    from jaxprune.pipelines import WorkdirError, config_changes, start_run

    start_run(_parse("--config.train.lr=0.1"), tmp_path)
    same = _parse("--config.train.lr=0.1")
    same.resume = True
    start_run(same, tmp_path)  # the same config (resume itself is not a change)
    changed = _parse("--config.train.lr=0.2", "--config.seed=3")
    changed.resume = True
    message = r"2 key\(s\): seed: 0 -> 3; train\.lr: 0\.1 -> 0\.2.*--allow_config_change"
    with pytest.raises(WorkdirError, match=message):
        start_run(changed, tmp_path)
    start_run(changed, tmp_path, allow_config_change=True)
    kept = sorted(p.name for p in tmp_path.glob("config.*.json"))
    assert len(kept) == 1  # the previous config, beside the new config.json
    old, new = (json.loads((tmp_path / n).read_text()) for n in (kept[0], "config.json"))
    assert config_changes(old, new) == {"seed": (0, 3), "train.lr": (0.1, 0.2)}


def test_cli_refuses_a_used_workdir_with_exit_2(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    args = [sys.executable, "-m", "experiments.run", f"--config={CONFIG}", f"--workdir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "holds a previous run" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "config.json").read_text() == "{}"


def test_trainer_refuses_to_overwrite_checkpoints(tmp_path):
    config = _parse("--config.train.epochs=1", "--config.train.batch_size=256")
    dataset, model = setup(config)
    Trainer(model, dataset, config.train, workdir=tmp_path).fit(progress=False)
    with pytest.raises(ValueError, match=r"holds checkpoints of a previous run.*resume=True"):
        Trainer(model, dataset, config.train, workdir=tmp_path).fit(progress=False)


def _run_cli(*args, timeout=300):
    """``python -m jaxprune.cli`` from outside the clone (the packaged configs)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "jaxprune.cli", *args]
    return subprocess.run(cmd, cwd=ROOT.parent, env=env, capture_output=True, text=True, timeout=timeout)


def test_config_names_resolve_to_shipped_configs(tmp_path):
    from jaxprune.cli import resolve_config, shipped_configs

    names = shipped_configs()
    assert "dense_digits" in names and "common" not in names and "dpf_base" not in names
    path, _, arg = resolve_config("dpf_lenet300_fmnist:dpf,0.9").partition(":")
    assert pathlib.Path(path) == ROOT / "jaxprune" / "configs" / "dpf_lenet300_fmnist.py" and arg == "dpf,0.9"
    assert resolve_config("dense_digits.py") == str(ROOT / "jaxprune" / "configs" / "dense_digits.py")
    own = tmp_path / "mine.py"
    own.write_text("def get_config():\n    return None\n")
    assert resolve_config(f"{own}:x") == f"{own}:x"  # an existing file is taken as it is
    with pytest.raises(ValueError, match=r"no shipped config named 'dense_digit'; shipped configs: .*dense_"):
        resolve_config("dense_digit")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config=dense_digits", "--config.train.epochz=3"], r'Did you mean "epochs"'),
        (["--config=dense_digit"], "no shipped config named 'dense_digit'"),
        (["--config=dense_digits", "--config.pipeline=lottery"], r"config\.pipeline='lottery' is not valid"),
        (["--config=dpf_lenet300_fmnist:dpf,1.5"], r"config\.method\.target_sparsity=1\.5 is outside"),
        (["--config=dpf_lenet300_fmnist:dpf,0.9", "--config.method.finetune_optimizer=rmsprop"],
         r"finetune_optimizer='rmsprop' is not valid; expected one of \['sgd', 'adam'\]"),
        (["--config=dpf_lenet300_fmnist:dpf,0.9", "--config.data.name=digits", "--config.model.name=mlp",
          "--config.train.epochs=1"], "no mask update reaches the target"),
    ],
)
def test_config_errors_print_one_line_and_exit_2(tmp_path, args, message):
    """Unknown keys, unknown names, bad values (found before the run or by the
    pipeline once the data are known): one line, exit 2, no config.json left."""
    import re

    out = _run_cli(*args, f"--workdir={tmp_path / 'run'}")
    assert out.returncode == 2, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "run" / "config.json").exists()


def test_cli_run_is_quiet_and_ends_with_a_summary_line(tmp_path):
    out = _run_cli("--config=dense_digits", "--config.train.epochs=1", f"--data_dir={tmp_path / 'data'}",
                   f"--workdir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.strip() == ""  # no orbax/jax INFO lines, no progress bar (not a terminal)
    (line,) = out.stdout.strip().splitlines()
    assert line.startswith("done: dense | test accuracy ") and f"results: {tmp_path / 'run'}" in line
    assert "params kept" in line and "MACs kept" in line
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["summary"]["test_accuracy"] == results["final"]["test"]["accuracy"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["data_dir"] == str(tmp_path / "data")


def test_summary_line_counts_params_and_macs():
    from jaxprune.cli import summary_line
    from jaxprune.pipelines import run_summary

    kernel = np.ones((4, 3), np.float32)
    params = {"Dense_0": {"kernel": kernel, "bias": np.zeros(3, np.float32)}}
    mask = {"Dense_0": {"kernel": np.arange(12).reshape(4, 3) < 3, "bias": None}}
    summary = run_summary("dpf", method="DPF 75%", test={"accuracy": 0.5, "loss": 1.0}, params=params,
                          mask=mask)
    # 9 of 12 kernel weights pruned; 15 parameters in all
    assert summary["sparsity_prunable"] == 0.75 and summary["sparsity_all"] == pytest.approx(9 / 15)
    assert summary["params_kept"] == 6 and summary["params_total"] == 15
    line = summary_line(summary, 75.0, pathlib.Path("runs/x/results.json"))
    assert line == ("done: DPF 75% | test accuracy 50.00% | sparsity 75.0% of prunable, 60.0% of all "
                    "weights | params kept 6/15 (40.0%) | 1m 15s | results: runs/x/results.json")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.epochs", 0), ("train.batch_size", 0), ("train.batch_size", -8), ("train.eval_batch_size", 0),
        ("train.lr", -0.1), ("train.lr", float("nan")), ("train.lr", float("inf")), ("train.momentum", 1.5),
        ("train.weight_decay", -1e-4), ("train.log_every", 0), ("train.checkpoint_every", -1),
        ("train.keep_checkpoints", 0), ("data.val_fraction", 1.5), ("data.train_limit", -5),
        ("train.warmup_epochs", -1.0), ("train.milestones", (0.75, 1.5)), ("train.milestones", (0.75, 0.5)),
        ("train.eps", 0.0), ("train.b2", 1.0), ("data.test_limit", -1), ("train.lr_decay_factor", 0.0),
    ],
)
def test_validate_config_rejects_out_of_range_numbers(key, value):
    """Numbers outside their range were accepted and failed (or ran) later (issue 17 sweep)."""
    config = base_config()
    section, _, name = key.rpartition(".")
    node = config[section] if section else config
    with config.unlocked():
        node[name] = value
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_config(config)
