"""The dense baseline: train ``config.model`` on ``config.data`` with
``config.train``, then evaluate the final and the best-by-validation states on
the test split."""

from __future__ import annotations

import pathlib
from typing import Any

from jaxprune.pipelines import progress, register, run_summary, setup, write_results
from jaxprune.train import Trainer


@register("dense")
def run(config: Any, workdir: str | pathlib.Path) -> dict:
    """Returns ``{"final": {split: metrics}, "best": {...}, "best_step", "history", "summary"}``
    (splits: val, test) and writes it to ``<workdir>/results.json``."""
    dataset, model = setup(config)
    trainer = Trainer(model, dataset, config.train, workdir=workdir, seed=config.seed)
    state = trainer.fit(resume=config.resume, progress=progress(config))
    results: dict[str, Any] = {
        "pipeline": "dense",
        "final": {s: trainer.evaluate(state, s) for s in ("val", "test") if len(getattr(dataset, s).y)},
        "history": trainer.history,
        "steps": int(state.step),
    }
    if len(dataset.val.y):  # the best checkpoint is chosen on the validation split
        best, results["best_step"] = trainer.restore(state, best=True)
        results["best"] = {s: trainer.evaluate(best, s) for s in ("val", "test")}
    results["summary"] = run_summary(
        "dense", test=results["final"].get("test"), params=state.params, model=model,
        input_shape=getattr(dataset, "input_shape", None), batch_stats=state.batch_stats,
    )
    write_results(workdir, results)
    return results
