"""Tests of jaxprune.train.data.images (host-side ImageNet-style preprocessing).

The images are synthetic, made here with PIL. References are independent of the
code under test: hand-computed torchvision fallback boxes, the rng stream drawn
by hand, exact pixel slices / analytic values for images whose pixels are known,
and PIL's full-resolution decode for the draft-mode (DCT-reduced) paths."""

import functools
import io
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageFile

from jaxprune.train.data import images
from jaxprune.train.data.images import (
    UnreadableImage,
    decode_eval,
    decode_train,
    eval_transform,
    sample_crop,
    train_transform,
)


def _natural(height: int, width: int, seed: int, noise: float = 6.0) -> np.ndarray:
    """uint8 (H, W, 3): a smooth random field (bicubic upsampled) plus pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = np.clip(128 + 50 * rng.normal(size=(height // 25 + 2, width // 25 + 2, 3)), 0, 255)
    smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC))
    return np.clip(smooth + rng.normal(scale=noise, size=smooth.shape), 0, 255).astype(np.uint8)


def _encode(img: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def jpegs() -> dict[str, bytes]:
    """Landscape / portrait RGB, grayscale and CMYK JPEGs (quality 90), and a PNG."""
    land = Image.fromarray(_natural(375, 500, 0))
    return {
        "landscape": _encode(land, quality=90),
        "portrait": _encode(Image.fromarray(_natural(500, 375, 1)), quality=90),
        "large": _encode(Image.fromarray(_natural(750, 1000, 2)), quality=90),
        "gray": _encode(land.convert("L"), quality=90),
        "cmyk": _encode(land.convert("CMYK"), quality=90),
        "png": _encode(Image.fromarray(_natural(300, 400, 3)), "PNG"),
        "palette": _encode(land.convert("P"), "PNG"),
        "rgba": _encode(land.convert("RGBA"), "PNG"),
    }


# --- sample_crop ------------------------------------------------------------------------------------


@given(st.integers(1, 1200), st.integers(1, 1200), st.integers(0, 2**32 - 1))
def test_sample_crop_box_inside_and_within_area_and_ratio(height, width, seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        top, left, h, w = sample_crop(height, width, rng)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h >= 1 and w >= 1
        if height >= 20 and width >= 20 and 3 / 4 <= width / height <= 4 / 3:
            # Accepted boxes (or the whole image): w, h are within 1/2 of the real-valued
            # sqrt(a r), sqrt(a / r) with a in [0.08, 1] * H * W and r in [3/4, 4/3].
            assert (w + 0.5) * (h + 0.5) >= 0.08 * height * width
            assert (w - 0.5) * (h - 0.5) <= height * width
            assert (w + 0.5) / (h - 0.5) >= 3 / 4 and (w - 0.5) / (h + 0.5) <= 4 / 3


def test_sample_crop_draws_area_ratio_top_left_in_order():
    for seed in range(20):
        box = sample_crop(375, 500, np.random.default_rng(seed))
        ref = np.random.default_rng(seed)
        while True:  # the torchvision loop, written out
            target = 375 * 500 * ref.uniform(0.08, 1.0)
            aspect = math.exp(ref.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if w <= 500 and h <= 375:
                break
        top, left = ref.integers(0, 375 - h + 1), ref.integers(0, 500 - w + 1)
        assert box == (top, left, h, w)


def test_sample_crop_covers_the_area_range():
    rng = np.random.default_rng(0)
    fractions = [h * w / (375 * 500) for _, _, h, w in (sample_crop(375, 500, rng) for _ in range(2000))]
    assert min(fractions) < 0.1 and max(fractions) > 0.9


@pytest.mark.parametrize(
    ("height", "width", "kwargs", "expected"),
    [
        # No box with ratio <= 4/3 fits 10 rows: h = 10, w = round(10 * 4/3) = 13, centered.
        (10, 1000, {}, (0, 493, 10, 13)),
        (1000, 10, {}, (493, 0, 13, 10)),  # w = 10, h = round(10 / (3/4)) = 13
        (375, 500, {"tries": 0}, (0, 0, 375, 500)),  # ratio 4/3 is in range: whole image
        (300, 500, {"tries": 0}, (0, 50, 300, 400)),  # w = round(300 * 4/3) = 400
        (500, 300, {"tries": 0}, (50, 0, 400, 300)),  # h = round(300 / (3/4)) = 400
        (100, 100, {"area": (2.0, 3.0)}, (0, 0, 100, 100)),  # impossible area
    ],
)
def test_sample_crop_fallback_is_torchvision_center_crop(height, width, kwargs, expected):
    assert sample_crop(height, width, np.random.default_rng(0), **kwargs) == expected


def test_sample_crop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        sample_crop(0, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="area"):
        sample_crop(10, 10, np.random.default_rng(0), area=(0.5, 0.1))


# --- decode_train ------------------------------------------------------------------------------------


def test_draft_reduces_jpeg_by_the_requested_factor(jpegs):
    for scale, size in ((1, (500, 375)), (2, (250, 188)), (4, (125, 94)), (8, (63, 47))):
        img = Image.open(io.BytesIO(jpegs["landscape"]))
        assert images._draft(img, scale) == scale
        img.load()
        assert img.size == size  # ceil(W / s), ceil(H / s)
    png = Image.open(io.BytesIO(jpegs["png"]))
    assert images._draft(png, 4) == 1 and png.size == (400, 300)
    # Largest s in {1, 2, 4, 8} keeping both sides >= size.
    sizes = ((500, 375), (300, 500), (200, 130), (64, 64))
    assert [images._largest_scale(w, h, 64) for w, h in sizes] == [4, 4, 2, 1]
    assert images._largest_scale(40, 500, 64) == 1


@pytest.mark.parametrize(("name", "size"), [("landscape", 64), ("portrait", 64), ("large", 224)])
def test_decode_train_matches_full_resolution_decode(jpegs, name, size):
    """Draft mode shrinks each 8x8 block with a smaller inverse DCT (keeps the low
    frequencies: a per-block low-pass), the reference lets PIL's antialiased
    bilinear (triangle) filter do the whole reduction; both resize the same box.
    Measured over the 30 seeds: mean |diff| 0.41-0.57 on average, <= 0.73 for any
    one output, single pixels up to 6 levels. The bound 1.5 leaves a 2x margin and
    still catches a misplaced box: shifting it by one original pixel gives >= 2.0."""
    data = jpegs[name]
    used_draft = 0
    for seed in range(30):
        rng, ref_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        out, ref = decode_train(data, rng, size=size), decode_train(data, ref_rng, size=size, draft=False)
        assert out.shape == ref.shape == (size, size, 3) and out.dtype == ref.dtype == np.uint8
        assert np.abs(out.astype(int) - ref).mean() < 1.5
        assert rng.random() == ref_rng.random()  # same number of draws
        box = sample_crop(*Image.open(io.BytesIO(data)).size[::-1], np.random.default_rng(seed))
        used_draft += images._largest_scale(box[3], box[2], size) > 1
    assert used_draft >= 10  # the draft path is actually exercised


def test_decode_train_is_deterministic_in_the_rng(jpegs):
    a = decode_train(jpegs["landscape"], np.random.default_rng(7), size=64)
    b = decode_train(jpegs["landscape"], np.random.default_rng(7), size=64)
    c = decode_train(jpegs["landscape"], np.random.default_rng(8), size=64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_flip_is_a_fair_coin_drawn_after_the_box(jpegs):
    data = jpegs["landscape"]
    flips = 0
    for seed in range(200):
        out = decode_train(data, np.random.default_rng(seed), size=32)
        plain = decode_train(data, np.random.default_rng(seed), size=32, flip=False)  # same box
        ref = np.random.default_rng(seed)
        sample_crop(375, 500, ref)
        expect_flip = ref.random() < 0.5
        np.testing.assert_array_equal(out, plain[:, ::-1] if expect_flip else plain)
        flips += expect_flip
    # Binomial(200, 1/2): sd 7.1; [70, 130] is beyond 4 sd.
    assert 70 <= flips <= 130


def test_exact_on_png_against_the_pil_reference():
    """Lossless PNG, no draft: the crop + bilinear resize equals PIL resize of the
    cropped image (both the bytes and the array entry points)."""
    arr = _natural(120, 160, 4)
    data = _encode(Image.fromarray(arr), "PNG")
    for seed in range(5):
        top, left, h, w = sample_crop(120, 160, np.random.default_rng(seed))
        ref_img = Image.fromarray(arr).resize((48, 48), Image.BILINEAR, box=(left, top, left + w, top + h))
        ref = np.asarray(ref_img)
        for fn in (decode_train, functools.partial(decode_train, draft=False)):
            np.testing.assert_array_equal(fn(data, np.random.default_rng(seed), size=48, flip=False), ref)
        out = train_transform(arr, np.random.default_rng(seed), size=48, flip=False)
        np.testing.assert_array_equal(out, ref)


# --- decode_eval -------------------------------------------------------------------------------------


def test_decode_eval_no_resize_needed_is_an_exact_center_slice():
    arr = _natural(256, 320, 5, noise=40)  # shorter side already 256
    data = _encode(Image.fromarray(arr), "PNG")
    np.testing.assert_array_equal(decode_eval(data), arr[16:240, 48:272])
    np.testing.assert_array_equal(eval_transform(arr, size=224, resize=256), arr[16:240, 48:272])


def test_decode_eval_on_linear_ramps_matches_the_analytic_value():
    """512 x 640 with red = 0.3 x + 20 and green = 0.4 y + 10 (x, y pixel indices):
    shorter side 512 -> 256 is a factor 2 both ways, so output pixel (i, j) is
    resized pixel (i + 16, j + 48), centred at original y = 2 (i + 16) + 0.5,
    x = 2 (j + 48) + 0.5; a symmetric filter keeps a linear ramp linear."""
    y, x = np.mgrid[0:512, 0:640].astype(np.float64)
    arr = np.stack([0.3 * x + 20, 0.4 * y + 10, np.full_like(x, 77)], -1)
    data = _encode(Image.fromarray(np.rint(arr).astype(np.uint8)), "PNG")
    out = decode_eval(data, size=224, resize=256).astype(float)
    i, j = np.mgrid[0:224, 0:224]
    assert np.abs(out[..., 0] - (0.3 * (2 * (j + 48) + 0.5) + 20)).max() <= 1
    assert np.abs(out[..., 1] - (0.4 * (2 * (i + 16) + 0.5) + 10)).max() <= 1
    assert np.all(out[..., 2] == 77)


@pytest.mark.parametrize(("name", "size", "resize"), [("landscape", 64, 80), ("large", 224, 256)])
def test_decode_eval_matches_full_resolution_resize_and_crop(jpegs, name, size, resize):
    """Draft mode on (shorter side 375 / 4 >= 80, 750 / 2 >= 256) vs full decode +
    PIL resize of the whole image + numpy center crop. Measured mean |diff| 0.74
    (landscape, DCT scale 4) and 0.47 (large, scale 2); max 5 levels."""
    data = jpegs[name]
    full = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = full.size
    new_w, new_h = int(resize * width / height), resize  # both test images are landscape
    assert height <= width
    resized = np.asarray(full.resize((new_w, new_h), Image.BILINEAR))
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    ref = resized[top : top + size, left : left + size]
    out = decode_eval(data, size=size, resize=resize)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref).mean() < 1.5
    # Resize-with-box vs resize-then-slice: the same filter taps up to float rounding.
    assert np.abs(eval_transform(np.asarray(full), size=size, resize=resize).astype(int) - ref).max() <= 1


def test_decode_eval_rejects_size_larger_than_resize(jpegs):
    with pytest.raises(ValueError, match="larger"):
        decode_eval(jpegs["landscape"], size=300, resize=256)


# --- modes and bad bytes -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gray", "cmyk", "png", "palette", "rgba"])
def test_any_mode_gives_rgb_uint8(jpegs, name):
    data = jpegs[name]
    for out in (decode_train(data, np.random.default_rng(0), size=64), decode_eval(data, size=64, resize=72)):
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    if name == "gray":
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    if name in ("cmyk", "rgba"):  # same content as the RGB landscape
        ref = decode_eval(jpegs["landscape"], size=64, resize=72)
        assert np.abs(out.astype(int) - ref).mean() < 3


def test_array_inputs_gray_and_validation():
    gray = _natural(90, 120, 6)[..., 0]
    for arr in (gray, gray[..., None]):
        out = train_transform(arr, np.random.default_rng(0), size=32)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        assert eval_transform(arr, size=32, resize=40).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="uint8"):
        eval_transform(gray.astype(np.float32), size=32, resize=40)


@pytest.mark.parametrize(
    "cut", [lambda d: d[: len(d) // 2], lambda d: d[:-2], lambda d: d[:300]], ids=["half", "no-eoi", "header"]
)
def test_truncated_jpeg_raises(jpegs, cut):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    data = cut(jpegs["landscape"])
    with pytest.raises(UnreadableImage, match=r"(?i)truncated"):
        decode_train(data, np.random.default_rng(0))
    with pytest.raises(UnreadableImage, match=r"(?i)truncated"):
        decode_train(data, np.random.default_rng(0), draft=False)
    with pytest.raises(UnreadableImage, match=r"(?i)truncated"):
        decode_eval(data)


def test_truncated_png_and_garbage_raise(jpegs):
    rng = np.random.default_rng(0)
    for data in (rng.bytes(5000), b"", jpegs["png"][: len(jpegs["png"]) // 2]):
        with pytest.raises(UnreadableImage) as info:
            decode_train(data, rng)
        assert isinstance(info.value, ValueError)
        with pytest.raises(UnreadableImage):
            decode_eval(data)
