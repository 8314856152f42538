"""Where the raw arrays of each dataset come from: scikit-learn's bundled data,
``.npz`` files in a data directory (format of ``shared/data/README.md``:
``x_train``, ``y_train``, ``x_test``, ``y_test``; images NHWC uint8), or
tensorflow-datasets (optional: the ``tfds`` extra).

Nothing here normalizes or splits off validation data; see ``pipeline.py``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from jaxprune._validate import check_choice

DATA_DIR_ENV = "JAXPRUNE_DATA_DIR"
SOURCES = ("auto", "npz", "tfds", "sklearn")
TEST_SPLIT_SEED = 0  # fixed, so that the held-out test set never depends on the experiment seed


@dataclasses.dataclass(frozen=True)
class RawData:
    """Unnormalized arrays: ``x_*`` (N, ...) as stored (uint8 pixels or float
    features), ``y_*`` (N,) labels or targets; where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    description: str
    class_names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static facts of one dataset name.

    ``npz_files``: candidate file names in the data dir, first found wins (each
    with its description); ``tfds_name``/``tfds_splits``: the tfds dataset and its
    (train, test) split names; ``sklearn_loader``: a bundled scikit-learn loader
    returning (x, y), split into train/test with ``test_fraction``; ``image_side``:
    the side in pixels of the square images as stored (``None``: not images)."""

    task: str
    num_classes: int
    augment: str | None
    description: str
    npz_files: tuple[tuple[str, str], ...] = ()
    tfds_name: str | None = None
    tfds_splits: tuple[str, str] = ("train", "test")
    sklearn_loader: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    test_fraction: float = 0.2
    image_side: int | None = None


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.reshape(-1, 8, 8, 1).astype(np.float32), d.target.astype(np.int32)


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    return x.astype(np.float32), y.astype(np.float32)


SPECS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "classification", 10, None, "scikit-learn digits (8x8, 1797 images)", sklearn_loader=_digits,
        image_side=8,
    ),
    "mnist": DatasetSpec(
        "classification", 10, None, "MNIST", npz_files=(("mnist.npz", "MNIST"),), tfds_name="mnist",
        image_side=28,
    ),
    "fashion_mnist": DatasetSpec(
        "classification",
        10,
        None,
        "Fashion-MNIST",
        npz_files=(("fashion_mnist.npz", "Fashion-MNIST"),),
        tfds_name="fashion_mnist",
        image_side=28,
    ),
    "cifar10": DatasetSpec(
        "classification",
        10,
        "cifar",
        "CIFAR-10",
        npz_files=(
            ("cifar10.npz", "CIFAR-10"),
            ("cifar10_jpeg_small.npz", "CIFAR-10 (JPEG copy, 10k train subset)"),
        ),
        tfds_name="cifar10",
        image_side=32,
    ),
    "cifar100": DatasetSpec(
        "classification",
        100,
        "cifar",
        "CIFAR-100",
        npz_files=(("cifar100.npz", "CIFAR-100"),),
        tfds_name="cifar100",
        image_side=32,
    ),
    # Held in memory, so only a downsampled copy is practical: tfds' imagenet_resized/64x64
    # (Chrabaszcz et al. 2017) or a user-made fixed-size imagenet2012.npz.
    "imagenet2012": DatasetSpec(
        "classification",
        1000,
        None,
        "ImageNet-2012 (downsampled, in memory)",
        npz_files=(("imagenet2012.npz", "ImageNet-2012 (npz copy)"),),
        tfds_name="imagenet_resized/64x64",
        tfds_splits=("train", "validation"),
        image_side=64,
    ),
    "california_housing": DatasetSpec(
        "regression",
        0,
        None,
        "California Housing (target in 100k USD)",
        npz_files=(("california_housing.npz", "California Housing (target in 100k USD)"),),
    ),
    "diabetes": DatasetSpec(
        "regression", 0, None, "scikit-learn diabetes (442 x 10, raw features)", sklearn_loader=_diabetes
    ),
}


def data_dirs(data_dir: str | os.PathLike | None) -> list[pathlib.Path]:
    """The directories searched for ``.npz`` files, in order: ``data_dir``, then
    ``$JAXPRUNE_DATA_DIR``."""
    dirs = [pathlib.Path(data_dir)] if data_dir is not None else []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(pathlib.Path(os.environ[DATA_DIR_ENV]))
    return dirs


def _npz_candidates(spec: DatasetSpec, data_dir) -> list[tuple[pathlib.Path, str]]:
    return [(d / fname, desc) for d in data_dirs(data_dir) for fname, desc in spec.npz_files]


def _load_npz(path: pathlib.Path, description: str) -> RawData:
    with np.load(path, allow_pickle=False) as d:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(d.files)
        if missing:
            raise ValueError(
                f"{path} lacks the arrays {sorted(missing)}; expected x_train, y_train, x_test, y_test"
            )
        names = tuple(str(c) for c in d["class_names"]) if "class_names" in d.files else ()
        return RawData(
            d["x_train"], d["y_train"], d["x_test"], d["y_test"], f"npz:{path}", description, names
        )


def _load_sklearn(spec: DatasetSpec) -> RawData:
    x, y = spec.sklearn_loader()
    perm = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(x))
    n_test = round(spec.test_fraction * len(x))
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return RawData(x[train], y[train], x[test], y[test], "sklearn", spec.description)


def tfds_available() -> bool:
    """Whether tensorflow-datasets is importable (the optional ``tfds`` extra)."""
    return importlib.util.find_spec("tensorflow_datasets") is not None


def tfds_prepared(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether tensorflow-datasets has ``name`` prepared in ``data_dir`` (its
    default directory when None); False when tfds is not installed."""
    if not tfds_available():
        return False
    import tensorflow_datasets as tfds

    try:
        return bool(tfds.builder(name, data_dir=data_dir).is_prepared())
    except Exception:  # unknown name, unreadable metadata
        return False


