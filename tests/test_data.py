"""Tests of jaxprune.train.data: loading from the offline npz files and
scikit-learn, validation split, normalization, the batch iterator, CIFAR
augmentation and error messages. References are computed here from the raw
files / scikit-learn, not from the code under test."""

import os
import pathlib

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxprune.train.data import (
    Split,
    augment_cifar,
    iterate_batches,
    load_dataset,
    num_batches,
)

DATA_DIR = os.environ.get("JAXPRUNE_DATA_DIR")
needs_data = pytest.mark.skipif(
    not DATA_DIR or not (pathlib.Path(DATA_DIR) / "mnist.npz").is_file(), reason="offline npz data not found"
)


def _rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in a.reshape(len(a), -1)}


def _denormalize(ds, split) -> np.ndarray:
    return np.rint(split.x * ds.x_std + ds.x_mean).astype(np.uint8)


@needs_data
def test_mnist_split_normalization_and_provenance():
    ds = load_dataset("mnist", val_fraction=0.25, seed=3, train_limit=400, test_limit=50)
    assert (ds.task, ds.num_classes, ds.num_outputs, ds.input_shape, ds.augment) == (
        "classification", 10, 10, (28, 28, 1), None,
    )  # fmt: skip
    assert ds.train.x.shape == (300, 28, 28, 1) and ds.val.x.shape == (100, 28, 28, 1)
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int32
    # standardized with TRAIN statistics: per-channel mean 0, std 1 on train only
    np.testing.assert_allclose(ds.train.x.mean(dtype=np.float64), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.train.x.std(dtype=np.float64), 1.0, atol=1e-4)
    with np.load(pathlib.Path(DATA_DIR) / "mnist.npz") as raw:
        x_raw, y_raw, x_test, y_test = raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"]
    train_raw, val_raw = _denormalize(ds, ds.train), _denormalize(ds, ds.val)
    np.testing.assert_allclose(ds.x_mean, [train_raw.mean()], rtol=1e-5)
    np.testing.assert_allclose(ds.x_std, [train_raw.std()], rtol=1e-4)
    # every train/val image is an original training image with its label; train and val disjoint
    lookup = {r.tobytes(): int(y) for r, y in zip(x_raw.reshape(len(x_raw), -1), y_raw, strict=True)}
    for imgs, labels in ((train_raw, ds.train.y), (val_raw, ds.val.y)):
        assert [lookup[r.tobytes()] for r in imgs.reshape(len(imgs), -1)] == labels.tolist()
    assert not _rows(train_raw) & _rows(val_raw)
    # the test split is the official one (first test_limit examples), untouched
    np.testing.assert_array_equal(_denormalize(ds, ds.test), x_test[:50])
    np.testing.assert_array_equal(ds.test.y, y_test[:50])


@needs_data
def test_val_split_reproducible_by_seed():
    a = load_dataset("fashion_mnist", seed=5, train_limit=200, test_limit=1)
    b = load_dataset("fashion_mnist", seed=5, train_limit=200, test_limit=1)
    c = load_dataset("fashion_mnist", seed=6, train_limit=200, test_limit=1)
    np.testing.assert_array_equal(a.val.x, b.val.x)
    np.testing.assert_array_equal(a.train.y, b.train.y)
    assert len(a.val) == 20 and len(a.train) == 180
    assert _rows(a.val.x) != _rows(c.val.x)
    empty = load_dataset("fashion_mnist", val_fraction=0.0, train_limit=30, test_limit=1)
    assert len(empty.val) == 0 and len(empty.train) == 30
    assert list(iterate_batches(empty.val, 8, seed=0, epoch=0)) == []


@needs_data
def test_cifar10_jpeg_copy_is_labelled_and_per_channel_normalized():
    ds = load_dataset("cifar10", train_limit=500, test_limit=10)
    assert ds.description == "CIFAR-10 (JPEG copy, 10k train subset)"
    assert ds.augment == "cifar" and ds.input_shape == (32, 32, 3)
    np.testing.assert_allclose(ds.train.x.mean(axis=(0, 1, 2), dtype=np.float64), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.train.x.std(axis=(0, 1, 2), dtype=np.float64), 1.0, atol=1e-4)
    assert ds.x_mean.shape == (3,) and np.all(ds.x_mean > 50)  # raw pixel units


