"""The search options qe_n / dba_n / camera_norm over HTTP, against brute force."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reidcore.query_tricks import Expansion, QueryTricks, apply_tricks
from tests.service.test_app import N_ITEMS, _add, _embed, _search


@pytest.fixture
def client(make_client: Callable[..., Any], tmp_path: Path) -> Any:
    c = make_client(tmp_path / "data", query_tricks_max_n=4)
    assert _add(c, "g", list(range(N_ITEMS))).status_code == 200
    return c


@pytest.mark.parametrize(
    ("form", "tricks", "qcam"),
    [
        ({"qe_n": "2"}, QueryTricks(qe=Expansion(2, 3.0)), None),
        ({"dba_n": "2", "dba_alpha": "1"}, QueryTricks(dba=Expansion(2, 1.0)), None),
        ({"camera_norm": "true", "query_camera": "cam1"}, QueryTricks(camera_norm=True), 1),
        (
            {"qe_n": "3", "qe_alpha": "0", "dba_n": "1", "camera_norm": "true"},
            QueryTricks(qe=Expansion(3, 0.0), dba=Expansion(1, 3.0), camera_norm=True),
            None,
        ),
    ],
)
def test_search_options_match_brute_force(
    client: Any, form: dict[str, str], tricks: QueryTricks, qcam: int | None
) -> None:
    gallery = _embed(client, list(range(N_ITEMS)))
    query = _embed(client, [100])
    cams = np.arange(N_ITEMS) % 3
    tq, tg = apply_tricks(query, None if qcam is None else np.array([qcam]), gallery, cams, tricks)
    scores = tg @ tq[0]
    want = np.lexsort((np.arange(N_ITEMS), -scores))[:5] + 1  # item ids are 1..N_ITEMS
    r = _search(client, "g", 100, k=5, **form)
    assert r.status_code == 200, r.text
    got = r.json()["matches"]
    assert [m["item"]["id"] for m in got] == want.tolist()
    np.testing.assert_allclose(
        [m["distance"] for m in got], np.sqrt(np.maximum(2 - 2 * scores[want - 1], 0)), atol=1e-4
    )
    np.testing.assert_allclose([m["score"] for m in got], gallery[want - 1] @ query[0], atol=1e-4)


@pytest.mark.parametrize(
    ("form", "status", "text"),
    [
        ({"qe_n": "5"}, 400, "over the limit of 4"),
        ({"dba_n": "9"}, 400, "over the limit of 4"),
        ({"qe_n": "0"}, 422, "qe_n"),
        ({"qe_n": "2", "qe_alpha": "-1"}, 422, "qe_alpha"),
        ({"qe_n": "2", "rerank": "true"}, 400, "cannot be combined"),
        ({"camera_norm": "true", "rerank": "true"}, 400, "cannot be combined"),
    ],
)
def test_bad_search_options_are_refused(
    client: Any, form: dict[str, str], status: int, text: str
) -> None:
    r = _search(client, "g", 100, **form)
    assert r.status_code == status and text in r.text, r.text
    assert r.json()["error"]


def test_options_are_in_the_openapi_schema(client: Any) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    search = next(
        n for n in schemas if "search" in n.lower() and "qe_n" in schemas[n]["properties"]
    )
    props = schemas[search]["properties"]
    for name in ("qe_n", "qe_alpha", "dba_n", "dba_alpha", "camera_norm", "query_camera"):
        assert props[name].get("description"), name
