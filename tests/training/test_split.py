"""Relabelling and the identity-disjoint validation split, checked by brute force."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.data.errors import DatasetError
from training.data.readers import read_market
from training.data.split import (
    carve_queries,
    eligible_identities,
    relabel,
    split_validation,
    with_validation,
)
from training.data.types import ReidDataset, Sample


def make_samples(spec: dict[int, dict[int, int]]) -> list[Sample]:
    """pid -> camid -> image count, as Samples with unique paths."""
    return [
        Sample(f"{pid}_{cam}_{i}.jpg", pid, cam)
        for pid, cams in spec.items()
        for cam, n in cams.items()
        for i in range(n)
    ]


def random_spec(seed: int, num_ids: int = 60) -> dict[int, dict[int, int]]:
    rng = np.random.default_rng(seed)
    spec: dict[int, dict[int, int]] = {}
    for pid in rng.choice(np.arange(1, 5000), size=num_ids, replace=False):
        cams = rng.choice(np.arange(1, 7), size=int(rng.integers(1, 4)), replace=False)
        spec[int(pid)] = {int(c): int(rng.integers(1, 5)) for c in cams}
    return spec


def test_relabel() -> None:
    samples = [Sample("a", 40, 1), Sample("b", 7, 2), Sample("c", 40, 2), Sample("d", 1501, 1)]
    out, mapping = relabel(samples)
    assert mapping == {7: 0, 40: 1, 1501: 2}
    assert [(s.path, s.pid, s.camid) for s in out] == [
        ("a", 1, 1),
        ("b", 0, 2),
        ("c", 1, 2),
        ("d", 2, 1),
    ]
    assert samples[0].pid == 40  # input untouched


def test_relabel_refuses_junk_distractor_and_empty() -> None:
    with pytest.raises(DatasetError, match=r"junk/distractor identities \[-1, 0\]"):
        relabel([Sample("a", -1, 1), Sample("b", 0, 1), Sample("c", 3, 1)])
    with pytest.raises(DatasetError, match="empty"):
        relabel([])


def test_eligible_identities() -> None:
    spec = {
        1: {1: 3},  # one camera
        2: {1: 1, 2: 1},  # two cameras but no camera with a second image
        3: {1: 2, 2: 1},
        4: {1: 1, 2: 1, 3: 1},
        5: {2: 1, 4: 5},
        0: {1: 3, 2: 3},  # distractor
    }
    assert eligible_identities(make_samples(spec)) == [3, 5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_properties_brute_force(seed: int) -> None:
    spec = random_spec(seed)
    samples = make_samples(spec)
    n_eligible = len(eligible_identities(samples))
    k = max(1, n_eligible // 2)
    train, query, gallery = split_validation(samples, num_ids=k, seed=seed)
    # every sample lands in exactly one part
    assert Counter(train + query + gallery) == Counter(samples)
    val_ids = {s.pid for s in query + gallery}
    assert len(val_ids) == k
    assert val_ids.isdisjoint({s.pid for s in train})
    for pid in val_ids:
        cams = spec[pid]
        assert len(cams) >= 2 and max(cams.values()) >= 2
        q_cams = sorted(s.camid for s in query if s.pid == pid)
        # one query per camera that saw the identity at least twice
        assert q_cams == sorted(c for c, n in cams.items() if n >= 2)
    for q in query:  # brute force: a gallery image of the same person from another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in gallery)


def test_split_is_seeded() -> None:
    samples = make_samples(random_spec(5, num_ids=80))
    a = split_validation(samples, num_ids=10, seed=3)
    b = split_validation(samples, num_ids=10, seed=3)
    c = split_validation(samples, num_ids=10, seed=4)
    assert a == b
    assert {s.pid for s in a[1]} != {s.pid for s in c[1]}


def test_split_errors() -> None:
    samples = make_samples({1: {1: 2, 2: 2}, 2: {1: 2, 2: 2}, 3: {1: 5}})
    with pytest.raises(DatasetError, match="asked for 3 .* only 2 of 3 identities"):
        split_validation(samples, num_ids=3)
    with pytest.raises(ValueError, match="num_ids must be >= 1"):
        split_validation(samples, num_ids=0)
    train, query, gallery = split_validation(samples, num_ids=2)
    assert {s.pid for s in train} == {3}
    assert len(query) == 4 and len(gallery) == 4


def test_with_validation_dataset() -> None:
    ds = ReidDataset("toy", "/x", train=make_samples({1: {1: 2, 2: 2}, 2: {1: 2, 2: 3}, 3: {1: 1}}))
    val = with_validation(ds, num_ids=1, seed=0)
    assert val.name == "toy-val1-seed0" and val.root == "/x"
    assert len(val.train) + len(val.query) + len(val.gallery) == len(ds.train)
    assert len(val.query) == 2


@pytest.mark.realdata
def test_real_cuhk03_np_validation_split(shared_data: Path) -> None:
    ds = read_market(shared_data / "cuhk03-np-detected")
    train, query, gallery = split_validation(ds.train, num_ids=100, seed=0)
    assert len({s.pid for s in train}) == 667
    assert len({s.pid for s in query}) == 100
    assert len(train) + len(query) + len(gallery) == 7365
    # two cameras: at most one query per identity per camera
    per_id = Counter(s.pid for s in query)
    assert max(per_id.values()) <= 2 and len(query) == sum(per_id.values())
    _, mapping = relabel(train)
    assert sorted(mapping.values()) == list(range(667))


@pytest.mark.parametrize("seed", range(5))
def test_carve_queries_brute_force(seed: int) -> None:
    """One query per (identity, camera) with >= 2 images; junk and distractors stay gallery."""
    spec = random_spec(seed, num_ids=30)
    spec[0] = {1: 3}
    spec[-1] = {2: 2}
    samples = make_samples(spec)
    query, gallery = carve_queries(samples, seed)
    assert sorted(query + gallery, key=lambda s: s.path) == sorted(samples, key=lambda s: s.path)
    want = sorted((p, c) for p, cams in spec.items() if p > 0 for c, n in cams.items() if n >= 2)
    assert sorted((q.pid, q.camid) for q in query) == want
    assert carve_queries(samples, seed) == (query, gallery)  # seeded


def test_carve_queries_needs_two_images_somewhere() -> None:
    with pytest.raises(DatasetError, match="cannot carve a query split"):
        carve_queries(make_samples({1: {1: 1, 2: 1}, 0: {1: 5}}))
