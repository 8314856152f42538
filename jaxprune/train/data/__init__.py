"""The engine's datasets: loading (scikit-learn / npz / tensorflow-datasets),
validation split and normalization, the batch iterator, and on-device CIFAR
augmentation. See ``pipeline.load_dataset`` and ``pipeline.iterate_batches``."""

from jaxprune.train.data.augment import augment_cifar
from jaxprune.train.data.pipeline import (
    DATASET_NAMES,
    Dataset,
    Split,
    iterate_batches,
    load_dataset,
    num_batches,
)
from jaxprune.train.data.sources import DATA_DIR_ENV, SOURCES, data_dirs, tfds_available

__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "SOURCES",
    "Dataset",
    "Split",
    "augment_cifar",
    "data_dirs",
    "iterate_batches",
    "load_dataset",
    "num_batches",
    "tfds_available",
]
