"""Decoding with the model's input size: near model size exactly the training path; far
larger images shrunk at decode time by integer factors, never below REDUCE_GAP x the input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from reidcore.preprocess import REDUCE_GAP, PreprocessConfig, decode_image, to_array

CFG = PreprocessConfig(height=256, width=128)
TARGET = (CFG.width, CFG.height)


def _encode(arr: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    img = Image.fromarray(arr)
    if mode is not None:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _smooth(h: int, w: int) -> np.ndarray:
    """A smooth colour gradient (a photo-like image, where shrinking changes little)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([255 * y / h, 255 * x / w, 128 + 0 * x], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize(
    "size",
    [(256, 128), (64, 32), (300, 150), (2 * REDUCE_GAP * 256 - 1, 2 * REDUCE_GAP * 128 - 1)],
)
def test_at_or_near_model_size_decoding_is_unchanged(fmt: str, size: tuple[int, int]) -> None:
    arr = np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    data = _encode(arr, fmt)
    plain, shrunk = decode_image(data), decode_image(data, target=TARGET)
    assert shrunk.size == plain.size
    np.testing.assert_array_equal(to_array(shrunk, CFG), to_array(plain, CFG))


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PNG", None), ("PNG", "RGBA"), ("PNG", "P"), ("JPEG", None)]
)
def test_large_images_are_shrunk_at_decode_and_stay_close(fmt: str, mode: str | None) -> None:
    h, w = 4096, 2048
    data = _encode(_smooth(h, w), fmt, mode)
    plain, shrunk = decode_image(data), decode_image(data, target=TARGET)
    assert plain.size == (w, h)
    # shrunk by an integer factor (reduce) or a power of two (JPEG draft), never below the gap
    assert REDUCE_GAP * CFG.width <= shrunk.width < w // 2
    assert REDUCE_GAP * CFG.height <= shrunk.height < h // 2
    diff = np.abs(to_array(shrunk, CFG) - to_array(plain, CFG)).max()
    assert diff < 0.1  # under 2.5% of the [0, 1] range, in normalised units (std ~ 0.22)


def test_shrink_factor_is_the_largest_keeping_the_gap() -> None:
    data = _encode(_smooth(256 * 10, 128 * 10), "PNG")
    # factor = min(1280 // 384, 2560 // 768) = 3; reduce keeps partial blocks (rounds up)
    assert decode_image(data, target=TARGET).size == (427, 854)
