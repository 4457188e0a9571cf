"""What every engine must do beyond the shared suites, and the Milvus engine's own rules:
collection names, filter expressions, unknown times, concurrent duplicate adds, and the
neighbourhood re-ranking used where no exact re-ranker is kept."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from reidcore.rerank import rerank_shortlist
from reidcore.synthetic_features import make_clustered_features
from service.gallery import GalleryManager, NewItem, RerankParams, SearchFilter
from service.gallery.gallery import neighbourhood_rerank
from tests.core.rerank_reference import full_one_query
from tests.service.gallery.helpers import make_backend

MODEL = "a" * 64
DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _features(num_ids: int) -> tuple[np.ndarray, np.ndarray]:
    fs = make_clustered_features(num_ids=num_ids, images_per_id=6, dim=DIM, noise=0.8, seed=0)
    return _unit(fs.gallery_features), _unit(fs.query_features)


def _filled(root: Path, engine: str, feats: np.ndarray) -> tuple[GalleryManager, np.ndarray]:
    m = GalleryManager(make_backend(root, engine), MODEL, DIM)
    items = [
        NewItem(camera=f"c{i % 2}", timestamp=float(i), external_id=f"e{i}")
        for i in range(len(feats))
    ]
    ids = np.array([r.id for r in m.get_or_create("g").add(items, feats)])
    return m, ids


def test_collection_names_round_trip() -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    from service.gallery.milvus_store import collection_name, gallery_name

    for name in ["g", "a.b-c_d", "A_u", "x" * 64, "0._-_.0"]:
        coll = collection_name(name)
        assert coll.replace("_", "").isalnum() and gallery_name(coll) == name
    assert gallery_name("other_collection") is None and gallery_name("reid_g_bad_z") is None


def test_filter_expression_terms() -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    from service.gallery.milvus_store import filter_expression

    assert filter_expression(SearchFilter(min_score=0.5)) == ""  # scores are filtered above
    expr = filter_expression(
        SearchFilter(cameras=frozenset({'a"b'}), exclude_cameras=frozenset({"z"}), time_from=1.5)
    )
    assert expr == 'camera in ["a\\"b"] and camera not in ["z"] and has_ts == true and ts >= 1.5'
    assert "<=" not in filter_expression(SearchFilter(time_from=1.0, time_to=2.0))


def test_odd_camera_names_filter_exactly(tmp_path: Path, engine: str) -> None:
    cams = ['cam "1"', "back\\slash", "it's", "plain"]
    feats = _unit(np.random.default_rng(0).standard_normal((8, DIM)))
    m = GalleryManager(make_backend(tmp_path, engine), MODEL, DIM)
    g = m.get_or_create("g")
    ids = [r.id for r in g.add([NewItem(cams[i % 4], float(i)) for i in range(8)], feats)]
    for cam in cams:
        got = g.search(feats[0], 8, SearchFilter(cameras=frozenset({cam})))
        assert sorted(h.item.id for h in got) == [ids[i] for i in range(8) if cams[i % 4] == cam]
    assert g.search(feats[0], 8, SearchFilter(cameras=frozenset())) == []


def test_unknown_times_are_kept_and_excluded_by_time_filters(tmp_path: Path) -> None:
    feats = _unit(np.random.default_rng(1).standard_normal((4, DIM)))
    m = GalleryManager(make_backend(tmp_path, "milvus"), MODEL, DIM)
    g = m.get_or_create("g")
    times = [10.0, math.nan, 30.0, math.inf]
    ids = [r.id for r in g.add([NewItem("c", t) for t in times], feats)]
    assert math.isnan(g.get(ids[1]).timestamp) and g.get(ids[0]).timestamp == 10.0
    assert len(g.search(feats[0], 10)) == 4
    timed = g.search(feats[0], 10, SearchFilter(time_from=0.0))
    assert sorted(h.item.id for h in timed) == [ids[0], ids[2]]
    stats = g.stats()
    assert (stats.items, stats.time_min, stats.time_max) == (4, 10.0, 30.0)


def test_concurrent_adds_of_one_external_id_converge(tmp_path: Path) -> None:
    """Two replicas both found the external id absent and both inserted: the later one
    deletes every copy but the lowest id, so one item remains."""
    feats = _unit(np.random.default_rng(2).standard_normal((2, DIM)))
    first = GalleryManager(make_backend(tmp_path, "milvus"), MODEL, DIM).get_or_create("g")
    second = GalleryManager(make_backend(tmp_path, "milvus"), MODEL, DIM).get("g")
    kept = first.add([NewItem("c", 1.0, "x")], feats[:1])[0]
    second.store._before_insert = lambda exts, fresh: []  # type: ignore[attr-defined]
    raced = second.add([NewItem("c", 1.0, "x"), NewItem("c", 2.0, "y")], feats)
    # the lowest id stays (writers own separate id blocks: either may be lower); the later
    # writer reports the earlier item, or keeps its own and deletes the earlier copy
    low = raced[0].id
    assert low <= kept.id and raced[0].created == (low != kept.id) and raced[1].created
    assert len(first) == 2 and first.find_external(["x"]) == {"x": low}


def test_a_writer_removes_every_copy_but_the_lowest(tmp_path: Path) -> None:
    """A copy another writer left (it saw none and has not settled) goes too."""
    feats = _unit(np.random.default_rng(3).standard_normal((1, DIM)))
    writers = [
        GalleryManager(make_backend(tmp_path, "milvus"), MODEL, DIM).get_or_create("g")
        for _ in range(3)
    ]
    for w in writers[1:]:
        w.store._before_insert = lambda exts, fresh: []  # type: ignore[attr-defined]
    first = writers[0].add([NewItem("c", 1.0, "x")], feats)[0]
    writers[1].store._settle_duplicates = lambda results, exts: None  # type: ignore[attr-defined]
    unsettled = writers[1].add([NewItem("c", 1.0, "x")], feats)[0]
    assert unsettled.created and len(writers[0]) == 2
    kept = min(first.id, unsettled.id)  # writers own separate id blocks: either may be lower
    last = writers[2].add([NewItem("c", 1.0, "x")], feats)[0]
    # its own copy survives exactly when its id block is the lowest of the three (random)
    assert last.created == (last.id < kept)
    kept = min(kept, last.id)
    assert last.id == kept  # the item it reports is the surviving copy either way
    assert len(writers[0]) == 1 and writers[0].find_external(["x"]) == {"x": kept}


def test_neighbourhood_rerank_is_the_full_algorithm_when_it_covers_the_gallery(
    tmp_path: Path, engine: str
) -> None:
    feats, queries = _features(num_ids=10)  # 60 items, shortlist 60: the set is the gallery
    m, ids = _filled(tmp_path, engine, feats)
    p = RerankParams(shortlist=len(feats), k1=8, k2=3, lambda_value=0.3)
    for q in queries[:4]:
        full = full_one_query(q, feats, p.k1, p.k2, p.lambda_value)
        got_ids, scores, dists = neighbourhood_rerank(m.get("g").store, q, 10, p)
        want = np.argsort(full, kind="stable")[:10]
        np.testing.assert_allclose(dists, full[want], atol=2e-6, rtol=0)
        rows = np.searchsorted(ids, got_ids)
        np.testing.assert_allclose(dists, full[rows], atol=2e-6, rtol=0)
        np.testing.assert_allclose(scores, feats[rows] @ q, atol=1e-6)


def test_neighbourhood_rerank_is_closer_to_the_full_algorithm_than_the_shortlist(
    tmp_path: Path, engine: str
) -> None:
    """Each top candidate keeps its whole-gallery neighbourhood, which a shortlist cuts."""
    feats, queries = _features(num_ids=100)  # 600 items
    m, ids = _filled(tmp_path, engine, feats)
    p = RerankParams(shortlist=20, k1=8, k2=3, lambda_value=0.3)
    g = m.get("g")
    mine = short = 0
    for q in queries[:20]:
        full = full_one_query(q, feats, p.k1, p.k2, p.lambda_value)
        want = set(ids[np.argsort(full, kind="stable")[:10]].tolist())
        got = [h.item.id for h in g.search(q, 10, rerank=p)]  # exact mode, no filter
        top = np.argsort(-(feats @ q), kind="stable")[: p.shortlist]
        d = rerank_shortlist(q, feats[top], k1=p.k1, k2=p.k2, lambda_value=p.lambda_value)
        mine += len(want & set(got))
        short += len(want & set(ids[top[np.argsort(d, kind="stable")[:10]]].tolist()))
    assert mine > short and mine >= 0.8 * 200
