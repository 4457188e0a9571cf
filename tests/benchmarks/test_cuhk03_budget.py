"""The budget curve of benchmarks/cuhk03_budget.py from a hand-made run folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.cuhk03_budget import curve, markdown, wall_minutes

HEADER = "epoch,lr,images_per_s,seconds,loss,rank1,mAP,rerank_rank1,rerank_mAP\n"


def _run(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text(
        "data: {val_ids: 200, val_seed: 0}\nepochs: 3\nsteps_per_epoch: 100\nthreads: 2\n"
    )
    (tmp_path / "metrics.csv").write_text(
        HEADER
        + "0,,,,,0.2,0.1,0.3,0.25\n"  # the evaluation before training
        + "1,3e-4,60,120,4.0,,,,\n"  # trained, not evaluated
        + "2,3e-4,50,180,3.0,0.5,0.4,0.6,0.55\n"
        + "3,3e-5,60,120,2.0,0.6,0.5,0.7,0.65\n"
    )
    os.utime(tmp_path / "config.yaml", (1000.0, 1000.0))
    os.utime(tmp_path / "metrics.csv", (1000.0 + 450.0, 1000.0 + 450.0))
    return tmp_path


def test_curve_counts_training_minutes_up_to_each_evaluation(tmp_path: Path) -> None:
    rows = curve(_run(tmp_path))
    assert [r["epoch"] for r in rows] == [0, 2, 3]
    assert [r["train_min"] for r in rows] == pytest.approx([0.0, 5.0, 7.0])  # 300 s, 420 s
    assert [r["fast_min"] for r in rows] == pytest.approx([0.0, 4.0, 6.0])  # 120 s an epoch
    assert rows[1]["mAP"] == pytest.approx(0.4) and rows[2]["rerank_mAP"] == pytest.approx(0.65)
    assert wall_minutes(tmp_path) == pytest.approx(7.5)


def test_markdown_table_has_one_line_per_evaluation(tmp_path: Path) -> None:
    text = markdown(_run(tmp_path), "note.")
    assert "3 epochs × 100 batches of 16×4 = 300 steps" in text
    assert "| 2 | 5.0 | 4.0 | 50 | 50.0 | 40.0 | 60.0 | 55.0 |" in text
    assert text.count("\n| ") == 4  # header + three evaluated epochs
