"""Gallery neighbour lists and expanded-shortlist re-ranking against brute force / the full algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from reidcore.evaluation import pairwise_euclidean
from reidcore.rerank_neighbours import GalleryNeighbours, rerank_expanded
from reidcore.synthetic_features import make_clustered_features
from tests.core.rerank_reference import full_one_query


def _brute_lists(feats: np.ndarray, alive: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-m alive other items per alive row, by (distance, id), padded with -1 / inf."""
    x = feats.astype(np.float64)
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0))
    np.fill_diagonal(d, np.inf)
    d[:, ~alive] = np.inf
    n = feats.shape[0]
    ids = np.full((n, m), -1, dtype=np.int64)
    dists = np.full((n, m), np.inf)
    for i in np.flatnonzero(alive):
        order = sorted(range(n), key=lambda j, i=i: (d[i, j], j))[:m]
        order = [j for j in order if np.isfinite(d[i, j])]
        ids[i, : len(order)] = order
        dists[i, : len(order)] = d[i, order]
    return ids, dists


def _features(n_ids: int = 25, per_id: int = 6, dim: int = 24, seed: int = 0) -> np.ndarray:
    fs = make_clustered_features(
        num_ids=n_ids, images_per_id=per_id, num_cams=3, dim=dim, noise=0.9, seed=seed
    )
    return fs.gallery_features


# --------------------------------------------------------------------------- lists


@pytest.mark.parametrize("seed", [0, 1])
def test_incremental_adds_equal_brute_force(seed: int) -> None:
    feats = _features(seed=seed)  # 125 items
    nb = GalleryNeighbours(feats.shape[1], m=12)
    for lo, hi in [(0, 5), (5, 6), (6, 60), (60, 61), (61, 125)]:  # first add: fewer than m
        got = nb.add(feats[lo:hi])
        np.testing.assert_array_equal(got, np.arange(lo, hi))
        ref_ids, ref_d = _brute_lists(feats[:hi], np.ones(hi, bool), 12)
        np.testing.assert_array_equal(nb.neighbour_ids, ref_ids)
        np.testing.assert_allclose(nb.neighbour_dists, ref_d, rtol=1e-5, atol=1e-5)


def test_remove_repairs_lists_like_brute_force() -> None:
    feats = _features(seed=2)
    nb = GalleryNeighbours(feats.shape[1], m=10)
    nb.add(feats)
    alive = np.ones(feats.shape[0], bool)
    victims = np.array([3, 4, 50, 99])
    before = nb.neighbour_ids.copy()
    repaired = nb.remove(victims)
    alive[victims] = False
    expected = np.flatnonzero(np.isin(before, victims).any(axis=1) & alive)
    np.testing.assert_array_equal(np.sort(repaired), expected)
    assert repaired.size > 0
    ref_ids, ref_d = _brute_lists(feats, alive, 10)
    np.testing.assert_array_equal(nb.neighbour_ids, ref_ids)
    np.testing.assert_allclose(nb.neighbour_dists, ref_d, rtol=1e-5, atol=1e-5)
    assert nb.num_alive == feats.shape[0] - victims.size
    nb.add(feats[:7])  # adds after a removal never list the removed items
    assert not np.isin(nb.neighbour_ids, victims).any()


def _brute_farthest(feats: np.ndarray, alive: np.ndarray) -> np.ndarray:
    x = feats.astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    d[:, ~alive] = 0.0
    return np.where(alive, d.max(axis=1), 0.0)


def test_farthest_items_follow_adds_and_removals() -> None:
    feats = _features(seed=4)
    feats[60] *= 6  # an outlier: the farthest item of most others
    nb = GalleryNeighbours(feats.shape[1], m=6)
    alive = np.ones(feats.shape[0], bool)
    nb.add(feats[:1])
    np.testing.assert_array_equal(nb.farthest_dists, [0.0])  # alone: no other item
    for lo, hi in [(1, 30), (30, 61), (61, 125)]:
        nb.add(feats[lo:hi])
        ref = _brute_farthest(feats[:hi], alive[:hi])
        np.testing.assert_allclose(nb.farthest_dists, ref, rtol=1e-5, atol=1e-5)
    nb.remove(np.array([60, 5]))  # most items lose their farthest
    alive[[60, 5]] = False
    np.testing.assert_allclose(
        nb.farthest_dists, _brute_farthest(feats, alive), rtol=1e-5, atol=1e-5
    )
    arrays = nb.to_arrays()
    del arrays["farthest_ids"], arrays["farthest_dists"]  # lists saved before they existed
    back = GalleryNeighbours.from_arrays(arrays)
    np.testing.assert_allclose(back.farthest_dists, nb.farthest_dists, rtol=1e-6)


def test_remove_rejects_unknown_and_removed_ids() -> None:
    nb = GalleryNeighbours(4, m=2)
    nb.add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"valid ids are 0\.\.3"):
        nb.remove(np.array([4]))
    nb.remove(np.array([1]))
    with pytest.raises(ValueError, match="already removed"):
        nb.remove(np.array([1]))


