"""Exact re-ranked search: the full algorithm's distances on query + gallery, kept current."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidcore.rerank import rerank_shortlist
from reidcore.synthetic_features import make_clustered_features
from service.gallery import (
    Gallery,
    GalleryManager,
    IndexOptions,
    NewItem,
    RerankParams,
    SearchFilter,
    exact_rerank,
    local_backend,
    store,
)
from tests.core.rerank_reference import full_one_query

MODEL = "a" * 64
# shortlist 80 of 200: with the released d_o (divided by the farthest distance, so at most 1)
# the Jaccard term weighs more and the full top-10 reaches items at plain rank ~60
PARAMS = RerankParams(shortlist=80, k1=8, k2=3, lambda_value=0.3)


def _features(seed: int = 0, num_ids: int = 40) -> tuple[np.ndarray, np.ndarray]:
    fs = make_clustered_features(num_ids=num_ids, images_per_id=6, dim=16, noise=0.8, seed=seed)
    return _unit(fs.gallery_features), _unit(fs.query_features)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _items(n: int, start: int = 0) -> list[NewItem]:
    return [
        NewItem(camera=f"c{i % 3}", timestamp=float(i), external_id=f"e{i}")
        for i in range(start, start + n)
    ]


def _open(tmp_path: Path, create: bool = True) -> tuple[GalleryManager, Gallery]:
    """A manager over ``tmp_path`` (as a new process would open it) and its gallery g."""
    m = GalleryManager(local_backend(tmp_path, IndexOptions()), MODEL, 16)
    m.open_all()
    return m, m.get_or_create("g") if create else m.get("g")


def _gallery(tmp_path: Path) -> Gallery:
    return _open(tmp_path)[1]


def _full(q: np.ndarray, g: np.ndarray, p: RerankParams = PARAMS) -> np.ndarray:
    return full_one_query(q, g, p.k1, p.k2, p.lambda_value)


def _check(
    gallery: Gallery, feats: np.ndarray, ids: list[int], queries: np.ndarray, k: int = 10
) -> None:
    """The k best matches are the full algorithm's k best, with its distances."""
    for q in queries:
        full = _full(q, feats)
        got = gallery.search(q, k, rerank=PARAMS)
        pos = [ids.index(m.item.id) for m in got]
        want = np.argsort(full, kind="stable")[:k]
        np.testing.assert_allclose([m.distance for m in got], full[want], atol=2e-6, rtol=0)
        np.testing.assert_allclose([m.distance for m in got], full[pos], atol=2e-6, rtol=0)
        np.testing.assert_allclose([m.score for m in got], feats[pos] @ q, atol=1e-6)


def test_exact_search_equals_the_full_algorithm(tmp_path: Path) -> None:
    g_feats, queries = _features()
    g = _gallery(tmp_path)
    ids = [r.id for r in g.add(_items(len(g_feats)), g_feats)]
    _check(g, g_feats, ids, queries[:6])


def test_exact_search_follows_adds_deletes_and_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "COMPACT_MIN_DEAD", 10)
    g_feats, queries = _features(seed=1, num_ids=50)
    g = _gallery(tmp_path)
    ids = [r.id for r in g.add(_items(150), g_feats[:150])]
    _check(g, g_feats[:150], ids, queries[:2])  # builds the lists
    ids += [r.id for r in g.add(_items(100, start=150), g_feats[150:])]  # kept current on add
    _check(g, g_feats, ids, queries[2:4])
    for j in (3, 40, 41, 200):  # deleted: removed from the lists at the next search
        g.delete(ids[j])
    keep = [j for j in range(len(ids)) if j not in (3, 40, 41, 200)]
    _check(g, g_feats[keep], [ids[j] for j in keep], queries[4:6])
    for j in keep[:70]:  # past the compaction threshold: rows renumbered, lists rebuilt
        g.delete(ids[j])
    rest = keep[70:]
    assert g.store._rows.n < len(ids)
    _check(g, g_feats[rest], [ids[j] for j in rest], queries[6:8])


def test_filtered_search_reranks_the_filtered_shortlist(tmp_path: Path) -> None:
    g_feats, queries = _features(seed=2)
    g = _gallery(tmp_path)
    ids = [r.id for r in g.add(_items(len(g_feats)), g_feats)]
    q = queries[0]
    cams = np.array([i % 3 for i in range(len(g_feats))])
    got = g.search(q, 5, SearchFilter(cameras=frozenset({"c1"})), rerank=PARAMS)
    allowed = np.flatnonzero(cams == 1)
    short = allowed[np.argsort(-(g_feats[allowed] @ q), kind="stable")[: PARAMS.shortlist]]
    d = rerank_shortlist(q, g_feats[short], k1=PARAMS.k1, k2=PARAMS.k2, lambda_value=0.3)
    want = short[np.argsort(d, kind="stable")[:5]]
    assert [m.item.id for m in got] == [ids[j] for j in want]


def test_small_gallery_and_k_over_the_shortlist(tmp_path: Path) -> None:
    g_feats, queries = _features(seed=3, num_ids=2)  # 8 items: fewer than k1 + 1
    g = _gallery(tmp_path)
    ids = [r.id for r in g.add(_items(len(g_feats)), g_feats)]
    _check(g, g_feats, ids, queries[:1], k=len(g_feats))


