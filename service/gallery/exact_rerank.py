"""Exact k-reciprocal re-ranking of a gallery search, kept up to date beside the gallery rows.

The shortlist re-ranking (:func:`reidcore.rerank.rerank_shortlist`) runs the algorithm on the
query's top-K alone, which cuts every candidate's neighbourhood to the shortlist and can
lower rank-1. :class:`ExactReranker` instead keeps gallery neighbour lists
(:class:`reidcore.rerank_neighbours.GalleryNeighbours`) and cached re-ranking rows
(:class:`reidcore.rerank_cache.RerankCache`) over the gallery's rows, and scores each
query's top-K plus its neighbours' lists with the distance the full algorithm gives on
``{query} ∪ gallery`` (a few ms per query at 100k items, see benchmarks/RESULTS.md).

Lifecycle: built on the first re-ranked search of a gallery (one exact k-NN pass over the
gallery: FAISS from 20k items, ~1 minute at 100k x 512 on 2 cores), then followed
incrementally: rows appended since the last search are added, deleted rows removed. The
gallery saves the lists when it closes (:meth:`ExactReranker.save`, beside its SQLite file)
and the next process takes them back instead of building them, when they still describe
the gallery's rows (:meth:`ExactReranker._load`). Row numbers change when the gallery
compacts its tombstones; the gallery drops this object then and the next re-ranked search
builds it again. Memory: a copy of the embeddings plus about 800 bytes per item (lists,
flags and cached rows; ~80 MiB at 100k items).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidcore.rerank_cache import RerankCache
from reidcore.rerank_neighbours import GalleryNeighbours
from service.cpu import matvec
from service.gallery.search import scores_to_distances

logger = logging.getLogger(__name__)

FAISS_BUILD_FROM = 20_000  # below this, GalleryNeighbours.add is fast enough (~2 s at 10k)


@dataclass(frozen=True)
class ExactResult:
    """Re-ranked hits, best first."""

    item_ids: np.ndarray
    """Gallery item ids (int64)."""
    scores: np.ndarray
    """Cosine similarity to the query (float32)."""
    distances: np.ndarray
    """Re-ranked distances (float32, ascending)."""


class ExactReranker:
    """Neighbour lists and cached re-ranking rows over one gallery's rows (thread-safe)."""

    def __init__(
        self, dim: int, k1: int, k2: int, lambda_value: float, saved: Path | None = None
    ) -> None:
        self.dim = dim
        self.params = (k1, k2, lambda_value)
        self.saved = saved
        """Lists saved by an earlier process, tried before building them (may not exist)."""
        self._lock = threading.Lock()
        self._nb: GalleryNeighbours | None = None
        self._cache: RerankCache | None = None
        self._item_ids = np.empty(0, dtype=np.int64)  # per row of the lists

    def search(
        self,
        query: np.ndarray,
        rows: tuple[np.ndarray, np.ndarray, np.ndarray],
        k: int,
        shortlist: int,
    ) -> ExactResult:
        """The best ``k`` alive items for unit vector ``query`` by exact re-ranked distance.

        ``rows`` = ``(matrix [n, dim], alive [n], item ids [n])``: a snapshot of the
        gallery's rows (rows never change in place; new ones are appended). The lists follow
        the newest snapshot seen, so an older one only brings nothing new. The scored set is
        the top ``max(k, shortlist)`` items by plain distance plus the neighbour lists of the
        query's nearest items.
        """
        with self._lock:
            cache, nb = self._sync(*rows)
            if nb.num_alive == 0:
                empty = np.empty(0, dtype=np.float32)
                return ExactResult(np.empty(0, dtype=np.int64), empty, empty)
            feats, alive = nb.features_view(), nb.alive
            scores = matvec(feats, query)  # the flat search: every distance, for the cache too
            d_all = np.where(alive, scores_to_distances(scores), np.float32(np.inf))
            depth = min(max(k, shortlist, self.params[0]), nb.num_alive)
            top = np.argpartition(d_all, depth - 1)[:depth]  # dead rows are at +inf
            hits, dists = cache.query(query, top, d_all[top], gallery_dists=d_all)
            hits, dists = hits[:k], dists[:k]
            return ExactResult(self._item_ids[hits], scores[hits].astype(np.float32), dists)

    def refresh(self, rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Follow the gallery's rows now (after an add) when already built; else nothing."""
        with self._lock:
            if self._nb is not None:
                cache, _ = self._sync(*rows)
                cache.sync()

    def save(self, rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> bool:
        """Write the lists, brought to the gallery's ``rows`` (the snapshot of :meth:`search`)
        first, to ``self.saved`` (atomically); False when they were never built.

        Only the alive rows are written, renumbered, as a restarted gallery holds only its
        alive items; and not their embeddings (the gallery has them): the lists, their
        distances and the item id of every row, which :meth:`_load` checks.
        """
        with self._lock:
            if self._nb is None or self.saved is None:
                return False
            self._sync(*rows)  # deletions are otherwise applied at the next search
            arrays = _alive_rows(self._nb, self._item_ids)
            if arrays is None:
                logger.warning("exact re-ranking: lists name deleted rows; not saved")
                return False
            tmp = self.saved.with_name(self.saved.name + ".tmp")
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, params=np.array(self.params))  # type: ignore[arg-type]
            os.replace(tmp, self.saved)
        logger.info(
            "exact re-ranking: lists of %d rows saved to %s", len(arrays["item_ids"]), self.saved
        )
        return True

    def _load(
        self, matrix: np.ndarray, item_ids: np.ndarray
    ) -> tuple[GalleryNeighbours, np.ndarray] | None:
        """The saved lists, when they describe the first rows of these (same item ids, same
        parameters); None otherwise. Rows appended or deleted since are then followed by
        :meth:`_sync` as usual; a compaction changes the ids and forces a build."""
        if self.saved is None or not self.saved.is_file():
            return None
        try:
            with np.load(self.saved) as f:
                arrays = {k: f[k] for k in f.files}
            saved_ids = arrays.pop("item_ids")
            n = len(saved_ids)
            if tuple(arrays.pop("params").tolist()) != self.params or n > len(item_ids):
                return None
            if not np.array_equal(saved_ids, item_ids[:n]):
                return None
            nb = GalleryNeighbours.from_arrays({**arrays, "features": matrix[:n]})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            logger.warning(
                "exact re-ranking: %s unusable (%s); building the lists", self.saved, exc
            )
            return None
        if nb.m != self.params[0]:
            return None
        return nb, saved_ids.copy()

    def _sync(
        self, matrix: np.ndarray, alive: np.ndarray, item_ids: np.ndarray
    ) -> tuple[RerankCache, GalleryNeighbours]:
        """Bring the lists to the gallery rows: build once, then add new rows, remove dead ones."""
        k1, k2, lam = self.params
        n = matrix.shape[0]
        if self._nb is None or self._cache is None:
            t0 = time.perf_counter()
            loaded = self._load(matrix, item_ids)
            if loaded is None:
                self._nb, self._item_ids = build_neighbours(matrix, alive, m=k1), item_ids.copy()
            else:
                self._nb, self._item_ids = loaded
            self._cache = RerankCache(self._nb, k1=k1, k2=k2, lambda_value=lam)
            logger.info(
                "exact re-ranking: lists %s and cache built for %d items in %.1f s",
                "built" if loaded is None else f"loaded from {self.saved}",
                int(alive.sum()),
                time.perf_counter() - t0,
            )
            if loaded is None:
                return self._cache, self._nb
        nb = self._nb
        if n > nb.size:
            self._item_ids = np.concatenate([self._item_ids, item_ids[nb.size : n]])
            nb.add(matrix[nb.size : n])
        gone = np.flatnonzero(nb.alive[:n] & ~alive)
        if gone.size:
            nb.remove(gone)
        return self._cache, nb


def _alive_rows(nb: GalleryNeighbours, item_ids: np.ndarray) -> dict[str, np.ndarray] | None:
    """The lists of ``nb``'s alive rows, renumbered, with their item ids (the
    :meth:`GalleryNeighbours.from_arrays` fields but the features); None if an alive row
    lists a dead one (never, as removals repair the lists)."""
    alive = nb.alive
    keep = np.flatnonzero(alive)
    new_row = np.full(len(alive), -1, dtype=np.int64)
    new_row[keep] = np.arange(keep.size)
    ids = nb.neighbour_ids[keep]
    far = nb.farthest_ids[keep]
    renumbered = np.where(ids >= 0, new_row[np.maximum(ids, 0)], -1)
    if np.any((ids >= 0) & (renumbered < 0)):
        return None
    return {
        "neighbour_ids": renumbered,
        "neighbour_dists": nb.neighbour_dists[keep],
        "alive": np.ones(keep.size, dtype=bool),
        "item_ids": item_ids[keep],
        "farthest_dists": nb.farthest_dists[keep],  # re-ranking's d_o normalisation
        "farthest_ids": np.where(far >= 0, new_row[np.maximum(far, 0)], -1),
    }


def build_neighbours(matrix: np.ndarray, alive: np.ndarray, m: int) -> GalleryNeighbours:
    """Exact ``m``-nearest lists of the alive rows (FAISS k-NN for large galleries)."""
    n, dim = matrix.shape
    rows = np.flatnonzero(alive)
    if rows.size < FAISS_BUILD_FROM:
        nb = GalleryNeighbours(dim, m=m)
        nb.add(matrix)
        dead = np.flatnonzero(~alive)
        if dead.size:
            nb.remove(dead)
        return nb
    import faiss  # the service's dependency; only for large builds

    x = np.ascontiguousarray(matrix[rows], dtype=np.float32)
    index = faiss.IndexFlatL2(dim)
    index.add(x)
    d2, nn = index.search(x, m + 1)
    not_self = nn != np.arange(rows.size)[:, None]  # self is usually first, not always (twins)
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :m]  # others first, in order
    nn = np.take_along_axis(nn, order, axis=1)
    d = np.sqrt(np.maximum(np.take_along_axis(d2, order, axis=1), 0.0))
    ids = np.full((n, m), -1, dtype=np.int64)
    dists = np.full((n, m), np.inf, dtype=np.float32)
    ids[rows] = np.where(nn >= 0, rows[np.maximum(nn, 0)], -1)
    dists[rows] = np.where(nn >= 0, d, np.inf)
    return GalleryNeighbours.from_arrays(
        {"features": matrix, "neighbour_ids": ids, "neighbour_dists": dists, "alive": alive}
    )
