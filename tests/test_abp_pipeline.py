"""Smoke run of the ABP study pipeline (jaxprune/configs/abp_diabetes_smoke.py): one
replication on scikit-learn diabetes, one setting per method."""

import json

import numpy as np

from jaxprune.configs.abp_diabetes_smoke import get_config
from jaxprune.configs.common import validate_config
from jaxprune.pipelines import get_pipeline


def test_abp_smoke_run(tmp_path):
    config = get_config()
    config.train.epochs = 3
    validate_config(config)
    results = get_pipeline("abp")(config, str(tmp_path))
    records = results["records"]
    assert [(r["method"], r["param"]) for r in records] == [
        ("ABP-L", "lambda=0.01"),
        ("ABP-M", "eta=0, q=0.5"),
        ("Mag", "p=0.5"),
    ]
    for r in records:
        assert r["compression_ratio"] >= 1.0
        assert np.isclose(r["pruning_ratio"], 1.0 - 1.0 / r["compression_ratio"])
        np.testing.assert_allclose(r["mse_increase_ratio"], r["mse_pruned"] / r["mse_orig"] - 1.0, rtol=1e-6)
    # Mag drops floor(p * d) of every neuron's d inputs: 10-16-16-1 -> 5 + 8 + 8 of each neuron's inputs
    mag = records[2]
    assert np.isclose(mag["pruning_ratio"], (5 * 16 + 8 * 16 + 8 * 1) / (10 * 16 + 16 * 16 + 16 * 1))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["records"] == json.loads(json.dumps(records))
