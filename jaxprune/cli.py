"""``jaxprune-run``: run one experiment from a config, quietly, and say what came out.

    jaxprune-run --config dpf_lenet300_fmnist:dpf,0.95 --workdir runs/dpf95 [--resume]
    jaxprune-run --config path/to/my_config.py --config.train.epochs=3 --workdir runs/x
    jaxprune-run --list_configs

``--config`` is a config file (``path.py[:arg]``) or the name of a config that
ships with the package (``jaxprune/configs/<name>.py``, listed by
``--list_configs``). ``--config.<key>=<value>`` overrides one key; the config is
locked, so a misspelt key is an error, not a new key. ``--data_dir`` sets
``config.data.data_dir`` (else ``$JAXPRUNE_DATA_DIR``, else the built-in data).

The run writes ``<workdir>/config.json`` once the config has been validated,
metrics, checkpoints and ``<workdir>/results.json``, shows a progress bar when
stderr is a terminal, and ends with one summary line (test accuracy, achieved
sparsity, parameters and MACs kept where the pipeline reports them, wall time,
where the results are). Library logs (orbax writes one INFO line per file it
saves) are shown only with ``--verbose``.

Exit status: 0 done; 2 a usage, config or workdir error (one line on stderr,
no traceback; a fresh run leaves no ``config.json`` behind); 1 anything else.
``python -m experiments.run`` is the same command inside a clone.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any, NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
EXIT_USAGE = 2

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file path.py[:arg], or the name[:arg] of a shipped config (--list_configs).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (metrics, checkpoints, results).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --workdir.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "With --resume: continue although the config differs from the saved config.json (both are kept).",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "Directory of the offline datasets (npz files, image folders): sets config.data.data_dir.",
)
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "jax.distributed.initialize(): auto = when the environment names a multi-host job; "
    "on = always (e.g. a Cloud TPU pod slice); off = never.",
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the INFO logs of jax/orbax (one line per file saved).")
_LIST = flags.DEFINE_bool("list_configs", False, "List the configs that ship with jaxprune and exit.")


def shipped_configs() -> list[str]:
    """Names of the configs in ``jaxprune/configs`` (those with a ``get_config``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py")
                  if not p.stem.startswith("_") and "def get_config" in p.read_text())


def resolve_config(value: str) -> str:
    """``--config`` value -> a file path (with its ``:arg``): an existing file is
    kept; a shipped config's name, with or without ``.py``, maps to its file.
    Raises ``ValueError`` listing the shipped configs otherwise."""
    name, sep, arg = value.partition(":")
    if pathlib.Path(name).is_file():
        return value
    stem = name.removesuffix(".py")
    if stem in shipped_configs():
        return f"{CONFIG_DIR / stem}.py{sep}{arg}"
    raise ValueError(
        f"--config={value!r}: no such file and no shipped config named {stem!r}; "
        f"shipped configs: {', '.join(shipped_configs())}"
    )


def _rewrite_config_arg(argv: list[str]) -> list[str]:
    """Resolve the value of ``--config`` / ``--config=`` in ``argv`` (overrides
    ``--config.key=...`` are left alone)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + resolve_config(arg.partition("=")[2])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
    return out


def _fail(message: Any) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _clean_message(err: BaseException) -> str:
    """One line from a flag/config error (ml_collections wraps KeyError text in quotes)."""
    text = str(err).strip().strip("'\"").replace("\\'", "'")
    return " ".join(text.replace("\\n", " ").split())


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing where every usage or config-file error (unknown flag,
    unknown config key, a config file that fails to load or rejects its
    argument) prints one line and exits with status 2."""
    try:
        return flags.FLAGS(_rewrite_config_arg(argv))
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as err:
        _fail(_clean_message(err))


def _human_seconds(s: float) -> str:
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else (f"{m}m {sec:02d}s" if m else f"{s:.1f} s")


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def summary_line(summary: dict, wall_s: float, results_path: pathlib.Path) -> str:
    """The run's one-line summary from its results' ``summary`` entry (see
    :func:`jaxprune.pipelines.run_summary`): the fields the pipeline knows."""
    parts = [summary.get("method") or summary.get("pipeline", "run")]
    if summary.get("test_accuracy") is not None:
        parts.append(f"test accuracy {100 * summary['test_accuracy']:.2f}%")
    elif summary.get("test_loss") is not None:
        parts.append(f"test loss {summary['test_loss']:.4g}")
    if summary.get("sparsity_prunable") is not None:
        text = f"sparsity {100 * summary['sparsity_prunable']:.1f}% of prunable"
        if summary.get("sparsity_all") is not None:
            text += f", {100 * summary['sparsity_all']:.1f}% of all weights"
        parts.append(text)
    for key, label in (("params", "params"), ("macs", "MACs")):
        kept, total = summary.get(f"{key}_kept"), summary.get(f"{key}_total")
        if kept is not None and total:
            parts.append(f"{label} kept {_count(kept)}/{_count(total)} ({100 * kept / total:.1f}%)")
    for key, value in summary.get("extra", {}).items():
        parts.append(f"{key} {value}")
    parts.append(_human_seconds(wall_s))
    parts.append(f"results: {results_path}")
    return "done: " + " | ".join(parts)


def _remove_fresh_config(workdir: pathlib.Path, existed: bool) -> None:
    """After a config error in a fresh run: remove the ``config.json`` this run
    wrote (and the directory, if this run created it and nothing else is there)."""
    (workdir / "config.json").unlink(missing_ok=True)
    if not existed and workdir.is_dir() and not any(workdir.iterdir()):
        workdir.rmdir()


def main(argv: list[str]) -> None:
    if _LIST.value:
        print("\n".join(shipped_configs()))
        return
    if len(argv) > 1:
        _fail(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        _fail("--config and --workdir are required (--list_configs lists the shipped configs)")
    from jaxprune.train.metrics import quiet_logs

    quiet_logs(_VERBOSE.value)
    from jaxprune.train.mesh import initialize_distributed

    initialize_distributed({"auto": None, "on": True, "off": False}[_DISTRIBUTED.value])
    import jax

    from jaxprune.configs.common import validate_config
    from jaxprune.pipelines import ConfigError, WorkdirError, get_pipeline, start_run

    tic = time.perf_counter()
    config = _CONFIG.value
    if _DATA_DIR.value is not None:
        config.data.data_dir = _DATA_DIR.value
    if _RESUME.value:
        config.resume = True
    try:
        validate_config(config)
    except (ValueError, TypeError) as err:
        _fail(err)
    workdir = pathlib.Path(_WORKDIR.value)
    existed = workdir.exists()
    try:
        start_run(config, workdir, allow_config_change=_ALLOW_CHANGE.value)
    except WorkdirError as err:
        _fail(err)
    try:
        results = get_pipeline(config.pipeline)(config, str(workdir))
    except ConfigError as err:
        if not config.resume and jax.process_index() == 0:
            _remove_fresh_config(workdir, existed)
        _fail(err)
    if jax.process_index() == 0:
        summary = results.get("summary") or {"pipeline": config.pipeline}
        print(summary_line(summary, time.perf_counter() - tic, workdir / "results.json"))
        logging.info("results: %s", json.dumps(summary))


def run() -> None:
    """Console entry point ``jaxprune-run``."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
