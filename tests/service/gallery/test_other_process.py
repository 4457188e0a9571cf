"""Items and galleries written by another process (``reid index`` beside a running service, or
another replica) become searchable without a restart. A second GalleryManager has its own
SQLite connections or Milvus client, which is what the engine sees of another process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.gallery import RerankParams
from tests.service.gallery.helpers import stored
from tests.service.gallery.test_store import _items, _manager, _unit


def _vectors(seed: int, n: int) -> np.ndarray:
    return _unit(np.random.default_rng(seed), n)


def _stored(root: Path, engine: str) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, embeddings) of everything in gallery g, read by a fresh manager."""
    return stored(_manager(root, engine=engine).get("g"))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_items_of_another_process_are_searched(tmp_path: Path, kind: str, engine: str) -> None:
    service = _manager(tmp_path, kind=kind, engine=engine)
    mine = service.get_or_create("g")
    mine.add(_items(20), _vectors(0, 20))
    other = _manager(tmp_path, kind=kind, engine=engine).get("g")
    other.add(_items(30, start=100), _vectors(1, 30))
    assert len(mine) == 50
    # interleaved writers: ids of both kinds alternate, none lost or doubled
    mine.add(_items(10, start=200), _vectors(2, 10))
    other.add(_items(10, start=300), _vectors(3, 10))
    mine.add(_items(5, start=400), _vectors(4, 5))
    assert len(mine) == 75
    ids, emb = _stored(tmp_path, engine)
    assert len(ids) == 75
    rng = np.random.default_rng(5)
    for q in _vectors(6, 10):
        hits = mine.search(q, 5)
        brute = ids[np.argsort(-(emb @ q), kind="stable")[:5]]
        assert [h.item.id for h in hits] == brute.tolist()
    for row in rng.choice(len(ids), 10, replace=False):  # every item finds itself first
        assert mine.search(emb[row], 1)[0].item.id == ids[row]


def test_exact_reranking_follows_another_process(tmp_path: Path, engine: str) -> None:
    params = RerankParams(k1=6, k2=3, lambda_value=0.3, shortlist=20)
    service = _manager(tmp_path, engine=engine)
    mine = service.get_or_create("g")
    mine.add(_items(40), _vectors(0, 40))
    queries = _vectors(9, 5)
    mine.search(queries[0], 5, rerank=params)  # builds the lists
    _manager(tmp_path, engine=engine).get("g").add(_items(25, start=100), _vectors(1, 25))
    fresh = _manager(tmp_path, engine=engine).get("g")  # opened after the add: the reference
    for q in queries:
        got = mine.search(q, 8, rerank=params)
        want = fresh.search(q, 8, rerank=params)
        assert [h.item.id for h in got] == [h.item.id for h in want]
        np.testing.assert_allclose([h.distance for h in got], [h.distance for h in want], atol=1e-5)


def test_gallery_created_by_another_process_is_found(tmp_path: Path, engine: str) -> None:
    service = _manager(tmp_path, engine=engine)
    other = _manager(tmp_path, engine=engine)
    other.get_or_create("h").add(_items(3), _vectors(1, 3))
    assert [s.name for s in service.statuses()] == ["h"]
    assert len(service.get("h")) == 3
    other.get_or_create("k").add(_items(2), _vectors(2, 2))
    assert len(service.get("k")) == 2  # found on first use, before any listing
