"""`reid evaluate --local-distance`: AlignedReID's global + local distance on a hand-made case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidcore.cli import main
from tests.core.test_evaluate_command import _row, _save, _tiny_set


def test_local_distance_reorders_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """q1's match g2 is at global 0.5 behind g1 at 0; with one-stripe local features the
    local distance is tanh(|a - b| / 2): g1 (stripe 10 vs 0) gets tanh(5) = 0.9999, g2 0, so
    g2 (0.5) now ranks before g1 (0.9999) and both queries match at rank 1."""
    local = {
        "query_local": np.array([[[0.0]], [[0.0]]], dtype=np.float32),
        "gallery_local": np.array([[[0.0]], [[10.0]], [[0.0]]], dtype=np.float32),
    }
    path = _save(_tiny_set(), tmp_path / "f.npz", **local)
    assert main(["evaluate", str(path), "--local-distance", "--map", "mean"]) == 0
    out = capsys.readouterr().out
    assert _row(out, "euclidean")[0] == "50.00"  # rank-1 without the local distance
    row = _row(out, "global + local (weight 1)")
    assert row[0] == "100.00" and row[4] == "100.00"  # rank-1, mAP


def test_local_distance_without_local_arrays_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _save(_tiny_set(), tmp_path / "f.npz")
    assert main(["evaluate", str(path), "--local-distance"]) != 0
    assert "needs query_local and gallery_local" in capsys.readouterr().err
    bad = _save(_tiny_set(), tmp_path / "g.npz", query_local=np.zeros((2, 1, 1)))
    assert main(["evaluate", str(bad), "--local-distance"]) != 0
    assert "not the other local array" in capsys.readouterr().err
