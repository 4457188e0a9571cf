"""Image bytes -> decoded image, recognising JPEG, PNG and WebP by their bytes."""

from __future__ import annotations

import logging

from PIL import Image

from reidcore.preprocess import decode_image
from service.errors import ImageDecodeError, UnsupportedImageFormat

logger = logging.getLogger(__name__)

SUPPORTED = ("JPEG", "PNG", "WebP")


def sniff_format(data: bytes) -> str | None:
    """JPEG, PNG or WebP from the file's magic bytes; None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def decode_upload(data: bytes, max_pixels: int, label: str = "image") -> Image.Image:
    """Decode one uploaded image (whatever content type it was sent with).

    Raises :class:`ImageDecodeError` (or :class:`UnsupportedImageFormat`) whose message
    names ``label`` and says what was wrong: empty, not an image, another format,
    truncated, or over ``max_pixels``.
    """
    if not data:
        raise ImageDecodeError(f"{label}: empty file (zero bytes received)")
    if sniff_format(data) is None:
        raise UnsupportedImageFormat(
            f"{label}: not a JPEG, PNG or WebP image (first bytes {data[:8]!r})"
        )
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{label}: {exc}") from None
