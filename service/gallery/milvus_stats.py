"""Gallery stats on Milvus in bounded work: no read of every item.

Milvus 2.3 answers ``count(*)`` under a filter on the server but has no ``GROUP BY``, no
``MIN``/``MAX`` and no ordered query, so the stats of a gallery (items per camera, time
range) are built from counts, with a small **summary collection** per database
(``reid_gallery_stats``, :class:`Summary`) that names what to count:

- **cameras**: one row per (gallery, camera), written *before* the first item of a camera is
  inserted (an upsert: replicas writing it at once write the same row), never removed.
  Items per camera are then one ``count(*)`` each (run in parallel); cameras whose items
  are all deleted count 0 and are left out, as a scan leaves them out. One more count,
  ``camera not in [the registered ones]``, proves the registry complete; items it finds
  (galleries written before the summary existed, or by an older version) are scanned once,
  by that filter alone, and their cameras registered.
- **time range**: a *hint* row (lowest, highest capture time) widened by writers before they
  insert, only ever used as a guess that reads verify: the minimum is the lowest of the timed
  items at or below ``h``, all read at once when there are few (a right hint: one item, one
  query). A stale hint (the extreme item deleted, two writers' widenings racing, a crash
  between the widening and the insert) falls back to :func:`extreme`: bisection of the
  double-precision number line by counts until a range holds at most :data:`FETCH` timed
  items, which are read (at most 64 halvings, typically log2(items / FETCH) + 1 between
  the hint's bounds). The exact range found is written back as the new hint.

So the answer is exactly the brute-force one (at the store's consistency level), and the
work is a number of server-side counts and small reads set by the number of cameras, not
of items. A Strong count waits for the servers' time tick whatever it counts, so the
counts of one stats call run in parallel (:data:`service.gallery.milvus_store.STATS_THREADS`).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from service.gallery.milvus_tables import ensure_keyed_collection

SUMMARY = "reid_gallery_stats"
"""The summary collection of a database (not a gallery: no ``reid_g_`` prefix)."""
MAX = sys.float_info.max
FETCH = 4096
"""Timed items read at once once a bisected range holds no more than this."""
_MAX_GALLERY = 256
_MAX_CAMERA = 1024
_WINDOW = 16384
"""Milvus's largest query result (offset + limit)."""
_HINT = "t"
_CAMERA = "c"


class Probe(Protocol):
    """Counts and reads of one gallery's items under a Milvus filter expression."""

    def matching(self, expr: str) -> int:
        """``count(*)`` of the items matching ``expr``."""
        ...

    def times(self, expr: str, limit: int) -> list[float]:
        """The ``ts`` of at most ``limit`` items matching ``expr``."""
        ...


# --------------------------------------------------------------------------- time range
def _order(x: float) -> int:
    """An integer that orders doubles as their values do (-0.0 just below 0.0)."""
    (i,) = struct.unpack("<q", struct.pack("<d", x))
    return i if i >= 0 else -1 - (i & 0x7FFF_FFFF_FFFF_FFFF)


def _value(k: int) -> float:
    """The double :func:`_order` maps to ``k``."""
    bits = k if k >= 0 else (-1 - k) | -0x8000_0000_0000_0000
    return float(struct.unpack("<d", struct.pack("<q", bits))[0])


def _next(x: float) -> float:
    return _value(_order(x) + 1)


def _prev(x: float) -> float:
    return _value(_order(x) - 1)


def timed(a: float, b: float) -> str:
    """Items with a known capture time in [a, b] (Milvus Lite rejects chained comparisons)."""
    return f"has_ts == true and ts >= {a!r} and ts <= {b!r}"


def _search(probe: Probe, a: float, b: float, k: int, lowest: bool) -> float | None:
    """The lowest (or highest) time of the ``k`` > 0 timed items in [a, b]: halve the range,
    keeping the half that holds the extreme, until few enough items are left to read."""
    while k > FETCH:
        ka, kb = _order(a), _order(b)
        if ka == kb:
            return a  # more than FETCH items at one time
        km = (ka + kb) // 2
        low, high = (a, _value(km)), (_value(km + 1), b)
        first, second = (low, high) if lowest else (high, low)
        k1 = probe.matching(timed(*first))
        (a, b), k = (first, k1) if k1 else (second, k)
    values = probe.times(timed(a, b), FETCH)
    if not values:
        return None  # deleted meanwhile: the caller starts again
    return min(values) if lowest else max(values)


