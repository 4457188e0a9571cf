"""Searches with α-QE, DBA and camera normalisation against the brute-force computation
(:func:`reidcore.query_tricks.apply_tricks` over the whole gallery), on every engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidcore.query_tricks import (
    Expansion,
    QueryTricks,
    apply_tricks,
    augment_gallery,
    camera_means,
    expand,
    subtract_camera_means,
)
from reidcore.synthetic_features import make_clustered_features
from service.errors import InvalidInput
from service.gallery import Gallery, GalleryManager, NewItem, RerankParams, SearchFilter
from service.gallery.query_tricks import TrickParams
from tests.service.gallery.helpers import make_backend

MODEL = "b" * 64
DIM = 16
CAMS = ("c0", "c1", "c2")

ALL = QueryTricks(qe=Expansion(3, 3.0), dba=Expansion(2, 3.0), camera_norm=True)
CASES = [
    QueryTricks(qe=Expansion(2, 3.0)),
    QueryTricks(qe=Expansion(4, 0.0)),
    QueryTricks(dba=Expansion(3, 1.0)),
    QueryTricks(camera_norm=True),
    ALL,
]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _filled(root: Path, engine: str) -> tuple[Gallery, np.ndarray, np.ndarray, np.ndarray]:
    """Gallery of 60 clustered items over 3 cameras with a camera bias; (gallery, item ids,
    embeddings, camera index per item) and 4 queries."""
    fs = make_clustered_features(num_ids=10, images_per_id=6, dim=DIM, noise=0.8, seed=3)
    feats = _unit(fs.gallery_features)
    cams = np.arange(len(feats)) % 3
    g = GalleryManager(make_backend(root, engine), MODEL, DIM).get_or_create("g")
    items = [NewItem(CAMS[c], float(i)) for i, c in enumerate(cams)]
    ids = np.array([r.id for r in g.add(items, feats)])
    return g, ids, feats, cams


def _reference(
    q: np.ndarray, qcam: int | None, feats: np.ndarray, cams: np.ndarray, tricks: QueryTricks
) -> tuple[np.ndarray, np.ndarray]:
    """(rows best first, distances) of brute force over the whole gallery."""
    qc = None if qcam is None else np.array([qcam])
    tq, tg = apply_tricks(q[None], qc, feats, cams, tricks)
    scores = tg @ tq[0]
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order, np.sqrt(np.maximum(2 - 2 * scores[order], 0))


@pytest.mark.parametrize("tricks", CASES, ids=lambda t: t.label())
def test_search_with_tricks_is_brute_force_when_the_shortlist_covers_the_gallery(
    tmp_path: Path, engine: str, tricks: QueryTricks
) -> None:
    g, ids, feats, cams = _filled(tmp_path, engine)
    queries = _unit(np.random.default_rng(5).standard_normal((4, DIM)) + feats[:4])
    for r, q in enumerate(queries):
        qcam = r % 3 if r < 3 else None  # the last query's camera is unknown
        params = TrickParams(tricks, None if qcam is None else CAMS[qcam], shortlist=len(feats))
        got = g.search(q, 10, tricks=params)
        rows, dists = _reference(q, qcam, feats, cams, tricks)
        assert [m.item.id for m in got] == ids[rows[:10]].tolist()
        np.testing.assert_allclose([m.distance for m in got], dists[:10], atol=2e-5)
        np.testing.assert_allclose([m.score for m in got], feats[rows[:10]] @ q, atol=1e-5)


def test_a_short_shortlist_is_brute_force_over_the_shortlist(tmp_path: Path, engine: str) -> None:
    """With a shortlist of 20, QE and ranking see those 20 only; DBA neighbours and camera
    means still come from the whole gallery."""
    g, ids, feats, cams = _filled(tmp_path, engine)
    q = feats[7]
    short = np.argsort(-(feats @ q), kind="stable")[:20]
    assert ALL.dba is not None and ALL.qe is not None
    means = camera_means(feats, cams)
    cq = subtract_camera_means(q[None], [1], means)
    aug = augment_gallery(subtract_camera_means(feats, cams, means), feats, ALL.dba)[short]
    top = np.argsort(-(aug @ cq[0]))[: ALL.qe.n]
    eq = expand(cq, aug[top][None], ALL.qe.alpha)[0]
    want = ids[short[np.argsort(-(aug @ eq))[:5]]]
    got = g.search(q, 5, tricks=TrickParams(ALL, "c1", shortlist=20))
    assert [m.item.id for m in got] == want.tolist()


def test_camera_means_follow_adds_and_deletes(tmp_path: Path, engine: str) -> None:
    g, ids, feats, cams = _filled(tmp_path, engine)
    tricks = TrickParams(QueryTricks(camera_norm=True), "c0", shortlist=200)
    q = feats[0]
    g.search(q, 5, tricks=tricks)  # builds the means
    extra = _unit(np.random.default_rng(9).standard_normal((6, DIM)) + 2.0)
    new = [r.id for r in g.add([NewItem("c0", 100.0 + i) for i in range(6)], extra)]
    for item in ids[:5]:
        g.delete(int(item))
    all_feats = np.concatenate([feats[5:], extra])
    all_cams = np.concatenate([cams[5:], np.zeros(6, np.int64)])
    all_ids = np.concatenate([ids[5:], new])
    rows, dists = _reference(q, 0, all_feats, all_cams, tricks.tricks)
    got = g.search(q, 8, tricks=tricks)
    assert [m.item.id for m in got] == all_ids[rows[:8]].tolist()
    np.testing.assert_allclose([m.distance for m in got], dists[:8], atol=2e-5)


def test_filters_and_min_score_restrict_the_candidates(tmp_path: Path, engine: str) -> None:
    g, ids, feats, cams = _filled(tmp_path, engine)
    q = feats[3]
    tricks = TrickParams(QueryTricks(qe=Expansion(2, 3.0)), shortlist=60)
    got = g.search(q, 60, SearchFilter(cameras=frozenset({"c1"}), min_score=0.2), tricks=tricks)
    allowed = (cams == 1) & (feats @ q >= 0.2)
    assert got and {m.item.id for m in got} == set(ids[allowed].tolist())
    # QE over the allowed items only
    tq, tg = apply_tricks(q[None], None, feats[allowed], cams[allowed], tricks.tricks)
    assert [m.item.id for m in got] == ids[allowed][np.argsort(-(tg @ tq[0]))].tolist()


def test_tricks_with_rerank_are_refused(tmp_path: Path) -> None:
    g, _, feats, _ = _filled(tmp_path, "local")
    with pytest.raises(InvalidInput, match="rerank"):
        g.search(
            feats[0], 5, rerank=RerankParams(), tricks=TrickParams(QueryTricks(qe=Expansion()))
        )


@pytest.mark.parametrize("masked", [False, True])
def test_batched_exact_search_equals_one_query_at_a_time(masked: bool) -> None:
    """DBA's neighbour lists come from one batched store search (one product per batch)."""
    from service.gallery.search import exact_search, exact_search_many

    rng = np.random.default_rng(0)
    matrix = _unit(rng.standard_normal((500, DIM)))
    queries = _unit(rng.standard_normal((70, DIM)))  # more than one batch
    mask = rng.random(500) < 0.3 if masked else None
    for (rows, scores), q in zip(exact_search_many(matrix, queries, 7, mask), queries, strict=True):
        want_rows, want_scores = exact_search(matrix, q, 7, mask)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_camera_means_see_writes_of_another_process(tmp_path: Path, engine: str) -> None:
    """Items added through another manager (a replica, a bulk job elsewhere) change the item
    count, so the means are summed again from the store."""
    g, ids, feats, cams = _filled(tmp_path, engine)
    tricks = TrickParams(QueryTricks(camera_norm=True), "c2", shortlist=200)
    g.search(feats[1], 5, tricks=tricks)  # means of the 60 items
    other = GalleryManager(make_backend(tmp_path, engine), MODEL, DIM).get("g")
    extra = _unit(np.random.default_rng(11).standard_normal((9, DIM)) - 1.5)
    new = [r.id for r in other.add([NewItem("c2", 200.0 + i) for i in range(9)], extra)]
    all_feats, all_ids = np.concatenate([feats, extra]), np.concatenate([ids, new])
    all_cams = np.concatenate([cams, np.full(9, 2)])
    rows, dists = _reference(feats[1], 2, all_feats, all_cams, tricks.tricks)
    got = g.search(feats[1], 8, tricks=tricks)
    assert [m.item.id for m in got] == all_ids[rows[:8]].tolist()
    np.testing.assert_allclose([m.distance for m in got], dists[:8], atol=2e-5)
