"""Domain exceptions of the service.

They are raised anywhere (manifest loading, runtime, gallery store, request parsing) and
translated to HTTP in exactly one place, :mod:`service.api.errors`. Each carries a stable
machine-readable ``code``; the HTTP status lives in the translation table, not here.
"""

from __future__ import annotations

from reidcore.preprocess import ImageDecodeError

__all__ = [
    "GalleryNotFound",
    "ImageDecodeError",
    "InvalidInput",
    "ItemNotFound",
    "ManifestError",
    "ModelMismatch",
    "ServiceError",
    "UnsupportedImageFormat",
]


class ServiceError(Exception):
    """Base class of the service's domain errors."""

    code = "service_error"


class ManifestError(ServiceError):
    """A model folder is missing files, has an invalid manifest or a wrong checksum."""

    code = "invalid_model_folder"


class InvalidInput(ServiceError):
    """A request value is wrong in a way the request schema cannot express."""

    code = "invalid_input"


class UnsupportedImageFormat(ImageDecodeError):
    """The bytes are a readable file, but not JPEG, PNG or WebP."""


class GalleryNotFound(ServiceError):
    """No gallery of that name exists in the data directory."""

    code = "gallery_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"gallery {name!r} does not exist")
        self.name = name


class ItemNotFound(ServiceError):
    """The gallery has no item with that id."""

    code = "item_not_found"

    def __init__(self, gallery: str, item_id: int) -> None:
        super().__init__(f"gallery {gallery!r} has no item {item_id}")
        self.gallery = gallery
        self.item_id = item_id


class ModelMismatch(ServiceError):
    """A gallery was built with another model (manifest sha256 or embedding dimension)."""

    code = "model_mismatch"