def test_faiss_build_gives_the_same_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss", reason="the large-gallery build uses FAISS")
    g_feats, _ = _features(seed=4)
    alive = np.ones(len(g_feats), bool)
    alive[[5, 17]] = False
    small = exact_rerank.build_neighbours(g_feats, alive, m=8)
    monkeypatch.setattr(exact_rerank, "FAISS_BUILD_FROM", 0)
    big = exact_rerank.build_neighbours(g_feats, alive, m=8)
    np.testing.assert_array_equal(big.neighbour_ids, small.neighbour_ids)
    np.testing.assert_allclose(big.neighbour_dists, small.neighbour_dists, atol=1e-5)
    np.testing.assert_array_equal(big.alive, alive)


def test_an_older_snapshot_searches_the_newer_lists() -> None:
    """A search whose snapshot predates a concurrent add still gets valid, exact answers."""
    g_feats, queries = _features(seed=5)
    item_ids = np.arange(1000, 1000 + len(g_feats))
    alive = np.ones(len(g_feats), bool)
    rr = exact_rerank.ExactReranker(16, PARAMS.k1, PARAMS.k2, PARAMS.lambda_value)
    old = (g_feats[:150], alive[:150].copy(), item_ids[:150])
    rr.search(queries[0], old, 5, PARAMS.shortlist)  # builds over 150 rows
    rr.refresh((g_feats, alive, item_ids))  # an add landed: 240 rows
    res = rr.search(queries[1], old, 5, PARAMS.shortlist)
    full = _full(queries[1], g_feats)
    want = np.argsort(full, kind="stable")[:5]
    np.testing.assert_array_equal(res.item_ids, item_ids[want])
    np.testing.assert_allclose(res.distances, full[want], atol=2e-6, rtol=0)


def test_everything_deleted_gives_no_matches(tmp_path: Path) -> None:
    g_feats, queries = _features(seed=6, num_ids=5)
    g = _gallery(tmp_path)
    ids = [r.id for r in g.add(_items(len(g_feats)), g_feats)]
    assert len(g.search(queries[0], 5, rerank=PARAMS)) == 5
    for i in ids:
        g.delete(i)
    assert g.search(queries[0], 5, rerank=PARAMS) == []


def test_lists_saved_at_close_serve_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing saves the lists; the next process searches exactly without building them,
    following the rows deleted and appended since (by it or by another process)."""
    g_feats, queries = _features(seed=2, num_ids=50)
    m, g = _open(tmp_path)
    ids = [r.id for r in g.add(_items(180), g_feats[:180])]
    _check(g, g_feats[:180], ids, queries[:1])  # builds the lists
    g.delete(ids[5])
    m.close()
    saved = store.rerank_lists_path(g.store.path)
    assert saved.is_file()

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the saved lists should have been used")

    monkeypatch.setattr(exact_rerank, "build_neighbours", no_build)
    m, g = _open(tmp_path, create=False)
    ids += [r.id for r in g.add(_items(60, start=180), g_feats[180:240])]  # after the save
    g.delete(ids[7])
    keep = [j for j in range(240) if j not in (5, 7)]
    _check(g, g_feats[keep], [ids[j] for j in keep], queries[1:4])
    m.close()
    with np.load(saved) as f:  # saved again at this close: new rows in, deleted ones out
        assert f["item_ids"].tolist() == [ids[j] for j in keep]


@pytest.mark.parametrize("change", ["compaction", "params", "corrupt", "truncated"])
def test_stale_saved_lists_are_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    monkeypatch.setattr(store, "COMPACT_MIN_DEAD", 10)
    g_feats, queries = _features(seed=3, num_ids=40)
    m, g = _open(tmp_path)
    ids = [r.id for r in g.add(_items(len(g_feats)), g_feats)]
    _check(g, g_feats, ids, queries[:1])
    m.close()
    saved = store.rerank_lists_path(g.store.path)
    builds: list[int] = []
    real_build = exact_rerank.build_neighbours

    def counting_build(matrix: np.ndarray, alive: np.ndarray, m: int) -> object:
        builds.append(int(alive.sum()))
        return real_build(matrix, alive, m)

    monkeypatch.setattr(exact_rerank, "build_neighbours", counting_build)
    m, g = _open(tmp_path, create=False)
    keep = list(range(len(ids)))
    params = PARAMS
    if change == "compaction":  # rows renumbered: the saved row -> item map no longer holds
        for j in range(60):  # past a quarter of the rows
            g.delete(ids[j])
        assert g.store._rows.n < len(ids)
        keep = keep[60:]
    elif change == "params":
        params = RerankParams(shortlist=20, k1=PARAMS.k1 + 2, k2=PARAMS.k2, lambda_value=0.3)
    elif change == "corrupt":
        saved.write_bytes(b"not an npz file")
    else:
        saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    q = queries[1]
    got = g.search(q, 10, rerank=params)
    assert builds == [len(keep)]
    full = full_one_query(q, g_feats[keep], params.k1, params.k2, params.lambda_value)
    np.testing.assert_allclose([x.distance for x in got], np.sort(full)[:10], atol=2e-6, rtol=0)
    m.close()


def test_deleting_a_gallery_deletes_its_saved_lists(tmp_path: Path) -> None:
    g_feats, queries = _features(seed=4)
    m, g = _open(tmp_path)
    g.add(_items(len(g_feats)), g_feats)
    g.search(queries[0], 5, rerank=PARAMS)
    m.close()
    m, g = _open(tmp_path, create=False)
    saved = store.rerank_lists_path(g.store.path)
    assert saved.is_file()
    m.delete("g")
    assert not saved.exists()
