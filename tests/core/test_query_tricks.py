"""α-QE, DBA and camera normalisation against hand computations and per-row loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidcore.query_tricks import (
    Expansion,
    QueryTricks,
    apply_tricks,
    camera_means,
    expand,
    subtract_camera_means,
    top_neighbours,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = _unit(rng.standard_normal((30, 8)) + 0.5)
    q = _unit(rng.standard_normal((5, 8)) + 0.5)
    return q, rng.integers(0, 3, 5), g, rng.integers(0, 3, 30)


def test_expand_by_hand() -> None:
    a = np.array([[1.0, 0.0]], np.float32)
    nb = np.array([[[0.6, 0.8], [-1.0, 0.0]]], np.float32)  # second: similarity < 0, weight 0
    want = np.array([1.0 + 0.6 * 0.6, 0.6 * 0.8])  # alpha 1: weight 0.6
    np.testing.assert_allclose(expand(a, nb, 1.0)[0], want / np.linalg.norm(want), atol=1e-6)
    want3 = np.array([1.0 + 0.216 * 0.6, 0.216 * 0.8])  # alpha 3: weight 0.6^3
    np.testing.assert_allclose(expand(a, nb, 3.0)[0], want3 / np.linalg.norm(want3), atol=1e-6)


def test_alpha_zero_is_average_query_expansion() -> None:
    q, _, g, _ = _data()
    nb = g[:4][None]
    got = expand(q[:1], nb, 0.0)[0]
    clipped = [x for x in g[:4] if x @ q[0] > 0]  # negative similarities weigh nothing
    mean = q[0] + np.sum(clipped, axis=0)
    np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-6)


def test_top_neighbours_match_a_sort() -> None:
    q, _, g, _ = _data()
    got = top_neighbours(q, g, 4)
    np.testing.assert_array_equal(got, np.argsort(-(q @ g.T), axis=1)[:, :4])
    own = top_neighbours(g, g, 3, exclude_self=True)
    for i in range(len(g)):
        order = [j for j in np.argsort(-(g @ g[i])) if j != i]
        assert list(own[i]) == order[:3]
    assert top_neighbours(g[:2], g[:2], 5, exclude_self=True).shape == (2, 1)


def test_camera_means_and_subtraction() -> None:
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    means = camera_means(feats, ["a", "a", "b"])
    np.testing.assert_allclose(means["a"], [0.5, 0.5])
    out = subtract_camera_means(feats, ["a", None, "zz"], means)
    np.testing.assert_allclose(out[0], _unit(np.array([0.5, -0.5])), atol=1e-6)
    np.testing.assert_allclose(out[1:], feats[1:], atol=1e-6)  # no camera / unknown camera


def test_apply_tricks_matches_per_row_loops() -> None:
    q, qc, g, gc = _data(1)
    tricks = QueryTricks(qe=Expansion(3, 3.0), dba=Expansion(2, 1.0), camera_norm=True)
    got_q, got_g = apply_tricks(q, qc, g, gc, tricks)
    means = {c: g[gc == c].mean(0) for c in np.unique(gc)}
    cg = _unit(np.stack([g[i] - means[gc[i]] for i in range(len(g))]))
    want_g = []
    for i in range(len(g)):
        others = [j for j in np.argsort(-(g @ g[i])) if j != i][:2]  # by raw similarity
        acc = cg[i] + sum(max(cg[i] @ cg[j], 0) * cg[j] for j in others)
        want_g.append(acc / np.linalg.norm(acc))
    np.testing.assert_allclose(got_g, np.stack(want_g), atol=1e-5)
    for r in range(len(q)):
        cq = _unit(q[r] - means[qc[r]])
        top = np.argsort(-(got_g @ cq))[:3]
        acc = cq + sum((got_g[j] @ cq) ** 3 * got_g[j] for j in top)
        np.testing.assert_allclose(got_q[r], acc / np.linalg.norm(acc), atol=1e-5)


def test_plain_only_normalises() -> None:
    q, qc, g, gc = _data(2)
    got_q, got_g = apply_tricks(2 * q, qc, 3 * g, gc, QueryTricks())
    np.testing.assert_allclose(got_q, q, atol=1e-6)
    np.testing.assert_allclose(got_g, g, atol=1e-6)


def test_bad_expansion_is_refused() -> None:
    with pytest.raises(ValueError, match="n must be"):
        Expansion(0)
    with pytest.raises(ValueError, match="alpha"):
        Expansion(1, -1.0)


def test_reid_evaluate_scores_the_tricks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reidcore.cli import main
    from reidcore.evaluation import evaluate_rank, pairwise_euclidean
    from reidcore.synthetic_features import make_clustered_features

    fs = make_clustered_features(num_ids=20, images_per_id=6, num_cams=3, dim=16, seed=4)
    path = tmp_path / "f.npz"
    fs.save(str(path))
    tricks = QueryTricks(qe=Expansion(2, 3.0), dba=Expansion(1, 0.0), camera_norm=True)
    q, g = apply_tricks(
        fs.query_features, fs.query_cams, fs.gallery_features, fs.gallery_cams, tricks
    )
    want = evaluate_rank(
        pairwise_euclidean(q, g), fs.query_ids, fs.gallery_ids, fs.query_cams, fs.gallery_cams
    )
    args = ["evaluate", str(path), "--qe", "2", "--dba", "1", "--dba-alpha", "0", "--camera-norm"]
    assert main(args) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("euclidean"))
    assert row.split()[5] == f"{100 * want.mAP:.2f}"
    assert main(["evaluate", str(path), "--qe", "-1"]) == 2
    assert "n must be >= 1" in capsys.readouterr().err
