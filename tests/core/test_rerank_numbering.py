"""One numbering for the three re-rankers (``reidcore.rerank_rows``): the query first."""

from __future__ import annotations

import numpy as np
import pytest

from reidcore import rerank_cache
from reidcore.evaluation import pairwise_euclidean
from reidcore.rerank_cache import RerankCache
from reidcore.rerank_neighbours import GalleryNeighbours
from reidcore.rerank_rows import SparseRows, query_first
from reidcore.synthetic_features import make_clustered_features


def test_query_first_renumbers_a_hand_made_case() -> None:
    """Gallery of 3 (ids 0..2), query id 3: rows keep their values, the query moves first."""
    v = SparseRows(
        np.array([0, 3, 3, 5]),  # row 1 empty
        np.array([0, 2, 3, 1, 2]),
        np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32),
    )
    out = query_first(v, 3)
    np.testing.assert_array_equal(out.indptr, v.indptr)
    np.testing.assert_array_equal(out.cols, [0, 1, 3, 2, 3])
    np.testing.assert_array_equal(out.vals, np.array([0.3, 0.1, 0.2, 0.4, 0.5], np.float32))
    assert query_first(SparseRows.empty(2), 3).cols.size == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_the_cache_gives_the_same_scores_in_either_numbering(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query's number is only matched, never ordered: renumbering it changes nothing
    (exactly), against the cache run with the query left at id N."""
    fs = make_clustered_features(
        num_ids=30, images_per_id=6, num_cams=3, dim=16, noise=1.0, seed=seed
    )
    g = fs.gallery_features
    nb = GalleryNeighbours(g.shape[1], m=23)
    nb.add(g)
    cache = RerankCache(nb, k1=20, k2=6)
    for q in fs.query_features[:4]:
        d = pairwise_euclidean(q[None], g)[0]
        top = np.argsort(d, kind="stable")[:20]
        ids, dist = cache.query(q, top, d[top], expand=6)
        with monkeypatch.context() as m:
            m.setattr(rerank_cache, "query_first", lambda v, query_id: v)
            old_ids, old_dist = cache.query(q, top, d[top], expand=6)
        np.testing.assert_array_equal(ids, old_ids)
        np.testing.assert_allclose(dist, old_dist, rtol=0, atol=1e-7)
