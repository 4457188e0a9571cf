"""benchmarks.gallery_engines' pure parts: which engines a run measures, what its filters
select (checked against a brute-force count through a real local gallery), the overlap
measure, and a --quick run end to end that leaves RESULTS.md alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import gallery_engines as ge
from benchmarks.results import RESULTS
from service.gallery import GalleryManager, local_backend


def test_server_engines_run_once_per_consistency_level_others_once() -> None:
    chosen = ge.engine_list(
        ["local", "server-flat", "lite", "server-flat"], ["Strong", "Session", "Strong"]
    )
    assert [e.label for e in chosen] == [
        "local",
        "server-flat (Strong)",
        "server-flat (Session)",
        "lite",
    ]
    with pytest.raises(ValueError, match="unknown engine"):
        ge.engine_list(["server-ivf"], ["Strong"])


def test_filters_select_what_they_say_through_a_real_gallery(tmp_path: Path) -> None:
    items = 600
    feats, _ = ge.features(items, 1)
    assert feats.shape == (items, ge.DIM) and feats.dtype == np.float32
    manager = GalleryManager(local_backend(tmp_path), ge.MODEL, ge.DIM)
    try:
        g = manager.get_or_create("g")
        _, row_of = ge.fill(g, feats)
        cams = np.array([r % ge.CAMERAS for r in range(items)])
        ts = ge.T0 + np.arange(items)
        for label, f in ge.filters(items).items():
            expected = np.ones(items, bool)  # brute force over the rows as fill stored them
            if f is not None and f.cameras is not None:
                expected &= np.isin([f"cam{c}" for c in cams], list(f.cameras))
            if f is not None and f.time_from is not None and f.time_to is not None:
                expected &= (ts >= f.time_from) & (ts < f.time_to)
            found = {row_of[m.item.id] for m in g.search(feats[0], items, f)}
            assert found == set(np.flatnonzero(expected).tolist()), label
        counts = [int(len(g.search(feats[0], items, f))) for f in ge.filters(items).values()]
        assert counts == [600, 100, 60, 10]  # none, 1 of 6 cameras, a tenth, both
    finally:
        manager.close()


def test_top10_overlap_by_hand() -> None:
    a = [list(range(10)), list(range(10))]
    b = [list(range(5)) + list(range(100, 105)), list(range(10))[::-1]]
    assert ge.top10_overlap(a, b) == pytest.approx((0.5 + 1.0) / 2)


def test_quick_run_prints_a_row_per_engine_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = RESULTS.read_text() if RESULTS.exists() else None
    assert ge.main(["--quick", "--engines", "local", "--no-rerank"]) == 0
    out = capsys.readouterr().out
    assert "| local | " in out and "5,000 items" in out
    assert (RESULTS.read_text() if RESULTS.exists() else None) == before
