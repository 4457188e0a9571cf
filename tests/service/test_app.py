"""The REST API end to end: real ONNX Runtime and FAISS over the tiny model."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.service.conftest import encode, random_image
from tests.service.gallery.helpers import ENGINES

N_ITEMS = 24
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def _meta(i: int) -> dict[str, Any]:
    return {
        "camera": f"cam{i % 3}",
        "timestamp": (T0 + dt.timedelta(minutes=i)).isoformat(),
        "external_id": f"person-{i}",
        "metadata": {"track": i},
    }


def _add(client, gallery: str, idx: list[int]) -> Any:
    files = [("images", (f"{i}.png", random_image(i), "image/png")) for i in idx]
    return client.post(
        f"/v1/galleries/{gallery}/items",
        files=files,
        data={"items": json.dumps([_meta(i) for i in idx])},
    )


def _embed(client, seeds: list[int]) -> np.ndarray:
    files = [("images", (f"{s}.png", random_image(s))) for s in seeds]
    r = client.post("/v1/embed", files=files)
    assert r.status_code == 200, r.text
    return np.array([e["embedding"] for e in r.json()["embeddings"]], dtype=np.float32)


def _search(client, gallery: str, seed: int, **form: Any) -> Any:
    return client.post(
        f"/v1/galleries/{gallery}/search",
        files={"image": ("q.png", random_image(seed), "image/png")},
        data=form,
    )


@pytest.fixture(params=ENGINES)
def gallery_engine(request: pytest.FixtureRequest) -> str:
    """Every endpoint of this suite runs against each gallery storage engine."""
    return str(request.param)


@pytest.fixture
def client(make_client: Callable[..., Any], tmp_path: Path) -> Any:
    """A service with gallery ``g`` holding N_ITEMS images; ``item_ids[i]`` is image i's id
    (1..N_ITEMS on the local engine, from id blocks on Milvus)."""
    c = make_client(tmp_path / "data")
    r = _add(c, "g", list(range(N_ITEMS)))
    assert r.status_code == 200, r.text
    c.item_ids = [it["id"] for it in r.json()["items"]]
    return c


FILTERS: dict[str, tuple[dict[str, Any], Callable[[int, float], bool]]] = {
    "none": ({}, lambda i, s: True),
    "cameras": ({"cameras": ["cam1", "cam2"]}, lambda i, s: i % 3 in (1, 2)),
    "exclude": ({"exclude_cameras": ["cam0"]}, lambda i, s: i % 3 != 0),
    "time": (
        {
            "time_from": (T0 + dt.timedelta(minutes=5)).isoformat(),
            "time_to": (T0 + dt.timedelta(minutes=15)).isoformat(),
        },
        lambda i, s: 5 <= i < 15,
    ),
    "min_score": ({"min_score": 0.5}, lambda i, s: s >= 0.5),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_search_equals_brute_force(client: Any, name: str) -> None:
    form, allowed = FILTERS[name]
    gallery = _embed(client, list(range(N_ITEMS)))  # [N, d], item i has id item_ids[i]
    for qseed in (100, 3):
        q = _embed(client, [qseed])[0]
        scores = gallery.astype(np.float64) @ q
        ref = [
            client.item_ids[i]
            for i in sorted(range(N_ITEMS), key=lambda i: -scores[i])
            if allowed(i, scores[i])
        ]
        r = _search(client, "g", qseed, k=5, **form)
        assert r.status_code == 200, r.text
        matches = r.json()["matches"]
        assert [m["item"]["id"] for m in matches] == ref[:5]
        for m in matches:
            i = client.item_ids.index(m["item"]["id"])
            assert m["score"] == pytest.approx(scores[i], abs=1e-5)
            assert m["distance"] == pytest.approx(np.sqrt(max(2 - 2 * scores[i], 0)), abs=1e-3)
            assert m["item"]["camera"] == f"cam{i % 3}"
            assert m["item"]["metadata"] == {"track": i}
            assert set(m["item"]["attributes"]) == {"gender", "upper_color"}
            assert dt.datetime.fromisoformat(m["item"]["timestamp"]) == T0 + dt.timedelta(minutes=i)


def test_rerank_reorders_within_shortlist(client: Any) -> None:
    plain = _search(client, "g", 3, k=N_ITEMS).json()["matches"]
    rr = _search(client, "g", 3, k=5, rerank="true").json()
    assert rr["reranked"] is True and len(rr["matches"]) == 5
    assert (
        rr["matches"][0]["item"]["id"] == client.item_ids[3]
    )  # the query image itself is in the gallery
    dists = [m["distance"] for m in rr["matches"]]
    assert dists == sorted(dists)
    assert {m["item"]["id"] for m in rr["matches"]} <= {m["item"]["id"] for m in plain}


def test_attributes_match_embed_model(client: Any) -> None:
    r = client.post("/v1/attributes", files={"image": ("a.jpg", random_image(1, "JPEG"))})
    assert r.status_code == 200, r.text
    attrs = r.json()["attributes"]
    assert attrs["gender"]["label"] in ("male", "female")
    assert attrs["upper_color"]["label"] in ("black", "white", "red", "blue")
    assert attrs["gender"]["probability"] >= 0.5
    assert attrs["upper_color"]["probability"] >= 0.25


def test_restart_round_trip(make_client: Callable[..., Any], client: Any, tmp_path: Path) -> None:
    client.__exit__(None, None, None)  # shut the first app down (closes the galleries)
    again = make_client(tmp_path / "data")
    stats = again.get("/v1/galleries/g").json()
    assert stats["items"] == N_ITEMS and stats["cameras"] == {"cam0": 8, "cam1": 8, "cam2": 8}
    for i in range(N_ITEMS):
        top = _search(again, "g", i, k=1).json()["matches"][0]
        assert top["item"]["id"] == client.item_ids[i] and top["score"] == pytest.approx(
            1.0, abs=1e-5
        )


def test_model_mismatch_is_refused(
    make_client: Callable[..., Any], client: Any, other_model_dir: Path, tmp_path: Path
) -> None:
    client.__exit__(None, None, None)
    other = make_client(tmp_path / "data", model=other_model_dir)
    r = _search(other, "g", 1)
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_mismatch"
    assert "was built with model" in r.json()["error"]["message"]
    assert _add(other, "g", [1]).status_code == 409
    ready = other.get("/readyz").json()
    assert ready["galleries"][0]["status"] == "model_mismatch"


def test_idempotent_add_by_external_id(client: Any) -> None:
    r = _add(client, "g", [2, 30, 30])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items[0] == {"id": client.item_ids[2], "external_id": "person-2", "created": False}
    assert items[1]["created"] and not items[2]["created"] and items[1]["id"] == items[2]["id"]
    assert client.get("/v1/galleries/g").json()["items"] == N_ITEMS + 1


def test_get_and_delete(client: Any) -> None:
    url = f"/v1/galleries/g/items/{client.item_ids[4]}"
    item = client.get(url).json()
    assert item["external_id"] == "person-4" and item["camera"] == "cam1"
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404
    assert client.delete(url).json()["error"]["code"] == "item_not_found"
    ids = [m["item"]["id"] for m in _search(client, "g", 4, k=N_ITEMS).json()["matches"]]
    assert client.item_ids[4] not in ids and len(ids) == N_ITEMS - 1
    assert [g["name"] for g in client.get("/v1/galleries").json()["galleries"]] == ["g"]
    assert client.delete("/v1/galleries/g").status_code == 204
    assert client.get("/v1/galleries").json()["galleries"] == []
    assert _search(client, "g", 1).json()["error"]["code"] == "gallery_not_found"


def test_readyz_and_healthz(client: Any, model_dir: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["providers"] == ["CPUExecutionProvider"]
    assert body["model"]["name"] == "tiny" and body["model"]["dim"] == 64
    assert (
        body["model"]["sha256"]
        == json.loads((model_dir / "manifest.json").read_text())["model"]["sha256"]
    )
    assert body["galleries"] == [{"name": "g", "status": "open", "items": N_ITEMS, "error": None}]
    assert body["faiss_gpus"] == 0


def test_openapi_documents_v1(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/galleries/{gallery}/search" in paths and "/v1/attributes" in paths
    assert "404" in paths["/v1/galleries/{gallery}/search"]["post"]["responses"]


PNG = random_image(7)
BIG = encode(np.zeros((300, 300, 3), np.uint8))  # 90,000 pixels, over the 50,000 limit


def _gif() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


BAD_INPUTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (name, path, request kwargs, status, substring of the message)
    ("zero bytes", "/v1/attributes", {"files": {"image": ("a.png", b"")}}, 400, "empty file"),
    (
        "not an image",
        "/v1/attributes",
        {"files": {"image": ("a.png", b"hello world")}},
        415,
        "not a JPEG, PNG or WebP",
    ),
    (
        "gif",
        "/v1/attributes",
        {"files": {"image": ("a.gif", _gif())}},
        415,
        "not a JPEG, PNG or WebP",
    ),
    (
        "truncated png",
        "/v1/attributes",
        {"files": {"image": ("a.png", PNG[: len(PNG) // 2])}},
        400,
        "not a readable image",
    ),
    ("pixel bomb", "/v1/attributes", {"files": {"image": ("a.png", BIG)}}, 400, "over the limit"),
    (
        "body too large",
        "/v1/embed",
        {"files": {"images": ("a.png", b"\x89PNG" + bytes(70_000))}},
        413,
        "over the limit",
    ),
    ("missing file", "/v1/attributes", {"data": {"x": "1"}}, 422, "body.image"),
    (
        "wrong field name",
        "/v1/attributes",
        {"files": {"picture": ("a.png", PNG)}},
        422,
        "body.image",
    ),
    ("json instead of multipart", "/v1/embed", {"json": {"images": []}}, 422, "body.images"),
    (
        "k not a number",
        "/v1/galleries/g/search",
        {"files": {"image": ("a.png", PNG)}, "data": {"k": "ten"}},
        422,
        "body.k",
    ),
    (
        "k zero",
        "/v1/galleries/g/search",
        {"files": {"image": ("a.png", PNG)}, "data": {"k": "0"}},
        422,
        "body.k",
    ),
    (
        "k too large",
        "/v1/galleries/g/search",
        {"files": {"image": ("a.png", PNG)}, "data": {"k": "5000"}},
        400,
        "over the limit",
    ),
    (
        "naive time",
        "/v1/galleries/g/search",
        {"files": {"image": ("a.png", PNG)}, "data": {"time_from": "2024-01-01T00:00"}},
        422,
        "time_from",
    ),
    (
        "time range reversed",
        "/v1/galleries/g/search",
        {
            "files": {"image": ("a.png", PNG)},
            "data": {"time_from": "2024-01-02T00:00Z", "time_to": "2024-01-01T00:00Z"},
        },
        400,
        "must be before",
    ),
    (
        "min_score out of range",
        "/v1/galleries/g/search",
        {"files": {"image": ("a.png", PNG)}, "data": {"min_score": "3"}},
        422,
        "min_score",
    ),
    (
        "bad gallery name",
        "/v1/galleries/bad%20name/items",
        {"files": {"images": ("a.png", PNG)}, "data": {"items": json.dumps([_meta(0)])}},
        400,
        "invalid gallery name",
    ),
    (
        "items not json",
        "/v1/galleries/g/items",
        {"files": {"images": ("a.png", PNG)}, "data": {"items": "[{"}},
        400,
        "invalid 'items'",
    ),
    (
        "items count",
        "/v1/galleries/g/items",
        {"files": {"images": ("a.png", PNG)}, "data": {"items": json.dumps([_meta(0), _meta(1)])}},
        400,
        "2 entries but 1 images",
    ),
    (
        "item lacks camera",
        "/v1/galleries/g/items",
        {"files": {"images": ("a.png", PNG)}, "data": {"items": json.dumps([{"timestamp": 0}])}},
        422,
        "items[0].camera",
    ),
    (
        "items missing",
        "/v1/galleries/g/items",
        {"files": {"images": ("a.png", PNG)}},
        422,
        "body.items",
    ),
    (
        "unknown gallery",
        "/v1/galleries/nope/search",
        {"files": {"image": ("a.png", PNG)}},
        404,
        "does not exist",
    ),
    ("unknown item", "/v1/galleries/g/items/999", {"method": "GET"}, 404, "no item 999"),
    ("item id not int", "/v1/galleries/g/items/abc", {"method": "GET"}, 422, "item_id"),
    ("unknown route", "/v2/whatever", {"method": "GET"}, 404, "Not Found"),
]


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "message"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_a_4xx_with_a_message(
    make_client: Callable[..., Any],
    tmp_path: Path,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    message: str,
) -> None:
    c = _bad_input_client(make_client, tmp_path)
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "POST")
    r = c.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message", "details"} and err["code"]
    assert message in err["message"]


def _bad_input_client(make_client: Callable[..., Any], tmp_path: Path) -> Any:
    c = make_client(tmp_path / "data", max_request_bytes=64_000, max_image_pixels=50_000, max_k=100)
    assert _add(c, "g", [0]).status_code == 200
    return c
