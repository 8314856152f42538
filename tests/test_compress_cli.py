"""experiments.compress on a run directory written by the engine's Checkpointer."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
