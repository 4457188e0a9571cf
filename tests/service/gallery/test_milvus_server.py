"""Two replicas on the real Milvus standalone server (PyPI ``milvus``, started here): what one
writes the other finds at its next search (Strong reads), concurrent adds of one crop
converge on one item, filters and the model guard hold on the server.

Each "replica" is a GalleryManager with its own Milvus client, as two ``reid serve``
processes have. Skipped, with the reason, when the server package is not installed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelMismatch
from service.gallery import BackendConfig, GalleryManager, MilvusOptions, NewItem, SearchFilter
from service.gallery import open_backend as open_engine
from service.gallery.milvus_ids import block_of
from service.gallery.milvus_server import local_milvus_server

MODEL = "a" * 64
DIM = 32


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus standalone server on 127.0.0.1 for this module (~20 s to start)."""
    pytest.importorskip("milvus", reason="the Milvus server package (milvus) is absent")
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    with local_milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri


def _replica(uri: str, tmp: Path, model: str = MODEL, gallery: str = "") -> GalleryManager:
    options = MilvusOptions(uri=uri, db_name="", index_type="FLAT")
    backend = open_engine(BackendConfig("milvus", tmp, milvus=options))
    for name in backend.names() if gallery else []:
        if name == gallery:
            backend.drop(name)
    return GalleryManager(backend, model, DIM)


def _unit(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _items(n: int, start: int = 0) -> list[NewItem]:
    return [
        NewItem(camera=f"c{i % 3}", timestamp=1000.0 + i, external_id=f"e{i}")
        for i in range(start, start + n)
    ]


def test_a_write_through_one_replica_is_found_through_the_other(
    milvus_uri: str, tmp_path: Path
) -> None:
    one = _replica(milvus_uri, tmp_path, gallery="shared")
    two = _replica(milvus_uri, tmp_path)
    try:
        feats = _unit(0, 40)
        ids = [r.id for r in one.get_or_create("shared").add(_items(40), feats)]
        other = two.get("shared")  # created by the other replica: found on first use
        assert len(other) == 40
        for row in (0, 17, 39):  # the next search after the acknowledged add finds it
            assert other.search(feats[row], 1)[0].item.id == ids[row]
        other.delete(ids[17])
        assert ids[17] not in [m.item.id for m in one.get("shared").search(feats[17], 5)]
        added = other.add(_items(2, start=100), _unit(1, 2))
        assert one.get("shared").find_external(["e100", "e101"]) == {
            "e100": added[0].id,
            "e101": added[1].id,
        }
    finally:
        one.close()
        two.close()


def test_two_replicas_adding_the_same_crops_at_once_store_each_once(
    milvus_uri: str, tmp_path: Path
) -> None:
    replicas = [_replica(milvus_uri, tmp_path, gallery="race"), _replica(milvus_uri, tmp_path)]
    try:
        galleries = [replicas[0].get_or_create("race"), None]
        galleries[1] = replicas[1].get("race")
        feats = _unit(2, 12)
        results: list[list[int]] = [[], []]
        start = threading.Barrier(2)

        def add(k: int) -> None:
            g = galleries[k]
            assert g is not None
            start.wait()
            results[k] = [r.id for r in g.add(_items(12), feats)]

        threads = [threading.Thread(target=add, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        g = galleries[0]
        assert g is not None and len(g) == 12  # one item per crop
        kept = g.find_external([f"e{i}" for i in range(12)])
        # each kept id is one a replica answered with (usually both answer with it; a
        # replica that saw no copy may have answered with the one deleted later)
        assert all(kept[f"e{i}"] in (results[0][i], results[1][i]) for i in range(12))
    finally:
        for r in replicas:
            r.close()


def test_replicas_writing_at_once_get_distinct_ids_below_2_53(
    milvus_uri: str, tmp_path: Path
) -> None:
    """Each replica claims its own id block on the server (Strong read of the claims), so
    concurrent writers never share an id, and every id is exact in JavaScript."""
    replicas = [_replica(milvus_uri, tmp_path, gallery="ids"), _replica(milvus_uri, tmp_path)]
    try:
        replicas[0].get_or_create("ids")
        feats = _unit(5, 60)
        results: list[list[int]] = [[], []]
        start = threading.Barrier(2)

        def add(k: int) -> None:
            g = replicas[k].get("ids")
            start.wait()
            for b in range(3):
                part = slice(30 * k + 10 * b, 30 * k + 10 * b + 10)
                results[k] += [r.id for r in g.add(_items(10, part.start), feats[part])]

        threads = [threading.Thread(target=add, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = results[0] + results[1]
        assert len(set(ids)) == 60 and all(0 < i < 2**53 for i in ids)
        assert {block_of(i) for i in results[0]}.isdisjoint({block_of(i) for i in results[1]})
        g = replicas[1].get("ids")
        assert len(g) == 60 and sorted(g.store.item_ids().tolist()) == sorted(ids)
        assert g.search(feats[42], 1)[0].item.id == results[1][12]
    finally:
        for r in replicas:
            r.close()


def test_filters_and_the_model_guard_on_the_server(milvus_uri: str, tmp_path: Path) -> None:
    m = _replica(milvus_uri, tmp_path, gallery="guard")
    try:
        feats = _unit(3, 60)
        items = _items(60)
        ids = [r.id for r in m.get_or_create("guard").add(items, feats)]
        q = _unit(4, 1)[0]
        filt = SearchFilter(cameras=frozenset({"c1", "c2"}), time_from=1010.0, time_to=1050.0)
        ok = [j for j in range(60) if items[j].camera != "c0" and 1010 <= 1000 + j < 1050]
        ref = sorted(ok, key=lambda j: -float(feats[j] @ q))[:5]
        assert [h.item.id for h in m.get("guard").search(q, 5, filt)] == [ids[j] for j in ref]
    finally:
        m.close()
    other = _replica(milvus_uri, tmp_path, model="b" * 64)
    try:
        with pytest.raises(ModelMismatch, match="was built with model"):
            other.get("guard")
    finally:
        other.close()


def test_stats_through_either_replica_equal_a_brute_force_pass(
    milvus_uri: str, tmp_path: Path
) -> None:
    """Stats on the server come from counts (tests/service/gallery/test_stats.py): through
    either replica they equal a pass over every item, after both wrote (each one's hint
    cache stale for the other's writes), after extremes and a whole camera were deleted,
    with odd camera names and far times in the filter expressions."""
    from tests.service.gallery.test_stats import brute_force, summary

    one = _replica(milvus_uri, tmp_path, gallery="stats")
    two = _replica(milvus_uri, tmp_path)
    try:
        a = one.get_or_create("stats")
        first = [r.id for r in a.add(_items(12), _unit(20, 12))]
        b = two.get("stats")
        odd = [NewItem('gate "B"\\2', -1e20, "o0"), NewItem("c1", 1e20, "o1")]
        odd += [NewItem("c9", float("nan"), "o2")]
        second = [r.id for r in b.add(odd, _unit(21, 3))]
        got = summary(a.stats())
        assert got == brute_force(a) == summary(b.stats()) and got[2:] == (-1e20, 1e20)
        for item_id in second[:2] + first[::3]:  # the extremes and every item of c0
            b.delete(item_id)
        got = summary(a.stats())
        assert got == brute_force(b) == summary(b.stats())
        assert "c0" not in got[1] and got[2:] == (1001.0, 1011.0)
    finally:
        one.close()
        two.close()
