"""The streaming input pipeline (grain), for data too large to hold in memory:
ImageNet at 224x224, full CIFAR through tensorflow-datasets, any image folder.

Sources (random access, read lazily):

- an image folder ``<root>/{train,val}/<class>/<image>`` (:mod:`.folder`);
- a prepared tensorflow-datasets dataset through ``tfds.data_source``
  (ArrayRecord; TensorFlow is not needed): ``imagenet2012``, ``cifar10``,
  ``cifar100`` or any tfds name with ``image`` and ``label`` features.

Each epoch is a pure function of ``(seed, epoch)``: the global order is the
permutation ``default_rng([seed, epoch])`` (as the in-memory iterator), padded
by wrapping around to whole global batches (padding rows carry weight 0), and
process ``i`` of ``n`` reads rows ``[i*b, (i+1)*b)`` of every global batch of
``B = n*b`` rows. The processes therefore read disjoint examples, and the
global batches are the same for any number of processes, data workers or
threads: a 2-host run sees exactly the batches of a 1-host run, and a resumed
run exactly those of the uninterrupted one. Random crops and flips draw from
``default_rng([seed, epoch, position])``, so they do not depend on which worker
decodes the image either. This is why the per-process split is done here and
not by grain's ``ShardByJaxProcess`` (which would make the global batches
depend on the process count).

Images leave the host as uint8 (4x less to transfer than float32) and are
normalized on the device (``StreamingDataset.device_normalize``, fused into
the jitted step by XLA). Decoding runs in grain worker processes
(``workers > 0``) or threads (``workers == 0``: ``threads`` of them; PIL releases
the GIL while decoding). An image that cannot be decoded is replaced by a
weight-0 row (so batch shapes stay static), logged with its path and counted
(the batch's host-side ``"_skipped"`` entry; the Trainer sums it into the epoch
logs as ``data_skipped``): the epoch never shrinks silently and never crashes
midway.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._validate import check_choice, check_number
from jaxprune.train.data import images
from jaxprune.train.data.folder import ImageFolderSource, class_names
from jaxprune.train.data.sources import DATA_DIR_ENV, data_dirs, tfds_available

_log = logging.getLogger(__name__)

STREAM_SOURCES = ("auto", "folder", "tfds")
VAL_FOLDERS = ("val", "validation", "test")
STATS_SAMPLE = 256  # images that estimate the normalization of a dataset without published statistics

# Published per-channel statistics in pixel units (0..255): ImageNet (the
# torchvision/TF ResNet recipes) and the CIFAR training sets.
KNOWN_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet2012": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "cifar10": ((125.307, 122.950, 113.865), (62.993, 62.089, 66.705)),
    "cifar100": ((129.304, 124.070, 112.434), (68.170, 65.392, 70.418)),
}


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """How a streaming dataset is read: ``recipe`` "imagenet" (random-resized
    crop + flip for training, resize 256 + center crop 224 for evaluation, on
    encoded images) or "raw" (decoded fixed-size images passed as they are;
    augmentation, if any, on the device); ``augment``: the on-device
    augmentation (``"cifar"`` or None); tfds names of the train and test
    splits."""

    recipe: str
    augment: str | None = None
    tfds_name: str | None = None
    tfds_splits: tuple[str, str] = ("train", "test")


STREAM_SPECS: dict[str, StreamSpec] = {
    "imagenet2012": StreamSpec("imagenet", tfds_name="imagenet2012", tfds_splits=("train", "validation")),
    "cifar10": StreamSpec("raw", "cifar", tfds_name="cifar10"),
    "cifar100": StreamSpec("raw", "cifar", tfds_name="cifar100"),
}


# --------------------------------------------------------------------------- records -> images


@dataclasses.dataclass(frozen=True)
class ImageRecipe:
    """A record's image as uint8 ``(size, size, 3)`` (``imagenet``) or as stored
    (``raw``). ``train``: random crop and flip (imagenet) from ``rng``."""

    kind: str = "imagenet"
    train: bool = True
    size: int = 224
    resize: int = 256

    def __call__(self, image: Any, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "raw":
            return np.asarray(image, np.uint8)
        if isinstance(image, bytes | bytearray):
            if self.train:
                return images.decode_train(image, rng, size=self.size)
            return images.decode_eval(image, size=self.size, resize=self.resize)
        image = np.asarray(image, np.uint8)
        if self.train:
            return images.train_transform(image, rng, size=self.size)
        return images.eval_transform(image, size=self.size, resize=self.resize)

    def output_shape(self, stored: tuple[int, ...] | None) -> tuple[int, ...]:
        """(H, W, C) of the output; ``stored``: the source's fixed image shape (raw)."""
        if self.kind == "imagenet":
            return (self.size, self.size, 3)
        if stored is None or None in stored:
            raise ValueError("recipe 'raw' needs images of one fixed shape; use recipe 'imagenet' to crop")
        return tuple(int(d) for d in stored)


