"""ImageNet-style host preprocessing: encoded image bytes (JPEG, PNG, ...) to
uint8 (size, size, 3) RGB arrays, with PIL on the CPU (no JAX here).

Train recipe (Inception / ResNet-50, as torchvision ``RandomResizedCrop`` +
``RandomHorizontalFlip``): a random box covering 8-100% of the image area with
aspect ratio in [3/4, 4/3] (log-uniform), resized to ``size`` x ``size`` with
bilinear filtering, flipped left-right with probability 1/2. Eval recipe:
resize the shorter side to ``resize`` (256) keeping the aspect ratio, then
center crop ``size`` (224). Normalization (mean/std) is left to the device.

Speed: JPEGs are decoded in draft mode, i.e. libjpeg scales the image down by
s in {1, 2, 4, 8} inside the inverse DCT, which saves the inverse DCT, chroma
upsampling and colour conversion at full resolution (not the entropy decoding,
which remains). s is the largest factor that still leaves the crop at least
``size`` pixels in both directions (for eval: the shorter side at least
``resize``), so the final bilinear resize only ever downsamples. Boxes are
sampled in original pixels and mapped into the reduced image (coordinate / s).
``decode_train(..., draft=False)`` is the same recipe on the full-resolution
decode (the reference). Measured (``experiments/benchmarks/bench_input.py``):
at ImageNet's typical ~500x375 and 224 crops s is 1 for every crop (s = 2
needs a crop of >= 448 pixels both ways), so draft mode saves nothing there;
it pays on larger photos (1.2x at 1000 px, 1.6x at 2000 px).

All coordinates are in pixels; boxes are (top, left, height, width)."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
from PIL import Image

__all__ = [
    "UnreadableImage",
    "decode_eval",
    "decode_train",
    "eval_transform",
    "sample_crop",
    "train_transform",
]

Box = tuple[int, int, int, int]
_SCALES = (8, 4, 2, 1)
# What PIL raises for bad bytes: UnidentifiedImageError (an OSError) from open(),
# OSError("image file is truncated ...") and decoder errors from load(); SyntaxError,
# ValueError, IndexError, struct.error from some plugins' parsers; EOFError on short reads.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_DECODE_ERRORS += (Image.DecompressionBombError,)


class UnreadableImage(ValueError):
    """The bytes cannot be decoded as an image (truncated, corrupt, or not an image)."""


def sample_crop(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    tries: int = 10,
) -> Box:
    """Random-resized-crop box (top, left, h, w) in pixels of a height x width image.

    Each try draws the area uniformly in ``area`` * height * width and the aspect
    ratio w/h log-uniformly in ``ratio``; w = round(sqrt(area * ratio)), h =
    round(sqrt(area / ratio)); a box that fits is placed uniformly at random.
    After ``tries`` misses: the centered largest box with ratio clipped to
    ``ratio`` (the whole image if its ratio is inside)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if not (0 < area[0] <= area[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"need 0 < area[0] <= area[1] and 0 < ratio[0] <= ratio[1], got {area}, {ratio}")
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(tries):
        target = height * width * rng.uniform(area[0], area[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    if width / height < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except _DECODE_ERRORS as e:
        raise UnreadableImage(f"cannot identify image ({len(data)} bytes): {e}") from e


def _load(img: Image.Image, nbytes: int) -> Image.Image:
    """Decode fully now (PIL is lazy), so truncated data raises here and not later."""
    try:
        img.load()
    except _DECODE_ERRORS as e:
        raise UnreadableImage(f"cannot decode {img.format} image ({nbytes} bytes): {e}") from e
    return img


def _draft(img: Image.Image, scale: int) -> float:
    """Ask for a DCT-domain reduction by ``scale``; return the factor actually used
    (1 for non-JPEG images, where draft is a no-op)."""
    if scale == 1:
        return 1.0
    width, height = img.size
    # PIL picks the largest s in {1, 2, 4, 8} with s <= min(W // w_req, H // h_req).
    res = img.draft("RGB", (width // scale, height // scale))
    return 1.0 if res is None else width / res[1][2]


def _largest_scale(width: float, height: float, size: int) -> int:
    """The largest s in {1, 2, 4, 8} with width / s >= size and height / s >= size."""
    return next((s for s in _SCALES if min(width, height) / s >= size), 1)


def _crop_resize(img: Image.Image, box: tuple[float, ...], size: int, scale: float, flip: bool) -> np.ndarray:
    """Crop ``box`` (original pixels) out of ``img`` (reduced by ``scale``), bilinear
    resize to size x size in one pass, flip, and return uint8 (size, size, 3) RGB."""
    if img.mode not in ("RGB", "L"):  # CMYK, RGBA, P (palette cannot be resampled), ...
        img = img.convert("RGB")
    top, left, h, w = box
    xyxy = (left / scale, top / scale, (left + w) / scale, (top + h) / scale)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=xyxy)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out.convert("RGB") if out.mode != "RGB" else out)


def _eval_box(height: int, width: int, size: int, resize: int) -> tuple[float, float, float, float]:
    """The center size x size crop of the shorter-side-``resize`` image, in original pixels."""
    short, long = min(height, width), max(height, width)
    new_long = int(resize * long / short)  # torchvision's Resize(int) rounding
    new_h, new_w = (resize, new_long) if height <= width else (new_long, resize)
    if size > min(new_h, new_w):
        raise ValueError(f"size={size} is larger than the resized image {new_h}x{new_w}")
    sy, sx = height / new_h, width / new_w
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    return top * sy, left * sx, size * sy, size * sx


def decode_train(
    data: bytes,
    rng: np.random.Generator,
    *,
    size: int = 224,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    draft: bool = True,
) -> np.ndarray:
    """Train recipe on encoded bytes with draft-mode decoding: uint8 (size, size, 3) RGB.

    Draws the crop box (``sample_crop``), then the flip (``rng.random() < 0.5``,
    only if ``flip``). ``draft=False`` decodes at full resolution (the reference
    the tests and ``bench_input`` compare with; the same draws give the same box
    and flip). Raises ``UnreadableImage`` on bad bytes."""
    img = _open(data)
    width, height = img.size
    box = sample_crop(height, width, rng, area=area, ratio=ratio)
    do_flip = flip and rng.random() < 0.5
    scale = _draft(img, _largest_scale(box[3], box[2], size)) if draft else 1.0
    return _crop_resize(_load(img, len(data)), box, size, scale, do_flip)


def decode_eval(data: bytes, *, size: int = 224, resize: int = 256) -> np.ndarray:
    """Eval recipe on encoded bytes: shorter side to ``resize`` (bilinear), center
    crop ``size``; draft-mode decoding keeps the shorter side >= ``resize``.
    Returns uint8 (size, size, 3) RGB; raises ``UnreadableImage`` on bad bytes."""
    img = _open(data)
    width, height = img.size
    top, left, h, w = _eval_box(height, width, size, resize)
    scale = _draft(img, _largest_scale(min(width, height), min(width, height), resize))
    return _crop_resize(_load(img, len(data)), (top, left, h, w), size, scale, False)


def _from_array(image: np.ndarray) -> Image.Image:
    image = np.asarray(image)
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or channels not in (1, 3, 4):
        raise ValueError(f"expected uint8 (H, W), (H, W, 1|3|4) image, got {image.dtype} {image.shape}")
    return Image.fromarray(image[..., 0] if image.ndim == 3 and channels == 1 else image)


def train_transform(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int = 224,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> np.ndarray:
    """Train recipe on a decoded uint8 (H, W[, C]) array (e.g. from tensorflow-datasets);
    same rng draws as ``decode_train``. Returns uint8 (size, size, 3) RGB."""
    image = np.asarray(image)
    box = sample_crop(image.shape[0], image.shape[1], rng, area=area, ratio=ratio)
    do_flip = flip and rng.random() < 0.5
    return _crop_resize(_from_array(image), box, size, 1.0, do_flip)


def eval_transform(image: np.ndarray, *, size: int = 224, resize: int = 256) -> np.ndarray:
    """Eval recipe on a decoded uint8 (H, W[, C]) array. Returns uint8 (size, size, 3) RGB."""
    image = np.asarray(image)
    box = _eval_box(image.shape[0], image.shape[1], size, resize)
    return _crop_resize(_from_array(image), box, size, 1.0, False)
