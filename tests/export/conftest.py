"""Fixtures for export tests: a generated Market-style folder shared by the module's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.export.helpers import write_market_train


@pytest.fixture(scope="session")
def market_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bounding_box_train`` with 8 identities x 2 cameras x 3 generated JPEGs (96x48)."""
    return write_market_train(tmp_path_factory.mktemp("market"))
