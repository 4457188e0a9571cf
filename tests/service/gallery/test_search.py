from __future__ import annotations

import numpy as np
import pytest

from service.gallery.search import FaissIndex, IndexOptions, exact_search, scores_to_distances


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(X, q, k, mask=None, min_score=None):
    """Independent reference: score every row in float64, filter, full sort."""
    s = X.astype(np.float64) @ q.astype(np.float64)
    allowed = [
        i
        for i in range(len(X))
        if (mask is None or mask[i]) and (min_score is None or s[i] >= min_score)
    ]
    return sorted(allowed, key=lambda i: -s[i])[:k]


MASKS = {
    "none": lambda rng, n: None,
    "half": lambda rng, n: rng.random(n) < 0.5,
    "selective": lambda rng, n: rng.random(n) < 0.02,  # takes the gather path
    "empty": lambda rng, n: np.zeros(n, dtype=bool),
}


@pytest.mark.parametrize("mask_kind", list(MASKS))
@pytest.mark.parametrize("min_score", [None, 0.1])
def test_exact_search_equals_brute_force(mask_kind: str, min_score: float | None) -> None:
    rng = np.random.default_rng(1)
    X, Q = _unit(rng, 2000, 32), _unit(rng, 5, 32)
    mask = MASKS[mask_kind](rng, len(X))
    for q in Q:
        rows, scores = exact_search(X, q, 10, mask, min_score)
        assert rows.tolist() == brute_force(X, q, 10, mask, min_score)
        np.testing.assert_allclose(scores, X[rows] @ q, rtol=1e-5)
        assert scores.dtype == np.float32 and np.all(np.diff(scores) <= 0)


def test_exact_search_edge_cases() -> None:
    X = _unit(np.random.default_rng(0), 3, 8)
    rows, _ = exact_search(X, X[0], 10)
    assert sorted(rows.tolist()) == [0, 1, 2] and rows[0] == 0
    assert exact_search(X[:0], X[0], 5)[0].size == 0
    assert exact_search(X, X[0], 0)[0].size == 0


def test_distances_from_scores() -> None:
    rng = np.random.default_rng(2)
    a, b = _unit(rng, 2, 16)
    d = scores_to_distances(np.array([a @ b, 1.0000001], dtype=np.float32))
    assert d.dtype == np.float32
    np.testing.assert_allclose(d[0], np.linalg.norm(a - b), rtol=1e-5)
    assert d[1] == 0.0  # rounding above 1 does not give NaN


@pytest.mark.parametrize("mask_kind", ["none", "half", "selective"])
def test_faiss_flat_with_selector_equals_brute_force(mask_kind: str) -> None:
    rng = np.random.default_rng(3)
    X, Q = _unit(rng, 1500, 32), _unit(rng, 4, 32)
    mask = MASKS[mask_kind](rng, len(X))
    index = FaissIndex(32, IndexOptions(kind="flat"))
    index.rebuild(X[:1000])
    index.add(X, X[1000:])
    for q in Q:
        rows, _ = index.search(X, q, 10, mask, 0.0)
        assert rows.tolist() == brute_force(X, q, 10, mask, 0.0)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_respect_filters(kind: str) -> None:
    rng = np.random.default_rng(4)
    X = _unit(rng, 1000, 16)
    mask = rng.random(1000) < 0.5
    index = FaissIndex(16, IndexOptions(kind=kind, ivf_nlist=8, ivf_nprobe=8))
    index.rebuild(X)
    assert index.index is not None
    rows, scores = index.search(X, X[3], 10, mask, None)
    assert mask[rows].all() and len(rows) == 10
    # nprobe = nlist visits everything: IVF is exact; HNSW finds the obvious best match
    ref = brute_force(X, X[3], 10, mask)
    if kind == "ivf":
        assert rows.tolist() == ref
    assert rows[0] == ref[0]


def test_ivf_searches_exactly_until_trainable() -> None:
    rng = np.random.default_rng(5)
    X = _unit(rng, 100, 16)
    index = FaissIndex(16, IndexOptions(kind="ivf", ivf_nlist=8))  # needs 312 to train
    index.rebuild(X)
    assert index.index is None
    rows, _ = index.search(X, X[0], 5, None, None)
    assert rows.tolist() == brute_force(X, X[0], 5)
    Y = np.concatenate([X, _unit(rng, 400, 16)])
    index.add(Y, Y[100:])
    assert index.index is not None and index.index.ntotal == 500
