"""The base experiment config every ``jaxprune/configs/*.py`` extends, and its validator.

Sections: ``data`` (dataset), ``model`` (architecture; ``model.kwargs`` is free
for architecture options), ``train`` (optimizer, schedule, batch sizes, logging
and checkpoint cadence) and ``method`` (free-form: the pipeline's own options,
checked by the pipeline). Top level: ``pipeline`` (a name in
``jaxprune.pipelines.PIPELINES``), ``seed``, ``resume``.
"""

from __future__ import annotations

import ml_collections

from jaxprune._validate import check_finite_number, check_int

# Values with a fixed set of choices, by dotted key (datasets/models/pipelines are
# looked up in their registries at validation time).
_CHOICES = {
    "train.optimizer": ("sgd", "adam", "adamw"),
    "train.schedule": ("constant", "cosine", "multistep"),
    "data.source": ("auto", "npz", "tfds", "sklearn", "folder"),
    "model.dtype": ("float32", "bfloat16", "auto"),
}
_FREE_SECTIONS = ("model.kwargs", "method")
# Numeric keys: (integer?, low, high, low_open, high_open); None = unbounded on that side.
_RANGES = {
    "seed": (True, None, None, False, False),
    "data.val_fraction": (False, 0.0, 1.0, False, True),
    "data.train_limit": (True, 0, None, False, False),
    "data.test_limit": (True, 0, None, False, False),
    "data.image_size": (True, 1, None, False, False),
    "data.workers": (True, 0, None, False, False),
    "data.threads": (True, 1, None, False, False),
    "train.epochs": (True, 1, None, False, False),
    "train.batch_size": (True, 1, None, False, False),
    "train.eval_batch_size": (True, 1, None, False, False),
    "train.lr": (False, 0.0, None, False, False),
    "train.momentum": (False, 0.0, 1.0, False, True),
    "train.b1": (False, 0.0, 1.0, False, True),
    "train.b2": (False, 0.0, 1.0, False, True),
    "train.eps": (False, 0.0, None, True, False),
    "train.weight_decay": (False, 0.0, None, False, False),
    "train.clip_norm": (False, 0.0, None, False, False),
    "train.warmup_epochs": (False, 0.0, None, False, False),
    "train.warmup_init_lr": (False, 0.0, None, False, False),
    "train.lr_decay_factor": (False, 0.0, 1.0, True, False),
    "train.log_every": (True, 1, None, False, False),
    "train.checkpoint_every": (True, 0, None, False, False),
    "train.keep_checkpoints": (True, 1, None, False, False),
}


def base_config() -> ml_collections.ConfigDict:
    """Defaults: dense MLP on ``digits``, SGD + Nesterov with cosine annealing."""
    c = ml_collections.ConfigDict()
    c.pipeline = "dense"
    c.seed = 0
    c.resume = False

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.val_fraction = 0.1
    c.data.source = "auto"
    c.data.train_limit = 0  # 0 = all training examples (else a seeded random subset)
    c.data.test_limit = 0  # 0 = all test examples (else the first N: smoke runs)
    c.data.data_dir = ""  # "" = $JAXPRUNE_DATA_DIR (npz files, image folders) / tfds' default
    # Streaming (grain): images read lazily, decoded on the host, normalized on the device.
    c.data.streaming = False
    c.data.image_size = 224  # side of the train crops and eval center crops (imagenet recipe)
    c.data.workers = 0  # grain worker processes decoding images (0: threads of this process)
    c.data.threads = 8  # decoding threads per process (or per worker)

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 | auto (bf16 on GPU/TPU); params stay f32
    c.model.kwargs = ml_collections.ConfigDict()

    t = c.train = ml_collections.ConfigDict()
    t.epochs = 10
    t.batch_size = 128
    t.eval_batch_size = 512
    t.drop_remainder = True
    t.optimizer = "sgd"
    t.lr = 0.1
    t.momentum = 0.9
    t.nesterov = True
    t.b1 = 0.9
    t.b2 = 0.999
    t.eps = 1e-8
    t.weight_decay = 5e-4
    t.clip_norm = 0.0  # 0 = no clipping
    t.schedule = "cosine"
    t.warmup_epochs = 0.0
    t.warmup_init_lr = 0.0  # lr at the start of the linear warm-up
    t.milestones = (0.5, 0.75)
    t.lr_decay_factor = 0.1
    t.log_every = 50
    t.checkpoint_every = 0  # steps; 0 = at epoch ends only
    t.keep_checkpoints = 2
    t.progress_bar = True  # shown only when stderr is a TTY

    c.method = ml_collections.ConfigDict()
    return c


def _check_keys(config: ml_collections.ConfigDict, base: ml_collections.ConfigDict, prefix: str) -> None:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ValueError(f"unknown config key {path!r}; valid keys here: {sorted(base.keys())}")
        if path in _FREE_SECTIONS:
            continue
        if isinstance(value, ml_collections.ConfigDict):
            _check_keys(value, base[key], path + ".")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise ``ValueError`` on a key the base config lacks (a typo in a config
    file), on an unknown pipeline / dataset / model / optimizer / schedule /
    dtype name (messages list the valid choices), or on a numeric value outside
    its range (``_RANGES``: e.g. ``train.batch_size`` an integer >= 1,
    ``train.lr`` finite and >= 0). Streaming datasets may have any
    name (a tfds name or an image folder): their loader checks it."""
    from jaxprune.pipelines import PIPELINES, check_config
    from jaxprune.train import DATASET_NAMES, MODEL_NAMES

    _check_keys(config, base_config(), "")
    choices = {
        **_CHOICES,
        "pipeline": tuple(PIPELINES),
        "data.name": DATASET_NAMES,
        "model.name": MODEL_NAMES,
    }
    if config.data.streaming:  # any tfds name or image folder; the loader says where it looked
        del choices["data.name"]
    for path, valid in choices.items():
        value = config
        for part in path.split("."):
            value = value[part]
        if value not in valid:
            raise ValueError(f"config.{path}={value!r} is not valid; expected one of {list(valid)}")
    for path, (integer, low, high, low_open, high_open) in _RANGES.items():
        value = config
        for part in path.split("."):
            value = value[part]
        if integer:
            check_int(f"config.{path}", value, low=low, high=high)
        else:
            if isinstance(value, bool):
                raise ValueError(f"config.{path}={value!r} must be a number")
            check_finite_number(f"config.{path}", value, low=low, high=high, low_open=low_open,
                                high_open=high_open)
    milestones = tuple(config.train.milestones)
    for m in milestones:
        check_finite_number("config.train.milestones[i]", m, low=0.0, high=1.0, low_open=True, high_open=True)
    if list(milestones) != sorted(milestones):
        raise ValueError(f"config.train.milestones={list(milestones)} must be increasing fractions in (0, 1)")
    check_config(config)
