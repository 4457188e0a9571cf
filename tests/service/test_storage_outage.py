"""Gallery storage (Milvus) out of reach: 503 with Retry-After, not 500; other errors stay 500.

The failures are real ones: a pymilvus client that cannot connect, and a service whose
Milvus Lite connection has gone away under it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.gallery.outage import storage_unavailable
from tests.service.conftest import random_image

pymilvus = pytest.importorskip(
    "pymilvus", reason="the milvus extra (pymilvus, milvus-lite) is not installed"
)


def test_a_client_that_cannot_connect_is_an_outage() -> None:
    with pytest.raises(pymilvus.MilvusException) as caught:
        pymilvus.MilvusClient("http://127.0.0.1:1", timeout=1)  # nothing listens on port 1
    assert storage_unavailable(caught.value)
    try:  # the same error seen through a wrapper of ours
        raise RuntimeError("gallery 'g' could not be read") from caught.value
    except RuntimeError as wrapped:
        assert storage_unavailable(wrapped)


def test_other_errors_are_not_outages() -> None:
    assert not storage_unavailable(ValueError("server unavailable"))  # not the Milvus client's
    bad_filter = pymilvus.MilvusException(code=1100, message="cannot parse expression: a <")
    assert not storage_unavailable(bad_filter)


@pytest.fixture
def gallery_engine() -> str:
    return "milvus"


def test_the_api_answers_503_with_retry_after_when_milvus_is_gone(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(tmp_path / "data", retry_after_s=7)
    files = [("images", ("0.png", random_image(0), "image/png"))]
    items = json.dumps([{"camera": "c1", "timestamp": 1.0}])
    r = client.post("/v1/galleries/g/items", files=files, data={"items": items})
    assert r.status_code == 200, r.text
    assert client.get("/v1/galleries/g").status_code == 200
    client.app.state.galleries.backend.client.close()  # type: ignore[attr-defined]
    r = client.get("/v1/galleries/g")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "7"
    assert r.json()["error"]["code"] == "storage_unavailable"
    assert client.get("/healthz").status_code == 200  # the process itself is alive
