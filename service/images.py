"""Image bytes -> decoded image, recognising JPEG, PNG and WebP by their bytes.

Memory per request is bounded by settings, not by what clients send: every image's size is
read from its header first, and a request whose images add up to more than its decoded-pixel
budget is refused before anything is decoded (:class:`RequestTooLarge`, 413). Images are then
decoded one at a time and shrunk as they are decoded (:func:`reidcore.preprocess.decode_image`
with the model's input size), so at most one image per request is ever held at full size.

Across requests, the pixels being decoded at once are capped process-wide by one
:class:`PixelPool` (setting ``max_decoding_pixels``): concurrent requests of huge images wait
for each other's decoding instead of adding up in memory.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from PIL import Image

from reidcore.preprocess import PreprocessConfig, decode_image
from service.errors import ImageDecodeError, RequestTooLarge, UnsupportedImageFormat

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


def header_pixels(data: bytes) -> int:
    """Width x height as the image's header declares it (0 when the header is unreadable:
    decoding will then say what is wrong)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0  # decode_upload reports what is wrong
    return w * h


class PixelPool:
    """At most ``capacity`` pixels being decoded at once in this process.

    A decode holds its image's header pixel count (capped at ``capacity``, so one image larger
    than the pool still runs, alone) until it is done; others wait. Small images, the normal
    traffic, never wait: a pool of 2 x 4096^2 pixels holds a thousand 256x128 crops at once.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        need = max(0, min(pixels, self.capacity))
        with self._cond:
            self._cond.wait_for(lambda: self.used + need <= self.capacity)
            self.used += need
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= need
                self._cond.notify_all()


_decoding = PixelPool(2 * 4096 * 4096)


def set_decoding_pixels(capacity: int) -> PixelPool:
    """Make a new process-wide decode pool of ``capacity`` pixels (the service calls this
    once at start from setting ``max_decoding_pixels``); returns it."""
    global _decoding
    _decoding = PixelPool(capacity)
    return _decoding


def check_pixel_budget(blobs: Sequence[bytes], budget: int) -> list[int]:
    """Refuse (413) a request whose images declare more than ``budget`` pixels in all; else
    each image's header pixels (:func:`header_pixels`), for :func:`decode_upload`'s
    ``pixels``, so each header is parsed once."""
    counts = [header_pixels(b) for b in blobs]
    total = sum(counts)
    if total > budget:
        raise RequestTooLarge(
            f"the images of this request add up to {total} pixels, over the per-request "
            f"budget of {budget} (setting max_request_pixels)"
        )
    return counts


def decode_upload(
    data: bytes,
    max_pixels: int,
    label: str = "image",
    preprocess: PreprocessConfig | None = None,
    pixels: int | None = None,
) -> Image.Image:
    """Decode one uploaded image (whatever content type it was sent with).

    With ``preprocess``, an image many times the model's input size is shrunk as it is
    decoded (see :func:`reidcore.preprocess.decode_image`). Raises :class:`ImageDecodeError`
    (or :class:`UnsupportedImageFormat`) whose message names ``label`` and says what was
    wrong: empty, not an image, another format, truncated, or over ``max_pixels``.

    ``pixels``: the image's header pixels when the caller has read them already
    (:func:`check_pixel_budget`); the decode pool holds that many. None: read here.
    """
    if not data:
        raise ImageDecodeError(f"{label}: empty file (zero bytes received)")
    if sniff_format(data) is None:
        raise UnsupportedImageFormat(
            f"{label}: not a JPEG, PNG or WebP image (first bytes {data[:8]!r})"
        )
    target = None if preprocess is None else (preprocess.width, preprocess.height)
    try:
        held = header_pixels(data) if pixels is None else pixels
        with _decoding.hold(held):
            return decode_image(data, max_pixels=max_pixels, target=target)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{label}: {exc}") from None
