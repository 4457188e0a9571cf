"""k-reciprocal re-ranking against a direct loop over the paper's equations."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from reidcore.evaluation import pairwise_euclidean
from reidcore.rerank import (
    RerankMemoryError,
    estimate_rerank_memory,
    k_reciprocal_rerank,
    rerank_shortlist,
)
from reidcore.synthetic_features import make_clustered_features
from tests.core.rerank_reference import released_re_ranking

# --------------------------------------------------------------------------- reference


def _full_matrix(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> np.ndarray:
    top = np.hstack([q_q, q_g])
    bottom = np.hstack([q_g.T, g_g])
    d = np.vstack([top, bottom]).astype(np.float64)
    np.fill_diagonal(d, 0.0)
    return d


def reference_rerank(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int, lam: float
) -> tuple[np.ndarray, int]:
    """Zhong et al. Eq. 4-12 as plain loops (float64), with the released code's normalised
    original distance and strict 2/3 test; also returns how many R* grew."""
    d = _full_matrix(q_g, q_q, g_g)
    n, nq = d.shape[0], q_q.shape[0]
    d_orig = d**2 / (d**2).max(axis=0)[:, None]  # row i over the largest d(l, i)**2
    order = [sorted(range(n), key=lambda j, i=i: (j != i, d[i, j], j)) for i in range(n)]

    def neighbours(i: int, k: int) -> list[int]:  # N(i, k): self + k nearest
        return order[i][: k + 1]

    def reciprocal(i: int, k: int) -> list[int]:  # R(i, k), Eq. 4
        return [j for j in neighbours(i, k) if i in neighbours(j, k)]

    half = round(k1 / 2)
    v = np.zeros((n, n))
    grown = 0
    for i in range(n):
        r = reciprocal(i, k1)
        r_star = set(r)
        for c in r:  # Eq. 6
            rc = reciprocal(c, half)
            if len(set(rc) & set(r)) > Fraction(2, 3) * len(rc):
                r_star |= set(rc)
        grown += len(r_star) > len(r)
        for j in r_star:  # Eq. 7
            v[i, j] = np.exp(-d_orig[i, j])
        v[i] /= v[i].sum()
    if k2 > 1:  # Eq. 11
        v = np.array([np.mean([v[j] for j in order[i][:k2]], axis=0) for i in range(n)])
    out = np.zeros((nq, n - nq))
    for qi in range(nq):
        for gi in range(n - nq):
            a, b = v[qi], v[nq + gi]
            jac = 1.0 - np.minimum(a, b).sum() / np.maximum(a, b).sum()  # Eq. 10
            out[qi, gi] = (1 - lam) * jac + lam * d_orig[qi, nq + gi]  # Eq. 12
    return out, grown


def _distances(nq: int, seed: int, num_ids: int = 12, per_id: int = 6, dim: int = 16):
    fs = make_clustered_features(
        num_ids=num_ids, images_per_id=per_id, num_cams=3, dim=dim, noise=0.8, seed=seed
    )
    q, g = fs.query_features[:nq], fs.gallery_features
    return (
        pairwise_euclidean(q, g),
        pairwise_euclidean(q, q),
        pairwise_euclidean(g, g),
    )


# --------------------------------------------------------------------------- full


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (5, 3, 0.5), (7, 1, 0.1)])
def test_full_matches_direct_loop(seed: int, k1: int, k2: int, lam: float) -> None:
    q_g, q_q, g_g = _distances(nq=8, seed=seed)
    got = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    ref, grown = reference_rerank(q_g, q_q, g_g, k1, k2, lam)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert grown > 0 or k1 < 7  # the 2/3 rule was exercised (k1 = 5: often never holds)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_full_matches_direct_loop_when_set_smaller_than_k1() -> None:
    q_g, q_q, g_g = _distances(nq=3, seed=5, num_ids=3, per_id=4)  # N = 3 + 9 < k1 + 1
    got = k_reciprocal_rerank(q_g, q_q, g_g, k1=20, k2=6)
    ref, _ = reference_rerank(q_g, q_q, g_g, 20, 6, 0.3)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_lambda_one_gives_the_normalised_original_distance() -> None:
    q_g, q_q, g_g = _distances(nq=4, seed=7)
    got = k_reciprocal_rerank(q_g, q_q, g_g, lambda_value=1.0)
    far = np.maximum(q_q.max(axis=1), q_g.max(axis=1)).astype(np.float64)  # per query
    np.testing.assert_allclose(got, q_g.astype(np.float64) ** 2 / far[:, None] ** 2, rtol=1e-6)


@pytest.mark.parametrize("case", range(12))
def test_full_equals_the_released_code_on_random_cases(case: int) -> None:
    rng = np.random.default_rng(100 + case)
    nq, ng, dim = int(rng.integers(1, 12)), int(rng.integers(2, 60)), int(rng.integers(2, 20))
    k1 = int(rng.integers(1, 25))
    k2 = int(rng.integers(1, k1 + 2))
    lam = float(rng.uniform(0, 1))
    scale = float(10 ** rng.uniform(-2, 2))
    q = (rng.normal(size=(nq, dim)) * scale).astype(np.float32)
    g = (rng.normal(size=(ng, dim)) * scale).astype(np.float32)
    q_g, q_q, g_g = pairwise_euclidean(q, g), pairwise_euclidean(q, q), pairwise_euclidean(g, g)
    np.fill_diagonal(q_q, 0.0)
    np.fill_diagonal(g_g, 0.0)
    got = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    ref = released_re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_full_does_not_depend_on_the_feature_scale() -> None:
    fs = make_clustered_features(num_ids=20, images_per_id=5, dim=16, noise=0.9, seed=4)
    q, g = fs.query_features, fs.gallery_features
    base = k_reciprocal_rerank(
        pairwise_euclidean(q, g), pairwise_euclidean(q, q), pairwise_euclidean(g, g)
    )
    q4, g4 = 4 * q, 4 * g
    scaled = k_reciprocal_rerank(
        pairwise_euclidean(q4, g4), pairwise_euclidean(q4, q4), pairwise_euclidean(g4, g4)
    )
    np.testing.assert_allclose(scaled, base, atol=2e-6, rtol=0)


def test_rerank_improves_map_on_clustered_features() -> None:
    fs = make_clustered_features(num_ids=60, images_per_id=6, dim=64, noise=1.2, seed=3)
    q, g = fs.query_features, fs.gallery_features
    q_g = pairwise_euclidean(q, g)
    rr = k_reciprocal_rerank(q_g, pairwise_euclidean(q, q), pairwise_euclidean(g, g))

    def mean_ap(dist: np.ndarray) -> float:
        aps = []
        for i in range(dist.shape[0]):
            keep = ~((fs.gallery_ids == fs.query_ids[i]) & (fs.gallery_cams == fs.query_cams[i]))
            hits = (fs.gallery_ids == fs.query_ids[i])[keep][np.argsort(dist[i][keep])]
            if hits.any():
                pos = np.flatnonzero(hits) + 1
                aps.append(np.mean(np.arange(1, pos.size + 1) / pos))
        return float(np.mean(aps))

    assert mean_ap(rr) > mean_ap(q_g)


# --------------------------------------------------------------------------- shortlist


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shortlist_equals_full_when_it_covers_the_gallery(seed: int) -> None:
    fs = make_clustered_features(num_ids=15, images_per_id=5, dim=32, seed=seed)
    q, g = fs.query_features[0], fs.gallery_features
    full = k_reciprocal_rerank(
        pairwise_euclidean(q[None], g),
        np.zeros((1, 1), np.float32),
        pairwise_euclidean(g, g),
    )[0]
    order = np.argsort(pairwise_euclidean(q[None], g)[0], kind="stable")  # top-K order
    got = rerank_shortlist(q, g[order])
    assert got.shape == (g.shape[0],) and got.dtype == np.float32
    np.testing.assert_allclose(got, full[order], atol=1e-6, rtol=0)


def test_shortlist_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="query_feat must be 1-D"):
        rerank_shortlist(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"cand_feats must have shape \[K, 4\]"):
        rerank_shortlist(np.zeros(4), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        rerank_shortlist(np.full(4, np.nan), np.zeros((3, 4)))


# --------------------------------------------------------------------------- memory


def test_memory_error_names_needed_and_available() -> None:
    q_g, q_q, g_g = _distances(nq=4, seed=0)
    with pytest.raises(
        RerankMemoryError,
        match=r"needs about .*B but only 1000 B is available \(max_memory_bytes\)",
    ):
        k_reciprocal_rerank(q_g, q_q, g_g, max_memory_bytes=1000)
    assert issubclass(RerankMemoryError, MemoryError)


def test_memory_estimate_grows_and_counts_inputs() -> None:
    small = estimate_rerank_memory(100, 1_000)
    big = estimate_rerank_memory(100, 10_000)
    assert 0 < small < big
    with_inputs = estimate_rerank_memory(100, 10_000, include_inputs=True)
    assert with_inputs - big >= 10_100**2 * 4  # the caller's (Nq + Ng)^2 float32 inputs
    # a 100k gallery's full re-ranking does not fit in this machine's 24 GiB
    assert estimate_rerank_memory(3_000, 100_000, include_inputs=True) > 24 * 2**30


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("which", "bad", "match"),
    [
        (0, np.zeros((2, 4)), r"q_g_dist must have shape \(3, 5\)"),
        (1, np.zeros((3, 2)), r"q_q_dist must have shape \(3, 3\)"),
        (2, np.zeros(5), "must be 2-D"),
    ],
)
def test_rejects_bad_shapes(which: int, bad: np.ndarray, match: str) -> None:
    args = [np.ones((3, 5)), np.ones((3, 3)), np.ones((5, 5))]
    args[which] = bad
    with pytest.raises(ValueError, match=match):
        k_reciprocal_rerank(*args)


@pytest.mark.parametrize("value", [-0.5, np.nan, np.inf])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_rejects_negative_or_non_finite_distances(which: int, value: float) -> None:
    args = [np.ones((3, 5)), np.ones((3, 3)), np.ones((5, 5))]
    args[which][1, 2] = value
    match = "negative" if value < 0 else "non-finite"
    with pytest.raises(ValueError, match=match):
        k_reciprocal_rerank(*args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k1": 0}, "k1 must be >= 1"),
        ({"k1": 4, "k2": 6}, r"k2 must be in \[1, k1 \+ 1\]"),
        ({"k2": 0}, "k2 must be in"),
        ({"lambda_value": 1.5}, "lambda_value must be in"),
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        k_reciprocal_rerank(np.ones((3, 5)), np.ones((3, 3)), np.ones((5, 5)), **kwargs)  # type: ignore[arg-type]
