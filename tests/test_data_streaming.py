"""The streaming pipeline (grain) on a tiny image folder and a mocked tfds
source: epoch order, per-process rows, exact resume, worker processes,
unreadable images, bad input, device prefetch, and the Trainer on it."""

import logging
import pathlib

import numpy as np
import pytest

from jaxprune.configs.common import base_config
from jaxprune.train import (
    FunctionHook,
    Trainer,
    get_model,
    load_streaming_dataset,
    make_mesh,
    prefetch_to_mesh,
)
from jaxprune.train.data import folder
from tests.image_folder import make_image_folder

SIZE = 16


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _load(root, cache, **kw):
    return load_streaming_dataset("imagenet2012", data_dir=root, image_size=SIZE, cache_dir=cache, **kw)


def _epoch(split, batch_size, **kw):
    kw = {"seed": 3, "epoch": 1, "process_index": 0, "process_count": 1, **kw}
    return list(split.batches(batch_size, **kw))


def test_folder_dataset_shapes_and_labels(root, cache):
    ds = _load(root, cache, val_fraction=0.2)
    assert (ds.num_classes, ds.input_shape, ds.task) == (3, (SIZE, SIZE, 3), "classification")
    assert ds.class_names == ("class_0", "class_1", "class_2")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 6, 12)
    np.testing.assert_array_equal(np.sort(np.concatenate([ds.train.indices, ds.val.indices])), np.arange(30))
    np.testing.assert_array_equal(ds.test.labels(), np.repeat(np.arange(3), 4))
    batch = _epoch(ds.train, 8)[0]
    assert batch["x"].shape == (8, SIZE, SIZE, 3) and batch["x"].dtype == np.uint8
    assert batch["y"].dtype == np.int32 and batch["weight"].dtype == np.float32
    # labels are the class folders of the examples read
    np.testing.assert_array_equal(batch["y"], ds.train.labels()[batch["_index"]])


def test_epoch_is_the_seeded_permutation_padded_with_weight_zero(root, cache):
    ds = _load(root, cache)
    batches = _epoch(ds.train, 8)
    order = np.random.default_rng([3, 1]).permutation(30)  # same rule as the in-memory iterator
    index = np.concatenate([b["_index"] for b in batches])
    weight = np.concatenate([b["weight"] for b in batches])
    np.testing.assert_array_equal(index, order[np.arange(32) % 30])  # 4 batches, 2 rows wrap around
    np.testing.assert_array_equal(weight, (np.arange(32) < 30).astype(np.float32))
    assert [b["_index"].tolist() for b in _epoch(ds.train, 8, epoch=2)] != [
        b.tolist() for b in np.split(index, 4)
    ]


def test_processes_read_disjoint_rows_of_the_same_global_batches(root, cache):
    ds = _load(root, cache)
    whole = _epoch(ds.train, 8)
    parts = [_epoch(ds.train, 8, process_index=i, process_count=2) for i in range(2)]
    seen = [np.concatenate([b["_index"][b["weight"] > 0] for b in p]) for p in parts]
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == 30
    for g, (a, b) in enumerate(zip(*parts, strict=True)):
        for key in ("x", "y", "weight", "_index"):  # same crops too: keyed by position, not process
            np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), whole[g][key])
    with pytest.raises(ValueError, match=r"batch_size=9.*divisible by the process count 2"):
        ds.train.batches(9, process_index=0, process_count=2)


def test_start_batch_continues_exactly(root, cache):
    ds = _load(root, cache)
    whole = _epoch(ds.train, 8)
    tail = _epoch(ds.train, 8, start_batch=2)
    assert len(tail) == 2
    for a, b in zip(whole[2:], tail, strict=True):
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["_index"], b["_index"])
    assert len(_epoch(ds.train, 8, start_batch=1, stop_batch=3)) == 2


def test_worker_processes_give_the_same_batches(root, cache):
    ds = _load(root, cache)
    ds_workers = _load(root, cache, workers=2)
    for a, b in zip(_epoch(ds.train, 8), _epoch(ds_workers.train, 8), strict=True):
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["_index"], b["_index"])


def test_eval_is_deterministic_and_train_crops_vary(root, cache):
    ds = _load(root, cache)
    e1, e2 = _epoch(ds.test, 12, epoch=0), _epoch(ds.test, 12, epoch=5, seed=9, shuffle=False)
    np.testing.assert_array_equal(_epoch(ds.test, 12, shuffle=False)[0]["x"], e2[0]["x"])
    assert e1[0]["x"].shape == (12, SIZE, SIZE, 3)
    a = _epoch(ds.train, 30, epoch=0)[0]
    b = _epoch(ds.train, 30, epoch=1)[0]
    same = a["_index"][:, None] == b["_index"][None, :]
    i, j = np.argwhere(same)[0]
    assert not np.array_equal(a["x"][i], b["x"][j])  # a new random crop of the same image


