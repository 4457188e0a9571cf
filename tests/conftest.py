"""Shared fixtures. Real data lives in ../shared beside the repository (never committed)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip saying it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} does not exist")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """../shared/weights, or a skip saying it is absent."""
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip(f"pretrained weights not available: {SHARED_WEIGHTS} does not exist")
    return SHARED_WEIGHTS
