"""One timed training run for the training benchmarks."""

from __future__ import annotations

import time
from pathlib import Path

from training.config import load_train_config
from training.trainer import train


def timed_training(config: Path, overrides: list[str]) -> dict[str, float]:
    """Train from ``config`` with ``overrides``: its last history row plus ``train_s``, the
    wall time of the run (evaluations included)."""
    cfg = load_train_config(config, overrides)
    start = time.perf_counter()
    result = train(cfg)
    row = dict(result.history[-1])
    row["train_s"] = time.perf_counter() - start
    return row