def test_add_rejects_bad_features() -> None:
    nb = GalleryNeighbours(4, m=2)
    with pytest.raises(ValueError, match=r"shape \[B, 4\]"):
        nb.add(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        nb.add(np.full((1, 4), np.nan))


def test_persistence_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    feats = _features(seed=3)
    nb = GalleryNeighbours(feats.shape[1], m=8)
    nb.add(feats[:100])
    nb.remove(np.array([7]))
    path = tmp_path / "nbrs.npz"
    np.savez(path, **nb.to_arrays())
    with np.load(path) as arrays:
        back = GalleryNeighbours.from_arrays(arrays)
    for name in ("neighbour_ids", "neighbour_dists", "alive", "farthest_dists"):
        np.testing.assert_array_equal(getattr(back, name), getattr(nb, name))
    assert back.m == 8 and back.dim == feats.shape[1]
    back.add(feats[100:])  # the restored structure keeps updating exactly
    nb.add(feats[100:])
    np.testing.assert_array_equal(back.neighbour_ids, nb.neighbour_ids)


def test_from_arrays_names_the_problem() -> None:
    nb = GalleryNeighbours(3, m=2)
    nb.add(np.eye(3, dtype=np.float32))
    arrays = nb.to_arrays()
    with pytest.raises(ValueError, match="lack"):
        GalleryNeighbours.from_arrays({"features": arrays["features"]})
    arrays["neighbour_ids"] = arrays["neighbour_ids"] + 5
    with pytest.raises(ValueError, match="neighbour_ids outside"):
        GalleryNeighbours.from_arrays(arrays)


# --------------------------------------------------------------------------- re-ranking


@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (7, 1, 0.5), (10, 4, 0.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_expanded_equals_full_when_it_covers_the_gallery(
    seed: int, k1: int, k2: int, lam: float
) -> None:
    fs = make_clustered_features(num_ids=20, images_per_id=6, dim=24, noise=0.9, seed=seed)
    g = fs.gallery_features
    nb = GalleryNeighbours(g.shape[1], m=k1)
    nb.add(g[:40])
    nb.add(g[40:])
    for q in fs.query_features[:3]:
        full = full_one_query(q, g, k1, k2, lam)
        dq = pairwise_euclidean(q[None], g)[0]
        ids, dist = rerank_expanded(
            q, np.arange(g.shape[0]), dq, nb, k1=k1, k2=k2, lambda_value=lam
        )
        assert dist.dtype == np.float32
        np.testing.assert_array_equal(np.sort(ids), np.arange(g.shape[0]))
        assert (np.diff(dist) >= 0).all()
        np.testing.assert_allclose(dist, full[ids], atol=2e-6, rtol=0)


@pytest.mark.parametrize("seed", [2, 3])
def test_expanded_scores_are_exact_on_a_partial_shortlist(seed: int) -> None:
    """With K << gallery, every returned item still gets the full algorithm's distance."""
    fs = make_clustered_features(num_ids=40, images_per_id=6, dim=24, noise=1.0, seed=seed)
    g = fs.gallery_features
    nb = GalleryNeighbours(g.shape[1], m=25)
    nb.add(g)
    for q in fs.query_features[:4]:
        full = full_one_query(q, g, 20, 6, 0.3)
        dq = pairwise_euclidean(q[None], g)[0]
        top = np.argsort(dq)[:25][::-1]  # any order is accepted
        ids, dist = rerank_expanded(q, top, dq[top], nb, nb.features, expand=10)
        assert np.isin(top, ids).all() and ids.size < g.shape[0]
        np.testing.assert_allclose(dist, full[ids], atol=2e-6, rtol=0)


def test_expanded_after_removal_matches_full_on_survivors() -> None:
    fs = make_clustered_features(num_ids=20, images_per_id=6, dim=24, noise=0.9, seed=4)
    g = fs.gallery_features
    nb = GalleryNeighbours(g.shape[1], m=20)
    nb.add(g)
    gone = np.array([0, 5, 17, 60])
    nb.remove(gone)
    keep = np.setdiff1d(np.arange(g.shape[0]), gone)
    q = fs.query_features[1]
    full = full_one_query(q, g[keep], 20, 6, 0.3)  # indexed like keep
    dq = pairwise_euclidean(q[None], g[keep])[0]
    ids, dist = rerank_expanded(q, keep, dq, nb)
    np.testing.assert_allclose(dist, full[np.searchsorted(keep, ids)], atol=2e-6, rtol=0)


def test_expanded_rejects_bad_inputs() -> None:
    nb = GalleryNeighbours(4, m=3)
    nb.add(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32))
    q, top, d = np.zeros(4, np.float32), np.arange(5), np.ones(5, np.float32)
    with pytest.raises(ValueError, match=r"m=3 items; k1=5 needs m >= k1"):
        rerank_expanded(q, top, d, nb, k1=5, k2=2)
    with pytest.raises(ValueError, match=r"query_feat must have shape \[4\]"):
        rerank_expanded(np.zeros(3), top, d, nb, k1=3, k2=2)
    with pytest.raises(ValueError, match="outside the gallery"):
        rerank_expanded(q, np.array([0, 1, 12]), d[:3], nb, k1=3, k2=2)
    with pytest.raises(ValueError, match="top-3 at least"):
        rerank_expanded(q, top[:2], d[:2], nb, k1=3, k2=2)
    nb.remove(np.array([1]))
    with pytest.raises(ValueError, match=r"removed items: \[1\]"):
        rerank_expanded(q, top, d, nb, k1=3, k2=2)
