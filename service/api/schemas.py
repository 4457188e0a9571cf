"""Request and response bodies of the REST API (they make the OpenAPI document)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Json,
    JsonValue,
    field_validator,
)

from reidcore import timestamps


def to_epoch(t: dt.datetime) -> float:
    """Seconds since the epoch; naive datetimes are taken as UTC."""
    return timestamps.to_epoch(t)


def from_epoch(s: float) -> dt.datetime:
    """A stored time as a datetime; times an older version stored out of range are clamped."""
    return timestamps.to_datetime(s)


def from_epoch_or_unknown(s: float) -> dt.datetime | None:
    """:func:`from_epoch`, or None for an unknown time (stored as NaN)."""
    return None if math.isnan(s) else from_epoch(s)


def _representable(v: dt.datetime | None) -> dt.datetime | None:
    """Only times a datetime <-> epoch seconds round trip can represent (422 otherwise)."""
    if v is not None:
        timestamps.to_epoch(v)  # ValueError names the value; pydantic names the field
    return v


class ErrorBody(BaseModel):
    """What went wrong."""

    code: str = Field(examples=["gallery_not_found"])
    """Stable machine-readable code."""
    message: str
    """Human-readable explanation naming the value at fault."""
    details: list[dict[str, Any]] | None = None
    """Per-field problems for validation errors."""


class ErrorResponse(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorBody


class AttributePrediction(BaseModel):
    """One attribute's predicted class."""

    label: str
    """Predicted class name."""
    probability: float
    """Its probability."""


class AttributesResponse(BaseModel):
    """Per attribute of the model's schema: the predicted class and its probability."""

    attributes: dict[str, AttributePrediction]


class Embedding(BaseModel):
    """One image's embedding."""

    filename: str | None
    embedding: list[float]


class EmbedResponse(BaseModel):
    """Embeddings in the order of the uploaded images."""

    model: str
    """Model name and version."""
    dim: int
    embeddings: list[Embedding]


class ItemInput(BaseModel):
    """Metadata of one image added to a gallery (same order as the uploaded files)."""

    model_config = ConfigDict(extra="forbid")

    camera: str = Field(min_length=1, max_length=128)
    """Camera id."""
    timestamp: dt.datetime | None = None
    """Capture time: ISO 8601 (naive = UTC) or epoch seconds; null or absent: unknown."""
    external_id: str | None = Field(default=None, min_length=1, max_length=256)
    """Your id; adding it again returns the existing item (idempotent)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free JSON returned with matches."""

    _timestamp_in_range = field_validator("timestamp")(_representable)


class AddedItem(BaseModel):
    """Outcome for one added image."""

    id: int
    external_id: str | None
    created: bool
    """False when the external id already existed: nothing was added."""


class AddItemsResponse(BaseModel):
    gallery: str
    items: list[AddedItem]


class ItemResponse(BaseModel):
    """A stored gallery item."""

    id: int
    external_id: str | None
    camera: str
    timestamp: dt.datetime | None
    """Capture time; null when unknown (such items never match a time filter)."""
    time_kind: Literal["datetime", "offset"] | None = None
    """How to read ``timestamp``: ``datetime`` (wall clock) or ``offset`` (seconds from the
    start of a recording, counted from 1970-01-01T00:00:00Z: dataset frame times; set by
    ``"time_kind": "offset"`` in the item's metadata); null when the time is unknown."""
    metadata: dict[str, Any]
    attributes: dict[str, AttributePrediction]
    image_url: str | None = None
    """Path of the item's stored crop, ``/v1/galleries/{gallery}/items/{id}/image`` (a JPEG
    thumbnail covering the model's input size); null for items added before crops were kept."""


