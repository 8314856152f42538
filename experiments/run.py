"""Run one experiment from a config file.

    python -m experiments.run --config jaxprune/configs/dense_digits.py \\
        --config.train.epochs=3 --workdir runs/dense_digits [--resume]

The config is locked (an override of an unknown key fails, listing nothing
new can be added) and validated (unknown keys in the file, unknown pipeline /
dataset / model / optimizer / schedule names fail with the valid choices).
The pipeline named by ``config.pipeline`` runs and writes
``<workdir>/results.json``; the resolved config is saved as
``<workdir>/config.json``. A workdir that holds a previous run is refused
unless ``--resume``; ``--resume`` with a changed config is refused (the changed
keys are listed, exit status 2) unless ``--allow_config_change``.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxprune.configs.common import validate_config
from jaxprune.train.mesh import initialize_distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a jaxprune/configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (metrics, checkpoints, results).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --workdir.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "With --resume: continue although the config differs from the saved config.json (both are kept).",
)
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "jax.distributed.initialize(): auto = when the environment names a multi-host job; "
    "on = always (e.g. a Cloud TPU pod slice); off = never.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    initialize_distributed({"auto": None, "on": True, "off": False}[_DISTRIBUTED.value])
    import jax

    from jaxprune.pipelines import WorkdirError, get_pipeline, start_run

    config = _CONFIG.value
    validate_config(config)
    if _RESUME.value:
        config.resume = True
    workdir = pathlib.Path(_WORKDIR.value)
    pipeline = get_pipeline(config.pipeline)
    try:
        start_run(config, workdir, allow_config_change=_ALLOW_CHANGE.value)
    except WorkdirError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    results = pipeline(config, str(workdir))
    if jax.process_index() == 0:
        summary = {k: v for k, v in results.items() if k in ("final", "best", "best_step", "steps")}
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    flags.FLAGS.set_default("verbosity", logging.WARNING)  # orbax logs every save at INFO
    app.run(main)