def _stack_records(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([np.asarray(r["image"]) for r in records]), np.asarray([r["label"] for r in records])


def _load_tfds(spec: DatasetSpec, data_dir) -> RawData:
    import tensorflow_datasets as tfds

    arrays = []
    for split in spec.tfds_splits:
        if importlib.util.find_spec("tensorflow") is not None:
            # With TensorFlow: the whole split as one batch of NumPy arrays.
            ds = tfds.as_numpy(tfds.load(spec.tfds_name, split=split, data_dir=data_dir, batch_size=-1))
            arrays += [np.asarray(ds["image"]), np.asarray(ds["label"])]
        else:
            # Without TensorFlow, tfds.load cannot run; the array_record data source can.
            source = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir)
            arrays += _stack_records([source[i] for i in range(len(source))])
    return RawData(*arrays, source=f"tfds:{spec.tfds_name}", description=spec.description)


def _missing_message(name: str, spec: DatasetSpec, data_dir) -> str:
    looked = [str(p) for p, _ in _npz_candidates(spec, data_dir)]
    where = "\n  ".join(looked) if looked else f"(no data dir: pass data_dir= or set ${DATA_DIR_ENV})"
    how = [
        f"put one of {[f for f, _ in spec.npz_files]} (arrays x_train, y_train, x_test, y_test; "
        f"images NHWC uint8) in data_dir or ${DATA_DIR_ENV}"
    ]
    if spec.tfds_name:
        state = "installed" if tfds_available() else "not installed"
        how.append(
            f"or install the tfds extra (pip install 'jaxprune[tfds]', now {state}) and run once with "
            f"network access so that tensorflow-datasets prepares {spec.tfds_name!r}"
        )
    return f"dataset {name!r} not found. Looked for:\n  {where}\nTo get it: " + "; ".join(how)


def load_raw(name: str, *, data_dir=None, source: str = "auto") -> RawData:
    """The raw train/test arrays of ``name`` from ``source``.

    ``"auto"``: scikit-learn for its bundled datasets, else the first ``.npz``
    found (``data_dir``, then ``$JAXPRUNE_DATA_DIR``), else tensorflow-datasets
    when it has the dataset prepared (``"auto"`` never downloads; ``"tfds"``
    lets tfds download and prepare it). A dataset found nowhere raises
    ``FileNotFoundError`` that lists every path looked at and how to get the data."""
    check_choice("source", source, SOURCES)
    spec = SPECS[name]
    if spec.sklearn_loader is not None:
        if source not in ("auto", "sklearn"):
            raise ValueError(
                f"source={source!r} is not valid for {name!r}; it is bundled with scikit-learn "
                f"(expected 'auto' or 'sklearn')"
            )
        return _load_sklearn(spec)
    if source == "sklearn":
        raise ValueError(f"source='sklearn' is not valid for {name!r}; expected 'auto', 'npz' or 'tfds'")
    if source in ("auto", "npz"):
        for path, desc in _npz_candidates(spec, data_dir):
            if path.is_file():
                return _load_npz(path, desc)
    if source == "tfds" or (source == "auto" and spec.tfds_name and tfds_prepared(spec.tfds_name, data_dir)):
        if spec.tfds_name is None:
            raise ValueError(
                f"source='tfds' is not valid for {name!r}: tensorflow-datasets has no copy of it"
            )
        if not tfds_available():
            raise ImportError(
                "source='tfds' needs tensorflow-datasets: pip install 'jaxprune[tfds]'\n"
                + _missing_message(name, spec, data_dir)
            )
        return _load_tfds(spec, data_dir)
    raise FileNotFoundError(_missing_message(name, spec, data_dir))