def extreme(probe: Probe, hint: tuple[float, float] | None, lowest: bool) -> float | None:
    """The lowest (or highest) known capture time of the gallery; None when none is known.

    ``hint``: (low, high) believed to be the range, verified here; None searches the whole
    number line."""
    for _ in range(3):
        found, settled = _extreme_once(probe, hint, lowest)
        if settled:
            return found
        hint = None  # items deleted under the search: once more, from scratch
    return _extreme_once(probe, None, lowest)[0]


def _extreme_once(
    probe: Probe, hint: tuple[float, float] | None, lowest: bool
) -> tuple[float | None, bool]:
    """(extreme, True), or (None, False) when the items counted vanished during the search."""
    ranges = [(-MAX, MAX)]
    if hint is not None:
        lo, hi = hint if lowest else (-hint[1], -hint[0])  # mirrored for the highest
        found = _at_or_past(probe, lo, lowest)
        if found is not None:
            return found
        # nothing at or past the guess (its item was deleted): look inward, the guessed
        # range first
        far = max(hi, lo)
        ranges = [(_next(lo), far), (_next(far), MAX)]
    for r in ranges:
        if r[0] > r[1] or r[0] > MAX:
            continue
        bounds = _unmirror(r, lowest)
        k = probe.matching(timed(*bounds))
        if k:
            found_in = _search(probe, *bounds, k, lowest)
            return found_in, found_in is not None
    return None, True


def _at_or_past(probe: Probe, h: float, lowest: bool) -> tuple[float | None, bool] | None:
    """The extreme when an item lies at or past the guess ``h`` (on the mirrored line), as
    :func:`_extreme_once` answers; None when none does. One read when few do (a right guess:
    its own item), else a count past the best read and, when some are, a search."""
    near = _unmirror((-MAX, h), lowest)
    values = probe.times(timed(*near), FETCH)
    if not values:
        return None
    if len(values) < FETCH:
        return (min(values) if lowest else max(values)), True
    m = min(values) if lowest else -max(values)  # on the mirrored line
    past = _unmirror((-MAX, _prev(m)), lowest)
    k = probe.matching(timed(*past)) if m > -MAX else 0
    found = _search(probe, *past, k, lowest) if k else (m if lowest else -m)
    return found, found is not None


def _unmirror(r: tuple[float, float], lowest: bool) -> tuple[float, float]:
    """A range on the mirrored line (times negated, for the highest) back on the real one."""
    return r if lowest else (-r[1], -r[0])


# --------------------------------------------------------------------------- summary rows
def query_all(
    client: Any, collection: str, expr: str, fields: list[str], consistency: str
) -> Iterator[dict[str, Any]]:
    """Every row matching ``expr`` (a query iterator: no result-size limit)."""
    it = client.query_iterator(
        collection,
        batch_size=4096,
        filter=expr,
        output_fields=fields,
        consistency_level=consistency,
    )
    try:
        while batch := it.next():
            yield from batch
    finally:
        it.close()


def _key(gallery: str, kind: str, camera: str = "") -> str:
    """The row's primary key: a digest, since pymilvus's query iterator writes the last key
    it read into its next filter unescaped (a camera name with a quote would break it)."""
    return hashlib.sha256(json.dumps([gallery, kind, camera]).encode()).hexdigest()