def test_unreadable_images_are_skipped_counted_and_logged(tmp_path, caplog):
    root = make_image_folder(tmp_path / "data", classes=2, train=5, val=2)
    good = (root / "train" / "class_0" / "img_0.JPEG").read_bytes()
    (root / "train" / "class_0" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "train" / "class_1" / "garbage.jpeg").write_bytes(b"not an image at all")
    ds = load_streaming_dataset("foo", data_dir=root, image_size=SIZE, cache_dir=tmp_path / "c")
    assert len(ds.train) == 12
    with caplog.at_level(logging.WARNING):
        batches = _epoch(ds.train, 4)
    assert len(batches) == 3  # the epoch keeps its length
    assert sum(b["_skipped"] for b in batches) == 2
    assert sum(float(b["weight"].sum()) for b in batches) == 10
    assert "truncated.jpg" in caplog.text and "garbage.jpeg" in caplog.text


def test_index_is_cached_and_rebuilt_when_a_class_folder_changes(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "data", classes=2, train=3, val=1)
    names = folder.class_names(root / "train")
    paths, labels = folder.build_index(root / "train", names, cache_dir=tmp_path / "c")
    assert len(paths) == 6 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    real_scan = folder._scan
    monkeypatch.setattr(folder, "_scan", lambda *a: pytest.fail("the cached index was not used"))
    np.testing.assert_array_equal(
        folder.build_index(root / "train", names, cache_dir=tmp_path / "c")[0], paths
    )
    monkeypatch.setattr(folder, "_scan", real_scan)
    (root / "train" / "class_1" / "new.png").write_bytes(
        (root / "train" / "class_1" / "img_0.JPEG").read_bytes()
    )
    assert len(folder.build_index(root / "train", names, cache_dir=tmp_path / "c")[0]) == 7


def test_bad_folders_give_clear_errors(tmp_path, caplog):
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    (empty / "val" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no images"):
        load_streaming_dataset("x", data_dir=empty, cache_dir=tmp_path / "c")
    no_classes = tmp_path / "no_classes"
    (no_classes / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no class folders"):
        load_streaming_dataset("x", data_dir=no_classes, cache_dir=tmp_path / "c")
    root = make_image_folder(tmp_path / "data", classes=3, train=2, val=1)
    (root / "val" / "class_9").mkdir()
    with pytest.raises(ValueError, match=r"class folders that train/ lacks: \['class_9'\]"):
        load_streaming_dataset("x", data_dir=root, cache_dir=tmp_path / "c")
    (root / "val" / "class_9").rmdir()
    for f in (root / "val" / "class_2").iterdir():
        f.unlink()
    (root / "val" / "class_2").rmdir()
    with caplog.at_level(logging.WARNING):
        ds = load_streaming_dataset("x", data_dir=root, cache_dir=tmp_path / "c", image_size=SIZE)
    assert len(ds.test) == 2 and "lacks 1 of the 3 class folders: class_2" in caplog.text
    no_val = make_image_folder(tmp_path / "noval", classes=1, train=2, val=0)
    for d in (no_val / "val").iterdir():
        d.rmdir()
    (no_val / "val").rmdir()
    with pytest.raises(FileNotFoundError, match="no val or validation or test folder"):
        load_streaming_dataset("x", data_dir=no_val, cache_dir=tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"no image folder for 'imagenet2012'.*nowhere"):
        load_streaming_dataset("imagenet2012", data_dir=tmp_path / "nowhere", source="folder")
    with pytest.raises(ValueError, match=r"source='hdf5' is not valid"):
        load_streaming_dataset("x", data_dir=root, source="hdf5")


def test_tfds_source_not_prepared_says_how_to_prepare(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(
        FileNotFoundError,
        match=r"(?s)cifar10:train is not prepared at .*cifar10.*tfds build cifar10 --data_dir=",
    ):
        load_streaming_dataset("cifar10", data_dir=tmp_path, source="tfds")


def test_unknown_name_without_folder_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match=r"name='no_such_set_xyz' is neither an image folder"):
        load_streaming_dataset("no_such_set_xyz", data_dir=tmp_path)


def test_tfds_cifar10_streams_raw_images_for_on_device_augmentation(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_streaming_dataset("cifar10", data_dir=tmp_path, source="tfds", val_fraction=0.25)
        assert (ds.num_classes, ds.input_shape, ds.augment) == (10, (32, 32, 3), "cifar")
        assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 20)
        batch = _epoch(ds.train, 5)[0]
        record = ds.train.source[int(ds.train.indices[batch["_index"][0]])]
    np.testing.assert_array_equal(batch["x"][0], record["image"])  # raw: passed as stored
    assert batch["y"][0] == record["label"]
    x = batch["x"].astype(np.float32)
    want = (x - np.array([125.307, 122.950, 113.865])) / np.array([62.993, 62.089, 66.705])
    np.testing.assert_allclose(np.asarray(ds.device_normalize(batch["x"])), want, rtol=1e-5, atol=1e-5)


def test_trainer_on_streamed_cifar_normalizes_then_augments_on_device(tmp_path):
    """The CIFAR paper configs' path: tfds source, uint8 batches, normalization
    and the random crop + flip inside the jitted step; evaluation is exact."""
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = base_config().train
    cfg.update(dict(epochs=1, batch_size=8, eval_batch_size=8, lr=0.01))
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_streaming_dataset("cifar10", data_dir=tmp_path, source="tfds")
        trainer = Trainer(get_model("mlp", 10, hidden=(8,)), ds, cfg)
        state = trainer.fit(progress=False)
        metrics = trainer.evaluate(state, "test")
        x = np.stack([ds.test.source[i]["image"] for i in range(16)]).astype(np.float32)
        y = np.asarray([ds.test.source[i]["label"] for i in range(16)])
    assert trainer.steps_per_epoch == 2 and int(state.step) == 2
    # the reference: the model applied to the normalized images, in NumPy-land
    logits = trainer.model.apply({"params": state.params}, (x - ds.x_mean) / ds.x_std)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, -1) == y)))