class _Slots:
    """This process's rows of one epoch, as a random-access source: element
    ``j`` (row ``j % b`` of local batch ``j // b``) is ``(position, example)``,
    ``position`` in the padded global order, ``example`` the index into the
    split. The permutation is computed on first use in each worker, never
    pickled."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        num_batches: int,
        seed: int,
        epoch: int,
        shuffle: bool,
        index: int,
        count: int,
    ):
        self.n, self.batch_size, self.num_batches = n, batch_size, num_batches
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.index, self.local = index, batch_size // count
        self._order: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_order": None}

    def __len__(self) -> int:
        return self.num_batches * self.local

    def __getitem__(self, j: int) -> tuple[int, int]:
        if self._order is None:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        b, r = divmod(int(j), self.local)
        position = b * self.batch_size + self.index * self.local + r
        return position, int(self._order[position % self.n])


class _Load(grain.transforms.Map):
    """``(position, example) -> {"x", "y", "weight", "skipped"}``: read the
    record, make the image (an unreadable one becomes zeros with weight 0 and
    ``skipped`` 1, logged), weight 0 for the wrap-around padding."""

    def __init__(
        self,
        source: Any,
        indices: np.ndarray | None,
        recipe: ImageRecipe,
        shape: tuple[int, ...],
        seed: int,
        epoch: int,
        n: int,
    ):
        self.source, self.indices, self.recipe, self.shape = source, indices, recipe, shape
        self.seed, self.epoch, self.n = seed, epoch, n

    def map(self, element: tuple[int, int]) -> dict[str, np.ndarray]:
        position, example = element
        record = self.source[int(example if self.indices is None else self.indices[example])]
        rng = np.random.default_rng([self.seed, self.epoch, position])
        skipped = 0
        try:
            x = self.recipe(record["image"], rng)
        except images.UnreadableImage as err:
            _log.warning("skipping unreadable image %s: %s", record.get("path", f"#{example}"), err)
            x, skipped = np.zeros(self.shape, np.uint8), 1
        weight = float(position < self.n and not skipped)
        return {
            "x": x,
            "y": np.int32(record["label"]),
            "weight": np.float32(weight),
            "skipped": np.int32(skipped),
            "index": np.int32(example),
        }


def _allow_grain_workers() -> None:
    """grain's worker processes read absl flags; outside an absl app (tests,
    notebooks) nothing parsed them, so mark them parsed with their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class BatchStream:
    """An iterator of host-local batches ``{"x", "y", "weight", "_skipped",
    "_index"}`` from a grain pipeline. The ``_`` entries stay on the host:
    ``_skipped`` (int) counts the unreadable images of the batch, ``_index``
    (b,) int32 are the examples' indices in the split. ``close()`` stops the
    worker processes (also on exhaustion)."""

    def __init__(self, iterator: Any):
        self._it = iterator

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            raise StopIteration
        try:
            batch = next(self._it)
        except StopIteration:
            self.close()
            raise
        batch["_skipped"] = int(np.sum(batch.pop("skipped")))
        batch["_index"] = batch.pop("index")
        return batch

    def close(self) -> None:
        if self._it is not None:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
            self._it = None


