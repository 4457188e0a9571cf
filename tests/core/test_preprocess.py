from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from reidcore.preprocess import (
    ImageDecodeError,
    PreprocessConfig,
    decode_image,
    preprocess_batch,
    to_array,
)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_to_array_matches_hand_computation() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(256, 128, 3), dtype=np.uint8)
    cfg = PreprocessConfig()
    x = to_array(Image.fromarray(arr), cfg)
    assert x.shape == (3, 256, 128) and x.dtype == np.float32
    ref = (arr / 255.0 - np.array(cfg.mean)) / np.array(cfg.std)
    np.testing.assert_allclose(x, ref.transpose(2, 0, 1), atol=1e-5)


def test_bgr_flips_channels_and_resize_applies() -> None:
    arr = np.zeros((64, 32, 3), dtype=np.uint8)
    arr[..., 0] = 255  # pure red
    cfg = PreprocessConfig(height=32, width=16, mean=(0, 0, 0), std=(1, 1, 1), channel_order="BGR")
    x = to_array(Image.fromarray(arr), cfg)
    assert x.shape == (3, 32, 16)
    np.testing.assert_allclose(x[2], 1.0)  # red ends up last
    np.testing.assert_allclose(x[0], 0.0)


def test_decode_roundtrip_and_batch() -> None:
    arr = np.full((20, 10, 3), 128, dtype=np.uint8)
    img = decode_image(_png(arr))
    assert img.mode == "RGB" and img.size == (10, 20)
    batch = preprocess_batch([img, img], PreprocessConfig(height=8, width=4))
    assert batch.shape == (2, 3, 8, 4) and batch.dtype == np.float32


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a readable image"),
    ],
)
def test_decode_rejects_bad_bytes(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_decode_rejects_truncated_and_oversized() -> None:
    data = _png(np.zeros((100, 100, 3), dtype=np.uint8))
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(data, max_pixels=100 * 99)


def test_config_roundtrip_and_validation() -> None:
    cfg = PreprocessConfig(height=128, width=64, interpolation="bicubic")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig(interpolation="cubic-ish")
    with pytest.raises(ValueError, match="channel order"):
        PreprocessConfig(channel_order="RBG")


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_to_array_into_out_buffer_matches_reference(order: str) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    cfg = PreprocessConfig(
        height=40, width=30, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), channel_order=order
    )
    out = np.full((3, 40, 30), np.nan, dtype=np.float32)
    got = to_array(Image.fromarray(arr), cfg, out=out)
    assert got is out and got.dtype == np.float32
    chans = arr[..., ::-1] if order == "BGR" else arr
    ref = ((chans / 255.0 - np.array(cfg.mean)) / np.array(cfg.std)).transpose(2, 0, 1)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_non_rgb_modes_are_converted() -> None:
    gray = Image.fromarray(np.full((8, 4), 200, dtype=np.uint8), mode="L")
    x = to_array(gray, PreprocessConfig(height=8, width=4, mean=(0, 0, 0), std=(1, 1, 1)))
    np.testing.assert_allclose(x, 200 / 255, atol=1e-6)
