"""An image folder as a random-access data source: the layout users keep
ImageNet in, ``<root>/<split>/<class>/<image>`` (e.g. ``train/n01440764/x.JPEG``).

The file index (relative paths and labels) is built once per split and cached
as ``.npz`` in ``cache_dir`` (default ``$XDG_CACHE_HOME/jaxprune`` or
``~/.cache/jaxprune``), keyed by the split folder's absolute path. It is rebuilt
when a class folder's modification time changes (adding or removing a file
changes it). Labels are the positions of the class names in the sorted class
list of the TRAIN split, so ``val`` uses the same labels even when a class
folder is missing there (that is logged).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
from collections.abc import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
CACHE_ENV = "JAXPRUNE_CACHE_DIR"
_log = logging.getLogger(__name__)


def default_cache_dir() -> pathlib.Path:
    """``$JAXPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxprune``, else ``~/.cache/jaxprune``."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxprune"


def class_names(split_dir: str | os.PathLike) -> tuple[str, ...]:
    """Sorted names of the class folders in ``split_dir``; raises
    ``FileNotFoundError`` when the folder is missing or holds no class folder."""
    split_dir = pathlib.Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"image folder {split_dir} does not exist; expected the layout <data_dir>/<split>/<class>/<image>"
        )
    names = tuple(sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")))
    if not names:
        raise FileNotFoundError(f"image folder {split_dir} has no class folders (<split>/<class>/<image>)")
    return names


def _signature(split_dir: pathlib.Path, names: Sequence[str]) -> np.ndarray:
    """Per class folder: its modification time in ns (0 when missing)."""
    out = np.zeros(len(names), np.int64)
    for i, name in enumerate(names):
        path = split_dir / name
        out[i] = path.stat().st_mtime_ns if path.is_dir() else 0
    return out


def _scan(split_dir: pathlib.Path, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Relative paths (sorted per class) and labels of every image file."""
    paths, labels = [], []
    for label, name in enumerate(names):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        files = sorted(
            e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths += [f"{name}/{f}" for f in files]
        labels += [label] * len(files)
    return np.asarray(paths, dtype=np.str_), np.asarray(labels, np.int32)


def build_index(
    split_dir: str | os.PathLike, names: Sequence[str], *, cache_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(paths, labels)`` of the images under ``split_dir`` for the classes
    ``names`` (label = position in ``names``): ``paths`` (N,) str relative to
    ``split_dir``, ``labels`` (N,) int32. Read from the cache when it is current,
    otherwise scanned and cached (written atomically, so concurrent processes
    of a multi-host job may build it at once). Raises ``FileNotFoundError`` when
    no image is found."""
    split_dir = pathlib.Path(split_dir).absolute()
    cache = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha1(f"{split_dir}\n{'/'.join(names)}".encode()).hexdigest()[:16]
    path = cache / f"folder_index_{split_dir.name}_{key}.npz"
    signature = _signature(split_dir, names)
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            if np.array_equal(f["signature"], signature):
                return f["paths"], f["labels"]
    paths, labels = _scan(split_dir, names)
    if len(paths) == 0:
        raise FileNotFoundError(
            f"image folder {split_dir} holds no images (extensions {list(IMAGE_EXTENSIONS)}, any case) "
            f"in its {len(names)} class folders"
        )
    missing = [n for n, s in zip(names, signature, strict=True) if s == 0]
    if missing:
        _log.warning(
            "%s lacks %d of the %d class folders: %s",
            split_dir,
            len(missing),
            len(names),
            ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
        )
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, paths=paths, labels=labels, signature=signature)
        os.replace(tmp, path)
    except OSError as err:  # a read-only cache only costs a rescan next time
        _log.warning("could not cache the file index of %s in %s: %s", split_dir, cache, err)
    return paths, labels


class ImageFolderSource:
    """Random access to ``<split_dir>/<class>/<image>``: ``source[i]`` is
    ``{"image": bytes (the encoded file), "label": int, "path": str}``.

    Pickles without its index (workers of a multi-process loader reload it from
    the cache instead of receiving a copy)."""

    def __init__(
        self,
        split_dir: str | os.PathLike,
        names: Sequence[str],
        *,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.split_dir = pathlib.Path(split_dir).absolute()
        self.names = tuple(names)
        self.cache_dir = cache_dir
        self._paths, self._labels = build_index(self.split_dir, self.names, cache_dir=cache_dir)

    def __getstate__(self) -> dict:
        return {"split_dir": self.split_dir, "names": self.names, "cache_dir": self.cache_dir}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["split_dir"], state["names"], cache_dir=state["cache_dir"])

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int32 labels of all images, in index order."""
        return self._labels

    def __getitem__(self, index: int) -> dict:
        path = self.split_dir / str(self._paths[index])
        return {"image": path.read_bytes(), "label": int(self._labels[index]), "path": str(path)}

    def __repr__(self) -> str:
        return f"ImageFolderSource({str(self.split_dir)!r}, {len(self)} images, {len(self.names)} classes)"