class ReindexRequest(BaseModel):
    """Options of a re-index (JSON body, optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON true/false, not 0 or "no"

    allow_partial: bool = False
    """Re-index even when some items have no stored crop (they are left out of the new
    version and reported as failures); without it such a gallery is refused with 409."""


def null_form(v: Any) -> Any:
    """An optional multipart field sent as ``null`` or empty (a JSON null has no other form in
    a multipart body) is absent."""
    if v in ("", "null") or (isinstance(v, list) and v in ([""], ["null"])):
        return None
    return v


NULL_FORM = BeforeValidator(null_form)
"""Marks optional multipart form fields: ``null`` or empty means absent."""


def iso_time(v: Any) -> Any:
    """A search bound is an ISO 8601 time, as the schema says (pydantic alone would take
    a number as epoch seconds)."""
    if isinstance(v, int | float) or (isinstance(v, str) and not _ISO_DATE.match(v)):
        raise ValueError("an ISO 8601 date-time with time zone is expected")
    return v


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
ISO_TIME = BeforeValidator(iso_time)
CameraId = Annotated[str, Field(min_length=1, max_length=128)]
_CAMERA_SCHEMA: dict[str, JsonValue] = {"type": "string", "minLength": 1, "maxLength": 128}
REPEATED_CAMERAS = Field(
    json_schema_extra={
        "anyOf": [{"type": "array", "items": _CAMERA_SCHEMA}, _CAMERA_SCHEMA, {"type": "null"}]
    }
)
"""A repeatable multipart field: sent once, it is one value, which the schema must allow."""


AttributeName = Annotated[str, Field(min_length=1, max_length=64)]
WantedAttributes = Annotated[dict[AttributeName, AttributeName], Field(min_length=1, max_length=64)]
"""Wanted attribute values: attribute (or colour group) name -> value."""


class SearchParams(BaseModel):
    """Search options (multipart form fields beside the image)."""

    k: int = Field(default=10, ge=1)
    """Number of matches."""
    cameras: Annotated[list[CameraId] | None, NULL_FORM, REPEATED_CAMERAS] = None
    """Only these cameras (repeat the field for several)."""
    exclude_cameras: Annotated[list[CameraId] | None, NULL_FORM, REPEATED_CAMERAS] = None
    """Never these cameras."""
    time_from: Annotated[AwareDatetime | None, ISO_TIME, NULL_FORM] = None
    """Earliest timestamp, inclusive (ISO 8601 with time zone)."""
    time_to: Annotated[AwareDatetime | None, ISO_TIME, NULL_FORM] = None
    """Latest timestamp, exclusive (ISO 8601 with time zone)."""
    min_score: Annotated[Annotated[float, Field(ge=-1.0, le=1.0)] | None, NULL_FORM] = None
    """Minimum cosine score."""
    rerank: bool = False
    """Re-rank the shortlist with k-reciprocal re-ranking."""
    qe_n: Annotated[Annotated[int, Field(ge=1)] | None, NULL_FORM] = Field(
        default=None,
        description="α-QE (Radenović et al., TPAMI 2018): the query is replaced by the weighted "
        "mean of itself and its top qe_n matches (weights similarity^qe_alpha, re-normalised) "
        "and the shortlist scored again. Absent: off. At most REID_QUERY_TRICKS_MAX_N; not "
        "combined with rerank.",
    )
    qe_alpha: float = Field(
        default=3.0, ge=0.0, le=10.0, description="α-QE weight exponent (0: plain average QE)."
    )
    dba_n: Annotated[Annotated[int, Field(ge=1)] | None, NULL_FORM] = Field(
        default=None,
        description="Database-side augmentation: each candidate is scored as the weighted mean "
        "of itself and its dba_n nearest gallery items (weights similarity^dba_alpha), computed "
        "for the shortlist at search time. Absent: off. At most REID_QUERY_TRICKS_MAX_N.",
    )
    dba_alpha: float = Field(default=3.0, ge=0.0, le=10.0, description="DBA weight exponent.")
    camera_norm: bool = Field(
        default=False,
        description="Camera-aware normalisation: each gallery camera's mean embedding is "
        "subtracted from its items, and query_camera's from the query, before scoring.",
    )
    query_camera: Annotated[CameraId | None, NULL_FORM] = Field(
        default=None,
        description="Camera that took the query image (used by camera_norm; a camera without "
        "gallery items is ignored).",
    )
    attributes: Annotated[Json[WantedAttributes] | None, NULL_FORM] = None
    """Only items whose predicted attributes have these values: a JSON object such as
    ``{"gender": "female", "backpack": "yes"}`` (names and values of the model's attribute
    schema, ``GET /v1/attribute-schema``)."""
    local_distance: bool = Field(
        default=False,
        description="AlignedReID's test-time distance (Zhang et al. 2017, Sec. 3.1/4.3): the "
        "top REID_LOCAL_DISTANCE_SHORTLIST items by global score are re-scored with global + "
        "REID_LOCAL_DISTANCE_WEIGHT x aligned local distance (default 1: the paper's sum), "
        "before re-ranking when rerank is also true. Needs a model exported with "
        "--include-local and items added with it (else 409); not combined with qe_n, dba_n "
        "or camera_norm.",
    )

    _times_in_range = field_validator("time_from", "time_to")(_representable)

    @field_validator("cameras", "exclude_cameras")
    @classmethod
    def _no_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not c for c in v):
            raise ValueError("camera ids must not be empty")
        return v


class MatchResponse(BaseModel):
    """One match, best first."""

    item: ItemResponse
    score: float
    """Cosine similarity to the query."""
    distance: float
    """Euclidean distance sqrt(2 - 2 score), or the re-ranked distance with rerank=true, or the
    distance after qe_n / dba_n / camera_norm, or global + weight x local distance with
    local_distance=true (the order of the matches)."""


class SearchResponse(BaseModel):
    gallery: str
    reranked: bool
    matches: list[MatchResponse]


class GalleryStatsResponse(BaseModel):
    name: str
    items: int
    cameras: dict[str, int]
    """Items per camera."""
    dim: int
    model_id: str
    """sha256 of the model the gallery was built with."""
    index: str
    time_min: dt.datetime | None
    time_max: dt.datetime | None


class GallerySummary(BaseModel):
    name: str
    status: str
    """open, or model_mismatch (built with another model: refused)."""
    items: int
    error: str | None = None


class GalleriesResponse(BaseModel):
    galleries: list[GallerySummary]


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    """Whether the service can answer, and with what."""

    ready: bool
    model: dict[str, Any]
    """Name, version, sha256, dim, attributes."""
    providers: list[str]
    """Execution providers the ONNX Runtime session really got, best first."""
    faiss_gpus: int
    galleries: list[GallerySummary] | None
    """Every gallery's state; null when seeing them needs a key the request lacks."""


