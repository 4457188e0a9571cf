"""Tests of `reid evaluate` through the CLI entry point (`reid demo`: test_demo_job.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reidcore.cli import main
from reidcore.synthetic_features import FeatureSet, make_clustered_features

HAS_RERANK = importlib.util.find_spec("reidcore.rerank") is not None
needs_rerank = pytest.mark.skipif(
    not HAS_RERANK, reason="re-ranking is absent: reidcore/rerank.py does not exist yet"
)


def _tiny_set() -> FeatureSet:
    """Two queries; q0 matches at rank 1, q1 at rank 2 (a distractor-free hand-made case).

    q0 = (1, 0) id 1: g0 (1, 0) id 1 at distance 0 -> AP 1.
    q1 = (0, 1) id 2: g1 (0, 1) id 3 at 0, g2 (0, 0.5) id 2 at 0.5 -> first hit at rank 2:
    official AP (0/1 + 1/2)/2 = 1/4, mean AP 1/2, INP 1/2.
    """
    f32 = np.float32
    return FeatureSet(
        query_features=np.array([[1, 0], [0, 1]], dtype=f32),
        query_ids=np.array([1, 2]),
        query_cams=np.array([0, 0]),
        gallery_features=np.array([[1, 0], [0, 1], [0, 0.5]], dtype=f32),
        gallery_ids=np.array([1, 3, 2]),
        gallery_cams=np.array([1, 1, 1]),
    )


def _save(fs: FeatureSet, path: Path, **overrides: np.ndarray) -> Path:
    arrays = dict(fs.__dict__)
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def _row(out: str, label: str) -> list[str]:
    for line in out.splitlines():
        if line.startswith(label):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_evaluate_prints_hand_computed_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _save(_tiny_set(), tmp_path / "f.npz")
    assert main(["evaluate", str(path)]) == 0
    # R1 R5 R10 R20 mAP mINP valid skipped
    assert _row(capsys.readouterr().out, "euclidean") == [
        "50.00",
        "100.00",
        "100.00",
        "100.00",
        "62.50",
        "75.00",
        "2",
        "0",
    ]
    assert main(["evaluate", str(path), "--map", "mean"]) == 0
    out = capsys.readouterr().out
    assert _row(out, "euclidean")[4] == "75.00"
    assert "mAP definition: mean" in out


def test_evaluate_camera_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _save(_tiny_set(), tmp_path / "f.npz")
    assert main(["evaluate", str(path), "--camera-pairs"]) == 0
    out = capsys.readouterr().out
    assert "camera pairs, euclidean" in out
    # one query camera (0) x one gallery camera (1): rank-1 50 %, mAP 62.5 %
    assert _row(out, "rank-1 q\\g") == ["cam", "1"]
    lines = out.splitlines()
    rank1_row = lines[lines.index(next(x for x in lines if x.startswith("rank-1 q"))) + 2]
    assert rank1_row.split() == ["cam", "0", "50.00"]
    assert "2/2" in out


def test_evaluate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "nope.npz")]) == 2
    err = capsys.readouterr().err
    assert "nope.npz: no such file" in err and "Traceback" not in err


def test_evaluate_not_an_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.npz"
    path.write_text("not a zip")
    assert main(["evaluate", str(path)]) == 2
    assert "not a readable .npz" in capsys.readouterr().err


def test_evaluate_lists_missing_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fs = _tiny_set()
    path = tmp_path / "f.npz"
    np.savez(path, query_features=fs.query_features, gallery_features=fs.gallery_features)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    for key in ("query_ids", "query_cams", "gallery_ids", "gallery_cams"):
        assert key in err.split("missing arrays")[1].split("found")[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"query_ids": np.array([1, 2, 3])}, "query_ids must have shape (2,)"),
        ({"gallery_cams": np.array([[1, 1, 1]])}, "gallery_cams must have shape (3,)"),
        ({"gallery_features": np.zeros((3, 4), np.float32)}, "dimension 2 but gallery"),
        ({"query_features": np.zeros(2, np.float32)}, "query_features must be a non-empty"),
        ({"gallery_ids": np.array([1.0, 3.0, 2.0])}, "gallery_ids must be integers"),
        (
            {"query_features": np.array([[np.nan, 0], [0, np.inf]], np.float32)},
            "query_features has 2 non-finite",
        ),
    ],
)
def test_evaluate_rejects_bad_arrays(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, np.ndarray],
    message: str,
) -> None:
    path = _save(_tiny_set(), tmp_path / "f.npz", **overrides)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_evaluate_rejects_bad_rerank_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _save(_tiny_set(), tmp_path / "f.npz")
    assert main(["evaluate", str(path), "--rerank", "--k1", "0"]) == 2
    assert "--k1 and --k2 must be >= 1" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--rerank", "--lambda", "1.5"]) == 2
    assert "--lambda must lie in [0, 1]" in capsys.readouterr().err


@needs_rerank
def test_evaluate_with_rerank_matches_direct_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reidcore.evaluation import evaluate_rank, pairwise_euclidean
    from reidcore.rerank import k_reciprocal_rerank

    fs = make_clustered_features(num_ids=30, images_per_id=5, dim=32, noise=1.4, cam_shift=0.7)
    path = _save(fs, tmp_path / "f.npz")
    assert main(["evaluate", str(path), "--rerank", "--k1", "10", "--k2", "3"]) == 0
    out = capsys.readouterr().out
    label = "re-ranked (k1=10, k2=3, lambda=0.3)"
    q_g = pairwise_euclidean(fs.query_features, fs.gallery_features)
    q_q = pairwise_euclidean(fs.query_features, fs.query_features)
    g_g = pairwise_euclidean(fs.gallery_features, fs.gallery_features)
    expected = evaluate_rank(
        k_reciprocal_rerank(q_g, q_q, g_g, k1=10, k2=3, lambda_value=0.3),
        fs.query_ids,
        fs.gallery_ids,
        fs.query_cams,
        fs.gallery_cams,
    )
    assert _row(out, label)[0] == f"{100 * expected.rank(1):.2f}"
    assert _row(out, label)[4] == f"{100 * expected.mAP:.2f}"
    assert _row(out, "euclidean")  # the plain row is printed too
