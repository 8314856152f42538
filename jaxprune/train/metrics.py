"""Metric writers (JSONL + TensorBoard), the progress bar and the log level.

``metrics.jsonl``: one JSON object per line, ``{"step": int, "split": str,
<name>: float, ...}``. TensorBoard scalars are tagged ``<split>/<name>``.
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import tqdm


def _to_scalar(value: Any) -> int | float:
    if isinstance(value, int | np.integer):
        return int(value)
    return float(np.asarray(value))


class MetricsWriter:
    """Append metrics to ``<workdir>/metrics.jsonl`` and (optionally) TensorBoard
    event files in ``<workdir>/tb``.

    ``resume_step``: when continuing a killed run, lines logged after that step
    (work the resumed run redoes) are dropped first so the log has no duplicates.
    Only process 0 of a multi-host job should write: pass ``enabled=False`` elsewhere.
    """

    def __init__(
        self,
        workdir: str | pathlib.Path,
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.path.parent / "tb"))

    def write(self, step: int, split: str, values: Mapping[str, Any]) -> dict[str, int | float]:
        """Log scalar ``values`` (device or host; ints stay ints) at ``step``; returns them."""
        row = {k: _to_scalar(v) for k, v in values.items() if k != "step"}
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": int(step), "split": split, **row}) + "\n")
            if self._tb is not None:
                for k, v in row.items():
                    self._tb.add_scalar(f"{split}/{k}", v, int(step))
        return row

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(workdir: str | pathlib.Path, split: str | None = None) -> list[dict[str, float]]:
    """Rows of ``<workdir>/metrics.jsonl`` (only ``split`` if given), in order."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def progress_bar(
    total: int, *, initial: int = 0, enabled: bool | None = None, desc: str = "train"
) -> tqdm.tqdm:
    """A tqdm bar over ``total`` steps; by default shown only when stderr is a TTY."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm.tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)


def quiet_logs(verbose: bool = False) -> None:
    """Show the INFO logs of absl/python-logging users (orbax: one line per file
    it saves; jax) only when ``verbose``; warnings and errors always."""
    import logging as py_logging

    from absl import logging

    level = logging.INFO if verbose else logging.WARNING
    logging.set_verbosity(level)
    for name in ("jax", "orbax", "absl"):
        py_logging.getLogger(name).setLevel(py_logging.INFO if verbose else py_logging.WARNING)
