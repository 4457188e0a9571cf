"""Milvus item ids: below 2**53 (exact in JavaScript), unique across writers by claimed
blocks, a fresh id found taken is replaced, and collections with Milvus's auto ids keep
working. Milvus Lite in this process; several backends play several replicas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.gallery import GalleryManager, NewItem

pytest.importorskip("pymilvus", reason="the milvus extra (pymilvus, milvus-lite) is not installed")

from service.gallery.milvus_ids import (  # noqa: E402
    EPOCH,
    ID_LIMIT,
    OFFSET_BITS,
    RANDOM_BITS,
    IdBlocks,
    block_of,
)
from tests.service.gallery.helpers import make_backend  # noqa: E402

MODEL = "a" * 64
DIM = 8


def _unit(seed: int, n: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _items(n: int, start: int = 0) -> list[NewItem]:
    return [NewItem("c", float(i), f"e{i}") for i in range(start, start + n)]


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[GalleryManager]]:
    """Three galleries managers with their own Milvus clients on one Milvus Lite database."""
    out = [GalleryManager(make_backend(tmp_path, "milvus"), MODEL, DIM) for _ in range(3)]
    out[0].get_or_create("g")
    yield out
    for m in out:
        m.close()


def _ids(m: GalleryManager) -> Any:
    return m.backend.ids  # type: ignore[attr-defined]


def test_ids_are_below_2_53_and_unique_across_writers(replicas: list[GalleryManager]) -> None:
    feats = _unit(0, 30)
    got = []
    for k, m in enumerate(replicas):
        got += [r.id for r in m.get("g").add(_items(10, 10 * k), feats[10 * k : 10 * k + 10])]
    assert len(set(got)) == 30 and all(0 < i < 2**53 for i in got)
    assert len({block_of(i) for i in got}) == 3  # one block per writer
    g = replicas[1].get("g")
    assert len(g) == 30 and sorted(g.store.item_ids().tolist()) == sorted(got)
    for row in (0, 15, 29):
        assert g.search(feats[row], 1)[0].item.id == got[row]


def test_a_block_claimed_by_two_writers_goes_to_one(
    replicas: list[GalleryManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both draw the same random block: the second to read sees the first's claim, gives
    it up and claims another."""
    monkeypatch.setattr("service.gallery.milvus_ids.secrets.randbelow", lambda n: 0)
    a, b = _ids(replicas[0]), _ids(replicas[1])
    first, second = a.take(3), b.take(3)
    assert block_of(first[0]) != block_of(second[0])
    assert block_of(second[0]) == block_of(first[0]) + 1  # the next block above the lost one
    assert first == list(range(first[0], first[0] + 3))  # consecutive inside a block


def test_a_claim_that_sees_a_rival_row_loses(replicas: list[GalleryManager]) -> None:
    """The rule that makes claims safe: a claimant wins only when its row is the only one
    of the block (two that both see each other both lose, and retry elsewhere)."""
    a, b = _ids(replicas[0]), _ids(replicas[1])
    a._ensure_collection()
    b._ensure_collection()
    assert a._won(1234) and not b._won(1234) and not a._won(1234)
    assert b._won(1235)


def test_blocks_follow_the_clock_then_step_above_the_last(replicas: list[GalleryManager]) -> None:
    minute = 500_000
    blocks = IdBlocks(None, clock=lambda: EPOCH + 60 * minute + 30)
    first = blocks._candidate()
    assert minute << RANDOM_BITS <= first < (minute + 1) << RANDOM_BITS
    blocks._last = first
    assert first < blocks._candidate() <= first + 256
    later = IdBlocks(None, clock=lambda: EPOCH + 60 * (minute + 1))
    assert later._candidate() > first  # a later minute's ids are larger
    assert ID_LIMIT == 2**53 and (ID_LIMIT >> OFFSET_BITS) - 1 << OFFSET_BITS < 2**53


def test_a_block_spent_moves_to_the_next(replicas: list[GalleryManager]) -> None:
    a = _ids(replicas[0])
    a.take(1)
    a._next = (1 << OFFSET_BITS) - 2  # two ids left in this block
    got = a.take(5)
    assert len(set(got)) == 5 and got == sorted(got)
    assert block_of(got[1]) == block_of(got[0]) and block_of(got[2]) != block_of(got[1])


def test_fresh_ids_found_taken_are_replaced(replicas: list[GalleryManager]) -> None:
    """A writer whose block is somehow in use (a claims collection dropped by hand, a
    restored backup) finds its fresh ids taken in the same lookup and claims another."""
    feats = _unit(1, 4)
    one = replicas[0].get("g").add(_items(2), feats[:2])
    b = _ids(replicas[1])
    b.take(1)
    b._block, b._next = block_of(one[0].id), one[0].id & ((1 << OFFSET_BITS) - 1)
    two = replicas[1].get("g").add(_items(2, 2), feats[2:])
    assert all(r.created for r in two)
    assert {r.id for r in two}.isdisjoint({r.id for r in one})
    g = replicas[2].get("g")
    assert len(g) == 4 and g.find_external(["e0", "e2"]) == {"e0": one[0].id, "e2": two[0].id}
    assert g.get(one[0].id).timestamp == 0.0 and g.get(two[0].id).timestamp == 2.0


def test_collections_with_milvus_auto_ids_stay_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gallery created before these ids (auto_id schema): read, searched and added to as
    before, Milvus choosing the ids; no block is claimed for it."""
    from pymilvus import MilvusClient

    create = MilvusClient.create_schema
    with monkeypatch.context() as patch:  # the schema as earlier versions created it
        patch.setattr(MilvusClient, "create_schema", lambda **kw: create(**{**kw, "auto_id": True}))
        old = GalleryManager(make_backend(tmp_path, "milvus"), MODEL, DIM)
        before = [r.id for r in old.get_or_create("g").add(_items(3), _unit(2, 3))]
        old.close()
    m = GalleryManager(make_backend(tmp_path, "milvus"), MODEL, DIM)
    try:
        g = m.get("g")
        assert not g.store.own_ids  # type: ignore[attr-defined]
        feats = _unit(3, 2)
        after = [r.id for r in g.add(_items(2, 3), feats)]
        assert len(g) == 5 and len(set(before + after)) == 5
        assert g.search(feats[1], 1)[0].item.id == after[1] and g.get(before[0]).camera == "c"
        assert _ids(m)._block == -1  # nothing claimed
        assert not m.backend.client.has_collection("reid_id_blocks")  # type: ignore[attr-defined]
    finally:
        m.close()


def test_fresh_ids_found_taken_are_replaced_without_external_ids(
    replicas: list[GalleryManager],
) -> None:
    """The same check when no external id is looked up (the ids alone, Bounded reads)."""
    feats = _unit(4, 4)
    one = replicas[0].get("g").add([NewItem("c", 1.0), NewItem("c", 2.0)], feats[:2])
    b = _ids(replicas[1])
    b.take(1)
    b._block, b._next = block_of(one[0].id), one[0].id & ((1 << OFFSET_BITS) - 1)
    two = replicas[1].get("g").add([NewItem("d", 3.0), NewItem("d", 4.0)], feats[2:])
    assert {r.id for r in two}.isdisjoint({r.id for r in one})
    g = replicas[2].get("g")
    assert len(g) == 4 and [g.get(r.id).camera for r in one + two] == ["c", "c", "d", "d"]
