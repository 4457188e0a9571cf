"""Queries without a cross-camera match: skipped and counted, everywhere, against hand counts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from reidcore.evaluation import (
    NoValidQueryError,
    count_valid_queries,
    evaluate_rank,
    format_results_table,
    require_valid_queries,
    valid_queries_line,
)
from reidcore.logs import DemoteNoise, configure_logging

# gallery: g0 id1 cam1, g1 id1 cam2, g2 id2 cam1, g3 id0 (distractor) cam2, g4 id-1 (junk) cam2
G_IDS, G_CAMS = np.array([1, 1, 2, 0, -1]), np.array([1, 2, 1, 2, 2])
# queries: q0 id1 cam1 (match g1), q1 id2 cam1 (only its own camera: skipped),
#          q2 id3 cam2 (unknown identity: skipped), q3 id1 cam3 (matches g0 and g1)
Q_IDS, Q_CAMS = np.array([1, 2, 3, 1]), np.array([1, 1, 2, 3])


def test_valid_queries_hand_counted() -> None:
    assert count_valid_queries(Q_IDS, G_IDS, Q_CAMS, G_CAMS) == 2
    assert require_valid_queries(Q_IDS, G_IDS, Q_CAMS, G_CAMS) == 2
    assert valid_queries_line(2, 4) == (
        "valid queries 2 of 4 (2 without a cross-camera match skipped)"
    )
    assert valid_queries_line(3, 3) == "valid queries 3 of 3"
    with pytest.raises(NoValidQueryError, match="test split: none of the 2 queries"):
        require_valid_queries(Q_IDS[1:3], G_IDS, Q_CAMS[1:3], G_CAMS, where="test split")


def test_skipped_queries_do_not_count_in_the_metrics() -> None:
    """Rows ranked by distance; junk g4 removed, same-camera same-id items removed.

    q0 (id1 cam1): order g4 g3 g1 g0 g2 -> g4 junk, g0 same-camera junk -> list g3 g1 g2:
      match g1 at 2 -> rank-1 miss, official AP = (0 + 1/2) / 2 = 1/4.
    q3 (id1 cam3): order g0 g1 g2 g3 g4 -> matches at 1, 2 -> AP 1, rank-1 hit.
    q1, q2: no match, skipped. mAP = (1/4 + 1) / 2 = 0.625; rank-1 = 1/2.
    """
    dist = np.array(
        [
            [0.4, 0.3, 0.5, 0.2, 0.1],
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [0.1, 0.2, 0.3, 0.4, 0.5],
        ],
        dtype=np.float32,
    )
    res = evaluate_rank(dist, Q_IDS, G_IDS, Q_CAMS, G_CAMS)
    assert (res.num_valid, res.num_skipped, res.num_queries) == (2, 2, 4)
    assert res.mAP == pytest.approx(0.625) and res.rank(1) == pytest.approx(0.5)
    assert res.valid_line() == "valid queries 2 of 4 (2 without a cross-camera match skipped)"
    assert res.valid_line() in format_results_table([("plain", res)])
    assert count_valid_queries(Q_IDS, G_IDS, Q_CAMS, G_CAMS) == res.num_valid


@pytest.mark.parametrize("seed", range(5))
def test_label_count_agrees_with_evaluate_rank(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q_ids, g_ids = rng.integers(1, 8, 30), rng.integers(-1, 8, 60)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 60)
    dist = rng.random((30, 60)).astype(np.float32)
    want = evaluate_rank(dist, q_ids, g_ids, q_cams, g_cams).num_valid
    assert count_valid_queries(q_ids, g_ids, q_cams, g_cams) == want


def test_evaluate_command_refuses_a_file_with_no_valid_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reidcore.cli import main

    rng = np.random.default_rng(0)
    path = tmp_path / "f.npz"
    np.savez(
        path,
        query_features=rng.random((2, 4)),
        query_ids=np.array([2, 3]),
        query_cams=np.array([1, 2]),
        gallery_features=rng.random((5, 4)),
        gallery_ids=G_IDS,
        gallery_cams=G_CAMS,
    )
    assert main(["evaluate", str(path)]) == 2
    assert "none of the 2 queries" in capsys.readouterr().err
    np.savez(
        path,
        query_features=rng.random((4, 4)),
        query_ids=Q_IDS,
        query_cams=Q_CAMS,
        gallery_features=rng.random((5, 4)),
        gallery_ids=G_IDS,
        gallery_cams=G_CAMS,
    )
    assert main(["evaluate", str(path)]) == 0
    assert "valid queries 2 of 4" in capsys.readouterr().out


def _record(name: str, level: int, pathname: str = "x.py") -> logging.LogRecord:
    return logging.LogRecord(name, level, pathname, 1, "msg", None, None)


def test_third_party_info_is_demoted(monkeypatch: pytest.MonkeyPatch) -> None:
    demote = DemoteNoise()
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    faiss = _record("faiss.loader", logging.INFO)
    assert not demote.filter(faiss) and faiss.levelname == "DEBUG"
    quant = _record("root", logging.INFO, "/x/site-packages/onnxruntime/quantization/q.py")
    assert not demote.filter(quant)
    assert demote.filter(_record("faiss.loader", logging.WARNING))  # warnings stay
    assert demote.filter(_record("reidcore.cli", logging.INFO))  # ours stay
    monkeypatch.setattr(root, "level", logging.DEBUG)
    assert demote.filter(_record("faiss.loader", logging.INFO))  # shown at DEBUG
    configure_logging("INFO")
    assert any(isinstance(f, DemoteNoise) for h in root.handlers for f in h.filters)
