"""RerankCache: exact per-query re-ranking from cached gallery rows, against the full algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from reidcore.evaluation import pairwise_euclidean
from reidcore.rerank_cache import RerankCache
from reidcore.rerank_neighbours import GalleryNeighbours, rerank_expanded
from reidcore.synthetic_features import FeatureSet, make_clustered_features
from tests.core.rerank_reference import full_one_query


def _data(seed: int, num_ids: int = 40, noise: float = 1.0) -> FeatureSet:
    return make_clustered_features(
        num_ids=num_ids, images_per_id=6, num_cams=3, dim=24, noise=noise, seed=seed
    )


def _top(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = pairwise_euclidean(q[None], g)[0]
    top = np.argsort(d, kind="stable")[:k]
    return top, d[top], d


def _cached(
    g: np.ndarray, m: int, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> tuple[GalleryNeighbours, RerankCache]:
    """Neighbour lists (width ``m``) of the whole gallery ``g`` and a cache over them."""
    nb = GalleryNeighbours(g.shape[1], m=m)
    nb.add(g)
    return nb, RerankCache(nb, k1=k1, k2=k2, lambda_value=lambda_value)


@pytest.mark.parametrize(
    ("k1", "k2", "lam"), [(20, 6, 0.3), (7, 1, 0.5), (10, 4, 0.0), (1, 1, 0.3)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_scores_equal_the_full_algorithm(seed: int, k1: int, k2: int, lam: float) -> None:
    """Small K (the query enters many lists past its top-K): every score is still exact."""
    fs = _data(seed)
    g = fs.gallery_features
    nb, cache = _cached(g, k1 + 3, k1=k1, k2=k2, lambda_value=lam)
    assert cache.ready
    for q in fs.query_features[:6]:
        full = full_one_query(q, g, k1, k2, lam)
        top, top_d, _ = _top(q, g, max(k1, 12))
        ids, dist = cache.query(q, top[::-1], top_d[::-1], expand=6)  # any order is accepted
        assert dist.dtype == np.float32 and (np.diff(dist) >= 0).all()
        assert np.isin(top, ids).all()
        np.testing.assert_allclose(dist, full[ids], atol=2e-6, rtol=0)


@pytest.mark.parametrize("seed", [2, 3])
def test_same_result_as_rerank_expanded(seed: int) -> None:
    fs = _data(seed, num_ids=60)
    g = fs.gallery_features
    nb, cache = _cached(g, 25)
    for q in fs.query_features[:5]:
        top, top_d, _ = _top(q, g, 40)
        ref_ids, ref_d = rerank_expanded(q, top, top_d, nb, expand=10, expand_width=15)
        ids, dist = cache.query(q, top, top_d, expand=10, expand_width=15)
        np.testing.assert_array_equal(np.sort(ids), np.sort(ref_ids))
        by_id = dict(zip(ref_ids.tolist(), ref_d.tolist(), strict=True))
        np.testing.assert_allclose(dist, [by_id[i] for i in ids.tolist()], atol=1e-6, rtol=0)


def test_covering_shortlist_scores_the_whole_gallery() -> None:
    fs = _data(4, num_ids=20)
    g = fs.gallery_features
    nb, cache = _cached(g, 20)
    q = fs.query_features[0]
    top, top_d, _ = _top(q, g, g.shape[0])
    ids, dist = cache.query(q, top, top_d)
    np.testing.assert_array_equal(np.sort(ids), np.arange(g.shape[0]))
    np.testing.assert_allclose(dist, full_one_query(q, g, 20, 6, 0.3)[ids], atol=2e-6, rtol=0)


def test_gallery_distances_and_the_full_pass_give_the_same_answer() -> None:
    """The three ways to find the lists the query enters: given, one pass, per-item gather."""
    fs = _data(5, noise=1.4)  # concentrated distances: many candidates past the top-K
    g = fs.gallery_features
    nb, cache = _cached(g, 20)
    for q in fs.query_features[:4]:
        top, top_d, d_all = _top(q, g, 20)
        a = cache.query(q, top, top_d)
        b = cache.query(q, top, top_d, gallery_dists=d_all)
        big_top, big_d, _ = _top(q, g, 150)  # radius so large that few rows are candidates
        c = cache.query(q, big_top, big_d, expand=20, expand_width=20)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], atol=1e-6, rtol=0)
        full = full_one_query(q, g, 20, 6, 0.3)
        np.testing.assert_allclose(c[1], full[c[0]], atol=2e-6, rtol=0)


def _assert_same_rows(cache: RerankCache, nb: GalleryNeighbours, k1: int, k2: int) -> None:
    fresh = RerankCache(nb, k1=k1, k2=k2)
    rows = np.arange(nb.size)
    for (c_a, v_a), (c_b, v_b) in zip(cache.v_rows(rows), fresh.v_rows(rows), strict=True):
        np.testing.assert_array_equal(c_a, c_b)
        np.testing.assert_allclose(v_a, v_b, atol=1e-7, rtol=0)


@pytest.mark.parametrize(("k1", "k2"), [(20, 6), (7, 3), (1, 1)])
def test_sync_after_adds_and_removals_equals_a_fresh_build(
    k1: int, k2: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = _data(6, num_ids=50).gallery_features  # 250 items
    nb = GalleryNeighbours(g.shape[1], m=k1 + 2)
    nb.add(g[:10])
    cache = RerankCache(nb, k1=k1, k2=k2)
    assert cache.ready == (k1 + 1 <= 10)
    builds: list[str] = []
    real_build = RerankCache._build
    step = ""

    def counting_build(self: RerankCache) -> None:
        if self is cache:
            builds.append(step)
        real_build(self)

    monkeypatch.setattr(RerankCache, "_build", counting_build)
    for lo, hi in [(10, 40), (40, 41), (41, 150), (150, 151), (151, 160), (160, 250)]:
        step = f"add {lo}:{hi}"
        nb.add(g[lo:hi])
        cache.sync()
        _assert_same_rows(cache, nb, k1, k2)
    step = "remove"
    nb.remove(np.array([3, 170]))
    cache.sync()
    _assert_same_rows(cache, nb, k1, k2)
    # past the small sizes (where one item moves most lists), updates are incremental
    assert "add 150:151" not in builds and "remove" not in builds, builds


def test_queries_follow_the_neighbour_lists_without_an_explicit_sync() -> None:
    fs = _data(7)
    g = fs.gallery_features
    nb = GalleryNeighbours(g.shape[1], m=20)
    nb.add(g[:150])
    cache = RerankCache(nb)
    nb.add(g[150:])
    nb.remove(np.array([0, 1, 2]))
    keep = np.arange(3, g.shape[0])
    q = fs.query_features[2]
    d = pairwise_euclidean(q[None], g[keep])[0]
    order = np.argsort(d, kind="stable")[:30]
    ids, dist = cache.query(q, keep[order], d[order], expand=10)
    full = full_one_query(q, g[keep], 20, 6, 0.3)
    np.testing.assert_allclose(dist, full[np.searchsorted(keep, ids)], atol=2e-6, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_a_far_query_rescales_the_rows_it_is_farthest_from(scale: float) -> None:
    """The released ``d_o`` divides each row by the item's farthest distance in the set: a
    query past every gallery item's farthest one changes every row's weights."""
    fs = _data(9)
    g = fs.gallery_features
    nb, cache = _cached(g, 22)
    q = fs.query_features[0] + scale * (fs.query_features[0] - g.mean(axis=0))
    assert (pairwise_euclidean(q[None], g)[0] > nb.farthest_dists).any()
    top, top_d, d_all = _top(q, g, 25)
    full = full_one_query(q, g)
    for gallery_dists in (None, d_all):
        ids, dist = cache.query(q, top, top_d, expand=8, gallery_dists=gallery_dists)
        np.testing.assert_allclose(dist, full[ids], atol=2e-6, rtol=0)
    ids, dist = rerank_expanded(q, top, top_d, nb, expand=8)
    np.testing.assert_allclose(dist, full[ids], atol=2e-6, rtol=0)


def test_sync_after_an_outlier_is_added_equals_a_fresh_build() -> None:
    g = _data(10, num_ids=50).gallery_features
    nb, cache = _cached(g[:200], 22)
    nb.add(g[200:201] * 8)  # the new farthest item of every other one
    cache.sync()
    _assert_same_rows(cache, nb, 20, 6)


def test_small_gallery_falls_back_to_the_uncached_path() -> None:
    fs = _data(8, num_ids=3)  # 15 items < k1 + 1
    g = fs.gallery_features
    nb, cache = _cached(g, 20)
    assert not cache.ready
    q = fs.query_features[0]
    top, top_d, _ = _top(q, g, g.shape[0])
    ids, dist = cache.query(q, top, top_d)
    np.testing.assert_allclose(dist, full_one_query(q, g, 20, 6, 0.3)[ids], atol=2e-6, rtol=0)


def test_rejects_bad_inputs() -> None:
    g = _data(9).gallery_features
    nb = GalleryNeighbours(g.shape[1], m=5)
    nb.add(g)
    with pytest.raises(ValueError, match="m >= k1"):
        RerankCache(nb, k1=20)
    with pytest.raises(ValueError, match="k2"):
        RerankCache(nb, k1=5, k2=7)
    cache = RerankCache(nb, k1=5, k2=3)
    q = g[0] + 0.1
    top, top_d, _ = _top(q, g, 10)
    with pytest.raises(ValueError, match="gallery_dists"):
        cache.query(q, top, top_d, gallery_dists=np.zeros(3))
    with pytest.raises(ValueError, match="top-5"):
        cache.query(q, top[:3], top_d[:3])
    with pytest.raises(ValueError, match=">= 0"):
        cache.query(q, top, top_d, expand=-1)
