"""Persistent galleries behind one storage seam: the local engine (SQLite + in-memory exact
or FAISS search) or Milvus; search filters and re-ranking above it."""

from service.gallery.backend import GalleryBackend, GalleryMissing, GalleryStore
from service.gallery.factory import BackendConfig, MilvusOptions, local_backend, open_backend
from service.gallery.gallery import Gallery
from service.gallery.manager import GalleryManager, GalleryStatus, check_name
from service.gallery.search import IndexOptions, exact_search, scores_to_distances
from service.gallery.types import (
    AddResult,
    GalleryStats,
    Hits,
    Item,
    Match,
    NewItem,
    RerankParams,
    SearchFilter,
)

__all__ = [
    "AddResult",
    "BackendConfig",
    "Gallery",
    "GalleryBackend",
    "GalleryManager",
    "GalleryMissing",
    "GalleryStats",
    "GalleryStatus",
    "GalleryStore",
    "Hits",
    "IndexOptions",
    "Item",
    "Match",
    "MilvusOptions",
    "NewItem",
    "RerankParams",
    "SearchFilter",
    "check_name",
    "exact_search",
    "local_backend",
    "open_backend",
    "scores_to_distances",
]
