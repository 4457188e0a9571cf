"""The ``local`` gallery engine: SQLite (metadata + embeddings) and an in-memory search index.

Durability: every write is one SQLite transaction (WAL, ``synchronous=FULL``) that stores
the embeddings too, committed before the caller is answered. The search index is never
persisted; it is rebuilt from the stored embeddings when the gallery opens, so a restart
loses nothing acknowledged. Deletions leave a tombstone in memory until a compaction.

A gallery records the model (manifest sha256) and dimension it was built with and refuses
to open under another model (:class:`ModelMismatch`). Galleries are the files
``<data>/galleries/<name>.sqlite3`` (:class:`LocalBackend`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ItemNotFound
from service.gallery.backend import GalleryBackend, GalleryMissing, GalleryStore, check_model
from service.gallery.exact_rerank import ExactReranker
from service.gallery.search import FaissIndex, IndexOptions, exact_search_many, needs_faiss
from service.gallery.types import (
    AddResult,
    GalleryStats,
    Hits,
    Item,
    NewItem,
    SearchFilter,
)

logger = logging.getLogger(__name__)

COMPACT_MIN_DEAD = 1024
"""Tombstones tolerated before compaction (besides a quarter of the rows)."""

ITEMS_TABLE = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    external_id TEXT UNIQUE,
    camera TEXT NOT NULL,
    timestamp REAL,
    metadata TEXT NOT NULL,
    attributes TEXT NOT NULL,
    embedding BLOB NOT NULL,
    created REAL NOT NULL
)"""
"""Items; ``timestamp`` NULL is an unknown time (NaN in memory and in :class:`Item`: never
inside a time filter's range)."""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{ITEMS_TABLE};
"""


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


class LocalStore(GalleryStore):
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
    ) -> LocalStore:
        """Open (or with ``create``, create) the gallery at ``path`` for this model.

        Raises :class:`ModelMismatch` when the file was built with another model or dimension.
        """
        if not create and not path.exists():
            raise GalleryMissing(path)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            _allow_unknown_times(conn)
            _add_columns(conn)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta and not create:  # another process is creating it: not a gallery yet
                raise GalleryMissing(path)
            if not meta:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [("model_id", model_id), ("dim", str(dim)), ("created", str(time.time()))],
                    )
                meta = {"model_id": model_id, "dim": str(dim)}
            recorded = (meta.get("model_id"), int(meta["dim"]) if "dim" in meta else None)
            check_model(name, str(path), recorded, model_id, dim)
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
                    "INSERT INTO items (external_id, camera, timestamp, metadata, attributes,"
                    " embedding, created, crop, local) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        it.external_id,
                        it.camera,
                        float(it.timestamp),
                        json.dumps(dict(it.metadata)),
                        json.dumps(dict(it.attributes)),
                        emb[j].tobytes(),
                        now,
                        it.crop,
                        None if it.local is None else np.asarray(it.local, np.float32).tobytes(),
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
    def local_features(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not item_ids:
            return {}
        marks = ",".join("?" * len(item_ids))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, local FROM items WHERE id IN ({marks}) AND local IS NOT NULL",
                [int(i) for i in item_ids],
            ).fetchall()
        return {int(i): np.frombuffer(blob, dtype=np.float32) for i, blob in rows}

    def fetch(self, item_ids: Sequence[int]) -> dict[int, Item]:
        if not item_ids:
            return {}
        marks = ",".join("?" * len(item_ids))
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, camera, timestamp, external_id, metadata, attributes, crop FROM items"
                f" WHERE id IN ({marks})",
                [int(i) for i in item_ids],
            ).fetchall()
        return {
            int(r[0]): Item(
                int(r[0]),
                r[1],
                math.nan if r[2] is None else float(r[2]),
                r[3],
                json.loads(r[4]),
                json.loads(r[5]),
                r[6],
            )
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
        self, queries: np.ndarray, k: int, filt: SearchFilter, with_vectors: bool = False
    ) -> list[Hits]:
        """Top-``k`` allowed items of each query [Q, dim], exact under ``filt`` (flat index)."""
        with self._lock:  # snapshot: rows below n are never modified in place
            self._catch_up()
            r = self._rows
            n = r.n
            matrix, ids = r.matrix[:n], r.ids[:n]
            mask = self._mask(filt, n, r.alive[:n], r.cams[:n], r.times[:n])
            if self._faiss is not None:
                found = [self._faiss.search(matrix, q, k, mask, None) for q in queries]
        if self._faiss is None:
            found = exact_search_many(matrix, queries, k, mask)
        return [
            Hits(ids[rows], scores, matrix[rows] if with_vectors else None)
            for rows, scores in found
        ]

    def exact_rerank(
        self, query: np.ndarray, k: int, shortlist: int, params: tuple[int, int, float]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The full algorithm's re-ranked top-``k`` from neighbour lists kept in memory."""
        with self._lock:
            self._catch_up()
            snapshot, reranker = self._snapshot(), self._exact_reranker(params)
        res = reranker.search(query, snapshot, k, shortlist)
        return res.item_ids, res.scores, res.distances

    def vectors(self, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self._catch_up()
            known = [i for i in item_ids if i in self._row_of]
            rows = [self._row_of[i] for i in known]
            return np.array(known, dtype=np.int64), self._rows.matrix[rows].copy()

    def live_ids(self) -> np.ndarray:
        """Every live id from memory, once caught up with the file (no table scan)."""
        with self._lock:
            self._catch_up()
            r = self._rows
            ids = r.ids[: r.n][r.alive[: r.n]]
        return np.sort(ids)

    def item_ids(self) -> np.ndarray:
        """Every stored id, read from the file (not from the index in memory)."""
        with self._lock:
            rows = self._conn.execute("SELECT id FROM items ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows as (matrix, alive copy, item ids) for the exact re-ranker (caller holds the lock)."""
        n = self._rows.n
        return self._rows.matrix[:n], self._rows.alive[:n].copy(), self._rows.ids[:n]

    def _exact_reranker(self, params: tuple[int, int, float]) -> ExactReranker:
        """This gallery's exact re-ranking structure for ``params`` (caller holds the lock)."""
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
            f"local:{self.options.kind}",
            tmin,
            tmax,
        )

    def count(self) -> int:
        with self._lock:
            self._catch_up()
            return self._rows.n - self._dead


SUFFIX = ".sqlite3"


class LocalBackend(GalleryBackend):
    """The galleries of a data directory: ``<data>/galleries/<name>.sqlite3``."""

    kind = "local"

    def __init__(self, data_dir: Path, options: IndexOptions) -> None:
        self.root = Path(data_dir) / "galleries"
        if options.use_gpu and faiss_gpu_count() == 0:
            options = dataclasses.replace(options, use_gpu=False)  # numpy exact search
        self.options = options

    def path(self, name: str) -> Path:
        return self.root / f"{name}{SUFFIX}"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name[: -len(SUFFIX)] for p in sorted(self.root.glob(f"*{SUFFIX}"))]

    def open(self, name: str, model_id: str, dim: int, create: bool = False) -> LocalStore:
        path = self.path(name)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise GalleryMissing(path)
        return LocalStore.open(name, path, model_id, dim, self.options, create=create)

    def recorded_model(self, name: str) -> tuple[str, int]:
        """(model id, dim) the gallery was built with, read without loading it."""
        path = self.path(name)
        if not path.is_file():
            raise GalleryMissing(path)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise GalleryMissing(path) from exc
        finally:
            conn.close()
        if "model_id" not in meta:
            raise GalleryMissing(path)
        return str(meta["model_id"]), int(meta["dim"])

    def replace(self, source: str, name: str) -> None:
        """Make gallery ``source`` (closed) the gallery ``name`` (closed), in one rename."""
        src, dst = self.path(source), self.path(name)
        _checkpoint(src)
        for suffix in ("-wal", "-shm"):  # ``name``'s, closed: nothing left to apply
            Path(f"{dst}{suffix}").unlink(missing_ok=True)
        os.replace(src, dst)
        rerank_lists_path(dst).unlink(missing_ok=True)

    def drop(self, name: str) -> None:
        base = self.path(name)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
        rerank_lists_path(base).unlink(missing_ok=True)

    def gpus(self) -> int:
        """GPUs FAISS uses for this data directory's indexes."""
        return faiss_gpu_count() if self.options.use_gpu else 0


