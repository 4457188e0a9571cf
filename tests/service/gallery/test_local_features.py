"""Local (AlignedReID stripe) features through the storage interface: kept per item by every
engine, and galleries from before them keep working (the option then answers 409)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import LocalDistanceUnavailable
from service.gallery import GalleryManager, NewItem
from service.gallery.local_search import LocalParams
from tests.service.gallery.helpers import ENGINES, make_backend

DIM = 8
SHAPE = (4, 3)


def _items(n: int, local: bool, seed: int = 0) -> tuple[list[NewItem], np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    feats = rng.standard_normal((n, *SHAPE)).astype(np.float32)
    items = [
        NewItem(f"c{i % 2}", float(i), f"x{seed}-{i}", local=feats[i] if local else None)
        for i in range(n)
    ]
    return items, emb


@pytest.mark.parametrize("engine", ENGINES)
def test_local_features_round_trip(tmp_path: Path, engine: str) -> None:
    manager = GalleryManager(make_backend(tmp_path, engine), "m", DIM)
    g = manager.get_or_create("g")
    items, emb = _items(5, local=True)
    ids = [r.id for r in g.add(items, emb)]
    old, old_emb = _items(2, local=False, seed=1)
    old_ids = [r.id for r in g.add(old, old_emb)]
    got = g.store.local_features(ids + old_ids)
    assert sorted(got) == sorted(ids)  # items stored without features are absent
    for i, it in zip(ids, items, strict=True):
        assert it.local is not None
        np.testing.assert_array_equal(got[i].reshape(SHAPE), it.local)
    manager.close()


def test_sqlite_gallery_from_before_local_features(tmp_path: Path) -> None:
    """A gallery file without the ``local`` column gets it on opening: old items have none
    (a local_distance search over them is refused), new ones are stored with theirs."""
    backend = make_backend(tmp_path, "local")
    manager = GalleryManager(backend, "m", DIM)
    g = manager.get_or_create("g")
    old, old_emb = _items(3, local=False)
    g.add(old, old_emb)
    manager.close()
    path = next(tmp_path.rglob("g.sqlite3"))
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE items DROP COLUMN local")  # the file as it was
    manager = GalleryManager(make_backend(tmp_path, "local"), "m", DIM)
    g = manager.get("g")
    query = LocalParams(np.zeros(SHAPE, np.float32))
    with pytest.raises(LocalDistanceUnavailable, match="without local features"):
        g.search(old_emb[0], 2, local=query)
    assert len(g.search(old_emb[0], 2)) == 2
    new, new_emb = _items(2, local=True, seed=2)
    [r, _] = g.add(new, new_emb)
    assert list(g.store.local_features([r.id])) == [r.id]
    manager.close()


def test_milvus_collection_from_before_local_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection created without the ``local`` field keeps working; its items have no
    local features, so a local_distance search is refused, never answered without them."""
    pymilvus = pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    real = pymilvus.MilvusClient.create_schema

    def without_local(*args: Any, **kwargs: Any) -> Any:
        schema = real(*args, **kwargs)
        add = schema.add_field
        schema.add_field = lambda name, *a, **kw: schema if name == "local" else add(name, *a, **kw)
        return schema

    with monkeypatch.context() as m:  # the schema as it was: no local field
        m.setattr(pymilvus.MilvusClient, "create_schema", staticmethod(without_local))
        old = GalleryManager(make_backend(tmp_path, "milvus"), "m", DIM)
        old.get_or_create("g")
        old.close()
    manager = GalleryManager(make_backend(tmp_path, "milvus"), "m", DIM)
    g = manager.get("g")
    assert not g.store.keeps_local
    items, emb = _items(3, local=True)
    g.add(items, emb)
    assert g.store.local_features(g.store.item_ids().tolist()) == {}
    with pytest.raises(LocalDistanceUnavailable):
        g.search(emb[0], 2, local=LocalParams(np.zeros(SHAPE, np.float32)))
    assert len(g.search(emb[0], 2)) == 2
    manager.close()


def test_milvus_item_with_local_features_over_its_field_is_stored_without_them(
    tmp_path: Path,
) -> None:
    """Stripes too long for the Milvus field never fail the add: the item is kept, its
    local features are absent (a local_distance search over it then answers 409)."""
    from service.gallery.milvus_store import MAX_LOCAL

    manager = GalleryManager(make_backend(tmp_path, "milvus"), "m", DIM)
    g = manager.get_or_create("g")
    rng = np.random.default_rng(3)
    floats = MAX_LOCAL * 3 // 4 // 4 + 8  # base64 of 4-byte floats: just over the field
    emb = rng.standard_normal((2, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    big = rng.standard_normal((1, floats)).astype(np.float32)
    small = rng.standard_normal(SHAPE).astype(np.float32)
    items = [NewItem("c0", 0.0, "big", local=big), NewItem("c0", 1.0, "small", local=small)]
    ids = [r.id for r in g.add(items, emb)]
    assert len(ids) == 2 and ids[0] != ids[1]
    got = g.store.local_features(ids)
    assert sorted(got) == [ids[1]]
    np.testing.assert_array_equal(got[ids[1]].reshape(SHAPE), small)
    manager.close()
