"""The engine's datasets. In memory: loading (scikit-learn / npz /
tensorflow-datasets), validation split and normalization, the batch iterator
(``pipeline.load_dataset``, ``pipeline.iterate_batches``). Streaming, for data
too large for memory: grain over image folders or tfds ArrayRecord sources
with the ImageNet crop recipe (``streaming.load_streaming_dataset``). And
on-device CIFAR augmentation."""

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
from jaxprune.train.data.streaming import (
    STREAM_SOURCES,
    StreamingDataset,
    StreamSplit,
    load_streaming_dataset,
)

__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "SOURCES",
    "STREAM_SOURCES",
    "Dataset",
    "Split",
    "StreamSplit",
    "StreamingDataset",
    "augment_cifar",
    "data_dirs",
    "iterate_batches",
    "load_dataset",
    "load_streaming_dataset",
    "num_batches",
    "tfds_available",
]
