"""The ``milvus`` gallery engine: galleries as Milvus collections, through ``pymilvus``.

The same client code talks to a Milvus cluster, Milvus standalone, or Milvus Lite in-process
(a ``*.db`` path: tests and single-process use).

Layout: **one collection per gallery** (``reid_g_<name>``), not one collection with a
partition key. Galleries are created and deleted whole (dropping a collection is one cheap
call; deleting a partition-key value rewrites segments), each records its own model and
embedding dimension (a collection has one vector dimension, and galleries built by models of
different dimensions must coexist until re-indexed), and each can get its own index type and
replica count. Milvus's default limit of 65,536 collections per cluster is far above the
number of galleries a deployment keeps; a partition key pays off for very many small tenants,
which galleries are not.

Fields: ``id`` (INT64 primary key below 2**53, from :mod:`service.gallery.milvus_ids`: unique
across replicas and exact in JavaScript; collections from before it keep Milvus's auto ids),
``external_id``, ``camera`` (VARCHAR), ``ts`` (DOUBLE) and ``has_ts`` (BOOL, false for items
whose capture time is unknown) are typed scalars so the camera and time filters run as
Milvus filter expressions on the server; ``metadata`` and ``attributes`` are JSON (attribute
names depend on the model); ``vec`` is the unit embedding under an inner-product index.
The model id, dimension and gallery name are collection properties, checked on every open.

Consistency: reads and searches default to ``Strong``, so an item whose add was acknowledged
by any replica is found by the next search on every replica (Milvus waits until the query
nodes have consumed every write before that search's timestamp). ``Session`` gives the same
within one client (one replica) at lower latency.

Stats are counts on the server (``count(*)`` per camera, the time range by verified hints
and bisection), never a read of every item: :mod:`service.gallery.milvus_stats`, whose
summary collection every add registers its cameras and times in before inserting.

Idempotent adds across replicas: the external id is checked before inserting, and after
inserting the batch's external ids are read back; when two writers raced, every duplicate
but the lowest id is deleted and reported as already present, so both converge on one item.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ItemNotFound
from service.gallery.backend import GalleryBackend, GalleryMissing, GalleryStore, check_model
from service.gallery.factory import MilvusOptions
from service.gallery.milvus_ids import IdBlocks
from service.gallery.milvus_stats import Summary, extreme, query_all
from service.gallery.types import AddResult, GalleryStats, Hits, Item, NewItem, SearchFilter

logger = logging.getLogger(__name__)

PREFIX = "reid_g_"
"""Collection name prefix of galleries (other collections of the database are left alone)."""
_ESCAPES = {"_": "_u", ".": "_d", "-": "_h"}
_UNESCAPES = {v[1]: k for k, v in _ESCAPES.items()}
MAX_STRING = 1024
"""Longest camera / external id stored (VARCHAR max_length)."""
_CHUNK = 1000
"""Ids or strings per filter expression or get call."""
_ITEM_FIELDS = ["id", "external_id", "camera", "ts", "has_ts", "metadata", "attributes"]
CROP_FIELD = "crop"
"""Blob key of the item's crop ('' for none); collections from before crops lack it."""
LOCAL_FIELD = "local"
"""The item's local features, float32 bytes in base64 ('' for none); collections from before
local features lack it."""
MAX_LOCAL = 65535
"""VARCHAR max_length of the local features: 12,288 floats (e.g. 8 stripes x 1536)."""
_ALL = "id >= 0 or id < 0"
"""A filter every item matches (query iterators need one)."""
STATS_THREADS = 32
"""Counts of one stats call run at once (each waits on the server, not on this process)."""


def collection_name(gallery: str) -> str:
    """Milvus collection names allow letters, digits and ``_``: escape ``_ . -`` reversibly."""
    return PREFIX + "".join(_ESCAPES.get(c, c) for c in gallery)


def gallery_name(collection: str) -> str | None:
    """The gallery a collection holds, or None when it is not one of ours."""
    if not collection.startswith(PREFIX):
        return None
    out, it = [], iter(collection[len(PREFIX) :])
    for c in it:
        if c == "_":
            nxt = next(it, "")
            if nxt not in _UNESCAPES:
                return None
            out.append(_UNESCAPES[nxt])
        else:
            out.append(c)
    return "".join(out)


