"""A gallery as the API sees it: search, score filter and re-ranking above a storage engine.

Written once for every engine (:mod:`service.gallery.backend`). Re-ranking:

- ``shortlist`` mode, and any filtered search: the k-reciprocal algorithm on query + the
  query's top ``shortlist`` candidates (:func:`reidcore.rerank.rerank_shortlist`).
- ``exact`` mode without a filter: the store's exact re-ranker when it keeps one (the local
  engine: neighbour lists over the whole gallery in memory, :mod:`service.gallery.exact_rerank`);
  otherwise the query's *neighbourhood*: its top ``shortlist`` and their own top-``k1``
  neighbour lists, fetched by one batched search, re-ranked together (:func:`neighbourhood_rerank`).
  Every top candidate's neighbourhood is then its true gallery neighbourhood, which a plain
  shortlist cuts; nothing is kept per process, so replicas of a shared gallery agree.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np

from service.errors import CropNotFound, GalleryNotFound, InvalidInput, ItemNotFound
from service.gallery.attribute_search import restricted_hits
from service.gallery.backend import GalleryStore
from service.gallery.blobs import BlobStore, new_key, original_key
from service.gallery.crops import Crop
from service.gallery.local_search import LocalParams, local_rescore
from service.gallery.query_tricks import CameraMeans, TrickParams, trick_search
from service.gallery.search import scores_to_distances
from service.gallery.types import (
    AddResult,
    GalleryStats,
    Hits,
    Item,
    Match,
    NewItem,
    RerankParams,
    SearchFilter,
)

P = ParamSpec("P")
R = TypeVar("R")


def _while_open(
    method: Callable[Concatenate[Gallery, P], R],
) -> Callable[Concatenate[Gallery, P], R]:
    """Run ``method`` only on an open gallery (else :class:`GalleryNotFound`), and let
    :meth:`Gallery.close` (a deletion) wait for it: a deleted gallery answers 404, never an
    error from its closed storage."""

    @functools.wraps(method)
    def wrapper(self: Gallery, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._users:
            if self._closed:
                raise GalleryNotFound(self.name)
            self._active += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            with self._users:
                self._active -= 1
                self._users.notify_all()

    return wrapper


class Gallery:
    """One open gallery over a :class:`GalleryStore`; thread-safe as its store is."""

    def __init__(self, store: GalleryStore, blobs: BlobStore | None = None) -> None:
        self.store = store
        self.blobs = blobs
        """Where the items' crops are kept (None: no crops are kept)."""
        self.name = store.name
        self.dim = store.dim
        self.model_id = store.model_id
        self._camera_means = CameraMeans()
        """Per-camera mean embeddings for camera-normalised searches, kept current."""
        self._users = threading.Condition()
        self._active = 0
        self._closed = False

    # ------------------------------------------------------------ storage, passed through
    @_while_open
    def add(
        self,
        items: Sequence[NewItem],
        embeddings: np.ndarray,
        crops: Sequence[Crop | None] | None = None,
    ) -> list[AddResult]:
        """Store items with their embeddings [M, dim] (and ``crops``, one per item) durably,
        then make them searchable.

        Each crop is written to the blob store *before* the transaction that stores its item,
        so no acknowledged item lacks its crop; a failure leaves at worst an orphan blob
        (:func:`service.gallery.blobs.sweep_orphans`). Items whose external id already exists
        are not written again (idempotent add), and their new crops are removed.
        """
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.shape != (len(items), self.dim):
            raise InvalidInput(
                f"expected embeddings of shape ({len(items)}, {self.dim}), got {emb.shape}"
            )
        if crops is None or self.blobs is None or not self.store.keeps_crops:
            return self._note_added(items, emb, self.store.add(items, emb))
        items = self._put_crops(self.blobs, items, crops)
        try:
            results = self._note_added(items, emb, self.store.add(items, emb))
        except BaseException:
            self.blobs.delete(_crop_keys(it.crop for it in items))
            raise
        unused = (it.crop for it, r in zip(items, results, strict=True) if not r.created)
        self.blobs.delete(_crop_keys(unused))
        return results

    def _note_added(
        self, items: Sequence[NewItem], emb: np.ndarray, results: list[AddResult]
    ) -> list[AddResult]:
        """Count the items actually created in the camera means; ``results`` unchanged."""
        new = [i for i, r in enumerate(results) if r.created]
        self._camera_means.added([items[i].camera for i in new], emb[new])
        return results

    def _put_crops(
        self, blobs: BlobStore, items: Sequence[NewItem], crops: Sequence[Crop | None]
    ) -> list[NewItem]:
        """Write each item's crop under a new key (all at once); the items naming their keys."""
        out: list[NewItem] = []
        writes: list[tuple[str, bytes]] = []
        for it, crop in zip(items, crops, strict=True):
            if crop is None:
                out.append(it)
                continue
            key = new_key(self.name)
            writes.append((key, crop.thumbnail))
            if crop.original is not None:
                writes.append((original_key(key), crop.original))
            out.append(dataclasses.replace(it, crop=key))
        blobs.put_many(writes)
        return out

    @_while_open
    def crop_key(self, item_id: int, original: bool = False) -> str:
        """Blob key of an item's crop (or of its original upload); :class:`CropNotFound` when
        the item has none (stored before crops were kept), :class:`ItemNotFound`."""
        key = self.get(item_id).crop
        if key is None or self.blobs is None:
            raise CropNotFound(
                f"item {item_id} of gallery {self.name!r} has no stored crop: it was added "
                "before the service kept crops (add the image again to keep one)"
            )
        return original_key(key) if original else key

    @_while_open
    def read_crop(self, item_id: int, original: bool = False) -> tuple[str, bytes]:
        """(key, bytes) of an item's crop or original upload (:meth:`crop_key`)."""
        key = self.crop_key(item_id, original)
        data = None if self.blobs is None else self.blobs.get(key)
        if data is None:
            what = "original upload was not kept" if original else "crop is missing"
            raise CropNotFound(f"item {item_id} of gallery {self.name!r}: its {what}")
        return key, data

    @_while_open
    def find_external(self, external_ids: Sequence[str]) -> dict[str, int]:
        """External id -> item id for those that already exist."""
        return self.store.find_external(list(external_ids)) if external_ids else {}

    @_while_open
    def delete(self, item_id: int) -> None:
        """Delete one item durably, then its crop; raises :class:`ItemNotFound`."""
        item = self.get(item_id)
        crop = item.crop
        means = self._camera_means
        vector = self.store.vectors([item_id])[1] if means.built else np.zeros((0, self.dim))
        self.store.delete(item_id)
        if len(vector):
            means.removed(item.camera, vector[0])
        if crop is not None and self.blobs is not None:
            self.blobs.delete(_crop_keys([crop]))

    @_while_open
    def get(self, item_id: int) -> Item:
        """One item; raises :class:`ItemNotFound`."""
        items = self.store.fetch([item_id])
        if item_id not in items:
            raise ItemNotFound(self.name, item_id)
        return items[item_id]

    @_while_open
    def run(self, fn: Callable[[GalleryStore], R]) -> R:
        """``fn(store)`` while the gallery is open (a deletion waits for it; 404 after)."""
        return fn(self.store)

    @_while_open
    def stats(self) -> GalleryStats:
        return self.store.stats()

    def close(self) -> None:
        """Close the storage once the operations under way are done; later ones get 404."""
        with self._users:
            self._closed = True
            self._users.wait_for(lambda: self._active == 0)
        self.store.close()

    @_while_open
    def __len__(self) -> int:
        return self.store.count()

    # ------------------------------------------------------------ search
    @_while_open
    def search(
        self,
        query: np.ndarray,
        k: int,
        filt: SearchFilter | None = None,
        rerank: RerankParams | None = None,
        among: np.ndarray | None = None,
        tricks: TrickParams | None = None,
        local: LocalParams | None = None,
    ) -> list[Match]:
        """Top-``k`` items for ``query`` [dim] (unit vector), exact under ``filt``; with
        ``among`` (item ids, ascending), only those items (the ``attributes`` filter,
        :func:`service.gallery.attribute_search.restricted_hits`).

        With ``rerank``, the ``rerank.shortlist`` best candidates are re-ranked with
        k-reciprocal re-ranking and the best ``k`` of them returned, by re-ranked distance
        (module docstring for which variant runs when). With ``tricks`` (α-QE, DBA, camera
        normalisation; not combined with ``rerank``), a shortlist re-scored in the tricks'
        space (:mod:`service.gallery.query_tricks`). With ``local``, the shortlist re-scored
        with AlignedReID's global + local distance, before any re-ranking
        (:mod:`service.gallery.local_search`).
        """
        filt = filt or SearchFilter()
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise InvalidInput(
                f"query has dimension {q.shape[0]}, gallery {self.name!r} has {self.dim}"
            )
        if tricks is not None and tricks.tricks.any():
            if rerank is not None or local is not None:
                raise InvalidInput(
                    "rerank and local_distance cannot be combined with qe_n, dba_n or camera_norm"
                )
            ids, scores, dists = trick_search(
                self.store, q, k, filt, among, tricks, self._camera_means
            )
        elif (
            rerank is not None
            and local is None
            and rerank.mode == "exact"
            and filt.is_empty()
            and among is None
        ):
            ids, scores, dists = self._exact(q, k, rerank)
        else:
            depth = max(k, rerank.shortlist if rerank else 0, local.shortlist if local else 0)
            if among is None:
                found = self.store.search(q[None], depth, filt, with_vectors=rerank is not None)
            else:
                found = [restricted_hits(self.store, q, depth, filt, among, rerank is not None)]
            hits = _min_score(found[0], filt.min_score)
            ids, scores = hits.ids, hits.scores
            if local is not None:
                ids, scores, dists = local_rescore(self.store, hits, k, local, rerank)
            elif rerank is not None and hits.vectors is not None and len(ids) > 1:
                ids, scores, dists = _rerank_shortlist(q, hits, k, rerank)
            else:
                dists = scores_to_distances(scores)
        items = self.store.fetch(ids.tolist())
        return [
            Match(items[i], float(s), float(d))
            for i, s, d in zip(ids.tolist(), scores.tolist(), dists.tolist(), strict=True)
            if i in items  # deleted between the search and the fetch
        ]

    def _exact(
        self, q: np.ndarray, k: int, p: RerankParams
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        params = (p.k1, p.k2, p.lambda_value)
        done = self.store.exact_rerank(q, k, p.shortlist, params)
        if done is not None:
            return done
        return neighbourhood_rerank(self.store, q, k, p)


def _rerank_shortlist(
    q: np.ndarray, hits: Hits, k: int, p: RerankParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-rank the shortlist ``hits`` (best first, with vectors) and keep the best ``k``."""
    assert hits.vectors is not None
    dists = _rerank_distances(q, hits.vectors, p)
    order = np.argsort(dists, kind="stable")[:k]
    return hits.ids[order], hits.scores[order], dists[order]


def neighbourhood_rerank(
    store: GalleryStore, q: np.ndarray, k: int, p: RerankParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-reciprocal re-ranking of the query's neighbourhood, fetched from ``store``.

    The set re-ranked is the query's top ``max(k, shortlist, k1)`` items plus each one's own
    ``k1`` nearest gallery items (one batched search), so the neighbourhoods of the top
    candidates are those of the whole gallery. Returns the best ``k`` of that set by
    re-ranked distance, with their cosine scores.
    """
    top = store.search(q[None], max(k, p.shortlist, p.k1), SearchFilter(), with_vectors=True)[0]
    if len(top.ids) < 2 or top.vectors is None:
        return top.ids, top.scores, scores_to_distances(top.scores)
    lists = store.search(top.vectors, p.k1 + 1, SearchFilter(), with_vectors=True)
    ids = np.concatenate([top.ids, *(h.ids for h in lists)])
    vecs = [top.vectors, *(h.vectors for h in lists if h.vectors is not None)]
    ids, first = np.unique(ids, return_index=True)  # every item once
    feats = np.concatenate(vecs)[first]
    dists = _rerank_distances(q, feats, p)
    order = np.lexsort((ids, dists))[:k]
    scores = feats[order] @ q
    return ids[order], scores.astype(np.float32), dists[order]


def _rerank_distances(q: np.ndarray, feats: np.ndarray, p: RerankParams) -> np.ndarray:
    from reidcore.rerank import rerank_shortlist

    return np.asarray(
        rerank_shortlist(q, feats, k1=p.k1, k2=p.k2, lambda_value=p.lambda_value),
        dtype=np.float32,
    )


def _crop_keys(keys: Iterable[str | None]) -> list[str]:
    """Every blob of these crops: thumbnail and original upload (absent ones are ignored)."""
    return [k for key in keys if key is not None for k in (key, original_key(key))]


def _min_score(hits: Hits, min_score: float | None) -> Hits:
    """Hits at or above ``min_score``: the top-k of the allowed items stay exactly that."""
    if min_score is None:
        return hits
    return hits.take(hits.scores >= np.float32(min_score))