def faiss_gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu, or faiss-gpu on a GPU-less host)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _checkpoint(path: Path) -> None:
    """Fold a closed gallery file's WAL into it (so the file alone holds every item)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


ADDED_COLUMNS = {"crop": "TEXT", "local": "BLOB"}
"""Columns added after the first galleries were written (NULL: no crop, no local features)."""


def _add_columns(conn: sqlite3.Connection) -> None:
    """Galleries from before crops (local features) were kept get the column, NULL for all."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        columns = {c[1] for c in conn.execute("PRAGMA table_info(items)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in columns:
                conn.execute(f"ALTER TABLE items ADD COLUMN {name} {kind}")


def _timestamp_required(conn: sqlite3.Connection) -> bool:
    return any(c[1] == "timestamp" and c[3] for c in conn.execute("PRAGMA table_info(items)"))


def _allow_unknown_times(conn: sqlite3.Connection) -> None:
    """A gallery file from before unknown times declares ``timestamp NOT NULL``: rebuild its
    items table once without that constraint (same rows, ids and id sequence)."""
    if not _timestamp_required(conn):
        return
    old = "items_before_unknown_times"
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        if not _timestamp_required(conn):  # another process did it meanwhile
            return
        conn.execute(f"ALTER TABLE items RENAME TO {old}")
        conn.execute(ITEMS_TABLE)
        conn.execute(f"INSERT INTO items SELECT * FROM {old}")
        conn.execute(
            "UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = ?)"
            " WHERE name = 'items'",
            (old,),
        )
        conn.execute(f"DROP TABLE {old}")
    logger.info("gallery file upgraded: items may now have an unknown timestamp")
