"""The DPF study's handling of diverged runs: a run whose loss goes non-finite
is recorded as diverged (where, and its epochs so far) instead of a chance-level
accuracy, and the report counts it without averaging it in."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import dpf_study
from jaxprune.pipelines import setup
from jaxprune.pipelines.dpf import train_method
from jaxprune.train import TrainingDiverged
from tests.test_pipeline_dpf import STEPS_PER_EPOCH, _config


def test_a_diverging_run_is_recorded_as_diverged(tmp_path):
    config = _config("dpf")
    config.train.lr = 1e6
    config.train.epochs = 3
    dataset, _ = setup(config)
    with pytest.raises(TrainingDiverged) as err:
        train_method(config, tmp_path, "dpf", dataset=dataset)
    record = dpf_study.diverged_record(config, "dpf", dataset, tmp_path, err.value, 1.5)
    assert record["diverged"] and record["test_acc"] is None
    assert (record["diverged_step"], record["diverged_epoch"]) == (err.value.step, err.value.epoch)
    assert record["diverged_loss"] in ("nan", "inf")
    # One epoch row per epoch finished before the divergence (log_every=1, 2 steps per epoch).
    assert len(record["history"]) == (err.value.step - 1) // 2
    assert dpf_study._key(record) == ("mlp", "dpf", 0.8, 0, 3, -1, None, None)


def _run(method: str, target: float, seed: int, acc: float | None) -> dict:
    r = dict(model="lenet300", dataset="fashion_mnist", method_id=method, study_method=method,
             target_sparsity=target, seed=seed,
             epochs=60, train_examples=54000, wall_s=100.0, sparsity_prunable=target, sparsity_all=target,
             history=[{"delta": 0.1}, {"delta": 0.2}], mask_convergence=[1.0, 0.5, 0.1])
    return {**r, "test_acc": None, "diverged": True} if acc is None else {**r, "test_acc": acc}


def test_report_counts_diverged_runs_and_leaves_them_out_of_the_means(tmp_path):
    records = [_run("dense", 0.0, s, 0.90) for s in (0, 1, 2)]
    records += [_run("dpf", 0.99, 0, 0.88), _run("dpf", 0.99, 1, None), _run("dpf", 0.99, 2, 0.86)]
    records += [_run("incremental", 0.99, s, 0.88 + 0.01 * s) for s in (0, 1, 2)]
    records += [_run("one_shot_ft", 0.99, s, 0.85) for s in (0, 1, 2)]
    records += [_run("dpf", 0.98, s, None) for s in (0, 1)] + [_run("incremental", 0.98, 0, 0.8)]
    table = "\n".join(dpf_study.table(records))
    # Table 2's column order: One-shot P+FT, Incremental, DPF
    assert "| 0.99 | 85.00 +- 0.00 (n=3) | 89.00 +- 1.00 (n=3) | 87.00 +- 1.41 (n=2; 1 diverged) |" in table
    assert "| 0.98 | - | 80.00 +- 0.00 (n=1) | all 2 diverged |" in table
    claim = "\n".join(dpf_study.claim_check(records))
    assert "| lenet300 | 0.99 | -2.00 | +2.00 | 1.00 | NO | DPF 1/3 |" in claim
    assert "| lenet300 | 0.98 | +nan | +nan | nan | NO | DPF 2/2 |" in claim
    assert "DPF diverged (non-finite training loss) in 2/2 runs at 0.98, 1/3 runs at 0.99" in claim
    paths = dpf_study.plots(records, tmp_path, stem="dpf_test")
    assert [p.name for p in paths] == ["dpf_test_accuracy.png", "dpf_test_mask_convergence.png",
                                       "dpf_test_delta.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_claim_check_skips_a_baseline_that_was_not_run():
    records = [_run(m, 0.99, s, acc) for m, acc in (("dpf", 0.87), ("incremental", 0.88)) for s in (0, 1)]
    claim = "\n".join(dpf_study.claim_check(records))
    assert "- DPF >= Incremental at >= 0.95: FAILS at 0.99 (-1.00 pp)." in claim
    assert "- DPF >= One-shot P+FT at >= 0.95: not tested (One-shot P+FT not run)." in claim


def test_divergence_probe_records_mask_updates_and_reports(tmp_path, monkeypatch):
    """experiments.dpf_divergence on a tiny DPF run (mask every 2 steps) and on
    one that blows up at once: per-update rows, then the report's table."""
    import json

    import jaxprune.configs.dpf_lenet300_fmnist as lenet_config
    from experiments import dpf_divergence

    def tiny(arg):
        config = _config("dpf")
        config.method.target_sparsity = float(arg.split(",")[1])
        config.method.update_every = 2
        config.train.epochs = 5
        return config

    monkeypatch.setattr(lenet_config, "get_config", tiny)
    calm = dpf_divergence.run(0, 0.8, 0.0, tmp_path / "calm")
    wild = dpf_divergence.run(0, 0.8, 1e6, tmp_path / "wild")
    assert not calm["diverged"] and wild["diverged"]
    n_steps = calm["n_steps"]
    assert n_steps == 5 * STEPS_PER_EPOCH
    assert calm["updates"]["step"] == list(range(2, n_steps - 2, 2))
    kept, pruned = np.array(calm["updates"]["kept_max"]), np.array(calm["updates"]["pruned_max"])
    assert np.all(kept > 0) and np.all(pruned <= kept)  # right after an update the largest |w| are kept
    out = tmp_path / "report"
    out.with_suffix(".json").write_text(json.dumps(dpf_divergence._rounded({"runs": [calm, wild]})))
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    dpf_divergence.report(runs, out)
    table = out.with_suffix(".md").read_text()
    assert f"| 0 | finished, test acc {100 * runs[0]['test_acc']:.2f}% |" in table
    assert f"| 0 | diverged (stopped at step {wild['diverged_step']}) |" in table
    assert out.with_suffix(".png").exists()


def test_records_before_the_table_2_protocol_keep_their_meaning():
    """A record without ``study_method`` whose method was ``one_shot_ft`` ran the
    former split-budget protocol; the "+FT" rows are told apart by their method name."""
    old = _run("one_shot_ft", 0.9, 0, 0.8)
    del old["study_method"]
    assert dpf_study.study_method(old) == "one_shot_split"
    assert dpf_study.study_method(_run("dpf_ft", 0.9, 0, 0.8)) == "dpf_ft"
    assert "One-shot+FT (split budget)" in "\n".join(dpf_study.table([old]))