@dataclasses.dataclass(frozen=True, eq=False)
class StreamSplit:
    """One split read lazily: ``source[indices[i]]`` for ``i < len(self)``
    (all of ``source`` when ``indices`` is None), made into images by
    ``recipe``. ``workers``: grain worker processes (0: decode in ``threads``
    threads of this process)."""

    source: Any
    indices: np.ndarray | None
    recipe: ImageRecipe
    shape: tuple[int, ...]
    workers: int = 0
    threads: int = 8

    def __len__(self) -> int:
        return len(self.source) if self.indices is None else len(self.indices)

    def labels(self) -> np.ndarray:
        """(N,) labels, when the source knows them without reading images."""
        labels = np.asarray(self.source.labels)
        return labels if self.indices is None else labels[self.indices]

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
    ) -> BatchStream:
        """Batches ``start_batch .. stop_batch - 1`` of epoch ``epoch`` (module
        docstring), this process's ``batch_size / process_count`` rows of each:
        ``x`` (b, H, W, C) uint8, ``y`` (b,) int32, ``weight`` (b,) float32, and
        the host-side ``_skipped`` / ``_index`` (:class:`BatchStream`)."""
        n = len(self)
        count = jax.process_count() if process_count is None else int(process_count)
        index = jax.process_index() if process_index is None else int(process_index)
        check_number("batch_size", batch_size, low=1)
        if batch_size % count:
            raise ValueError(
                f"batch_size={batch_size} is not valid; it must be divisible by the "
                f"process count {count} (each process reads batch_size / {count} rows)"
            )
        if not 0 <= index < count:
            raise ValueError(f"process_index={index} is not valid; expected an integer in [0, {count - 1}]")
        nb = math.ceil(n / batch_size)
        stop = nb if stop_batch is None else int(stop_batch)
        if not 0 <= start_batch <= stop <= nb:
            raise ValueError(
                f"start_batch={start_batch}, stop_batch={stop_batch} are not valid; "
                f"expected 0 <= start_batch <= stop_batch <= {nb}"
            )
        slots = _Slots(n, batch_size, nb, seed, epoch, shuffle, index, count)
        load = _Load(self.source, self.indices, self.recipe, self.shape, seed, epoch, n)
        local = batch_size // count
        ds = grain.MapDataset.source(slots).map(load).batch(local, drop_remainder=True)[start_batch:stop]
        it = ds.to_iter_dataset(
            grain.ReadOptions(num_threads=max(self.threads, 1), prefetch_buffer_size=2 * local)
        )
        if self.workers > 0:
            _allow_grain_workers()
            it = it.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=2)
            )
        return BatchStream(iter(it))


@dataclasses.dataclass(frozen=True, eq=False)
class StreamingDataset:
    """A classification dataset read lazily, with the attributes of the
    in-memory ``Dataset`` the engine uses: ``train`` / ``val`` / ``test``
    (:class:`StreamSplit`), ``task``, ``num_classes``, ``input_shape`` (H, W, C),
    ``augment``, ``x_mean`` / ``x_std`` (per channel, pixel units)."""

    name: str
    train: StreamSplit
    val: StreamSplit
    test: StreamSplit
    num_classes: int
    input_shape: tuple[int, ...]
    augment: str | None
    x_mean: np.ndarray
    x_std: np.ndarray
    description: str = ""
    source: str = ""
    class_names: tuple[str, ...] = ()
    task: str = "classification"

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def device_normalize(self, x: jax.Array) -> jax.Array:
        """uint8 images (N, H, W, C) -> float32 ``(x - x_mean) / x_std`` (runs in the jitted step)."""
        mean = jnp.asarray(self.x_mean, jnp.float32)
        return (x.astype(jnp.float32) - mean) * jnp.asarray(1.0 / self.x_std, jnp.float32)


