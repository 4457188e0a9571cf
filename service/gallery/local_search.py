"""AlignedReID's test-time distance as a search option: the shortlist re-scored with the global
plus the aligned local distance, above the store seam.

Zhang et al., arXiv 1711.08184v2, Sec. 3.1: "the distance of two person images is the summation
of their global and local distances"; the global distance is the L2 distance of the global
features (here unit vectors: ``sqrt(2 - 2 score)``), the local one the shortest path through
the stripes' ``tanh(||f_i - g_j|| / 2)`` distances (:mod:`reidcore.local_distance`, the same
code ``reid evaluate --local-distance`` uses). Sec. 4.3: at test time it adds 0.3-0.5 % rank-1
but costs time, so it is an option (``local_distance`` on image search) and runs on a
**shortlist**: the store's top ``shortlist`` items by global score under the search's filters,
re-scored with ``global + weight * local`` (weight 1: the paper's sum) and the best ``k``
returned, ordered by that distance (``Match.distance``; ``Match.score`` stays the cosine).

With ``rerank`` the combined distance comes **first**: it is the original distance that
k-reciprocal re-ranking then re-ranks (query-candidate and candidate-candidate distances,
``{query} ∪ shortlist``, as :func:`reidcore.rerank.rerank_shortlist` does with the global
distance alone), the way AlignedReID's released evaluation re-ranks its combined distance.

Items stored without local features (a model without a ``local`` output, a gallery or Milvus
collection from before they were kept) cannot be re-scored: the search is refused with
:class:`service.errors.LocalDistanceUnavailable` (409), never silently answered by the global
distance alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidcore.evaluation import pairwise_euclidean
from reidcore.local_distance import local_distance_matrix
from reidcore.rerank import k_reciprocal_rerank
from service.errors import LocalDistanceUnavailable
from service.gallery.backend import GalleryStore
from service.gallery.search import scores_to_distances
from service.gallery.types import Hits, RerankParams


@dataclass(frozen=True)
class LocalParams:
    """A ``local_distance`` search."""

    query: np.ndarray
    """The query's stripe features [H, c] float32 (the model's ``local`` output)."""
    weight: float = 1.0
    """Weight of the local distance in ``global + weight * local`` (1: the paper's sum)."""
    shortlist: int = 100
    """Candidates (top by global score) re-scored."""


def local_features(
    store: GalleryStore, hits: Hits, shape: tuple[int, ...]
) -> tuple[Hits, np.ndarray]:
    """(``hits`` less items deleted since the search, their local features [m, *shape]);
    :class:`LocalDistanceUnavailable` when a hit was stored without local features."""
    ids = hits.ids.tolist()
    found = store.local_features(ids)
    lacking = [i for i in ids if i not in found]
    if lacking and store.fetch(lacking):
        raise LocalDistanceUnavailable(
            f"gallery {store.name!r} holds items without local features (e.g. item "
            f"{lacking[0]}): they were added with a model without a 'local' output or before "
            "local features were stored; re-index the gallery with this model to use "
            "local_distance"
        )
    size = int(np.prod(shape))
    if any(f.size != size for f in found.values()):
        raise LocalDistanceUnavailable(
            f"gallery {store.name!r} holds local features of another shape than the model's "
            f"{list(shape)}; re-index the gallery with this model to use local_distance"
        )
    keep = np.array([i in found for i in ids], dtype=bool)
    kept = hits.take(keep)
    feats = [found[i].reshape(shape) for i in kept.ids.tolist()]
    return kept, np.stack(feats) if feats else np.zeros((0, *shape), np.float32)


def local_rescore(
    store: GalleryStore, hits: Hits, k: int, p: LocalParams, rerank: RerankParams | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, cosine scores, distances) of the best ``k`` of the shortlist ``hits`` by
    ``global + weight * local`` distance, k-reciprocal re-ranked after with ``rerank`` (then
    ``hits`` must carry their vectors)."""
    hits, gal = local_features(store, hits, p.query.shape)
    if len(hits.ids) == 0:
        return hits.ids, hits.scores, scores_to_distances(hits.scores)
    q_local = np.asarray(p.query, dtype=np.float32)[None]
    dists = (
        scores_to_distances(hits.scores)
        + np.float32(p.weight) * (local_distance_matrix(q_local, gal)[0])
    )
    if rerank is not None and len(hits.ids) > 1:
        assert hits.vectors is not None
        g_g = pairwise_euclidean(hits.vectors, hits.vectors)
        g_g = g_g + np.float32(p.weight) * local_distance_matrix(gal, gal)
        dists = k_reciprocal_rerank(
            dists[None],
            np.zeros((1, 1), np.float32),
            g_g,
            k1=rerank.k1,
            k2=rerank.k2,
            lambda_value=rerank.lambda_value,
        )[0]
    order = np.lexsort((hits.ids, dists))[:k]
    return hits.ids[order], hits.scores[order], dists[order].astype(np.float32)
