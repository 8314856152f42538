"""From raw arrays to training batches: seeded validation split, normalization
with train-split statistics, and the per-epoch batch iterator (static batch
shapes, padded last batch, exact mid-epoch resume, per-process shards)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterator

import jax
import numpy as np

from jaxprune._validate import check_number
from jaxprune.train.data.sources import SPECS, load_raw

DATASET_NAMES: tuple[str, ...] = tuple(SPECS)


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split: ``x`` (N, ...) float32 normalized inputs; ``y`` (N,) int32
    labels or float32 regression targets."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        start_batch: int = 0,
        stop_batch: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``start_batch .. stop_batch - 1`` (default: to the end) of
        :func:`iterate_batches`; the interface the engine reads every split by
        (the streaming ``StreamSplit`` has the same)."""
        it = iterate_batches(
            self, batch_size, seed=seed, epoch=epoch, shuffle=shuffle, start_batch=start_batch,
            process_index=process_index, process_count=process_count,
        )
        return it if stop_batch is None else itertools.islice(it, max(int(stop_batch) - start_batch, 0))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A normalized dataset with train / validation / test splits.

    ``x_mean``/``x_std``: the per-channel (images) or per-feature (tabular)
    statistics of the TRAIN split used to normalize all three splits, in raw
    units (pixels 0..255, feature units); ``x_normalized = (x_raw - x_mean) /
    x_std``. Regression targets are ``(y_raw - y_mean) / y_std``, which is the
    identity (0, 1) unless ``standardize_target=True``."""

    name: str
    train: Split
    val: Split
    test: Split
    task: str
    num_classes: int
    input_shape: tuple[int, ...]
    augment: str | None
    description: str = ""
    source: str = ""
    class_names: tuple[str, ...] = ()
    x_mean: np.ndarray | None = None
    x_std: np.ndarray | None = None
    y_mean: float = 0.0
    y_std: float = 1.0

    @property
    def num_outputs(self) -> int:
        """Width of the model head: ``num_classes``, or 1 for regression."""
        return self.num_classes or 1


def _check_positive_int(name: str, value, *, allow_none: bool = False, low: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name}={value!r} is not valid; expected an integer >= {low}")


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over every axis but the last (channels / features), in float64."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes, dtype=np.float64)
    var = np.zeros_like(mean)
    for c in range(x.shape[-1]):  # per channel, so that no float64 copy of all of x is made
        var[c] = np.var(x[..., c], dtype=np.float64)
    std = np.sqrt(var)
    return mean, np.where(std > 0, std, 1.0)


def _normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32)
    out -= mean.astype(np.float32)
    out /= std.astype(np.float32)
    return out


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    source: str = "auto",
    train_limit: int | None = None,
    test_limit: int | None = None,
    standardize_target: bool = False,
) -> Dataset:
    """Load ``name`` (one of ``DATASET_NAMES``), hold out validation data and normalize.

    - ``val_fraction`` in [0, 1): the share of the (limited) training split held
      out as validation, chosen by a permutation seeded with ``seed``
      (disjoint from train, reproducible).
    - ``train_limit``: use only this many examples of the original training
      split (a seeded random subset, taken BEFORE the validation split is
      carved out of it); ``test_limit``: the first this-many test examples.
    - Normalization: images and tabular features are standardized per channel /
      feature with the mean and std of the final TRAIN split (``Dataset.x_mean``,
      ``x_std``). Regression targets stay in their units (California Housing:
      100k USD) unless ``standardize_target``.
    - ``source``: "auto" | "npz" | "tfds" | "sklearn" (see ``sources.load_raw``).
    - Datasets without an official test split (digits, diabetes) get a fixed
      20% test split (seed 0, independent of ``seed``).
    """
    if name not in SPECS:
        raise ValueError(f"dataset name={name!r} is not valid; expected one of {list(DATASET_NAMES)}")
    check_number("val_fraction", val_fraction, low=0.0, high=1.0, high_open=True)
    _check_positive_int("train_limit", train_limit, allow_none=True)
    _check_positive_int("test_limit", test_limit, allow_none=True)
    _check_positive_int("seed", seed, low=0)
    spec = SPECS[name]
    raw = load_raw(name, data_dir=data_dir, source=source)

    perm = np.random.default_rng(seed).permutation(len(raw.y_train))
    if train_limit is not None:
        perm = perm[:train_limit]
    n_val = round(val_fraction * len(perm))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if len(train_idx) == 0:
        raise ValueError(
            f"val_fraction={val_fraction!r} with train_limit={train_limit!r} leaves no training "
            f"examples; lower val_fraction or raise train_limit"
        )

    x_train = raw.x_train[train_idx]
    mean, std = _channel_stats(x_train)
    x_test, y_test = raw.x_test[:test_limit], raw.y_test[:test_limit]
    classification = spec.task == "classification"
    y_dtype = np.int32 if classification else np.float32
    y_mean, y_std = 0.0, 1.0
    if not classification and standardize_target:
        y_mean, y_std = float(raw.y_train[train_idx].mean()), float(raw.y_train[train_idx].std()) or 1.0

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        y = y.astype(y_dtype) if classification else ((y.astype(np.float64) - y_mean) / y_std).astype(y_dtype)
        return Split(_normalize(x, mean, std), y)

    return Dataset(
        name=name,
        train=split(x_train, raw.y_train[train_idx]),
        val=split(raw.x_train[val_idx], raw.y_train[val_idx]),
        test=split(x_test, y_test),
        task=spec.task,
        num_classes=spec.num_classes,
        input_shape=tuple(int(d) for d in raw.x_train.shape[1:]),
        augment=spec.augment,
        description=raw.description,
        source=raw.source,
        class_names=raw.class_names,
        x_mean=mean.astype(np.float32),
        x_std=std.astype(np.float32),
        y_mean=y_mean,
        y_std=y_std,
    )


def num_batches(split: Split, batch_size: int) -> int:
    """Batches per epoch: ceil(len(split) / batch_size) (the last one padded)."""
    _check_positive_int("batch_size", batch_size)
    return math.ceil(len(split) / batch_size)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    start_batch: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of batches ``{"x": (b, ...) float32, "y": (b,), "weight": (b,) float32}``.

    The order is a permutation drawn from ``(seed, epoch)`` (identity if not
    ``shuffle``); each global batch holds ``batch_size`` examples, the last one
    padded (with repeated examples) to full size with weight 0, so shapes are
    static and weighted means stay exact. ``start_batch`` skips that many
    batches (exact mid-epoch resume). In a multi-process run each process gets
    the contiguous slice ``[i * b, (i + 1) * b)`` of every global batch, with
    b = batch_size / process_count (defaults: ``jax.process_index()`` and
    ``jax.process_count()``). Batches are gathered by vectorized indexing."""
    nb = num_batches(split, batch_size)
    _check_positive_int("epoch", epoch, low=0)
    _check_positive_int("seed", seed, low=0)
    if (
        isinstance(start_batch, bool)
        or not isinstance(start_batch, int | np.integer)
        or not 0 <= start_batch <= nb
    ):
        raise ValueError(f"start_batch={start_batch!r} is not valid; expected an integer in [0, {nb}]")
    count = jax.process_count() if process_count is None else process_count
    index = jax.process_index() if process_index is None else process_index
    _check_positive_int("process_count", count)
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < count:
        raise ValueError(f"process_index={index!r} is not valid; expected an integer in [0, {count - 1}]")
    if batch_size % count:
        raise ValueError(
            f"batch_size={batch_size!r} is not valid; it must be divisible by process_count={count}"
        )
    return _batches(split, batch_size, nb, seed, epoch, shuffle, start_batch, index, count)


def _batches(split, batch_size, nb, seed, epoch, shuffle, start_batch, index, count) -> Iterator[dict]:
    """The generator behind ``iterate_batches`` (arguments already checked)."""
    n = len(split)
    if n == 0:
        return
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    total = nb * batch_size
    order = order[np.arange(total) % n]  # pad by wrapping around: real examples, weight 0
    weight = (np.arange(total) < n).astype(np.float32)
    local = batch_size // count
    for b in range(start_batch, nb):
        lo = b * batch_size + index * local
        idx = order[lo : lo + local]
        yield {"x": split.x[idx], "y": split.y[idx], "weight": weight[lo : lo + local]}