def _strings(values: Iterable[str]) -> str:
    """A Milvus expression list literal of strings (JSON escaping: quotes and backslashes)."""
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def filter_expression(filt: SearchFilter) -> str:
    """The filter's cameras and time range as a Milvus boolean expression ('' when none).

    Milvus Lite rejects chained comparisons (``a <= ts < b``): each bound is its own term.
    """
    terms = []
    if filt.cameras is not None:
        terms.append(f"camera in {_strings(sorted(filt.cameras))}")
    if filt.exclude_cameras:
        terms.append(f"camera not in {_strings(sorted(filt.exclude_cameras))}")
    if filt.time_from is not None or filt.time_to is not None:
        terms.append("has_ts == true")
    if filt.time_from is not None:
        terms.append(f"ts >= {float(filt.time_from)!r}")
    if filt.time_to is not None:
        terms.append(f"ts < {float(filt.time_to)!r}")
    return " and ".join(terms)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _known_time(ts: float | None) -> bool:
    return ts is not None and math.isfinite(ts)


class MilvusStore(GalleryStore):
    """One gallery as one Milvus collection; thread-safe (the client is)."""

    def __init__(
        self,
        backend: MilvusBackend,
        name: str,
        model_id: str,
        dim: int,
        index: str,
        keeps_crops: bool = True,
        keeps_local: bool = True,
    ) -> None:
        self.backend = backend
        self.client = backend.client
        self.name = name
        self.collection = collection_name(name)
        self.model_id = model_id
        self.dim = dim
        self.index = index
        self.consistency = backend.options.consistency
        self.keeps_crops = keeps_crops
        self.keeps_local = keeps_local
        self._fields = _ITEM_FIELDS + ([CROP_FIELD] if keeps_crops else [])
        self._write_lock = threading.Lock()
        """Serialises this process's adds: with the read-back, one writer at a time here."""
        self.own_ids = not self.client.describe_collection(self.collection).get("auto_id")
        """Ids from the backend's id blocks (False: a collection with Milvus's auto ids)."""

    # ------------------------------------------------------------------ writes
    def add(self, items: Sequence[NewItem], embeddings: np.ndarray) -> list[AddResult]:
        with self._write_lock:
            known, fresh = self._known_and_fresh(items)
            results: list[AddResult | None] = []
            rows: list[dict[str, Any]] = []
            slots: list[int] = []
            batch: dict[str, int] = {}  # external id -> index in results (repeats in a batch)
            for j, it in enumerate(items):
                ext = it.external_id
                if ext is not None and ext in known:
                    results.append(AddResult(known[ext], ext, created=False))
                elif ext is not None and ext in batch:
                    results.append(None)  # filled from the first one below
                else:
                    if ext is not None:
                        batch[ext] = len(results)
                    slots.append(len(results))
                    results.append(None)
                    row = self._row(it, embeddings[j])
                    if self.keeps_crops:
                        row[CROP_FIELD] = it.crop or ""
                    if self.keeps_local:
                        row[LOCAL_FIELD] = _encode_local(it.local)
                    rows.append(row)
            if rows:
                for slot, row in zip(slots, rows, strict=True) if fresh else ():
                    row["id"] = fresh[slot]
                times = [r["ts"] for r in rows if r["has_ts"]]
                self.backend.summary.note(self.name, {r["camera"] for r in rows}, times)
                ids = self.client.insert(self.collection, rows)["ids"]
                self._flush_if_lite()
                for slot, item_id in zip(slots, ids, strict=True):
                    results[slot] = AddResult(int(item_id), items[slot].external_id, created=True)
                self._settle_duplicates(results, [items[s].external_id for s in slots])
            for j, it in enumerate(items):
                if results[j] is None and it.external_id is not None:
                    first = results[batch[it.external_id]]
                    assert first is not None
                    results[j] = AddResult(first.id, it.external_id, created=False)
        return [r for r in results if r is not None]

    def _known_and_fresh(self, items: Sequence[NewItem]) -> tuple[dict[str, int], list[int]]:
        """(external id -> id of those stored, one fresh id per item: none with auto ids),
        in one query; fresh ids found taken (see :mod:`milvus_ids`) are replaced."""
        exts = [i.external_id for i in items if i.external_id]
        for _ in range(3):
            fresh = self.backend.ids.take(len(items)) if self.own_ids else []
            rows = self._before_insert(exts, fresh)
            taken = {i for _, i in rows}.intersection(fresh)
            if not taken:
                return _lowest(rows, set(exts)), fresh
            logger.warning("gallery %s: %d fresh ids already taken", self.name, len(taken))
            self.backend.ids.discard()
        raise RuntimeError(f"gallery {self.name}: fresh item ids kept being taken")

    def _before_insert(self, exts: Sequence[str], fresh: Sequence[int]) -> list[tuple[str, int]]:
        """What a writer sees before inserting: the rows of these external ids or ids (tests
        replace it to play a replica that read before a rival's insert). With no external
        id to look up, the ids alone are checked at Bounded consistency: the rows that could
        hold them are old (see :mod:`milvus_ids`), and a Strong read would cost the batch a
        wait for the servers' time tick (~0.4 s on the development machine)."""
        return self._external_rows(exts, fresh, None if exts else "Bounded")

    @staticmethod
    def _row(it: NewItem, emb: np.ndarray) -> dict[str, Any]:
        ts = it.timestamp
        known = _known_time(ts)
        return {
            "external_id": it.external_id or "",
            "camera": it.camera,
            "ts": float(ts) if known else 0.0,
            "has_ts": known,
            "metadata": dict(it.metadata),
            "attributes": dict(it.attributes),
            "created": time.time(),
            "vec": np.asarray(emb, dtype=np.float32).tolist(),
        }

    def _settle_duplicates(self, results: list[AddResult | None], exts: list[str | None]) -> None:
        """Another writer added one of these external ids at the same time: whoever sees the
        copies keeps the lowest id and deletes the others (its own or not), so the writers
        converge on one item whatever the order they see each other's inserts in; our item,
        when not the one kept, is reported as already present.

        The one case it cannot cover: a writer that saw no copy has answered with its id,
        which a later writer then deletes as the higher one (writers draw ids from separate
        blocks, so either may be the lower: Milvus gives no insertion order to go by); the
        item (the same external id: the same crop in bulk jobs) stays, under the lower id."""
        mine = [e for e in exts if e]
        if not mine:
            return
        owners: dict[str, list[int]] = {}
        for e, i in self._external_rows(mine):
            owners.setdefault(e, []).append(i)
        losers = sorted({i for ids in owners.values() for i in ids if i != min(ids)})
        for k, r in enumerate(results):
            if r is not None and r.created and r.external_id in owners:
                keep = min(owners[r.external_id])
                if keep != r.id:
                    results[k] = AddResult(keep, r.external_id, created=False)
        if losers:
            self.client.delete(self.collection, ids=losers)
            logger.info("gallery %s: %d concurrent duplicates removed", self.name, len(losers))

    def delete(self, item_id: int) -> None:
        if not self._get([item_id], ["id"]):
            raise ItemNotFound(self.name, item_id)
        self.client.delete(self.collection, ids=[int(item_id)])
        self._flush_if_lite()

    def _flush_if_lite(self) -> None:
        """Milvus Lite searches unflushed rows slowly (~80 ms per 1,000 rows per query):
        seal them after every write there (~30 ms for a small batch). A Milvus server
        searches growing segments well and seals them itself; flushing per write would
        only make many small segments."""
        if self.backend.lite:
            self.client.flush(self.collection)

    # ------------------------------------------------------------------ reads
    def _get(self, item_ids: Sequence[int], fields: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for chunk in _chunks([int(i) for i in item_ids]):
            out += self.client.get(
                self.collection,
                ids=list(chunk),
                output_fields=fields,
                consistency_level=self.consistency,
            )
        return out

    def _external_rows(
        self, external_ids: Sequence[str], ids: Sequence[int] = (), consistency: str | None = None
    ) -> list[tuple[str, int]]:
        """(external id, id) of the items with one of these external ids or ids (read at the
        store's consistency unless told)."""
        out = []
        exts, nums = list(_chunks(sorted(set(external_ids)))), list(_chunks(list(ids)))
        for k in range(max(len(exts), len(nums))):
            terms = [f"external_id in {_strings(exts[k])}"] if k < len(exts) else []
            terms += [f"id in {[int(i) for i in nums[k]]}"] if k < len(nums) else []
            rows = self.client.query(
                self.collection,
                filter=" or ".join(terms),
                output_fields=["id", "external_id"],
                consistency_level=consistency or self.consistency,
            )
            out += [(str(r["external_id"]), int(r["id"])) for r in rows]
        return out

    def find_external(self, external_ids: Sequence[str]) -> dict[str, int]:
        wanted = {e for e in external_ids if e}
        return _lowest(self._external_rows(sorted(wanted)), wanted)

    def fetch(self, item_ids: Sequence[int]) -> dict[int, Item]:
        return {int(r["id"]): _item(r) for r in self._get(item_ids, self._fields)}

    def local_features(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not self.keeps_local:
            return {}
        rows = self._get(item_ids, ["id", LOCAL_FIELD])
        return {int(r["id"]): _decode_local(r[LOCAL_FIELD]) for r in rows if r[LOCAL_FIELD]}

    def vectors(self, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        got = {int(r["id"]): r["vec"] for r in self._get(item_ids, ["id", "vec"])}
        ids = [int(i) for i in item_ids if int(i) in got]
        emb = np.array([got[i] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)
        return np.array(ids, dtype=np.int64), emb

    def _scan(self, fields: list[str], where: str = _ALL) -> Iterable[dict[str, Any]]:
        """Every item's ``fields`` (a query iterator: no result-size limit), or those of the
        items matching ``where``."""
        return query_all(self.client, self.collection, where or _ALL, fields, self.consistency)

    def item_ids(self) -> np.ndarray:
        return np.sort(np.array([int(r["id"]) for r in self._scan(["id"])], dtype=np.int64))

    def ids_after(self, after: int) -> np.ndarray:
        """One filtered query on the primary key (a scan past Milvus' query window)."""
        window = 16384
        rows = self.client.query(
            self.collection,
            filter=f"id > {int(after)}",
            output_fields=["id"],
            limit=window,
            consistency_level=self.consistency,
        )
        if len(rows) >= window:
            rows = list(self._scan(["id"]))
        ids = np.array([int(r["id"]) for r in rows], dtype=np.int64)
        return np.sort(ids[ids > after])

    def search(
        self, queries: np.ndarray, k: int, filt: SearchFilter, with_vectors: bool = False
    ) -> list[Hits]:
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if k <= 0 or len(q) == 0 or (filt.cameras is not None and not filt.cameras):
            return [Hits.empty(self.dim) for _ in q]
        params = {"metric_type": "IP", "params": dict(self.backend.options.search_params)}
        res = self.client.search(
            self.collection,
            data=q.tolist(),
            limit=k,
            filter=filter_expression(filt),
            output_fields=["vec"] if with_vectors else [],
            search_params=params,
            consistency_level=self.consistency,
        )
        return [_hits(hits, self.dim if with_vectors else None) for hits in res]

    def stats(self) -> GalleryStats:
        """Counts on the server, never a read of every item (:mod:`milvus_stats`)."""
        summary = self.backend.summary
        with ThreadPoolExecutor(STATS_THREADS) as pool:
            hint_read = pool.submit(summary.hint, self.name, self.consistency)
            cams = summary.cameras(self.name, self.consistency)
            hint = hint_read.result()
            low = pool.submit(extreme, self, hint, True)
            high = pool.submit(extreme, self, hint, False)
            stray = pool.submit(self.matching, _outside(cams))
            counts = self._per_camera(pool, cams)
            if stray.result():
                counts.update(self._per_camera(pool, self._unregistered(cams)))
            tmin, tmax = low.result(), high.result()
        if tmin is not None and tmax is not None and hint != (tmin, tmax):
            summary.set_hint(self.name, tmin, tmax)
        cameras = {c: n for c, n in sorted(counts.items()) if n}
        return GalleryStats(
            self.name,
            sum(cameras.values()),
            cameras,
            self.dim,
            self.model_id,
            f"milvus:{self.index}",
            tmin,
            tmax,
        )

    def _per_camera(self, pool: ThreadPoolExecutor, cameras: Sequence[str]) -> dict[str, int]:
        """Camera -> its items, one count each, in parallel."""
        exprs = [f"camera in {_strings([c])}" for c in cameras]
        return dict(zip(cameras, pool.map(self.matching, exprs), strict=True))

    def _unregistered(self, registered: Sequence[str]) -> list[str]:
        """Cameras of items outside the summary's registry (written before it existed, or
        by an older version): read once by that filter, then registered."""
        found = sorted({str(r["camera"]) for r in self._scan(["camera"], _outside(registered))})
        self.backend.summary.register(self.name, found)
        logger.info("gallery %s: %d cameras registered for stats", self.name, len(found))
        return found

    def matching(self, expr: str) -> int:
        """``count(*)`` of the items matching ``expr`` ('' for all), on the server."""
        rows = self.client.query(
            self.collection,
            filter=expr,
            output_fields=["count(*)"],
            consistency_level=self.consistency,
        )
        return int(rows[0]["count(*)"])

    def times(self, expr: str, limit: int) -> list[float]:
        rows = self.client.query(
            self.collection,
            filter=expr,
            output_fields=["ts"],
            limit=limit,
            consistency_level=self.consistency,
        )
        return [float(r["ts"]) for r in rows]

    def count(self) -> int:
        return self.matching("")

    def close(self) -> None:
        """Nothing per gallery: the backend owns the client."""


def _outside(cameras: Sequence[str]) -> str:
    """Items of none of these cameras ('': every item, when there are none)."""
    return " and ".join(f"camera not in {_strings(c)}" for c in _chunks(list(cameras)))


def _lowest(rows: Iterable[tuple[str, int]], wanted: set[str]) -> dict[str, int]:
    """External id -> the lowest id stored under it, for the wanted external ids."""
    found: dict[str, int] = {}
    for e, i in rows:
        if e in wanted:
            found[e] = min(i, found.get(e, i))
    return found


def _hits(hits: Iterable[Any], dim: int | None) -> Hits:
    """One query's hits, ordered as the local engine orders them (score, then id)."""
    hits = list(hits)
    ids = np.array([int(h["id"]) for h in hits], dtype=np.int64)
    scores = np.array([float(h["distance"]) for h in hits], dtype=np.float32)
    vecs = None
    if dim is not None:
        vecs = np.array([h["entity"]["vec"] for h in hits], dtype=np.float32).reshape(-1, dim)
    return Hits(ids, scores, vecs).take(np.lexsort((ids, -scores)))


def _encode_local(local: np.ndarray | None) -> str:
    if local is None:
        return ""
    text = base64.b64encode(np.asarray(local, dtype=np.float32).tobytes()).decode("ascii")
    if len(text) > MAX_LOCAL:
        # The item is stored all the same, without local features: a local_distance search
        # that shortlists it answers 409 saying so, instead of every add failing.
        logger.warning(
            "local features of %d floats exceed the Milvus field (%d base64 characters): "
            "stored without them",
            np.size(local),
            MAX_LOCAL,
        )
        return ""
    return text


def _decode_local(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


def _item(r: dict[str, Any]) -> Item:
    return Item(
        id=int(r["id"]),
        camera=str(r["camera"]),
        timestamp=float(r["ts"]) if r["has_ts"] else math.nan,
        external_id=str(r["external_id"]) or None,
        metadata=dict(r["metadata"] or {}),
        attributes=dict(r["attributes"] or {}),
        crop=str(r.get(CROP_FIELD) or "") or None,
    )


class _LiteServers:
    """Milvus Lite servers this process started, released when their last backend closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}

    def acquire(self, path: str) -> None:
        with self._lock:
            self._users[path] = self._users.get(path, 0) + 1

    def release(self, path: str) -> None:
        with self._lock:
            self._users[path] -= 1
            if self._users[path]:
                return
            del self._users[path]
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


_LITE = _LiteServers()


class MilvusBackend(GalleryBackend):
    """The galleries of one Milvus database."""

    kind = "milvus"

    def __init__(self, options: MilvusOptions, data_dir: Path) -> None:
        from pymilvus import MilvusClient

        self.options = options
        uri = options.uri or str(Path(data_dir) / "milvus.db")
        self.lite = uri.endswith(".db")
        """Milvus Lite in this process (a ``*.db`` path), not a server."""
        if self.lite:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            uri = str(Path(uri).resolve())
            _LITE.acquire(uri)
        self.uri = uri
        kwargs: dict[str, Any] = {"uri": uri}
        if options.token:
            kwargs["token"] = options.token
        if options.db_name:
            kwargs["db_name"] = options.db_name
        self.client = MilvusClient(**kwargs)
        self._lock = threading.Lock()
        self.ids = IdBlocks(self.client)
        """Item ids of this database's galleries (blocks claimed on first use)."""
        self.summary = Summary(self.client)
        """Cameras and time-range hints of this database's galleries, for their stats."""

    def names(self) -> list[str]:
        found = (gallery_name(c) for c in self.client.list_collections())
        return sorted(n for n in found if n is not None)

    def _properties(self, name: str) -> dict[str, str]:
        if not self.client.has_collection(collection_name(name)):
            raise GalleryMissing(name)
        return dict(self.client.describe_collection(collection_name(name)).get("properties", {}))

    def recorded_model(self, name: str) -> tuple[str, int]:
        props = self._properties(name)
        if "reid.model_id" not in props:
            raise GalleryMissing(name)
        return props["reid.model_id"], int(props["reid.dim"])

    def open(self, name: str, model_id: str, dim: int, create: bool = False) -> MilvusStore:
        with self._lock:
            if create and not self.client.has_collection(collection_name(name)):
                self._create(name, model_id, dim)
            props = self._properties(name)
            rec_dim = int(props["reid.dim"]) if "reid.dim" in props else None
            where = f"Milvus collection {collection_name(name)}"
            check_model(name, where, (props.get("reid.model_id"), rec_dim), model_id, dim)
            self.client.load_collection(collection_name(name))
            self.summary.ensure()
            fields = self.client.describe_collection(collection_name(name)).get("fields", [])
        names = {f.get("name") for f in fields}
        index = props.get("reid.index", "?")
        return MilvusStore(
            self, name, model_id, dim, index, CROP_FIELD in names, LOCAL_FIELD in names
        )

    def _create(self, name: str, model_id: str, dim: int) -> None:
        from pymilvus import DataType, MilvusClient, MilvusException

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("external_id", DataType.VARCHAR, max_length=MAX_STRING)
        schema.add_field("camera", DataType.VARCHAR, max_length=MAX_STRING)
        schema.add_field("ts", DataType.DOUBLE)
        schema.add_field("has_ts", DataType.BOOL)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("attributes", DataType.JSON)
        schema.add_field("created", DataType.DOUBLE)
        schema.add_field(CROP_FIELD, DataType.VARCHAR, max_length=MAX_STRING)
        schema.add_field(LOCAL_FIELD, DataType.VARCHAR, max_length=MAX_LOCAL)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index(
            "vec",
            index_type=self.options.index_type,
            metric_type="IP",
            params=dict(self.options.index_params),
        )
        props = {
            "reid.model_id": model_id,
            "reid.dim": str(dim),
            "reid.gallery": name,
            "reid.index": self.options.index_type,
        }
        try:
            self.client.create_collection(
                collection_name(name),
                schema=schema,
                index_params=index,
                consistency_level=self.options.consistency,
                properties=props,
            )
        except MilvusException:
            if not self.client.has_collection(collection_name(name)):
                raise  # not another replica creating it at the same time
        logger.info("gallery %s: Milvus collection %s created", name, collection_name(name))

    def drop(self, name: str) -> None:
        with self._lock:
            self.client.drop_collection(collection_name(name))
            self.summary.drop(name)

    def replace(self, source: str, name: str) -> None:
        """Make gallery ``source`` the gallery ``name``: drop ``name``, rename ``source``."""
        with self._lock:
            self.client.drop_collection(collection_name(name))
            self.client.rename_collection(collection_name(source), collection_name(name))
            self.client.load_collection(collection_name(name))
            self.summary.drop(name)
            self.summary.move(source, name)

    def close(self) -> None:
        self.client.close()
        if self.lite:
            _LITE.release(self.uri)
            self.lite = False