def test_config_routes_streaming_and_rejects_mismatched_sources(root):
    from jaxprune.configs.common import validate_config
    from jaxprune.pipelines import load_data

    config = base_config()
    config.data.name, config.data.streaming, config.data.data_dir = "my_images", True, str(root)
    config.data.image_size = SIZE
    validate_config(config)  # any name streams (a folder or a tfds name)
    assert load_data(config).input_shape == (SIZE, SIZE, 3)
    config.data.source = "npz"
    with pytest.raises(ValueError, match=r"source='npz' is not valid with config.data.streaming=True"):
        load_data(config)
    config.data.streaming, config.data.source, config.data.name = False, "folder", "digits"
    with pytest.raises(ValueError, match=r"source='folder' needs config.data.streaming=True"):
        load_data(config)
    config.data.source, config.data.name = "auto", "my_images"
    with pytest.raises(ValueError, match=r"config.data.name='my_images' is not valid"):
        validate_config(config)


def test_prefetch_to_mesh_forwards_errors_and_closes():
    mesh = make_mesh()

    def batches():
        yield {"x": np.ones((8, 2), np.float32), "_note": "host"}
        raise RuntimeError("decoder broke")

    it = prefetch_to_mesh(batches(), mesh)
    first = next(it)
    assert first["x"].shape == (8, 2) and first["_note"] == "host"
    assert len(first["x"].sharding.device_set) == 8
    with pytest.raises(RuntimeError, match="decoder broke"):
        next(it)
    with prefetch_to_mesh(iter([{"x": np.zeros((8, 1))}] * 50), mesh, size=1) as early:
        next(early)  # leaving the block stops the producer although 49 batches remain
    with pytest.raises(ValueError, match="size=0"):
        prefetch_to_mesh([], mesh, size=0)


def test_trainer_on_a_stream_resumes_exactly(root, cache, tmp_path):
    """Interrupted mid-epoch, resumed: the same params and epoch metrics as a straight run."""
    ds = _load(root, cache, val_fraction=0.2)
    cfg = base_config().train
    cfg.update(dict(epochs=2, batch_size=8, eval_batch_size=8, lr=0.05, log_every=2, checkpoint_every=1))
    model = get_model("mlp", ds.num_outputs, hidden=(16,))
    trainer = Trainer(model, ds, cfg, workdir=tmp_path / "a")
    straight = trainer.fit(progress=False)
    history = trainer.history
    assert trainer.steps_per_epoch == 3 and history[-1]["val_accuracy"] >= 0.0

    class Stop(Exception):
        pass

    def stop(trainer, state, metrics):
        if int(state.step) == 4:
            raise Stop

    trainer.workdir, trainer.hooks = tmp_path / "b", [FunctionHook(after=stop)]
    with pytest.raises(Stop):
        trainer.fit(progress=False)
    trainer.hooks = []
    resumed = trainer.fit(resume=True, progress=False)
    assert trainer.resumed_meta["data"]["epoch"] == 1 and trainer.resumed_meta["data"]["batch"] == 0
    for a, b in zip(
        np.asarray(straight.params["Dense_0"]["kernel"]).ravel(),
        np.asarray(resumed.params["Dense_0"]["kernel"]).ravel(),
        strict=True,
    ):
        assert a == b
    assert trainer.history == history


def test_streaming_config_smoke_runs_dpf_end_to_end(root, tmp_path):
    """``jaxprune/configs/dpf_imagenet_resnet50.py:dpf,0.9,smoke`` on the tiny folder (ResNet-50 swapped
    for a small MLP to keep CI short; the data, schedule, pipeline and checkpoints are the real ones)."""
    from jaxprune.configs.common import validate_config
    from jaxprune.configs.dpf_imagenet_resnet50 import get_config
    from jaxprune.pipelines import get_pipeline

    config = get_config("dpf,0.9,smoke")
    config.data.data_dir = str(root)
    config.data.image_size = SIZE
    config.model.name, config.model.kwargs.hidden = "mlp", (32,)
    validate_config(config)
    record = get_pipeline(config.pipeline)(config, str(tmp_path))
    assert record["sparsity_prunable"] == pytest.approx(0.9, abs=1e-3)
    assert record["train_examples"] == 30 and pathlib.Path(tmp_path, "results.json").exists()
    assert base_config().data.streaming is False
