"""What a gallery stores and returns, whatever engine stores it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NewItem:
    """What a caller supplies for one gallery item (besides its embedding)."""

    camera: str
    """Camera id."""
    timestamp: float
    """Capture time, seconds since the Unix epoch (UTC); NaN when unknown (never matched by a
    time filter)."""
    external_id: str | None = None
    """Caller's id; adding the same external id again returns the existing item."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Caller's JSON metadata, returned with matches."""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Attributes predicted by the model: name -> {"label", "probability", "probabilities"}
    (every class's, in schema order; :mod:`service.gallery.attribute_search`)."""
    crop: str | None = None
    """Blob key of the item's stored crop (:mod:`service.gallery.blobs`); set by
    :meth:`service.gallery.Gallery.add`, None for none."""
    local: np.ndarray | None = field(default=None, compare=False)
    """AlignedReID stripe features [H, c] float32 when the model has a ``local`` output (kept
    for ``local_distance`` searches, :mod:`service.gallery.local_search`); None for none."""


@dataclass(frozen=True)
class Item:
    """A stored gallery item."""

    id: int
    camera: str
    timestamp: float
    external_id: str | None
    metadata: dict[str, Any]
    attributes: dict[str, Any]
    crop: str | None = None
    """Blob key of its stored crop; None for items stored before crops were kept."""


@dataclass(frozen=True)
class AddResult:
    """Outcome of adding one item."""

    id: int
    external_id: str | None
    created: bool
    """False when the external id already existed (nothing was written)."""


@dataclass(frozen=True)
class SearchFilter:
    """Exact restrictions on which items may match."""

    cameras: frozenset[str] | None = None
    """Only these cameras (None: any)."""
    exclude_cameras: frozenset[str] = frozenset()
    """Never these cameras."""
    time_from: float | None = None
    """Earliest timestamp, inclusive (epoch seconds)."""
    time_to: float | None = None
    """Latest timestamp, exclusive (epoch seconds)."""
    min_score: float | None = None
    """Minimum cosine score."""

    def is_empty(self) -> bool:
        """True when every item may match."""
        return (
            self.cameras is None
            and not self.exclude_cameras
            and self.time_from is None
            and self.time_to is None
            and self.min_score is None
        )


@dataclass(frozen=True)
class RerankParams:
    """k-reciprocal re-ranking of a search."""

    shortlist: int = 100
    """Candidates (top by plain score) that are re-ranked."""
    mode: str = "exact"
    """``exact``: the full algorithm's distances on query + whole gallery, for the shortlist
    and its neighbours' lists (:mod:`service.gallery.exact_rerank`); used for unfiltered
    searches. ``shortlist``: the algorithm on query + shortlist alone (always used under a
    filter, where the whole gallery is not the set being ranked)."""
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


@dataclass(frozen=True)
class Match:
    """One search hit."""

    item: Item
    score: float
    """Cosine similarity to the query."""
    distance: float
    """Euclidean distance, or the re-ranked distance when re-ranking ran."""


@dataclass(frozen=True)
class GalleryStats:
    """Size and provenance of a gallery."""

    name: str
    items: int
    cameras: dict[str, int]
    dim: int
    model_id: str
    engine: str
    """Storage engine and index kind, e.g. ``local:flat`` or ``milvus:HNSW``."""
    time_min: float | None
    time_max: float | None


@dataclass(frozen=True)
class Hits:
    """Search results of one query from a storage engine, best first."""

    ids: np.ndarray
    """Item ids (int64)."""
    scores: np.ndarray
    """Cosine similarity to the query (float32, descending)."""
    vectors: np.ndarray | None = None
    """The hits' embeddings [m, dim] when the search asked for them."""

    @classmethod
    def empty(cls, dim: int = 0) -> Hits:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, dim), np.float32))

    def take(self, index: np.ndarray) -> Hits:
        """The hits at ``index`` (a boolean mask or positions), in that order."""
        vecs = None if self.vectors is None else self.vectors[index]
        return Hits(self.ids[index], self.scores[index], vecs)
