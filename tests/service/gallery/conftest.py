"""The gallery suites run against every storage engine (Milvus Lite in this process)."""

from __future__ import annotations

import pytest

from tests.service.gallery.helpers import ENGINES


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """A gallery storage engine: ``local`` (FAISS + SQLite) or ``milvus`` (Milvus Lite)."""
    return str(request.param)
