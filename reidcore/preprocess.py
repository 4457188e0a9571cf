"""Image preprocessing shared by evaluation in training, the export parity check and the
service. One code path, parameterised by :class:`PreprocessConfig` (which the export
manifest carries), so that training-time evaluation and serving cannot drift apart.

Pipeline per image: decode -> RGB -> resize to (height, width) with PIL's ``interpolation``
-> float32 in [0, 1] -> (x - mean) / std -> channels first. ``channel_order="BGR"`` flips
the channels after decoding, for models trained on BGR input.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
CHANNEL_ORDERS = ("RGB", "BGR")


class ImageDecodeError(ValueError):
    """The bytes are not an image this project can read (or exceed the pixel limit)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input tensor."""

    height: int = 256
    """Input height in pixels."""
    width: int = 128
    """Input width in pixels."""
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    """Per-channel mean subtracted after scaling to [0, 1], in ``channel_order``."""
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    """Per-channel standard deviation divided after subtracting the mean."""
    interpolation: str = "bilinear"
    """PIL resampling filter used for the resize: one of ``INTERPOLATIONS``."""
    channel_order: str = "RGB"
    """Channel order of the model input: ``RGB`` or ``BGR``."""

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"input size must be positive, got {self.height}x{self.width}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; valid: {sorted(INTERPOLATIONS)}"
            )
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"unknown channel order {self.channel_order!r}; valid: {list(CHANNEL_ORDERS)}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values each")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


REDUCE_GAP = 3
"""An image is shrunk at decode time only by integer factors that keep it at least this many
times the model input in each dimension; at or near model size nothing changes."""


def decode_image(
    data: bytes, max_pixels: int | None = None, target: tuple[int, int] | None = None
) -> Image.Image:
    """Decode image bytes to an RGB PIL image, recognising the format by its content.

    With ``target`` (the model input's width, height), an image many times larger is shrunk
    as it is decoded (JPEG: :meth:`PIL.Image.Image.draft`, others: :meth:`~PIL.Image.Image.reduce`
    right after decoding) to no less than ``REDUCE_GAP`` times ``target``, so that only one
    full-size image is ever held; smaller images decode exactly as without ``target``.

    Raises :class:`ImageDecodeError` for empty, truncated or non-image bytes and for
    images larger than ``max_pixels`` (checked from the header, before decoding).
    """
    if not data:
        raise ImageDecodeError("empty file: zero bytes received")
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        w, h = img.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageDecodeError(
                f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}"
            )
        if target is not None and img.format == "JPEG":
            img.draft("RGB", (REDUCE_GAP * target[0], REDUCE_GAP * target[1]))
        img.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"not a readable image ({exc})") from None
    if target is not None:
        img = _shrink(img, target)
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode: grayscale, palette, CMYK and alpha through PIL's conversion;
    16-bit and 32-bit grayscale scaled from their full range (PIL would clip them at 255)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        wide = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode != "F" else max(float(wide.max()), 1.0)
        gray = np.clip(wide * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return img.convert("RGB")


def _shrink(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """``img`` reduced by the largest integer factor keeping it >= REDUCE_GAP x ``target``."""
    factor = min(img.width // (REDUCE_GAP * target[0]), img.height // (REDUCE_GAP * target[1]))
    if factor < 2:
        return img
    if img.mode not in ("L", "RGB"):  # as the full-size path: drop alpha before averaging
        img = _to_rgb(img)
    return img.reduce(factor)


@functools.lru_cache(maxsize=32)
def _affine(cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(x / 255 - mean) / std`` as one multiply-add: per-channel scale and offset [3, 1, 1]."""
    std = np.asarray(cfg.std, dtype=np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(3, 1, 1)
    offset = (-np.asarray(cfg.mean, dtype=np.float64) / std).astype(np.float32).reshape(3, 1, 1)
    return scale, offset


def to_array(img: Image.Image, cfg: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """One decoded image -> float32 array [3, H, W], normalised as ``cfg`` says.

    Computed as ``uint8 * (1 / (255 std)) - mean / std`` straight into the float32 output
    (one pass, no float intermediate in HWC order): about 9x faster than scaling, centring
    and transposing in separate passes, and equal to ``(x / 255 - mean) / std`` within
    float32 rounding. ``out`` ([3, H, W] float32) receives the result when given.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (cfg.width, cfg.height):
        img = img.resize((cfg.width, cfg.height), INTERPOLATIONS[cfg.interpolation])
    pixels = np.asarray(img)  # [H, W, 3] uint8
    if cfg.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    if out is None:
        out = np.empty((3, cfg.height, cfg.width), dtype=np.float32)
    scale, offset = _affine(cfg)
    np.multiply(pixels.transpose(2, 0, 1), scale, out=out, dtype=np.float32)  # [3, H, W]
    out += offset
    return out


def preprocess_batch(images: Sequence[Image.Image], cfg: PreprocessConfig) -> np.ndarray:
    """Decoded images -> float32 batch [N, 3, H, W]."""
    out = np.empty((len(images), 3, cfg.height, cfg.width), dtype=np.float32)
    for i, img in enumerate(images):
        to_array(img, cfg, out=out[i])
    return out
