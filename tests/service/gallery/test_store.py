from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidcore.rerank import rerank_shortlist
from service.errors import GalleryNotFound, InvalidInput, ItemNotFound, ModelMismatch
from service.gallery import (
    GalleryManager,
    NewItem,
    RerankParams,
    SearchFilter,
    store,
)
from tests.service.gallery.helpers import make_backend

DIM = 16
MODEL = "a" * 64


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _items(n: int, start: int = 0) -> list[NewItem]:
    return [
        NewItem(camera=f"c{i % 3}", timestamp=1000.0 + i, external_id=f"e{i}", metadata={"i": i})
        for i in range(start, start + n)
    ]


def _manager(
    root: Path, model: str = MODEL, dim: int = DIM, kind: str = "flat", engine: str = "local"
) -> GalleryManager:
    m = GalleryManager(make_backend(root, engine, kind), model, dim)
    m.open_all()
    return m


def test_restart_keeps_everything_and_deletions(tmp_path: Path, engine: str) -> None:
    rng = np.random.default_rng(0)
    X = _unit(rng, 50)
    m = _manager(tmp_path, engine=engine)
    g = m.get_or_create("g")
    ids = [r.id for r in g.add(_items(50), X)]
    g.delete(ids[7])
    m.close()
    g2 = _manager(tmp_path, engine=engine).get("g")
    assert len(g2) == 49
    hits = g2.search(X[3], 3)
    assert hits[0].item.id == ids[3] and hits[0].item.metadata == {"i": 3}
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[0].distance < 1e-2
    with pytest.raises(ItemNotFound):
        g2.get(ids[7])


def test_add_is_idempotent_by_external_id(tmp_path: Path, engine: str) -> None:
    rng = np.random.default_rng(1)
    g = _manager(tmp_path, engine=engine).get_or_create("g")
    first = g.add(_items(3), _unit(rng, 3))
    again = g.add(_items(4), _unit(rng, 4))  # e0..e2 known, e3 new
    assert [r.created for r in again] == [False, False, False, True]
    assert [r.id for r in again[:3]] == [r.id for r in first]
    dup = g.add([NewItem("c", 0.0, "z"), NewItem("c", 0.0, "z")], _unit(rng, 2))
    assert dup[0].created and not dup[1].created and dup[0].id == dup[1].id
    assert len(g) == 5


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_filters_equal_brute_force_after_deletes(tmp_path: Path, kind: str, engine: str) -> None:
    rng = np.random.default_rng(2)
    X = _unit(rng, 300)
    g = _manager(tmp_path, kind=kind, engine=engine).get_or_create("g")
    items = _items(300)
    ids = [r.id for r in g.add(items, X)]
    dead = set(rng.choice(300, 40, replace=False).tolist())
    for j in dead:
        g.delete(ids[j])
    filters = [
        SearchFilter(),
        SearchFilter(cameras=frozenset({"c1", "nope"})),
        SearchFilter(exclude_cameras=frozenset({"c0"})),
        SearchFilter(time_from=1050.0, time_to=1100.0),
        SearchFilter(min_score=0.2),
        SearchFilter(cameras=frozenset({"c2"}), time_to=1200.0, min_score=-0.5),
    ]
    q = _unit(rng, 1)[0]
    for f in filters:
        ok = [
            j
            for j in range(300)
            if j not in dead
            and (f.cameras is None or items[j].camera in f.cameras)
            and items[j].camera not in f.exclude_cameras
            and (f.time_from is None or items[j].timestamp >= f.time_from)
            and (f.time_to is None or items[j].timestamp < f.time_to)
            and (f.min_score is None or X[j] @ q >= f.min_score)
        ]
        ref = sorted(ok, key=lambda j: -float(X[j] @ q))[:8]
        got = [m.item.id for m in g.search(q, 8, f)]
        if kind == "flat":
            assert got == [ids[j] for j in ref], f
        else:  # approximate, but every hit obeys the filter
            assert set(got) <= {ids[j] for j in ok}, f


def test_compaction_keeps_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "COMPACT_MIN_DEAD", 10)
    rng = np.random.default_rng(3)
    X = _unit(rng, 200)
    g = _manager(tmp_path).get_or_create("g")
    ids = [r.id for r in g.add(_items(200), X)]
    for j in range(110):  # crosses the threshold (a quarter of the rows) twice
        g.delete(ids[j])
    assert len(g) == 90 and g.store._rows.n < 200  # compacted
    g.add(_items(1, start=500), X[:1])  # appends after compaction still work
    q = X[150]
    ref = sorted(range(110, 200), key=lambda j: -float(X[j] @ q))[:5]
    assert [m.item.id for m in g.search(q, 5)] == [ids[j] for j in ref]


def test_shortlist_mode_reranks_the_shortlist_alone(tmp_path: Path, engine: str) -> None:
    rng = np.random.default_rng(4)
    X = _unit(rng, 200)
    g = _manager(tmp_path, engine=engine).get_or_create("g")
    ids = [r.id for r in g.add(_items(200), X)]
    q = _unit(rng, 1)[0]
    p = RerankParams(shortlist=30, mode="shortlist", k1=5, k2=3, lambda_value=0.3)
    got = g.search(q, 10, rerank=p)
    short = sorted(range(200), key=lambda j: -float(X[j] @ q))[:30]
    d = rerank_shortlist(q, X[short], k1=5, k2=3, lambda_value=0.3)
    ref = [short[i] for i in np.argsort(d, kind="stable")[:10]]
    assert [m.item.id for m in got] == [ids[j] for j in ref]
    np.testing.assert_allclose([m.distance for m in got], np.sort(d)[:10], rtol=1e-5)


@pytest.mark.parametrize(("model", "dim"), [("b" * 64, DIM), (MODEL, DIM + 1)])
def test_other_model_is_refused(tmp_path: Path, model: str, dim: int, engine: str) -> None:
    m = _manager(tmp_path, engine=engine)
    m.get_or_create("g").add(_items(2), _unit(np.random.default_rng(5), 2))
    m.close()
    other = _manager(tmp_path, model=model, dim=dim, engine=engine)
    with pytest.raises(ModelMismatch, match="was built with model"):
        other.get("g")
    with pytest.raises(ModelMismatch):
        other.get_or_create("g")
    assert [s.status for s in other.statuses()] == ["model_mismatch"]
    other.delete("g")  # a refused gallery can still be removed
    assert other.statuses() == [] and other.backend.names() == []
    if engine == "local":
        assert not list((tmp_path / "galleries").iterdir())


def test_names_and_missing(tmp_path: Path, engine: str) -> None:
    m = _manager(tmp_path, engine=engine)
    for bad in ["../x", "", "a/b", ".hidden", "x" * 65]:
        with pytest.raises(InvalidInput, match="invalid gallery name"):
            m.get_or_create(bad)
    with pytest.raises(GalleryNotFound):
        m.get("absent")
    with pytest.raises(GalleryNotFound):
        m.delete("absent")
    g = m.get_or_create("g")
    with pytest.raises(InvalidInput, match="shape"):
        g.add(_items(2), np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(ItemNotFound):
        g.delete(12345)
