"""Gallery test helpers that read galleries through the storage interface only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.gallery import (
    BackendConfig,
    Gallery,
    GalleryBackend,
    IndexOptions,
    MilvusOptions,
    local_backend,
    open_backend,
)

ENGINES = ("local", "milvus")
"""Every gallery storage engine; suites parametrised over it run against each."""


def stored(gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
    """(item ids ascending, their embeddings) of everything the gallery's engine stores."""
    return gallery.store.vectors(gallery.store.item_ids().tolist())


def stored_by_external(gallery: Gallery) -> dict[str | None, np.ndarray]:
    """External id -> embedding of every stored item."""
    ids, emb = stored(gallery)
    items = gallery.store.fetch(ids.tolist())
    return {items[i].external_id: emb[r] for r, i in enumerate(ids.tolist())}


def make_backend(root: Path, engine: str = "local", kind: str = "flat") -> GalleryBackend:
    """Engine ``engine`` over ``root``: the local one with index ``kind``, or Milvus Lite in
    this process (a ``milvus.db`` under ``root``) with the matching Milvus index."""
    if engine == "local":
        return local_backend(root, IndexOptions(kind=kind, ivf_nlist=4))
    pytest.importorskip(
        "pymilvus", reason="the milvus extra (pymilvus, milvus-lite) is not installed"
    )
    index = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}[kind]
    return open_backend(BackendConfig("milvus", root, milvus=MilvusOptions(index_type=index)))
