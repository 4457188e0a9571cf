"""The query-side tricks of a search (α-QE, DBA, camera normalisation) above the store seam.

The maths is :mod:`reidcore.query_tricks` (its docstring defines each trick and cites it);
this module fetches what it needs from any :class:`~service.gallery.backend.GalleryStore`.

A search with tricks works on a **shortlist**: the store's top ``shortlist`` items for the
(camera-normalised) query under the search's filters, at or above ``min_score`` (raw cosine).
Those candidates are re-scored in the tricks' space and the best ``k`` returned, ordered by
the distance there (``Match.distance``); ``Match.score`` stays the raw cosine similarity.
With a shortlist as large as the gallery the result is exactly that of the brute-force
computation over the whole gallery (:func:`reidcore.query_tricks.apply_tricks`).

- **DBA is computed on demand for the shortlist**, never stored: each candidate's ``n``
  nearest other gallery items come from one batched store search over the whole gallery
  (unfiltered: DBA is a property of the gallery, not of a search). Adding or deleting items
  therefore never leaves a stale augmented vector, replicas of a shared gallery agree, and
  the stored (raw) embedding stays the one GET, re-index and plain search use. Cost: one
  extra batched search of ``shortlist`` queries (``benchmarks/search.py --query-tricks``).
- **Camera means** are kept per gallery in memory (:class:`CameraMeans`): summed per camera
  when built, updated by the adds and deletes made through this process, and rebuilt from
  the store whenever its item count disagrees (writes by another replica or process).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reidcore.query_tricks import QueryTricks, expand, normalise, subtract_camera_means
from service.gallery.attribute_search import restricted_hits
from service.gallery.backend import GalleryStore
from service.gallery.search import scores_to_distances
from service.gallery.types import Hits, SearchFilter


@dataclass(frozen=True)
class TrickParams:
    """The tricks one search asks for."""

    tricks: QueryTricks
    query_camera: str | None = None
    """Camera that took the query (its gallery mean is subtracted with camera_norm)."""
    shortlist: int = 200
    """Candidates re-scored (the store's top items for the query)."""


class CameraMeans:
    """Per-camera sums and counts of one gallery's embeddings, kept current."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._items = -1  # items summed; -1: not built

    @property
    def built(self) -> bool:
        """Whether the sums exist (until then deletes need not read the deleted vector; a
        race only makes the count disagree, and the next use sums again)."""
        return self._items >= 0

    def means(self, store: GalleryStore) -> dict[str, np.ndarray]:
        """camera -> mean embedding (rebuilt first when the store's count disagrees)."""
        with self._lock:
            if self._items != store.count():
                self._rebuild(store)
            return {c: s / self._counts[c] for c, s in self._sums.items() if self._counts[c]}

    def _rebuild(self, store: GalleryStore) -> None:
        ids, vecs = store.vectors(store.item_ids().tolist())
        items = store.fetch(ids.tolist())
        self._sums, self._counts, self._items = {}, {}, 0
        self._update([items[i].camera for i in ids.tolist()], vecs, 1)

    def _update(self, cameras: Sequence[str], vectors: np.ndarray, sign: int) -> None:
        for cam, vec in zip(cameras, vectors, strict=True):
            self._sums[cam] = self._sums.get(cam, np.zeros_like(vec, np.float64)) + sign * vec
            self._counts[cam] = self._counts.get(cam, 0) + sign
            self._items += sign

    def added(self, cameras: Sequence[str], vectors: np.ndarray) -> None:
        """Items newly stored (only those actually created)."""
        with self._lock:
            if self._items >= 0:
                self._update(cameras, vectors, 1)

    def removed(self, camera: str, vector: np.ndarray) -> None:
        """One item deleted."""
        with self._lock:
            if self._items >= 0:
                self._update([camera], vector[None], -1)


def trick_search(
    store: GalleryStore,
    query: np.ndarray,
    k: int,
    filt: SearchFilter,
    among: np.ndarray | None,
    params: TrickParams,
    camera_means: CameraMeans,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, raw cosine scores, distances in the tricks' space) of the best ``k``."""
    tricks = params.tricks
    means = camera_means.means(store) if tricks.camera_norm else {}
    q = query
    if tricks.camera_norm and params.query_camera is not None:
        q = subtract_camera_means(query[None], [params.query_camera], means)[0]
    hits = _candidates(store, q, max(k, params.shortlist), filt, among)
    assert hits.vectors is not None
    raw = hits.vectors @ query
    if filt.min_score is not None:
        keep = raw >= np.float32(filt.min_score)
        hits, raw = hits.take(keep), raw[keep]
    vectors = hits.vectors
    assert vectors is not None
    if len(hits.ids) == 0:
        return hits.ids, raw, raw
    gallery = _transformed(store, hits.ids, vectors, means, tricks.camera_norm)
    if tricks.dba is not None:
        nb = _neighbours(store, hits, tricks.dba.n, means, tricks.camera_norm)
        gallery = expand(gallery, nb, tricks.dba.alpha)
    scores = gallery @ q
    if tricks.qe is not None:
        top = _best(hits.ids, scores, tricks.qe.n)
        q = expand(q[None], gallery[top][None], tricks.qe.alpha)[0]
        scores = gallery @ q
    order = _best(hits.ids, scores, k)
    return hits.ids[order], raw[order].astype(np.float32), scores_to_distances(scores[order])


def _candidates(
    store: GalleryStore, q: np.ndarray, depth: int, filt: SearchFilter, among: np.ndarray | None
) -> Hits:
    if among is not None:
        hits = restricted_hits(store, q, depth, filt, among, True)
    else:
        hits = store.search(q[None], depth, filt, with_vectors=True)[0]
    assert hits.vectors is not None
    return hits


def _best(ids: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` best scores, ties to the lower id."""
    return np.lexsort((ids, -scores))[:n]


def _transformed(
    store: GalleryStore,
    ids: np.ndarray,
    vectors: np.ndarray,
    means: dict[str, np.ndarray],
    camera_norm: bool,
) -> np.ndarray:
    """The vectors of items ``ids`` with their camera's mean subtracted (when asked)."""
    if not camera_norm:
        return normalise(vectors)
    items = store.fetch(ids.tolist())
    return subtract_camera_means(vectors, [items[i].camera for i in ids.tolist()], means)


def _neighbours(
    store: GalleryStore, hits: Hits, n: int, means: dict[str, np.ndarray], camera_norm: bool
) -> np.ndarray:
    """[m, n, d] each hit's ``n`` nearest other gallery items (zero rows where fewer)."""
    assert hits.vectors is not None
    lists = store.search(hits.vectors, n + 1, SearchFilter(), with_vectors=True)
    out = np.zeros((len(hits.ids), n, hits.vectors.shape[1]), np.float32)
    for row, (own, found) in enumerate(zip(hits.ids.tolist(), lists, strict=True)):
        assert found.vectors is not None
        other = found.ids != own
        ids, vecs = found.ids[other][:n], found.vectors[other][:n]
        out[row, : len(ids)] = _transformed(store, ids, vecs, means, camera_norm)
    return out
