"""Gallery stats equal a brute-force count over the stored items on every engine, and on
Milvus come from counts (:mod:`service.gallery.milvus_stats`), never from a read of every
item: the time range's bisection is checked against brute force on adversarial times."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from service.gallery import Gallery, GalleryManager, GalleryStats, NewItem
from tests.service.gallery.helpers import make_backend

MODEL = "a" * 64
DIM = 8
MAX = sys.float_info.max


def _unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(g: Gallery) -> tuple[int, dict[str, int], float | None, float | None]:
    """(items, per camera, time min, time max) from every stored item, read one by one."""
    items = g.store.fetch(g.store.item_ids().tolist()).values()
    times = [it.timestamp for it in items if math.isfinite(it.timestamp)]
    cams = dict(Counter(it.camera for it in items))
    return len(items), cams, min(times, default=None), max(times, default=None)


def summary(s: GalleryStats) -> tuple[int, dict[str, int], float | None, float | None]:
    return s.items, s.cameras, s.time_min, s.time_max


def test_stats_match_brute_force_through_adds_and_deletions(tmp_path: Path, engine: str) -> None:
    rng = np.random.default_rng(7)
    cams = ["north", 'gate "B"', "back\\door", "east", "lobby"]
    g = GalleryManager(make_backend(tmp_path, engine), MODEL, DIM).get_or_create("g")
    assert summary(g.stats()) == (0, {}, None, None)
    times = rng.uniform(1.7e9, 1.71e9, 60)
    times[::7] = math.nan  # unknown capture times count as items, never in the range
    items = [NewItem(cams[i % 5], float(t), f"e{i}") for i, t in enumerate(times)]
    ids = [r.id for r in g.add(items, _unit(60, 0))]
    assert summary(g.stats()) == brute_force(g)
    assert g.stats().items == 60 and len(g.stats().cameras) == 5

    timed = [i for i in range(60) if math.isfinite(times[i])]
    lowest, highest = min(timed, key=lambda i: times[i]), max(timed, key=lambda i: times[i])
    for i in (lowest, highest):  # the extremes go: the range shrinks to the next ones
        g.delete(ids[i])
    assert summary(g.stats()) == brute_force(g)
    for i in range(60):  # every item of one camera goes: it leaves the stats
        if cams[i % 5] == "east" and i not in (lowest, highest):
            g.delete(ids[i])
    got = g.stats()
    assert "east" not in got.cameras and summary(got) == brute_force(g)

    # new cameras, a time below and one above the range, a duplicate time of the maximum
    later = [
        NewItem("new", 5.0, "n0"),
        NewItem("north", 2e9, "n1"),
        NewItem("new", 2e9, "n2"),
        NewItem("lobby", math.nan, "n3"),
    ]
    added = [r.id for r in g.add(later, _unit(4, 1))]
    assert summary(g.stats()) == brute_force(g)
    assert (g.stats().time_min, g.stats().time_max) == (5.0, 2e9)
    g.delete(added[1])  # one of the two items at the maximum: it stays the maximum
    assert summary(g.stats()) == brute_force(g) and g.stats().time_max == 2e9
    for i in added:
        if i != added[1]:
            g.delete(i)
    assert summary(g.stats()) == brute_force(g)


def test_only_unknown_times_give_no_range(tmp_path: Path, engine: str) -> None:
    g = GalleryManager(make_backend(tmp_path, engine), MODEL, DIM).get_or_create("g")
    ids = [r.id for r in g.add([NewItem("c", math.nan), NewItem("d", 3.0)], _unit(2, 2))]
    g.delete(ids[1])
    assert summary(g.stats()) == (1, {"c": 1}, None, None) == brute_force(g)


# ----------------------------------------------------------------- the Milvus engine's way
class FakeProbe:
    """Counts and reads over an array of times, as the Milvus filters do, counting calls."""

    def __init__(self, times: np.ndarray) -> None:
        self.times_ = np.asarray(times, dtype=np.float64)
        self.calls = 0

    def _match(self, expr: str) -> np.ndarray:
        prefix = "has_ts == true and ts >= "
        assert expr.startswith(prefix)
        a, b = expr[len(prefix) :].split(" and ts <= ")
        return self.times_[(self.times_ >= float(a)) & (self.times_ <= float(b))]

    def matching(self, expr: str) -> int:
        self.calls += 1
        return len(self._match(expr))

    def times(self, expr: str, limit: int) -> list[float]:
        self.calls += 1
        return self._match(expr)[:limit].tolist()


def _adversarial(rng: np.random.Generator) -> list[np.ndarray]:
    from service.gallery.milvus_stats import FETCH

    spread = rng.uniform(1.7e9, 1.8e9, 20_000)
    return [
        spread,
        np.sort(spread),  # read in time order: the lowest come first, the highest last
        np.concatenate([spread, [-1e300, 1e300]]),  # far outliers
        np.concatenate([np.full(FETCH + 5, 42.0), [42.5]]),  # many at one time
        np.array([-0.0, 0.0, 5e-324, -5e-324]),
        np.concatenate([np.full(FETCH * 2, MAX), np.full(FETCH * 2, -MAX)]),
        np.array([3.0]),
    ]


def test_extreme_finds_the_exact_range_from_any_hint() -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    from service.gallery.milvus_stats import extreme

    rng = np.random.default_rng(0)
    for times in _adversarial(rng):
        lo, hi = float(times.min()), float(times.max())
        mid = float(np.median(times))
        hints = [None, (lo, hi), (mid, mid), (lo - 1.0, hi + 1.0), (hi, lo), (-MAX, MAX)]
        for hint in hints:
            for lowest, want in ((True, lo), (False, hi)):
                probe = FakeProbe(times)
                assert extreme(probe, hint, lowest) == want, (hint, lowest)
                assert probe.calls <= 2 * 64 + 8  # halvings of the number line, not items
        exact = FakeProbe(times)
        assert extreme(exact, (lo, hi), True) == lo and exact.calls <= 2  # a right hint
    assert extreme(FakeProbe(np.zeros(0)), None, True) is None
    assert extreme(FakeProbe(np.zeros(0)), (1.0, 2.0), False) is None


def test_milvus_stats_count_on_the_server_and_never_read_every_item(tmp_path: Path) -> None:
    m = GalleryManager(make_backend(tmp_path, "milvus"), MODEL, DIM)
    g = m.get_or_create("g")
    g.add([NewItem(f"c{i % 3}", float(i), f"e{i}") for i in range(30)], _unit(30, 3))
    store = g.store

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("stats read every item")

    store._scan = no_scan  # type: ignore[method-assign]
    assert summary(g.stats()) == (30, {"c0": 10, "c1": 10, "c2": 10}, 0.0, 29.0)


def test_milvus_galleries_from_before_the_summary_are_registered_once(tmp_path: Path) -> None:
    """Items whose cameras the summary lacks (written before it existed): found by one count,
    read once by that filter, then registered; the stats stay exact throughout."""
    from service.gallery.milvus_stats import SUMMARY

    backend = make_backend(tmp_path, "milvus")
    g = GalleryManager(backend, MODEL, DIM).get_or_create("g")
    g.add([NewItem(f"c{i % 4}", float(i), f"e{i}") for i in range(20)], _unit(20, 4))
    client = backend.client  # type: ignore[attr-defined]
    client.delete(SUMMARY, filter='gallery == "g"')  # as a gallery of an older version
    backend.summary._cameras.clear()  # type: ignore[attr-defined]
    backend.summary._hints.clear()  # type: ignore[attr-defined]
    assert summary(g.stats()) == brute_force(g) == (20, {f"c{k}": 5 for k in range(4)}, 0.0, 19.0)
    want = brute_force(g)
    g.store._scan = lambda *a, **k: iter(())  # type: ignore[method-assign]
    assert summary(g.stats()) == want  # registered now: no read needed


def test_milvus_summary_follows_a_replaced_and_a_dropped_gallery(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, "milvus")
    m = GalleryManager(backend, MODEL, DIM)
    m.get_or_create("g").add([NewItem("old", 1.0)], _unit(1, 5))
    m.get_or_create("g.new").add([NewItem("a", 2.0), NewItem("b", 9.0)], _unit(2, 6))
    m.close()
    backend = make_backend(tmp_path, "milvus")
    backend.replace("g.new", "g")
    store = backend.open("g", MODEL, DIM)
    store._scan = lambda *a, **k: iter(())  # type: ignore[attr-defined]
    got = store.stats()
    assert (got.items, got.cameras, got.time_min, got.time_max) == (2, {"a": 1, "b": 1}, 2.0, 9.0)
    backend.drop("g")
    again = backend.open("g", MODEL, DIM, create=True)
    assert again.stats().cameras == {} and again.stats().time_min is None
