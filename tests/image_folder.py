"""A tiny ImageNet-layout folder for the streaming tests: ``train/`` and
``val/`` with one sub-folder per class of small JPEGs whose mean colour
depends on the class (so a model can learn them)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image


def make_image_folder(
    root: str | pathlib.Path,
    *,
    classes: int = 3,
    train: int = 10,
    val: int = 4,
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
) -> pathlib.Path:
    """``root/{train,val}/class_<c>/img_<i>.JPEG``; ``size`` is (width, height)."""
    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array(
                [200.0 * c / max(classes - 1, 1), 200.0 - 150.0 * c / max(classes - 1, 1), 120.0]
            )
            for i in range(n):
                pixels = colour + rng.normal(0.0, 30.0, (size[1], size[0], 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    folder / f"img_{i}.JPEG", quality=90
                )
    return root
