"""Pick the gallery storage engine from settings: ``local`` (default) or ``milvus``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.gallery.backend import GalleryBackend
from service.gallery.search import IndexOptions


@dataclass(frozen=True)
class MilvusOptions:
    """Where the Milvus engine is and how its collections are indexed."""

    uri: str = ""
    """``http://host:19530`` for a Milvus server or cluster; a file path (``*.db``) for Milvus
    Lite in-process; empty: Milvus Lite at ``<data>/milvus.db``."""
    token: str = ""
    """``user:password`` or an API key; empty: none."""
    db_name: str = ""
    """Milvus database; empty: the server's default."""
    index_type: str = "FLAT"
    """FLAT (exact), HNSW, IVF_FLAT, ... (Milvus Lite supports FLAT, IVF_FLAT, HNSW)."""
    index_params: dict[str, Any] = field(default_factory=dict)
    """Build parameters of the index, e.g. ``{"M": 32, "efConstruction": 200}``."""
    search_params: dict[str, Any] = field(default_factory=dict)
    """Search parameters, e.g. ``{"ef": 128}`` or ``{"nprobe": 32}``."""
    consistency: str = "Strong"
    """Consistency level of searches and reads (Strong: a write acknowledged by any replica
    is seen by the next search on every replica)."""


@dataclass(frozen=True)
class BackendConfig:
    """Which engine holds the galleries, and its options."""

    kind: str = "local"
    data_dir: Path = Path("data")
    index: IndexOptions = field(default_factory=IndexOptions)
    """The local engine's index."""
    milvus: MilvusOptions = field(default_factory=MilvusOptions)


def open_backend(config: BackendConfig) -> GalleryBackend:
    """The engine ``config.kind`` names (imports Milvus's client only when asked for)."""
    if config.kind == "local":
        from service.gallery.store import LocalBackend

        return LocalBackend(config.data_dir, config.index)
    if config.kind == "milvus":
        from service.gallery.milvus_store import MilvusBackend

        return MilvusBackend(config.milvus, config.data_dir)
    raise ValueError(f"unknown gallery backend {config.kind!r}; valid: local, milvus")


def local_backend(data_dir: Path, index: IndexOptions | None = None) -> GalleryBackend:
    """The local engine over ``data_dir`` (tests, benchmarks, one-machine tools)."""
    return open_backend(BackendConfig("local", Path(data_dir), index or IndexOptions()))