# --------------------------------------------------------------------------- sources


def _folder_root(name: str, data_dir: str | os.PathLike | None) -> pathlib.Path | None:
    """The first of ``data_dir``, ``data_dir/<name>``, ``$JAXPRUNE_DATA_DIR/<name>``
    that has a ``train`` folder."""
    candidates = []
    for d in data_dirs(data_dir):
        candidates += [d, d / name]
    return next((c for c in candidates if (c / "train").is_dir()), None)


def _open_tfds(
    name: str, splits: tuple[str, str], data_dir: Any, *, encoded: bool
) -> tuple[Any, Any, int, tuple, tuple[str, ...]]:
    """``(train source, test source, num_classes, stored image shape, class
    names)`` of a PREPARED tensorflow-datasets dataset through
    ``tfds.data_source`` (never downloads). ``encoded``: images as the stored
    JPEG/PNG bytes (decoded later with draft mode)."""
    if not tfds_available():
        raise ImportError(f"reading {name!r} from tensorflow-datasets needs: pip install 'jaxprune[tfds]'")
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"dataset name={name!r} is neither an image folder (see data_dir) nor a tensorflow-datasets name"
        ) from None
    info = builder.info
    label = info.features["label"]
    decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
    sources = []
    for split in splits:
        try:
            sources.append(
                tfds.data_source(name, split=split, data_dir=data_dir, download=False, decoders=decoders)
            )
        except Exception as err:
            state = (
                "not prepared" if not builder.is_prepared() else f"not readable ({type(err).__name__}: {err})"
            )
            manual = " (imagenet2012 also needs the ILSVRC tars in <data_dir>/downloads/manual)"
            raise FileNotFoundError(
                f"tensorflow-datasets split {name}:{split} is {state} at {builder.data_dir}. "
                "Prepare it once in ArrayRecord format, with network access:\n"
                f"  tfds build {name} --data_dir={data_dir or '~/tensorflow_datasets'} "
                "--file_format=array_record"
                + (manual if name == "imagenet2012" else "")
            ) from err
    shape = tuple(info.features["image"].shape)
    return sources[0], sources[1], int(label.num_classes), shape, tuple(label.names or ())