@needs_data
def test_california_housing_features_standardized_target_in_units():
    from sklearn.preprocessing import StandardScaler

    ds = load_dataset("california_housing", val_fraction=0.2, seed=1)
    assert ds.task == "regression" and ds.num_classes == 0 and ds.num_outputs == 1
    with np.load(pathlib.Path(DATA_DIR) / "california_housing.npz") as raw:
        y_raw, x_test, y_test = raw["y_train"], raw["x_test"], raw["y_test"]
    assert len(ds.train) + len(ds.val) == len(y_raw)
    # target kept in 100k USD: train + val targets are exactly the raw targets
    np.testing.assert_array_equal(np.sort(np.concatenate([ds.train.y, ds.val.y])), np.sort(y_raw))
    np.testing.assert_array_equal(ds.test.y, y_test)
    # features: StandardScaler fitted on the train rows (found back through the raw features)
    train_raw = ds.train.x.astype(np.float64) * ds.x_std + ds.x_mean
    scaler = StandardScaler().fit(train_raw)
    np.testing.assert_allclose(scaler.transform(x_test), ds.test.x, atol=1e-4)
    np.testing.assert_allclose(scaler.mean_, ds.x_mean, rtol=1e-5)
    std_target = load_dataset("california_housing", seed=1, standardize_target=True)
    np.testing.assert_allclose(std_target.train.y.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(std_target.train.y * std_target.y_std + std_target.y_mean,
                               load_dataset("california_housing", seed=1).train.y, rtol=1e-5)  # fmt: skip


def test_sklearn_digits_and_diabetes():
    from sklearn.datasets import load_diabetes, load_digits

    digits = load_dataset("digits")
    ref = load_digits()
    assert digits.input_shape == (8, 8, 1) and digits.num_classes == 10
    assert len(digits.test) == round(0.2 * 1797)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    labels = np.concatenate([digits.train.y, digits.val.y, digits.test.y])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(ref.target))
    # normalized with train statistics; de-normalized images are sklearn's images
    np.testing.assert_allclose(digits.train.x.std(dtype=np.float64), 1.0, atol=1e-4)
    images = np.concatenate([digits.train.x, digits.val.x, digits.test.x]) * digits.x_std + digits.x_mean
    assert _rows(np.rint(images).astype(np.int64)) == _rows(ref.images.astype(np.int64))
    diabetes = load_dataset("diabetes")
    _, y = load_diabetes(return_X_y=True, scaled=False)
    assert diabetes.input_shape == (10,) and diabetes.task == "regression"
    all_y = np.concatenate([diabetes.train.y, diabetes.val.y, diabetes.test.y])
    np.testing.assert_allclose(np.sort(all_y), np.sort(y))
    # the test split does not depend on the experiment seed
    np.testing.assert_array_equal(load_dataset("diabetes", seed=9).test.y, diabetes.test.y)
    with pytest.raises(ValueError, match="source"):
        load_dataset("digits", source="npz")


def test_custom_npz_in_data_dir(tmp_path, monkeypatch):
    """A user-provided cifar100.npz in data_dir is found and used."""
    monkeypatch.delenv("JAXPRUNE_DATA_DIR", raising=False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 100, size=30).astype(np.uint8)
    np.savez(tmp_path / "cifar100.npz", x_train=x, y_train=y, x_test=x[:7], y_test=y[:7])
    ds = load_dataset("cifar100", data_dir=tmp_path, val_fraction=0.2)
    assert ds.num_classes == 100 and len(ds.train) == 24 and len(ds.val) == 6 and len(ds.test) == 7
    assert ds.source.endswith("cifar100.npz")
    expected_mean = x.astype(np.float64)[np.isin(np.arange(30), _which_rows(x, ds))].mean(axis=(0, 1, 2))
    np.testing.assert_allclose(ds.x_mean, expected_mean, rtol=1e-5)


def _which_rows(x, ds) -> np.ndarray:
    train = _rows(np.rint(ds.train.x * ds.x_std + ds.x_mean).astype(np.uint8))
    return np.array([i for i in range(len(x)) if x[i].tobytes() in train])


def test_missing_dataset_message(tmp_path, monkeypatch):
    other = tmp_path / "env"
    monkeypatch.setenv("JAXPRUNE_DATA_DIR", str(other))
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar100", data_dir=tmp_path / "mine")
    msg = str(err.value)
    assert str(tmp_path / "mine" / "cifar100.npz") in msg and str(other / "cifar100.npz") in msg
    assert "tfds" in msg and "cifar100.npz" in msg


def test_unknown_names_and_bad_arguments():
    with pytest.raises(ValueError, match="california_housing"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)
    with pytest.raises(ValueError, match="train_limit"):
        load_dataset("digits", train_limit=0)
    with pytest.raises(ValueError, match="source"):
        load_dataset("digits", source="web")
    if not _tfds_installed():
        with pytest.raises(ImportError, match="tfds"):
            load_dataset("mnist", source="tfds")


def _tfds_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow_datasets") is not None


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset("mnist", source="tfds", val_fraction=0.25)
    assert ds.train.x.shape[1:] == (28, 28, 1) and len(ds.train) == 9 and ds.source == "tfds:mnist"


# ---- batches ----
def _split(n: int) -> Split:
    return Split(np.arange(n, dtype=np.float32).reshape(n, 1) * np.ones((1, 2), np.float32), np.arange(n))


