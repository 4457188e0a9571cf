"""Request and response bodies of the REST API (they make the OpenAPI document)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator


def to_epoch(t: dt.datetime) -> float:
    """Seconds since the epoch; naive datetimes are taken as UTC."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def from_epoch(s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(s, tz=dt.timezone.utc)


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
    timestamp: dt.datetime
    """Capture time: ISO 8601 (naive = UTC) or epoch seconds."""
    external_id: str | None = Field(default=None, min_length=1, max_length=256)
    """Your id; adding it again returns the existing item (idempotent)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free JSON returned with matches."""


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
    timestamp: dt.datetime
    metadata: dict[str, Any]
    attributes: dict[str, AttributePrediction]


class SearchParams(BaseModel):
    """Search options (multipart form fields beside the image)."""

    k: int = Field(default=10, ge=1)
    """Number of matches."""
    cameras: list[str] | None = None
    """Only these cameras (repeat the field for several)."""
    exclude_cameras: list[str] | None = None
    """Never these cameras."""
    time_from: AwareDatetime | None = None
    """Earliest timestamp, inclusive (ISO 8601 with time zone)."""
    time_to: AwareDatetime | None = None
    """Latest timestamp, exclusive (ISO 8601 with time zone)."""
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Minimum cosine score."""
    rerank: bool = False
    """Re-rank the shortlist with k-reciprocal re-ranking."""

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
    """Euclidean distance sqrt(2 - 2 score), or the re-ranked distance with rerank=true."""


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
    galleries: list[GallerySummary]


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


class JobsResponse(BaseModel):
    jobs: list[JobResponse]
