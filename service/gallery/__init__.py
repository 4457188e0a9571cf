"""Persistent galleries: SQLite metadata and embeddings, in-memory exact or FAISS search."""

from service.gallery.manager import GalleryManager, GalleryStatus, check_name
from service.gallery.search import IndexOptions, exact_search, scores_to_distances
from service.gallery.store import (
    AddResult,
    Gallery,
    GalleryStats,
    Item,
    Match,
    NewItem,
    RerankParams,
    SearchFilter,
)

__all__ = [
    "AddResult",
    "Gallery",
    "GalleryManager",
    "GalleryStats",
    "GalleryStatus",
    "IndexOptions",
    "Item",
    "Match",
    "NewItem",
    "RerankParams",
    "SearchFilter",
    "check_name",
    "exact_search",
    "scores_to_distances",
]