class JobFailure(BaseModel):
    """One archive member that was not indexed."""

    member: str
    """Its path inside the archive."""
    reason: str
    """Why: not an image, unsafe path, over the size limit, no camera/timestamp..."""


class JobResponse(BaseModel):
    """A bulk-indexing job and its progress."""

    id: str
    gallery: str
    source: str
    """Uploaded archive's file name (or the folder ``reid index`` read)."""
    state: str
    """queued, running, succeeded, failed or cancelled."""
    total: int | None
    """Members to index (null until the archive has been scanned)."""
    done: int
    """Members indexed: added plus already present."""
    added: int
    """New gallery items."""
    duplicates: int
    """Members whose content the gallery already held (not added twice)."""
    failed: int
    images_per_second: float | None
    """Members processed per second of running time."""
    error: str | None
    """Why the whole job failed, if it did."""
    created: dt.datetime
    started: dt.datetime | None
    finished: dt.datetime | None
    archive_sha256: str | None
    failures: list[JobFailure] | None = None
    """Every failed member with its reason (omitted in job lists)."""
    naming: dict[str, Any] | None = None
    """How camera and time were found for names with no convention: ``camera_level``
    (null: the file's own folder), ``time`` (auto, exif, name, mtime, none),
    ``time_format``, ``time_regex``, ``fps``."""


class JobsResponse(BaseModel):
    jobs: list[JobResponse]


IMAGE_TYPES = "image/jpeg, image/png, image/webp"
"""What the image fields of multipart bodies accept (OpenAPI ``encoding.contentType``)."""
ARCHIVE_TYPES = (
    "application/x-tar, application/gzip, application/x-bzip2, application/x-xz, application/zip"
)
"""What the archive field of a job submission accepts."""


def multipart(**content_types: str) -> dict[str, Any]:
    """``openapi_extra`` of a route: the content types each file field of its multipart body
    accepts (so that clients and contract tests know a field takes an image, not any bytes)."""
    encoding = {field: {"contentType": ct} for field, ct in content_types.items()}
    return {"requestBody": {"content": {"multipart/form-data": {"encoding": encoding}}}}


def links(status: int, description: str, **targets: dict[str, str]) -> dict[int | str, Any]:
    """``responses`` entry declaring OpenAPI links from a response to other operations:
    ``targets`` maps an operationId to its parameters (runtime expressions)."""
    return {
        status: {
            "description": description,
            "links": {
                op: {"operationId": op, "parameters": params} for op, params in targets.items()
            },
        }
    }


def with_limits(
    doc: dict[str, Any], field_maxima: Mapping[str, int], max_images: int
) -> dict[str, Any]:
    """The OpenAPI document ``doc`` stating the limits the settings put on request fields,
    which the static models cannot know: ``field_maxima`` (e.g. the largest ``k``) wherever a
    request model has such a field, and the most images per request."""
    for body in doc.get("components", {}).get("schemas", {}).values():
        properties = body.get("properties", {})
        for name, maximum in field_maxima.items():
            if name in properties:
                for branch in properties[name].get("anyOf", [properties[name]]):
                    if branch.get("type") == "integer":
                        branch["maximum"] = maximum
        images = properties.get("images")
        if images is not None and images.get("type") == "array":
            images["maxItems"] = max_images
    return inherit_search_limits(doc)


def inherit_search_limits(doc: dict[str, Any]) -> dict[str, Any]:
    """The settings' limits stated on ``SearchParams`` fields, stated on the same fields of
    the bodies that extend it (``TrajectoryParams``) too."""
    schemas = doc.get("components", {}).get("schemas", {})
    base = schemas.get("SearchParams", {}).get("properties", {})
    for name, prop in schemas.get("TrajectoryParams", {}).get("properties", {}).items():
        for key in ("maximum", "maxItems", "maxLength"):
            if key in base.get(name, {}) and key not in prop:
                prop[key] = base[name][key]
    return doc
