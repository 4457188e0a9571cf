"""Search by description: gallery items ranked by the probability of wanted attribute values.

Every item stores the model's attribute predictions (``NewItem.attributes``): per attribute
its label, that label's probability and, since this module, the probabilities of every class
(``probabilities``, in the schema's class order). This module keeps them as numpy columns per
open store, brought up to date on each request from the store's ids (new items fetched,
deleted ones dropped), so that a search over 100k items is a few vectorised operations:

- :func:`attribute_search`: the items whose joint probability of the wanted values (the
  product over wanted attributes, the heads being independent classifiers) is at least a
  minimum, under the camera/time filter, best first (ties by id);
- :func:`matching_ids`: the items whose *predicted* values are the wanted ones (the
  ``attributes`` filter of image search), then :func:`restricted_hits` searches among them.

A wanted name is an attribute of the schema (its value one of the attribute's classes) or,
with APR's binary colour attributes (``upred``, ``upblue``... with ``group`` ``upcolor``),
a colour *group*: ``{"upcolor": "red"}`` wants ``upred = yes``; its probability is that
attribute's ``yes`` probability and the predicted colour is the member with the highest one
(as :mod:`reidcore.attribute_protocol` scores it). Items stored before class probabilities
were kept have only the label's probability: binary attributes are exact (the other class
has the rest), for multi-class ones the rest is spread evenly over the other classes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reidcore.attributes import Attribute, AttributeSchema
from service.errors import InvalidInput
from service.gallery.backend import GalleryStore
from service.gallery.types import Hits, Item, SearchFilter

logger = logging.getLogger(__name__)

FETCH_CHUNK = 2048
"""Items fetched per call while the columns catch up with the store."""
BRUTE_FORCE_MAX = 256
"""Restricted image searches among at most this many items score their vectors directly
(cheap from memory, one fetch from Milvus); larger sets deepen an engine search instead."""
SEARCH_DEPTH_MAX = 16384
"""Deepest engine search :func:`restricted_hits` asks for (Milvus' top-k limit)."""


# ------------------------------------------------------------------ wanted values


class UnknownAttribute(InvalidInput):
    """A wanted attribute name or value the served model's schema does not have (422)."""

    code = "unknown_attribute"


@dataclass(frozen=True)
class Wanted:
    """One wanted value, as columns of the probability table."""

    name: str
    value: str
    prob_column: int
    """Column holding P(value)."""
    attribute: int | None
    """Index of the plain attribute whose stored label must be ``value`` (None: a group)."""
    label: int
    """Class index of ``value`` (plain attribute) or member index (group)."""
    choice_columns: tuple[int, ...] = ()
    """For a group: the members' ``yes`` columns; the predicted value is the largest."""


@dataclass(frozen=True)
class Layout:
    """Where each attribute's class probabilities sit in the table's columns."""

    schema: AttributeSchema
    offsets: tuple[int, ...]
    width: int

    @classmethod
    def of(cls, schema: AttributeSchema) -> Layout:
        sizes = [a.num_classes for a in schema]
        offsets = tuple(int(x) for x in np.cumsum([0, *sizes])[:-1])
        return cls(schema, offsets, int(sum(sizes)))

    def groups(self) -> dict[str, list[tuple[str, int]]]:
        """Group name -> [(value, attribute index)] of the binary attributes grouped under it."""
        members: dict[str, list[int]] = {}
        for i, a in enumerate(self.schema):
            if a.group and a.is_binary and a.group not in self.schema.names:
                members.setdefault(a.group, []).append(i)
        return {g: _member_values(self.schema, idx) for g, idx in members.items()}

    def resolve(self, wanted: Mapping[str, str]) -> list[Wanted]:
        """The wanted values as columns; :class:`InvalidInput` (422) names a bad one."""
        if not len(self.schema):
            raise UnknownAttribute("the served model predicts no attributes")
        if not wanted:
            raise UnknownAttribute("no attribute values wanted: give at least one")
        groups = self.groups()
        return [self._one(name, value, groups) for name, value in wanted.items()]

    def _one(self, name: str, value: str, groups: dict[str, list[tuple[str, int]]]) -> Wanted:
        names = self.schema.names
        if name in names:
            i = names.index(name)
            attr = self.schema.attributes[i]
            if value not in attr.classes:
                raise UnknownAttribute(
                    f"attribute {name!r} has no value {value!r}; its values are {list(attr.classes)}"
                )
            c = attr.classes.index(value)
            return Wanted(name, value, self.offsets[i] + c, i, c)
        if name in groups:
            values = [v for v, _ in groups[name]]
            if value not in values:
                raise UnknownAttribute(
                    f"attribute {name!r} has no value {value!r}; its values are {values}"
                )
            yes = tuple(self.offsets[i] + 1 for _, i in groups[name])
            j = values.index(value)
            return Wanted(name, value, yes[j], None, j, yes)
        raise UnknownAttribute(
            f"unknown attribute {name!r}; the model's attributes are {names}"
            + (f" and the groups {sorted(groups)}" if groups else "")
        )

    def describe(self) -> dict[str, list[str]]:
        """Every name a search may use -> its values (attributes, then groups)."""
        out = {a.name: list(a.classes) for a in self.schema}
        out.update({g: [v for v, _ in m] for g, m in self.groups().items()})
        return out


def _member_values(schema: AttributeSchema, idx: list[int]) -> list[tuple[str, int]]:
    """A group's values: the members' names without their common prefix (``upred`` -> red)."""
    names = [schema.attributes[i].name for i in idx]
    cut = len(_common_prefix(names)) if len(names) > 1 else 0
    return [(n[cut:] or n, i) for n, i in zip(names, idx, strict=True)]


def _common_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


# ------------------------------------------------------------------ stored predictions


def class_probabilities(attr: Attribute, stored: Any) -> list[float]:
    """An item's stored prediction of ``attr`` as one probability per class."""
    if not isinstance(stored, Mapping):
        return [math.nan] * attr.num_classes
    probs = stored.get("probabilities")
    if isinstance(probs, list) and len(probs) == attr.num_classes:
        return [float(p) for p in probs]
    label, p = stored.get("label"), stored.get("probability")
    if label not in attr.classes or not isinstance(p, int | float):
        return [math.nan] * attr.num_classes
    rest = (1.0 - float(p)) / (attr.num_classes - 1)
    return [float(p) if c == label else rest for c in attr.classes]


def stored_prediction(attr: Attribute, probs: np.ndarray) -> dict[str, Any]:
    """What an item stores for one attribute: label, its probability, every class's."""
    best = int(np.argmax(probs))
    return {
        "label": attr.classes[best],
        "probability": float(probs[best]),
        "probabilities": [round(float(p), 6) for p in probs],
    }


@dataclass(frozen=True)
class Columns:
    """Every item of a store as arrays, ids ascending."""

    ids: np.ndarray  # int64 [N]
    cams: np.ndarray  # int32 [N], codes into ``cameras``
    times: np.ndarray  # float64 [N], NaN unknown
    probs: np.ndarray  # float32 [N, width]
    labels: np.ndarray  # int16 [N, attributes], stored label index, -1 unknown

    @classmethod
    def empty(cls, layout: Layout) -> Columns:
        a = len(layout.schema)
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.int32),
            np.zeros(0, np.float64),
            np.zeros((0, layout.width), np.float32),
            np.zeros((0, a), np.int16),
        )

    def take(self, rows: np.ndarray) -> Columns:
        return Columns(
            self.ids[rows], self.cams[rows], self.times[rows], self.probs[rows], self.labels[rows]
        )

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        return Columns(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("ids", "cams", "times", "probs", "labels")


class ColumnCache:
    """The columns of one store, caught up with it on each :meth:`current`."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.cameras: dict[str, int] = {}
        self._cols = Columns.empty(layout)
        self._lock = threading.Lock()

    def current(self, store: GalleryStore, stop: threading.Event | None = None) -> Columns:
        """Every item the store holds now (one id listing, plus a fetch of new items); with
        ``stop`` set, what was fetched before it (the next call fetches the rest)."""
        with self._lock:
            cols = self._cols
            live = self._live(store, cols.ids)
            if not np.array_equal(live, cols.ids):
                parts = [cols.take(np.isin(cols.ids, live, assume_unique=True))]
                for chunk in _chunks(np.setdiff1d(live, cols.ids, assume_unique=True), FETCH_CHUNK):
                    if stop is not None and stop.is_set():
                        break
                    parts.append(self._rows(store, chunk))
                cols = Columns.concat(parts)
                cols = cols.take(np.argsort(cols.ids, kind="stable"))
                self._cols = cols
            return cols

    @staticmethod
    def _live(store: GalleryStore, known: np.ndarray) -> np.ndarray:
        """The store's ids now: ``known`` plus the ids above its largest when the count says
        nothing else changed (no deletion, no id added below it), else the full listing.
        A deletion exactly balanced by an add below the largest id (Milvus replicas insert
        from separate id ranges) is seen at the next change of the count."""
        if len(known):
            new = store.ids_after(int(known[-1]))
            if store.count() == len(known) + len(new):
                return np.concatenate([known, new])
        return store.live_ids()

    def camera_codes(self, names: Iterable[str]) -> np.ndarray:
        return np.array([self.cameras[c] for c in names if c in self.cameras], dtype=np.int32)

    def _rows(self, store: GalleryStore, ids: np.ndarray) -> Columns:
        items = [it for it in store.fetch(ids.tolist()).values()]  # deleted meanwhile: absent
        return self.rows_of(items)

    def rows_of(self, items: Sequence[Item]) -> Columns:
        """The columns of ``items``."""
        schema = self.layout.schema
        index = [(a, {c: i for i, c in enumerate(a.classes)}) for a in schema]
        probs: list[float] = []
        labels: list[int] = []
        for it in items:
            for a, classes in index:
                stored = it.attributes.get(a.name)
                p = stored.get("probabilities") if isinstance(stored, dict) else None
                ok = isinstance(p, list) and len(p) == a.num_classes
                probs.extend(p if ok else class_probabilities(a, stored))  # type: ignore[arg-type]
                label = stored.get("label") if isinstance(stored, dict) else None
                labels.append(classes.get(label, -1) if isinstance(label, str) else -1)
        cams = [self.cameras.setdefault(it.camera, len(self.cameras)) for it in items]
        return Columns(
            np.array([it.id for it in items], dtype=np.int64),
            np.array(cams, dtype=np.int32),
            np.array([it.timestamp for it in items], dtype=np.float64),
            np.nan_to_num(np.array(probs, dtype=np.float32), nan=0.0).reshape(
                len(items), self.layout.width
            ),
            np.array(labels, dtype=np.int16).reshape(len(items), len(schema)),
        )


def _chunks(a: np.ndarray, size: int) -> Iterable[np.ndarray]:
    for start in range(0, len(a), size):
        yield a[start : start + size]


_caches: weakref.WeakKeyDictionary[GalleryStore, ColumnCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def column_cache(store: GalleryStore, schema: AttributeSchema) -> ColumnCache:
    """The column cache of ``store`` (made on first use; gone with the store)."""
    layout = Layout.of(schema)
    with _caches_lock:
        cache = _caches.get(store)
        if cache is None or cache.layout != layout:
            cache = _caches[store] = ColumnCache(layout)
        return cache


class ColumnWarmup:
    """Builds the columns of every open gallery in a background thread at start, so that the
    first attribute search does not read a large gallery's predictions while it waits
    (searches meanwhile wait for the gallery being built, or build their own); :meth:`stop`
    ends it between fetches."""

    def __init__(self, galleries: Any, schema: AttributeSchema) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(galleries, schema), name="attribute-columns", daemon=True
        )
        self._thread.start()

    def _run(self, galleries: Any, schema: AttributeSchema) -> None:
        if not len(schema):
            return
        for status in galleries.statuses():
            if self._stop.is_set():
                return
            if status.status != "open":
                continue
            try:
                g = galleries.get(status.name)
                t0 = time.perf_counter()
                n = len(g.run(lambda s: column_cache(s, schema).current(s, self._stop)).ids)
                logger.info(
                    "attribute columns of %s: %d items in %.1f s",
                    g.name,
                    n,
                    time.perf_counter() - t0,
                )
            except Exception as exc:  # deleted meanwhile, engine unreachable: searches build it
                logger.warning("attribute columns of %s not built at start: %s", status.name, exc)

    def stop(self) -> None:
        """Stop between fetches and wait for the thread."""
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ searches


def filter_mask(cache: ColumnCache, cols: Columns, filt: SearchFilter) -> np.ndarray:
    """Rows allowed by the filter's cameras and time range (unknown times fail a bound)."""
    mask = np.ones(len(cols.ids), dtype=bool)
    if filt.cameras is not None:
        mask &= np.isin(cols.cams, cache.camera_codes(filt.cameras))
    if filt.exclude_cameras:
        mask &= ~np.isin(cols.cams, cache.camera_codes(filt.exclude_cameras))
    if filt.time_from is not None:
        mask &= cols.times >= filt.time_from
    if filt.time_to is not None:
        mask &= cols.times < filt.time_to
    return mask


def joint_probability(cols: Columns, wanted: Sequence[Wanted]) -> np.ndarray:
    """Product of the wanted values' probabilities per row (float64 of the float32 columns)."""
    joint = np.ones(len(cols.ids), dtype=np.float64)
    for w in wanted:
        joint *= cols.probs[:, w.prob_column]
    return joint


def predicted_match(cols: Columns, wanted: Sequence[Wanted]) -> np.ndarray:
    """Rows whose predicted value of every wanted attribute is the wanted one."""
    ok = np.ones(len(cols.ids), dtype=bool)
    for w in wanted:
        if w.attribute is not None:
            ok &= cols.labels[:, w.attribute] == w.label
        else:
            ok &= np.argmax(cols.probs[:, list(w.choice_columns)], axis=1) == w.label
    return ok


@dataclass(frozen=True)
class AttributeHits:
    """Result of :func:`attribute_search`."""

    ids: np.ndarray
    probabilities: np.ndarray
    matched: int
    """Items at or above the minimum probability under the filter (before the cut to k)."""


def attribute_search(
    store: GalleryStore,
    schema: AttributeSchema,
    wanted: Mapping[str, str],
    k: int,
    filt: SearchFilter,
    min_probability: float = 0.0,
) -> AttributeHits:
    """The ``k`` items of highest joint probability of ``wanted`` (ties: lower id first)."""
    cache = column_cache(store, schema)
    terms = cache.layout.resolve(wanted)
    cols = cache.current(store)
    joint = joint_probability(cols, terms)
    rows = np.flatnonzero(filter_mask(cache, cols, filt) & (joint >= min_probability))
    matched = len(rows)
    vals = joint[rows]
    if len(rows) > k:
        kth = np.partition(vals, len(vals) - k)[len(vals) - k]
        rows, vals = rows[vals >= kth], vals[vals >= kth]
    order = np.lexsort((cols.ids[rows], -vals))[:k]
    return AttributeHits(cols.ids[rows[order]], vals[order], matched)


def matching_ids(
    store: GalleryStore, schema: AttributeSchema, wanted: Mapping[str, str], filt: SearchFilter
) -> np.ndarray:
    """Ids (ascending) of the items the filter allows whose predicted values are ``wanted``."""
    cache = column_cache(store, schema)
    terms = cache.layout.resolve(wanted)
    cols = cache.current(store)
    return cols.ids[filter_mask(cache, cols, filt) & predicted_match(cols, terms)]


def restricted_hits(
    store: GalleryStore,
    query: np.ndarray,
    depth: int,
    filt: SearchFilter,
    among: np.ndarray,
    with_vectors: bool = False,
) -> Hits:
    """The top ``depth`` items of ``among`` (ids, ascending) by inner product with ``query``
    [dim]: scored directly when few, else by deepening engine searches under ``filt`` until
    enough of them come back (or the engine runs out), scored directly past the deepest."""
    if len(among) <= BRUTE_FORCE_MAX:
        return _brute_force(store, query, depth, among, with_vectors)
    total = max(store.count(), 1)
    d = min(SEARCH_DEPTH_MAX, max(2 * depth, math.ceil(2 * depth * total / len(among))))
    while True:
        hits = store.search(query[None], d, filt, with_vectors=with_vectors)[0]
        keep = np.flatnonzero(np.isin(hits.ids, among, assume_unique=True))
        if len(keep) >= depth or len(hits.ids) < d:
            return hits.take(keep[:depth])
        if d >= SEARCH_DEPTH_MAX:
            return _brute_force(store, query, depth, among, with_vectors)
        d = min(SEARCH_DEPTH_MAX, 4 * d)


def _brute_force(
    store: GalleryStore, query: np.ndarray, depth: int, among: np.ndarray, with_vectors: bool
) -> Hits:
    """Score the vectors of ``among`` directly, in chunks; the best ``depth`` (ties by id)."""
    best = Hits.empty(len(query))
    for chunk in _chunks(among, FETCH_CHUNK):
        ids, feats = store.vectors(chunk.tolist())
        scores = (feats @ query).astype(np.float32)
        ids = np.concatenate([best.ids, ids])
        scores = np.concatenate([best.scores, scores])
        feats = np.concatenate([best.vectors, feats]) if best.vectors is not None else feats
        order = np.lexsort((ids, -scores))[:depth]
        best = Hits(ids[order], scores[order], feats[order])
    return best if with_vectors else Hits(best.ids, best.scores)
