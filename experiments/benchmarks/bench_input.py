"""Host input pipeline: ImageNet-style JPEG decode + augmentation on one core.

Generates synthetic ImageNet-sized JPEGs in memory (quality 90, mixed
landscape/portrait, multi-scale random fields plus noise, so the files are
~100 KB like ImageNet's), then measures images/s on ONE core (single process,
single thread, pinned where the OS allows) of

* train: ``decode_train`` (draft-mode JPEG decode) vs ``decode_train(draft=False)``
  (full-resolution decode, same crop + resize + flip), same rng seeds;
* eval: ``decode_eval`` (draft) vs a full decode + the same resize of the center box;
* train, the loader most code uses (torchvision's ``RandomResizedCrop`` +
  ``ToTensor`` + ``Normalize``): full decode, crop, resize, flip, then float32
  normalization on the host, 4x the bytes to ship. The engine ships uint8 and
  normalizes on the device instead, so this row is the saving of the whole design.

Repeats are interleaved (draft, naive, draft, ...) and the median is reported.
Goal: draft >= 1.5x naive for train. At ImageNet's typical size (~500x375)
and 224 crops the crop never allows a reduced DCT scale (that needs >= 448
pixels on both sides), so draft and naive do the same work there; ``--long-side
1000`` / ``2000`` show where draft mode pays. Also prints the DCT scales draft mode
used, and how many host cores feed ResNet-50 training at 3,000 images/s.

    python -m experiments.benchmarks.bench_input [--images 300] [--repeats 5] [--size 224]
        [--long-side 500]
"""

from __future__ import annotations

import argparse
import collections
import functools
import io
import math
import os
import statistics
import time

import numpy as np
from PIL import Image

from jaxprune.train.data.images import decode_eval, decode_train, sample_crop

TARGET_IMG_S = 3000  # ResNet-50 training on one accelerator host, roughly
SHAPES = ((4, 3), (3, 4), (3, 2))  # landscape 500x375, portrait 375x500, landscape 500x333
OCTAVES = ((4, 50.0), (16, 25.0), (64, 20.0), (160, 15.0))  # (cells per side, amplitude)


def make_jpegs(n: int, long_side: int, seed: int = 0) -> list[bytes]:
    """n JPEGs (quality 90): four octaves of smooth random fields plus pixel noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = SHAPES[i % len(SHAPES)]
        short = round(long_side * min(a, b) / max(a, b))
        width, height = (long_side, short) if a > b else (short, long_side)
        img = np.full((height, width, 3), 128.0)
        for cells, amp in OCTAVES:
            coarse = np.clip(128 + amp * rng.normal(size=(cells, cells, 3)), 0, 255).astype(np.uint8)
            field = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
            img += np.asarray(field, np.float64) - 128
        img += rng.normal(scale=15.0, size=img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def naive_decode_eval(data: bytes, size: int, resize: int) -> np.ndarray:
    """Baseline eval: full decode, then the same one-pass resize of the center box
    (shorter side to ``resize``, center crop ``size``) as ``decode_eval``."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = img.size
    short = min(width, height)
    new_w, new_h = int(resize * width / short), int(resize * height / short)
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return np.asarray(img.resize((size, size), Image.BILINEAR, box=box))


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def host_float_train(data: bytes, rng: np.random.Generator, *, size: int) -> np.ndarray:
    """The common host loader: full decode, crop, resize, flip, float32 normalize (torchvision-style)."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = img.size
    top, left, h, w = sample_crop(height, width, rng)
    out = img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return (np.asarray(out, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def draft_scales(jpegs: list[bytes], size: int) -> collections.Counter:
    """How often each DCT scale is used by decode_train (crop >= size at scale s)."""
    counts: collections.Counter = collections.Counter()
    rng = np.random.default_rng(0)
    for data in jpegs:
        width, height = Image.open(io.BytesIO(data)).size
        _, _, h, w = sample_crop(height, width, rng)
        rng.random()  # the flip draw
        counts[next((s for s in (8, 4, 2, 1) if min(h, w) / s >= size), 1)] += 1
    return counts


def _rate(fn, jpegs: list[bytes]) -> float:
    start = time.perf_counter()
    for data in jpegs:
        fn(data)
    return len(jpegs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224, help="output side (eval resizes to size * 8/7)")
    parser.add_argument("--long-side", type=int, default=500, help="longer side of the generated JPEGs")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    size, resize = args.size, round(args.size * 8 / 7)

    jpegs = make_jpegs(args.images, args.long_side)
    kb = statistics.mean(len(d) for d in jpegs) / 1024
    print(f"{len(jpegs)} JPEGs, longer side {args.long_side}, quality 90, mean {kb:.0f} KB; size {size}")
    scales = draft_scales(jpegs, size)
    print("train DCT scale used: " + ", ".join(f"1/{s}: {scales[s] / len(jpegs):.0%}" for s in (1, 2, 4, 8)))

    def rng_fn(fn):
        rng = np.random.default_rng(0)  # reset per pass: the same boxes for both
        return lambda data: fn(data, rng, size=size)

    cases = {
        "train draft": lambda: _rate(rng_fn(decode_train), jpegs),
        "train naive": lambda: _rate(rng_fn(functools.partial(decode_train, draft=False)), jpegs),
        "train float": lambda: _rate(rng_fn(host_float_train), jpegs),
        "eval draft": lambda: _rate(lambda d: decode_eval(d, size=size, resize=resize), jpegs),
        "eval naive": lambda: _rate(lambda d: naive_decode_eval(d, size, resize), jpegs),
    }
    for fn in cases.values():  # warm up
        fn()
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            rates[name].append(fn())
    med = {name: statistics.median(r) for name, r in rates.items()}

    print(f"{'path':<12}{'img/s/core':>12}{'ms/img':>8}")
    for name, r in med.items():
        print(f"{name:<12}{r:>12.0f}{1e3 / r:>8.2f}")
    train_ratio = med["train draft"] / med["train naive"]
    eval_ratio = med["eval draft"] / med["eval naive"]
    print(f"train ratio draft/naive: {train_ratio:.2f}x (goal >= 1.5x); eval ratio: {eval_ratio:.2f}x")
    float_ratio = med["train draft"] / med["train float"]
    print(f"train ratio draft (uint8 out) / host-float loader: {float_ratio:.2f}x")
    cores = math.ceil(TARGET_IMG_S / med["train draft"])
    naive_cores = math.ceil(TARGET_IMG_S / med["train naive"])
    print(f"cores for {TARGET_IMG_S} train img/s (ResNet-50): {cores} (draft), {naive_cores} (naive)")


if __name__ == "__main__":
    main()
