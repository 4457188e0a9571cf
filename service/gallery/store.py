"""One persistent gallery: SQLite (metadata + embeddings) and an in-memory search index.

Durability: every write is one SQLite transaction (WAL, ``synchronous=FULL``) that stores
the embeddings too, committed before the caller is answered. The search index is never
persisted; it is rebuilt from the stored embeddings when the gallery opens, so a restart
loses nothing acknowledged. Deletions leave a tombstone in memory until a compaction.

A gallery records the model (manifest sha256) and dimension it was built with and refuses
to open under another model (:class:`ModelMismatch`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import InvalidInput, ItemNotFound, ModelMismatch
from service.gallery.exact_rerank import ExactReranker
from service.gallery.search import FaissIndex, IndexOptions, exact_search, needs_faiss

logger = logging.getLogger(__name__)

COMPACT_MIN_DEAD = 1024
"""Tombstones tolerated before compaction (besides a quarter of the rows)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    external_id TEXT UNIQUE,
    camera TEXT NOT NULL,
    timestamp REAL NOT NULL,
    metadata TEXT NOT NULL,
    attributes TEXT NOT NULL,
    embedding BLOB NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class NewItem:
    """What a caller supplies for one gallery item (besides its embedding)."""

    camera: str
    """Camera id."""
    timestamp: float
    """Capture time, seconds since the Unix epoch (UTC)."""
    external_id: str | None = None
    """Caller's id; adding the same external id again returns the existing item."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Caller's JSON metadata, returned with matches."""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Attributes predicted by the model: name -> {"label", "probability"}."""


@dataclass(frozen=True)
class Item:
    """A stored gallery item."""

    id: int
    camera: str
    timestamp: float
    external_id: str | None
    metadata: dict[str, Any]
    attributes: dict[str, Any]


@dataclass(frozen=True)
class AddResult:
    """Outcome of adding one item."""

    id: int
    external_id: str | None
    created: bool
    """False when the external id already existed (nothing was written)."""


@dataclass(frozen=True)
class SearchFilter:
    """Exact restrictions on which items may match."""

    cameras: frozenset[str] | None = None
    """Only these cameras (None: any)."""
    exclude_cameras: frozenset[str] = frozenset()
    """Never these cameras."""
    time_from: float | None = None
    """Earliest timestamp, inclusive (epoch seconds)."""
    time_to: float | None = None
    """Latest timestamp, exclusive (epoch seconds)."""
    min_score: float | None = None
    """Minimum cosine score."""

    def is_empty(self) -> bool:
        """True when every item may match."""
        return (
            self.cameras is None
            and not self.exclude_cameras
            and self.time_from is None
            and self.time_to is None
            and self.min_score is None
        )


@dataclass(frozen=True)
class RerankParams:
    """k-reciprocal re-ranking of a search."""

    shortlist: int = 100
    """Candidates (top by plain score) that are re-ranked."""
    mode: str = "exact"
    """``exact``: the full algorithm's distances on query + whole gallery, for the shortlist
    and its neighbours' lists (:mod:`service.gallery.exact_rerank`); used for unfiltered
    searches. ``shortlist``: the algorithm on query + shortlist alone (always used under a
    filter, where the whole gallery is not the set being ranked)."""
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


@dataclass(frozen=True)
class Match:
    """One search hit."""

    item: Item
    score: float
    """Cosine similarity to the query."""
    distance: float
    """Euclidean distance, or the re-ranked distance when re-ranking ran."""


@dataclass(frozen=True)
class GalleryStats:
    """Size and provenance of a gallery."""

    name: str
    items: int
    cameras: dict[str, int]
    dim: int
    model_id: str
    index: str
    time_min: float | None
    time_max: float | None


class _Rows:
    """Growable column arrays of the live gallery, row-aligned with the matrix."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.n = 0
        self.matrix = np.zeros((capacity, dim), dtype=np.float32)
        self.ids = np.zeros(capacity, dtype=np.int64)
        self.cams = np.zeros(capacity, dtype=np.int32)
        self.times = np.zeros(capacity, dtype=np.float64)
        self.alive = np.zeros(capacity, dtype=bool)

    def append(self, ids: np.ndarray, cams: np.ndarray, times: np.ndarray, emb: np.ndarray) -> None:
        m = len(ids)
        if self.n + m > len(self.ids):
            self._grow(max(2 * len(self.ids), self.n + m))
        s = slice(self.n, self.n + m)
        self.matrix[s], self.ids[s], self.cams[s], self.times[s] = emb, ids, cams, times
        self.alive[s] = True
        self.n += m

    def _grow(self, capacity: int) -> None:
        for name in ("matrix", "ids", "cams", "times", "alive"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)


