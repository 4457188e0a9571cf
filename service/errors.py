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
    "JobNotFound",
    "ManifestError",
    "ModelMismatch",
    "Overloaded",
    "RequestTooLarge",
    "ServiceError",
    "Unauthorized",
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


class RequestTooLarge(InvalidInput):
    """A request asks for more work than a setting allows (e.g. its decoded-pixel budget)."""

    code = "payload_too_large"


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


class CropNotFound(ServiceError):
    """The item exists but has no stored crop (added before crops were kept, or lost)."""

    code = "crop_not_found"


class NotReindexable(ServiceError):
    """A gallery cannot be re-indexed now (no stored crops, or a re-index already runs)."""

    code = "not_reindexable"


class LocalDistanceUnavailable(ServiceError):
    """A search asked for AlignedReID's local distance, but the served model has no ``local``
    output or the gallery's items were stored without local features."""

    code = "local_distance_unavailable"


class ModelMismatch(ServiceError):
    """A gallery was built with another model (manifest sha256 or embedding dimension)."""

    code = "model_mismatch"


class JobNotFound(ServiceError):
    """No bulk-indexing job with that id."""

    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")
        self.job_id = job_id


class Overloaded(ServiceError):
    """The service is at capacity (a bounded queue is full); the client should retry later."""

    code = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthorized(ServiceError):
    """The endpoint needs an API key and the request has none, or a wrong one."""

    code = "unauthorized"