def _estimate_stats(split: StreamSplit, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (pixel units) of up to :data:`STATS_SAMPLE`
    evaluation-preprocessed images of ``split`` (a seeded sample)."""
    n = min(len(split), STATS_SAMPLE)
    rows = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
    sample = StreamSplit(
        split.source,
        rows if split.indices is None else split.indices[rows],
        dataclasses.replace(split.recipe, train=False),
        split.shape,
        0,
        split.threads,
    )
    stream = sample.batches(n, shuffle=False, process_index=0, process_count=1)
    batch = next(stream)
    stream.close()
    x = batch["x"][batch["weight"] > 0].reshape(-1, split.shape[-1]).astype(np.float64)
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 0, std, 1.0)


def load_streaming_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    source: str = "auto",
    val_fraction: float = 0.0,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    image_size: int = 224,
    workers: int = 0,
    threads: int = 8,
    cache_dir: str | os.PathLike | None = None,
) -> StreamingDataset:
    """A :class:`StreamingDataset` of ``name``.

    - ``source``: "folder" (``<root>/train/<class>/*`` and ``<root>/val/<class>/*``
      with root ``data_dir``, ``data_dir/<name>`` or ``$JAXPRUNE_DATA_DIR/<name>``),
      "tfds" (a prepared tensorflow-datasets dataset in ``data_dir``; any tfds
      name with ``image``/``label`` features) or "auto" (a folder when one is
      found, else tfds).
    - ``val_fraction``: share of the (limited) training examples held out as
      validation, by a permutation seeded with ``seed``; ``train_limit``: a seeded
      random subset of that many training examples (taken first);
      ``test_limit``: the first that-many test examples (a smoke run).
    - ``image_size``: output side of the imagenet recipe (train crops and eval
      center crops; eval resizes the shorter side to ``image_size / 0.875``).
    - ``workers`` / ``threads``: grain worker processes / decoding threads.
    """
    check_choice("source", source, STREAM_SOURCES)
    check_number("val_fraction", val_fraction, low=0.0, high=1.0, high_open=True)
    check_number("image_size", image_size, low=1)
    check_number("workers", workers, low=0)
    spec = STREAM_SPECS.get(name, StreamSpec("imagenet", tfds_name=name))
    root = _folder_root(name, data_dir) if source in ("auto", "folder") else None
    if source == "folder" and root is None:
        looked = [str(p) for d in data_dirs(data_dir) for p in (d, d / name)] or [
            f"(no data dir: pass data_dir= or set ${DATA_DIR_ENV})"
        ]
        raise FileNotFoundError(
            f"no image folder for {name!r}: none of {looked} has a train/ subfolder "
            "(layout <root>/train/<class>/<image>, <root>/val/<class>/<image>)"
        )
    size = int(image_size)
    if root is not None:
        names = class_names(root / "train")
        train_src = ImageFolderSource(root / "train", names, cache_dir=cache_dir)
        val_dir = next((root / v for v in VAL_FOLDERS if (root / v).is_dir()), None)
        if val_dir is None:
            raise FileNotFoundError(
                f"image folder {root} has train/ but no {' or '.join(VAL_FOLDERS)} folder"
            )
        unknown = sorted(set(class_names(val_dir)) - set(names))
        if unknown:
            raise ValueError(
                f"{val_dir} has class folders that train/ lacks: {unknown[:10]}; "
                "labels come from the train classes, so these cannot be evaluated"
            )
        test_src = ImageFolderSource(val_dir, names, cache_dir=cache_dir)
        recipe, num_classes, stored, origin = (
            ImageRecipe("imagenet", size=size),
            len(names),
            None,
            f"folder:{root}",
        )
    else:
        train_src, test_src, num_classes, stored, names = _open_tfds(
            spec.tfds_name, spec.tfds_splits, data_dir, encoded=spec.recipe == "imagenet"
        )
        recipe, origin = ImageRecipe(spec.recipe, size=size), f"tfds:{spec.tfds_name}"
    recipe = dataclasses.replace(recipe, resize=round(size / 0.875))
    shape = recipe.output_shape(stored)

    perm = np.random.default_rng(seed).permutation(len(train_src))
    if train_limit:
        perm = perm[:train_limit]
    n_val = round(val_fraction * len(perm))
    if n_val == len(perm):
        raise ValueError(f"val_fraction={val_fraction!r} leaves no training examples")
    test_idx = None if not test_limit else np.arange(min(int(test_limit), len(test_src)))

    def split(src, idx, train: bool) -> StreamSplit:
        return StreamSplit(src, idx, dataclasses.replace(recipe, train=train), shape, workers, threads)

    train = split(train_src, np.sort(perm[n_val:]), True)
    stats = KNOWN_STATS.get(name)
    mean, std = (np.asarray(s, np.float32) for s in stats) if stats else _estimate_stats(train, seed)
    return StreamingDataset(
        name=name,
        train=train,
        val=split(train_src, np.sort(perm[:n_val]), False),
        test=split(test_src, test_idx, False),
        num_classes=num_classes,
        input_shape=shape,
        augment=spec.augment,
        x_mean=np.asarray(mean, np.float32),
        x_std=np.asarray(std, np.float32),
        description=f"{name} (streaming, {recipe.kind} recipe)",
        source=origin,
        class_names=tuple(names),
    )