def rerank_lists_path(gallery_path: Path) -> Path:
    """Where a gallery's exact re-ranking lists are saved between processes."""
    return gallery_path.with_name(gallery_path.name + ".rerank.npz")


class Gallery:
    """A named gallery backed by one SQLite file; thread-safe."""

    def __init__(
        self,
        name: str,
        path: Path,
        conn: sqlite3.Connection,
        dim: int,
        model_id: str,
        options: IndexOptions,
    ) -> None:
        self.name = name
        self.path = path
        self.dim = dim
        self.model_id = model_id
        self.options = options
        self._conn = conn
        self._lock = threading.RLock()
        self._rows = _Rows(dim)
        self._row_of: dict[int, int] = {}
        self._cam_code: dict[str, int] = {}
        self._dead = 0
        self._faiss = FaissIndex(dim, options) if needs_faiss(options) else None
        self._exact: ExactReranker | None = None  # built by the first exact re-ranked search
        self._seen_upto = 0
        """Every item id up to this one is in memory (or deleted): see :meth:`_catch_up`."""
        self._data_version = -1
        """SQLite's data_version when the file was last read for other processes' items."""

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        name: str,
        path: Path,
        model_id: str,
        dim: int,
        options: IndexOptions,
        create: bool = False,
    ) -> Gallery:
        """Open (or with ``create``, create) the gallery at ``path`` for this model.

        Raises :class:`ModelMismatch` when the file was built with another model or dimension.
        """
        if not create and not path.exists():
            raise FileNotFoundError(path)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta and not create:  # another process is creating it: not a gallery yet
                raise FileNotFoundError(path)
            if not meta:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [("model_id", model_id), ("dim", str(dim)), ("created", str(time.time()))],
                    )
                meta = {"model_id": model_id, "dim": str(dim)}
            _check_model(name, path, meta, model_id, dim)
        except BaseException:
            conn.close()
            raise
        gallery = cls(name, path, conn, dim, model_id, options)
        gallery._load()
        return gallery

    def _load(self) -> None:
        """Rebuild the in-memory rows and index from the stored embeddings."""
        t0 = time.perf_counter()
        self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        cur = self._conn.execute("SELECT id, camera, timestamp, embedding FROM items ORDER BY id")
        while batch := cur.fetchmany(8192):
            self._append_fetched(batch, update_index=False)
        if self._faiss is not None:
            self._faiss.rebuild(self._rows.matrix[: self._rows.n])
        logger.info(
            "gallery %s: %d items loaded in %.2f s",
            self.name,
            self._rows.n,
            time.perf_counter() - t0,
        )

    def _append_fetched(self, batch: list[Any], update_index: bool) -> None:
        """Append rows fetched as (id, camera, timestamp, embedding blob)."""
        ids = np.array([r[0] for r in batch], dtype=np.int64)
        cams = np.array([self._code(r[1]) for r in batch], dtype=np.int32)
        times = np.array([r[2] for r in batch], dtype=np.float64)
        emb = np.frombuffer(b"".join(r[3] for r in batch), dtype=np.float32).reshape(
            len(batch), self.dim
        )
        self._append_rows(ids, cams, times, emb, update_index=update_index)
        self._seen_upto = max(self._seen_upto, int(ids.max()))

    def _catch_up(self) -> None:
        """Load the items another process (``reid index``) committed since the last look.

        SQLite's ``data_version`` changes only when another connection commits, so this
        costs one pragma when nothing happened. Every id up to ``_seen_upto`` is known;
        newer ids that are not in memory (this process's own inserts are) are appended.
        Deletions go through the service's API, so another process's are not looked for.
        Caller holds the lock.
        """
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        self._data_version = version
        newer = [
            int(i)
            for (i,) in self._conn.execute(
                "SELECT id FROM items WHERE id > ? ORDER BY id", (self._seen_upto,)
            )
        ]
        missing = [i for i in newer if i not in self._row_of]
        for start in range(0, len(missing), 8192):
            chunk = missing[start : start + 8192]
            marks = ",".join("?" * len(chunk))
            batch = self._conn.execute(
                "SELECT id, camera, timestamp, embedding FROM items"
                f" WHERE id IN ({marks}) ORDER BY id",
                chunk,
            ).fetchall()
            if batch:
                self._append_fetched(batch, update_index=True)
        if newer:
            self._seen_upto = max(self._seen_upto, newer[-1])
        if missing:
            logger.info(
                "gallery %s: %d items added by another process loaded", self.name, len(missing)
            )

    def close(self) -> None:
        """Close the file; the exact re-ranking lists, when built, are saved beside it."""
        with self._lock:
            exact, self._exact = self._exact, None
            snapshot = self._snapshot() if exact is not None else None
            self._conn.close()
        if exact is not None and snapshot is not None:
            try:
                exact.save(snapshot)
            except OSError as exc:  # a cache: the next process builds the lists again
                logger.warning("gallery %s: re-ranking lists not saved (%s)", self.name, exc)

    # ----------------------------------------------------------------- writes
    def find_external(self, external_ids: Sequence[str]) -> dict[str, int]:
        """External id -> item id for those that already exist."""
        if not external_ids:
            return {}
        with self._lock:
            marks = ",".join("?" * len(external_ids))
            rows = self._conn.execute(
                f"SELECT external_id, id FROM items WHERE external_id IN ({marks})",
                list(external_ids),
            ).fetchall()
        return {str(e): int(i) for e, i in rows}

    def add(self, items: Sequence[NewItem], embeddings: np.ndarray) -> list[AddResult]:
        """Store items with their embeddings [M, dim] durably, then make them searchable.

        Items whose external id already exists are not written again (idempotent add).
        """
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.shape != (len(items), self.dim):
            raise InvalidInput(
                f"expected embeddings of shape ({len(items)}, {self.dim}), got {emb.shape}"
            )
        with self._lock:
            existing = self.find_external(
                [i.external_id for i in items if i.external_id is not None]
            )
            results, new_rows = self._insert(items, emb, existing)
            ids = np.array([r.id for r, _ in new_rows], dtype=np.int64)
            cams = np.array([self._code(items[j].camera) for _, j in new_rows], dtype=np.int32)
            times = np.array([items[j].timestamp for _, j in new_rows], dtype=np.float64)
            self._append_rows(ids, cams, times, emb[[j for _, j in new_rows]], update_index=True)
            exact, snapshot = self._exact, self._snapshot()
        if exact is not None and len(ids):  # keep its lists current here, not in a search
            exact.refresh(snapshot)
        logger.debug(
            "gallery %s: %d added, %d already present", self.name, len(ids), len(items) - len(ids)
        )
        return results

    def _insert(
        self, items: Sequence[NewItem], emb: np.ndarray, existing: dict[str, int]
    ) -> tuple[list[AddResult], list[tuple[AddResult, int]]]:
        """One committed transaction; returns per-item results and the new (result, index) pairs."""
        results: list[AddResult] = []
        new_rows: list[tuple[AddResult, int]] = []
        seen = dict(existing)
        now = time.time()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for j, it in enumerate(items):
                if it.external_id is not None and it.external_id in seen:
                    results.append(AddResult(seen[it.external_id], it.external_id, created=False))
                    continue
                cur = self._conn.execute(
                    "INSERT INTO items (external_id, camera, timestamp, metadata, attributes, embedding, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        it.external_id,
                        it.camera,
                        float(it.timestamp),
                        json.dumps(dict(it.metadata)),
                        json.dumps(dict(it.attributes)),
                        emb[j].tobytes(),
                        now,
                    ),
                )
                res = AddResult(int(cur.lastrowid or 0), it.external_id, created=True)
                if it.external_id is not None:
                    seen[it.external_id] = res.id
                results.append(res)
                new_rows.append((res, j))
        return results, new_rows

    def _append_rows(
        self,
        ids: np.ndarray,
        cams: np.ndarray,
        times: np.ndarray,
        emb: np.ndarray,
        update_index: bool,
    ) -> None:
        start = self._rows.n
        self._rows.append(ids, cams, times, emb)
        for r, i in enumerate(ids.tolist(), start=start):
            self._row_of[i] = r
        if update_index and self._faiss is not None and len(ids):
            self._faiss.add(self._rows.matrix[: self._rows.n], emb)

    def delete(self, item_id: int) -> None:
        """Delete one item durably; raises :class:`ItemNotFound`."""
        with self._lock:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                cur = self._conn.execute("DELETE FROM items WHERE id = ?", (item_id,))
            if cur.rowcount == 0:
                raise ItemNotFound(self.name, item_id)
            row = self._row_of.pop(item_id)
            self._rows.alive[row] = False
            self._dead += 1
            if self._dead > max(COMPACT_MIN_DEAD, self._rows.n // 4):
                self._compact()

    def _compact(self) -> None:
        """Drop tombstoned rows from memory and rebuild the index."""
        r = self._rows
        keep = np.flatnonzero(r.alive[: r.n])
        fresh = _Rows(self.dim, capacity=max(1024, 2 * len(keep)))
        fresh.append(r.ids[keep], r.cams[keep], r.times[keep], r.matrix[keep])
        self._rows, self._dead = fresh, 0
        self._exact = None  # row numbers changed: the next re-ranked search rebuilds it
        self._row_of = {int(i): k for k, i in enumerate(fresh.ids[: fresh.n].tolist())}
        if self._faiss is not None:
            self._faiss.rebuild(fresh.matrix[: fresh.n])
        logger.info("gallery %s compacted to %d rows", self.name, fresh.n)

    # ----------------------------------------------------------------- reads
    def get(self, item_id: int) -> Item:
        """One item; raises :class:`ItemNotFound`."""
        items = self._fetch([item_id])
        if item_id not in items:
            raise ItemNotFound(self.name, item_id)
        return items[item_id]

    def _fetch(self, item_ids: Sequence[int]) -> dict[int, Item]:
        if not item_ids:
            return {}
        marks = ",".join("?" * len(item_ids))
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, camera, timestamp, external_id, metadata, attributes FROM items"
                f" WHERE id IN ({marks})",
                [int(i) for i in item_ids],
            ).fetchall()
        return {
            int(r[0]): Item(int(r[0]), r[1], float(r[2]), r[3], json.loads(r[4]), json.loads(r[5]))
            for r in rows
        }

    def _code(self, camera: str) -> int:
        return self._cam_code.setdefault(camera, len(self._cam_code))

    def _mask(
        self, filt: SearchFilter, n: int, alive: np.ndarray, cams: np.ndarray, times: np.ndarray
    ) -> np.ndarray | None:
        """Boolean mask of the rows the filter allows (None when everything is allowed)."""
        mask = None if self._dead == 0 else alive.copy()

        def both(m: np.ndarray) -> np.ndarray:
            return m if mask is None else mask & m

        if filt.cameras is not None:
            codes = [self._cam_code[c] for c in filt.cameras if c in self._cam_code]
            mask = both(np.isin(cams, np.array(codes, dtype=np.int32)))
        if filt.exclude_cameras:
            codes = [self._cam_code[c] for c in filt.exclude_cameras if c in self._cam_code]
            mask = both(~np.isin(cams, np.array(codes, dtype=np.int32)))
        if filt.time_from is not None:
            mask = both(times >= filt.time_from)
        if filt.time_to is not None:
            mask = both(times < filt.time_to)
        return mask

    def search(
        self,
        query: np.ndarray,
        k: int,
        filt: SearchFilter | None = None,
        rerank: RerankParams | None = None,
    ) -> list[Match]:
        """Top-``k`` items for ``query`` [dim] (unit vector), exact under ``filt``.

        With ``rerank``, the ``rerank.shortlist`` best candidates are re-ranked with
        k-reciprocal re-ranking and the best ``k`` of them returned, by re-ranked distance:
        exactly as the full algorithm on query + gallery (plus the neighbours' lists) when
        ``rerank.mode`` is ``exact`` and there is no filter, on query + shortlist otherwise.
        """
        filt = filt or SearchFilter()
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise InvalidInput(
                f"query has dimension {q.shape[0]}, gallery {self.name!r} has {self.dim}"
            )
        depth = max(k, rerank.shortlist) if rerank else k
        exact = rerank if rerank and rerank.mode == "exact" and filt.is_empty() else None
        with self._lock:  # snapshot: rows below n are never modified in place
            self._catch_up()
            if exact is not None:
                snapshot, reranker = self._snapshot(), self._exact_reranker(exact)
            else:
                r = self._rows
                n = r.n
                matrix, ids = r.matrix[:n], r.ids[:n]
                mask = self._mask(filt, n, r.alive[:n], r.cams[:n], r.times[:n])
                if self._faiss is not None:
                    rows, scores = self._faiss.search(matrix, q, depth, mask, filt.min_score)
        if exact is not None:
            res = reranker.search(q, snapshot, k, exact.shortlist)
            hit_ids, scores, dists = res.item_ids.tolist(), res.scores, res.distances
        else:
            if self._faiss is None:
                rows, scores = exact_search(matrix, q, depth, mask, filt.min_score)
            if rerank is not None and len(rows) > 1:
                rows, scores, dists = _rerank(q, matrix, rows, scores, k, rerank)
            else:
                dists = np.sqrt(
                    np.maximum(np.float32(2.0) - np.float32(2.0) * scores, np.float32(0.0))
                )
            hit_ids = ids[rows].tolist()
        items = self._fetch(hit_ids)
        return [
            Match(items[i], float(s), float(d))
            for i, s, d in zip(hit_ids, scores.tolist(), dists.tolist(), strict=True)
            if i in items  # deleted between the snapshot and the fetch
        ]

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows as (matrix, alive copy, item ids) for the exact re-ranker (caller holds the lock)."""
        n = self._rows.n
        return self._rows.matrix[:n], self._rows.alive[:n].copy(), self._rows.ids[:n]

    def _exact_reranker(self, p: RerankParams) -> ExactReranker:
        """This gallery's exact re-ranking structure for ``p`` (caller holds the lock)."""
        params = (p.k1, p.k2, p.lambda_value)
        if self._exact is None or self._exact.params != params:
            self._exact = ExactReranker(self.dim, *params, saved=rerank_lists_path(self.path))
        return self._exact

    def stats(self) -> GalleryStats:
        with self._lock:
            per_cam = dict(
                self._conn.execute("SELECT camera, COUNT(*) FROM items GROUP BY camera").fetchall()
            )
            count, tmin, tmax = self._conn.execute(
                "SELECT COUNT(*), MIN(timestamp), MAX(timestamp) FROM items"
            ).fetchone()
        return GalleryStats(
            self.name,
            int(count),
            {str(c): int(v) for c, v in per_cam.items()},
            self.dim,
            self.model_id,
            self.options.kind,
            tmin,
            tmax,
        )

    def __len__(self) -> int:
        with self._lock:
            self._catch_up()
            return self._rows.n - self._dead


def _rerank(
    q: np.ndarray, matrix: np.ndarray, rows: np.ndarray, scores: np.ndarray, k: int, p: RerankParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-rank the shortlist (``rows`` best first) and keep the best ``k`` by new distance."""
    from reidcore.rerank import rerank_shortlist

    dists = np.asarray(
        rerank_shortlist(q, matrix[rows], k1=p.k1, k2=p.k2, lambda_value=p.lambda_value),
        dtype=np.float32,
    )
    order = np.argsort(dists, kind="stable")[:k]
    return rows[order], scores[order], dists[order]


def _check_model(name: str, path: Path, meta: Mapping[str, str], model_id: str, dim: int) -> None:
    if meta.get("model_id") != model_id or int(meta.get("dim", -1)) != dim:
        raise ModelMismatch(
            f"gallery {name!r} ({path}) was built with model {meta.get('model_id', '?')[:12]} "
            f"(dim {meta.get('dim', '?')}), but the service runs model {model_id[:12]} (dim {dim}); "
            "re-index it with this model or serve the model it was built with"
        )
