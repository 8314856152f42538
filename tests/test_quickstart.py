"""``make run``'s quickstart at one sparsity and a few epochs: every method runs,
reaches its target, and the JSON and figure land in the output directory only."""

import json

import pytest

from experiments import quickstart


def test_quickstart_trains_every_method_and_writes_its_outputs(tmp_path):
    results = quickstart.run(tmp_path, epochs=4, ft_epochs=1, sparsities=(0.8,))
    methods = [r["method"] for r in results["rows"]]
    assert methods == ["Dense", "One-shot P+FT", "Incremental", "DPF"]
    dense, *pruned = results["rows"]
    assert dense["sparsity"] == 0.0
    for row in pruned:
        assert row["sparsity"] == pytest.approx(0.8, abs=1e-4)
        assert row["pq_index"] > dense["pq_index"]  # zeros make a weight vector sparser by the PQ Index
        assert 0.5 < row["test_accuracy"] <= 1.0
    assert json.loads((tmp_path / "quickstart.json").read_text())["rows"] == results["rows"]
    assert (tmp_path / "quickstart.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quickstart.json", "quickstart.png"]
