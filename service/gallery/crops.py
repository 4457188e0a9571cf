"""The crop kept with every gallery item: a bounded JPEG thumbnail (and optionally the
original upload), made from the image the model saw.

Size: by default the thumbnail is the smallest downscale of the image that still *covers*
the model's input size (width >= model width and height >= model height, aspect ratio
kept; never upscaled). Re-embedding such a thumbnail after a model upgrade
(``POST /v1/galleries/{g}/reindex``) gives what embedding the original would, up to JPEG
loss, as long as the new model's input is no larger; a smaller configured size, or a new
model with a larger input, re-embeds an upscaled image instead. Keep the original bytes
(``crop_keep_original``) for an exact re-index whatever the new model's size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class CropConfig:
    """How crops are made (settings ``crop_*``)."""

    width: int = 0
    """Thumbnail width to cover; 0: the model's input width."""
    height: int = 0
    """Thumbnail height to cover; 0: the model's input height."""
    quality: int = 90
    """JPEG quality."""
    keep_original: bool = False
    """Also keep the uploaded bytes as they came."""


@dataclass(frozen=True)
class Crop:
    """What is stored for one item."""

    thumbnail: bytes
    """JPEG bytes."""
    original: bytes | None = None


def thumbnail_size(size: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """The smallest (w, h) of ``size``'s aspect ratio covering ``width`` x ``height``, never
    larger than ``size``."""
    w, h = size
    scale = min(1.0, max(width / w, height / h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def make_crop(
    image: Image.Image, original: bytes | None, config: CropConfig, model_size: tuple[int, int]
) -> Crop:
    """The crop of one decoded image (``original``: its file bytes, kept when configured);
    ``model_size``: the model's input (width, height), the default size to cover."""
    rgb = image.convert("RGB")
    cover = (config.width or model_size[0], config.height or model_size[1])
    target = thumbnail_size(rgb.size, *cover)
    if target != rgb.size:
        rgb = rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=config.quality)
    return Crop(buf.getvalue(), original if config.keep_original else None)
