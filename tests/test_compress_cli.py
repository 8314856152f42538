"""experiments.compress on a run directory written by the engine's Checkpointer."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from experiments import compress as cli
from jaxprune.train.checkpoint import Checkpointer
from jaxprune.train.models import get_model
from jaxprune.train.state import TrainState


def test_compress_workdir(tmp_path):
    model = get_model("mlp", 3, hidden=(8, 6))
    variables = model.init(jax.random.key(0), jnp.ones((1, 5)))
    params = variables["params"]
    tx = optax.chain(optax.sgd(0.1), jp.optax.dpf(0.4, scorer=jp.masks.filter_norm, scope="filter"))
    opt_state = tx.init(params)
    _, opt_state = tx.update(jax.tree.map(jnp.zeros_like, params), opt_state, params)  # step 0: mask update
    mask = jp.optax.get_mask(opt_state, params)
    state = TrainState(jnp.ones((), jnp.int32), params, {}, opt_state, jnp.zeros(2, jnp.uint32))
    ckpt = Checkpointer(tmp_path / "train" / "checkpoints")
    ckpt.save(1, state)
    ckpt.close()
    config = {"model": {"name": "mlp", "kwargs": {"hidden": [8, 6]}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    cli.main(["--workdir", str(tmp_path)])  # input shape read from the first kernel
    report = json.loads((tmp_path / "compact" / "report.json").read_text())
    arrays = np.load(tmp_path / "compact" / "variables.npz")
    assert report["mask_source"] == "optimizer state"
    assert report["params_after"] == sum(arrays[k].size for k in arrays.files if k.startswith("params/"))
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    # each hidden layer keeps exactly the units the restored DPF mask keeps
    kept_units = {c["layer"]: c["units_after"] for c in report["layers"]}
    for layer in ("Dense_0", "Dense_1"):
        kept = int(np.asarray(mask[layer]["kernel"]).any(axis=0).sum())
        assert 0 < kept < np.shape(mask[layer]["kernel"])[1]
        assert kept_units[layer] == kept == arrays[f"params/{layer}/kernel"].shape[-1]
        assert report["widths"][layer] == kept


def test_input_shape_of_a_conv_run_without_a_recorded_shape():
    """Checkpoints list layers alphabetically (ResNet-20: ``stage1_...`` before
    ``stem_conv``), so the first kernel is not the stem; a streaming-only
    ``image_size`` (224) must not leak into an in-memory CIFAR run."""
    model = get_model("resnet20", 10)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                               jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    first_conv = next(w for w in jax.tree.leaves(variables["params"]) if np.ndim(w) == 4)
    assert np.shape(first_conv)[-2] != 3  # not the stem in tree order
    config = {"data": {"name": "cifar10", "image_size": 224, "streaming": False}}
    assert cli._input_shape(model, variables, config) == (32, 32, 3)
    assert cli._num_outputs(variables["params"], config) == 10


def test_recorded_input_shape(tmp_path):
    assert cli._recorded_input_shape(tmp_path) is None
    (tmp_path / "results.json").write_text(json.dumps({"summary": {"input_shape": [28, 28, 1]}}))
    assert cli._recorded_input_shape(tmp_path) == (28, 28, 1)


def test_compress_eval_on_the_runs_dataset(tmp_path):
    """``--eval``: the compact model computes exactly the group-masked model
    (same test loss), on the run's own data (digits, 8x8x1 -> MLP)."""
    from jaxprune.configs.dense_digits import get_config

    config = json.loads(get_config().to_json())
    config["model"]["kwargs"] = {"hidden": [8, 6]}
    model = get_model("mlp", 10, hidden=(8, 6))
    params = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))["params"]
    units = {"Dense_0": np.arange(8) % 2 == 0, "Dense_1": np.arange(6) < 4}  # unit filters kept
    mask = {name: {"kernel": jnp.asarray(np.broadcast_to(units[name], params[name]["kernel"].shape))
                   if name in units else None, "bias": None} for name in params}
    params = jax.tree.map(lambda b, x: x + 0.3 if b.ndim == 1 else x, params, params)  # nonzero biases
    tx = jp.optax.masked_update(mask)
    state = TrainState(jnp.ones((), jnp.int32), params, {}, tx.init(params), jnp.zeros(2, jnp.uint32))
    ckpt = Checkpointer(tmp_path / "train" / "checkpoints")
    ckpt.save(1, state)
    ckpt.close()
    (tmp_path / "config.json").write_text(json.dumps(config))
    cli.main(["--workdir", str(tmp_path), "--eval"])
    test = json.loads((tmp_path / "compact" / "report.json").read_text())["test"]
    assert test["compact"]["loss"] == pytest.approx(test["group-masked"]["loss"], rel=1e-5)
    assert test["kernel-masked"]["loss"] != test["compact"]["loss"]  # the pruned units' biases differ
