"""Uploaded files -> decoded images, and model outputs -> response fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import UploadFile
from PIL import Image

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import PreprocessConfig
from service.errors import InvalidInput
from service.gallery.attribute_search import stored_prediction
from service.images import check_pixel_budget, decode_upload


def read_images(
    files: Sequence[UploadFile],
    max_pixels: int,
    max_count: int,
    *,
    budget: int | None = None,
    preprocess: PreprocessConfig | None = None,
) -> list[Image.Image]:
    """Decode every upload once, shrunk towards ``preprocess``'s input size as it is decoded;
    refuses (413) images whose headers add up to more than ``budget`` pixels. Errors name the
    offending file."""
    if len(files) > max_count:
        raise InvalidInput(f"{len(files)} images in one request; the limit is {max_count}")
    blobs = [f.file.read() for f in files]
    counted = None if budget is None else check_pixel_budget(blobs, budget)
    images = []
    for i, f in enumerate(files):
        label = f"image {i} ({f.filename!r})" if len(files) > 1 else f"image {f.filename!r}"
        pixels = None if counted is None else counted[i]
        images.append(decode_upload(blobs[i], max_pixels, label, preprocess, pixels))
        blobs[i] = b""
    return images


def predictions(schema: AttributeSchema, probs: dict[str, np.ndarray], row: int) -> dict[str, Any]:
    """Per attribute: {"label": predicted class, "probability": its probability,
    "probabilities": every class's, in schema order} (what a gallery item stores; the
    attribute search reads the last one)."""
    return {attr.name: stored_prediction(attr, probs[attr.name][row]) for attr in schema}