class Summary:
    """The summary collection of one database: per gallery, its cameras and a time-range
    hint (module docstring); thread-safe."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._ready = False
        self._cameras: dict[str, set[str]] = {}
        """Gallery -> cameras this process knows are registered."""
        self._hints: dict[str, tuple[float, float]] = {}
        """Gallery -> the time-range hint as this process last saw or wrote it."""

    def ensure(self) -> None:
        """Create (once per database) and load the collection."""
        if self._ready:
            return
        text = "VARCHAR"
        ensure_keyed_collection(
            self.client,
            SUMMARY,
            ("key", text, {"max_length": 64}),
            [
                ("gallery", text, {"max_length": _MAX_GALLERY}),
                ("kind", text, {"max_length": 8}),
                ("camera", text, {"max_length": _MAX_CAMERA}),
                ("lo", "DOUBLE", {}),
                ("hi", "DOUBLE", {}),
            ],
        )
        self._ready = True

    @staticmethod
    def _row(gallery: str, kind: str, camera: str = "", lo: float = 0.0, hi: float = 0.0) -> dict:
        return {
            "key": _key(gallery, kind, camera),
            "gallery": gallery,
            "kind": kind,
            "camera": camera,
            "lo": float(lo),
            "hi": float(hi),
            "vec": [0.0, 0.0],
        }

    def note(self, gallery: str, cameras: Iterable[str], times: Sequence[float]) -> None:
        """Before items of these cameras and known times are inserted: register the cameras
        new to this process and widen the time hint (re-read first, at Bounded consistency:
        the hint is only a guess, so a lost race costs a later stats call a search)."""
        self.ensure()
        with self._lock:
            known = self._cameras.setdefault(gallery, set())
            new = sorted(set(cameras) - known)
            cached = self._hints.get(gallery)
        rows = [self._row(gallery, _CAMERA, c) for c in new]
        hint = None
        if times:
            lo, hi = min(times), max(times)
            if cached is None or lo < cached[0] or hi > cached[1]:
                stored = self.hint(gallery, "Bounded")
                hint = (lo, hi) if stored is None else (min(lo, stored[0]), max(hi, stored[1]))
                if hint != stored:
                    rows.append(self._row(gallery, _HINT, "", *hint))
        if rows:
            self.client.upsert(SUMMARY, rows)
        with self._lock:
            known.update(new)
            if hint is not None:
                self._hints[gallery] = hint

    def register(self, gallery: str, cameras: Iterable[str]) -> None:
        """Register cameras found unregistered (items written before the summary)."""
        self.note(gallery, cameras, ())

    def cameras(self, gallery: str, consistency: str) -> list[str]:
        """Every camera registered for ``gallery`` (one query; an iterator past Milvus's
        query window: an iterator costs a Strong read per page and one more at its end)."""
        expr = f'gallery == {json.dumps(gallery)} and kind == "{_CAMERA}"'
        rows = self.client.query(
            SUMMARY,
            filter=expr,
            output_fields=["camera"],
            limit=_WINDOW,
            consistency_level=consistency,
        )
        if len(rows) >= _WINDOW:
            rows = self._rows(expr, consistency)
        return sorted({str(r["camera"]) for r in rows})

    def hint(self, gallery: str, consistency: str) -> tuple[float, float] | None:
        rows = self.client.query(
            SUMMARY,
            filter=f"key == {json.dumps(_key(gallery, _HINT))}",
            output_fields=["lo", "hi"],
            consistency_level=consistency,
        )
        return (float(rows[0]["lo"]), float(rows[0]["hi"])) if rows else None

    def set_hint(self, gallery: str, lo: float, hi: float) -> None:
        """The exact range a stats call found (a stale hint repaired)."""
        self.ensure()
        self.client.upsert(SUMMARY, [self._row(gallery, _HINT, "", lo, hi)])
        with self._lock:
            self._hints[gallery] = (lo, hi)

    def _rows(self, expr: str, consistency: str) -> list[dict[str, Any]]:
        fields = ["key", "gallery", "kind", "camera", "lo", "hi"]
        return list(query_all(self.client, SUMMARY, expr, fields, consistency))

    def drop(self, gallery: str) -> None:
        """Forget gallery ``gallery``'s rows (it was dropped)."""
        self.ensure()
        self.client.delete(SUMMARY, filter=f"gallery == {json.dumps(gallery)}")
        with self._lock:
            self._cameras.pop(gallery, None)
            self._hints.pop(gallery, None)

    def move(self, source: str, name: str) -> None:
        """Gallery ``source`` became ``name`` (whose rows were dropped): its rows follow."""
        self.ensure()
        rows = self._rows(f"gallery == {json.dumps(source)}", "Strong")
        moved = [self._row(name, r["kind"], r["camera"], r["lo"], r["hi"]) for r in rows]
        if moved:
            self.client.upsert(SUMMARY, moved)
        self.drop(source)