@given(
    n=st.integers(1, 40), batch_size=st.integers(1, 12), seed=st.integers(0, 2**31), epoch=st.integers(0, 5)
)
def test_each_example_exactly_once_with_padding(n, batch_size, seed, epoch):
    split = _split(n)
    batches = list(
        iterate_batches(split, batch_size, seed=seed, epoch=epoch, process_count=1, process_index=0)
    )
    assert len(batches) == num_batches(split, batch_size) == -(-n // batch_size)
    for b in batches:
        assert (
            b["x"].shape == (batch_size, 2)
            and b["y"].shape == (batch_size,)
            and b["weight"].dtype == np.float32
        )
        np.testing.assert_array_equal(b["x"][:, 0], b["y"])  # x and y stay paired
    y = np.concatenate([b["y"] for b in batches])
    w = np.concatenate([b["weight"] for b in batches])
    assert np.sort(y[w == 1]).tolist() == list(range(n))
    assert w.sum() == n and np.all(w[:n] == 1) and np.all(w[n:] == 0)


def test_epoch_permutations_seeded_and_resumable():
    split = _split(23)
    kw = dict(process_count=1, process_index=0)
    order = lambda **a: np.concatenate([b["y"] for b in iterate_batches(split, 5, **kw, **a)])
    e0 = order(seed=1, epoch=0)
    np.testing.assert_array_equal(e0, order(seed=1, epoch=0))
    assert not np.array_equal(e0, order(seed=1, epoch=1)) and not np.array_equal(e0, order(seed=2, epoch=0))
    np.testing.assert_array_equal(order(seed=1, epoch=0, shuffle=False)[:23], np.arange(23))
    np.testing.assert_array_equal(order(seed=1, epoch=0, start_batch=3), e0[15:])
    assert list(iterate_batches(split, 5, seed=1, epoch=0, start_batch=5, **kw)) == []


def test_process_shards_partition_each_global_batch():
    split = _split(19)
    full = list(iterate_batches(split, 8, seed=4, epoch=2, process_count=1, process_index=0))
    shards = [
        list(iterate_batches(split, 8, seed=4, epoch=2, process_count=4, process_index=i)) for i in range(4)
    ]
    for b, glob in enumerate(full):
        for key in ("x", "y", "weight"):
            np.testing.assert_array_equal(np.concatenate([s[b][key] for s in shards]), glob[key])
        assert all(s[b]["y"].shape == (2,) for s in shards)


def test_batch_argument_errors():
    split = _split(10)
    with pytest.raises(ValueError, match="batch_size"):
        iterate_batches(split, 6, seed=0, epoch=0, process_count=4, process_index=0)
    with pytest.raises(ValueError, match="start_batch"):
        iterate_batches(split, 4, seed=0, epoch=0, start_batch=4)
    with pytest.raises(ValueError, match="process_index"):
        iterate_batches(split, 4, seed=0, epoch=0, process_count=2, process_index=2)
    with pytest.raises(ValueError, match="batch_size"):
        num_batches(split, 0)


# ---- augmentation ----
def test_augment_cifar_is_a_crop_of_the_padded_image_maybe_flipped():
    img = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
    x = np.broadcast_to(img, (300, 4, 5, 2))
    for mode, np_mode in (("reflect", "reflect"), ("constant", "constant")):
        out = np.asarray(augment_cifar(jax.random.key(0), x, pad=1, mode=mode))
        padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode=np_mode)
        candidates = {}
        for i in range(3):
            for j in range(3):
                crop = padded[i : i + 4, j : j + 5]
                candidates[(i, j, False)] = crop
                candidates[(i, j, True)] = crop[:, ::-1]
        seen = set()
        for o in out:
            match = [k for k, c in candidates.items() if np.array_equal(o, c)]
            assert match, "output is not a crop of the padded image"
            seen.add(match[0])
        assert len(seen) == 18  # every offset and both flips occur (p each 1/18, 300 draws)
    assert augment_cifar(jax.random.key(1), np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 32, 32, 3)


def test_augment_cifar_pad_zero_is_identity_or_flip():
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 3)).astype(np.float32)
    out = np.asarray(augment_cifar(jax.random.key(3), x, pad=0))
    flipped = np.array([np.array_equal(o, a[:, ::-1]) for o, a in zip(out, x, strict=True)])
    same = np.array([np.array_equal(o, a) for o, a in zip(out, x, strict=True)])
    assert np.all(flipped | same) and 10 < flipped.sum() < 54
    with pytest.raises(ValueError, match="mode"):
        augment_cifar(jax.random.key(0), x, mode="wrap")


@needs_data
def test_spec_image_side_matches_the_loaded_images():
    """``DatasetSpec.image_side`` (the fallback input shape of experiments.compress)
    is the side of the images each shipped loader returns."""
    from jaxprune.train.data.sources import SPECS

    for name in ("digits", "mnist", "fashion_mnist", "cifar10"):
        shape = load_dataset(name, train_limit=10, test_limit=1).input_shape
        assert shape[:2] == (SPECS[name].image_side,) * 2, name
    assert SPECS["california_housing"].image_side is None and SPECS["diabetes"].image_side is None
