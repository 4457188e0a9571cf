"""Crops kept with gallery items, through the HTTP API, on every gallery engine and on both
blob stores (files; an S3-compatible server)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.errors import CropNotFound
from service.gallery import GalleryManager, NewItem
from service.gallery.blobs import BlobConfig, open_blobs
from service.gallery.crops import Crop
from tests.service.blob_servers import s3_server
from tests.service.conftest import TINY_DIM, random_image
from tests.service.gallery.helpers import ENGINES, make_backend
from tests.service.jobs.archives import crops, make_zip
from tests.service.test_jobs_api import submit, wait

__all__ = ["s3_server"]

MODEL_W, MODEL_H = 16, 32
"""The tiny test model's input size (width, height)."""


@pytest.fixture(params=ENGINES)
def gallery_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def add(client: Any, gallery: str, images: dict[str, bytes]) -> list[dict[str, Any]]:
    files = [("images", (name, data, "image/png")) for name, data in images.items()]
    items = [{"camera": "c1", "external_id": name} for name in images]
    r = client.post(
        f"/v1/galleries/{gallery}/items", files=files, data={"items": json.dumps(items)}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def blob_files(data: Path, gallery: str) -> list[Path]:
    return sorted((data / "blobs" / gallery).glob("*"))


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_crop_served_with_cache_headers(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data")
    big, small = random_image(1, size=(200, 60)), random_image(2, size=(20, 10))
    ids = [it["id"] for it in add(c, "g", {"big.png": big, "small.png": small})]
    item = c.get(f"/v1/galleries/g/items/{ids[0]}").json()
    assert item["image_url"] == f"/v1/galleries/g/items/{ids[0]}/image"
    r = c.get(item["image_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age=86400" in r.headers["cache-control"]
    # The smallest downscale covering the model input (16 x 32), aspect kept: 60x200 -> 16x53.
    assert decoded(r.content).size == (16, 53)
    again = c.get(item["image_url"], headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == r.headers["etag"]
    star = c.get(item["image_url"], headers={"If-None-Match": "*"})
    assert star.status_code == 304
    other = c.get(item["image_url"], headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == r.content
    tiny = c.get(f"/v1/galleries/g/items/{ids[1]}/image")
    assert decoded(tiny.content).size == (10, 20)  # never upscaled
    assert tiny.headers["etag"] != r.headers["etag"]


def test_search_matches_carry_image_urls(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data")
    images = {f"{i}.png": random_image(i) for i in range(4)}
    ids = [it["id"] for it in add(c, "g", images)]
    r = c.post(
        "/v1/galleries/g/search",
        files={"image": ("q.png", images["2.png"], "image/png")},
        data={"k": "4"},
    )
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    assert matches[0]["item"]["id"] == ids[2]
    for m in matches:
        url = m["item"]["image_url"]
        assert url == f"/v1/galleries/g/items/{m['item']['id']}/image"
        assert c.get(url).status_code == 200


def test_crops_deleted_with_items_and_gallery(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    c = make_client(data)
    ids = [it["id"] for it in add(c, "g", {f"{i}.png": random_image(i) for i in range(3)})]
    assert len(blob_files(data, "g")) == 3
    assert c.delete(f"/v1/galleries/g/items/{ids[0]}").status_code == 204
    assert len(blob_files(data, "g")) == 2
    gone = c.get(f"/v1/galleries/g/items/{ids[0]}/image")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "item_not_found"
    assert c.delete("/v1/galleries/g").status_code == 204
    assert blob_files(data, "g") == []


def test_repeated_external_id_leaves_one_crop(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    c = make_client(data)
    first = add(c, "g", {"a.png": random_image(1)})
    again = add(c, "g", {"a.png": random_image(1)})
    assert again[0]["id"] == first[0]["id"] and not again[0]["created"]
    assert len(blob_files(data, "g")) == 1


def test_gallery_from_before_crops(make_client: Callable[..., Any], tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = make_client(data, crops=False)
    [item] = add(old, "g", {"a.png": random_image(1)})
    old.__exit__(None, None, None)
    c = make_client(data)
    got = c.get(f"/v1/galleries/g/items/{item['id']}").json()
    assert got["image_url"] is None
    r = c.get(f"/v1/galleries/g/items/{item['id']}/image")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "crop_not_found"
    assert "before the service kept crops" in r.json()["error"]["message"]
    [new] = add(c, "g", {"b.png": random_image(2)})
    assert c.get(f"/v1/galleries/g/items/{new['id']}/image").status_code == 200


def test_original_kept_when_configured(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data", crop_keep_original=True)
    png = random_image(5, size=(120, 50))
    [item] = add(c, "g", {"a.png": png})
    r = c.get(f"/v1/galleries/g/items/{item['id']}/image", params={"original": "true"})
    assert r.status_code == 200 and r.content == png
    assert r.headers["content-type"] == "image/png"
    thumb = c.get(f"/v1/galleries/g/items/{item['id']}/image")
    assert thumb.headers["etag"] != r.headers["etag"] and decoded(thumb.content).size == (16, 38)
    plain = make_client(tmp_path / "data2")
    [other] = add(plain, "g", {"a.png": png})
    r = plain.get(f"/v1/galleries/g/items/{other['id']}/image", params={"original": "true"})
    assert r.status_code == 404 and "original upload was not kept" in r.json()["error"]["message"]


def test_configured_thumbnail_size(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data", crop_width=8, crop_height=8, crop_jpeg_quality=50)
    [item] = add(c, "g", {"a.png": random_image(5, size=(120, 50))})
    img = decoded(c.get(f"/v1/galleries/g/items/{item['id']}/image").content)
    assert img.size == (8, 19)


def test_bulk_job_keeps_crops(make_client: Callable[..., Any], tmp_path: Path) -> None:
    data = tmp_path / "data"
    c = make_client(data)
    job = wait(c, submit(c, make_zip(crops(5)), name="a.zip")["id"])
    assert job["state"] == "succeeded" and job["added"] == 5
    r = c.post(
        "/v1/galleries/g/search",
        files={"image": ("q.png", random_image(1000), "image/png")},
        data={"k": "5"},
    )
    urls = [m["item"]["image_url"] for m in r.json()["matches"]]
    assert len(urls) == 5 and all(urls)
    sizes = {decoded(c.get(u).content).size for u in urls}
    assert sizes == {(16, 32)}  # 40x20 crops shrunk to the model input, 16x32
    assert len(blob_files(data, "g")) == 5


def test_crops_on_s3(
    make_client: Callable[..., Any], tmp_path: Path, s3_server: Any, gallery_engine: str
) -> None:
    bucket = f"crops{time.time_ns()}"
    c = make_client(tmp_path / "data", **s3_server.settings(bucket))
    [item] = add(c, "g", {"a.png": random_image(3, size=(100, 40))})
    r = c.get(f"/v1/galleries/g/items/{item['id']}/image")
    assert r.status_code == 200 and decoded(r.content).size == (16, 40)
    assert not (tmp_path / "data" / "blobs").exists()  # nothing on the local disk
    store = open_blobs(
        BlobConfig(
            "s3",
            endpoint_url=s3_server.endpoint_url,
            bucket=bucket,
            access_key_id=s3_server.access_key_id,
            secret_access_key=s3_server.secret_access_key,
        )
    )
    try:
        assert [k for k, _ in store.list("g/")] == [r.headers["etag"].strip('"').join(["g/", ""])]
        assert c.delete("/v1/galleries/g").status_code == 204
        assert list(store.list("g/")) == []
    finally:
        store.close()


def test_failed_commit_leaves_no_crop(tmp_path: Path, gallery_engine: str) -> None:
    """The crop is written first; when the item's transaction fails, it is removed and
    nothing was acknowledged."""
    blobs = open_blobs(BlobConfig("file", root=tmp_path / "blobs"))
    manager = GalleryManager(make_backend(tmp_path, gallery_engine), "m", TINY_DIM, blobs)
    g = manager.get_or_create("g")
    emb = np.eye(TINY_DIM, dtype=np.float32)[:1]

    def broken(*args: Any) -> Any:
        assert len(list(blobs.list("g/"))) == 1  # the crop is already durable
        raise OSError("disk full")

    store_add, g.store.add = g.store.add, broken  # type: ignore[method-assign,assignment]
    with pytest.raises(OSError, match="disk full"):
        g.add([NewItem("c", 0.0, "x")], emb, [Crop(b"jpeg")])
    assert list(blobs.list("g/")) == [] and len(g) == 0
    g.store.add = store_add  # type: ignore[method-assign]
    [res] = g.add([NewItem("c", 0.0, "x")], emb, [Crop(b"jpeg")])
    assert g.read_crop(res.id)[1] == b"jpeg"
    manager.close()


def test_openapi_documents_crops_and_reindex(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    doc = make_client(tmp_path / "data").get("/openapi.json").json()
    image = doc["paths"]["/v1/galleries/{gallery}/items/{item_id}/image"]["get"]
    assert "image/jpeg" in image["responses"]["200"]["content"]
    assert {"304", "404"} <= set(image["responses"])
    assert "If-None-Match".lower() in {p["name"].lower() for p in image["parameters"]}
    reindex = doc["paths"]["/v1/galleries/{gallery}/reindex"]["post"]
    assert {"202", "409"} <= set(reindex["responses"])
    assert "image_url" in doc["components"]["schemas"]["ItemResponse"]["properties"]


def test_milvus_collection_from_before_crops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection created without the crop field keeps working: its items have no crop
    (404 with the reason), and no blob is written for new ones."""
    pymilvus = pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    real = pymilvus.MilvusClient.create_schema

    def without_crop(*args: Any, **kwargs: Any) -> Any:
        schema = real(*args, **kwargs)
        add = schema.add_field
        schema.add_field = lambda name, *a, **kw: schema if name == "crop" else add(name, *a, **kw)
        return schema

    blobs = open_blobs(BlobConfig("file", root=tmp_path / "blobs"))
    with monkeypatch.context() as m:  # the schema as it was: no crop field
        m.setattr(pymilvus.MilvusClient, "create_schema", staticmethod(without_crop))
        old = GalleryManager(make_backend(tmp_path, "milvus"), "m", TINY_DIM, blobs)
        old.get_or_create("g")
        old.close()
    manager = GalleryManager(make_backend(tmp_path, "milvus"), "m", TINY_DIM, blobs)
    g = manager.get("g")
    assert not g.store.keeps_crops
    [res] = g.add([NewItem("c", 0.0, "x")], np.eye(TINY_DIM, dtype=np.float32)[:1], [Crop(b"j")])
    assert g.get(res.id).crop is None and list(blobs.list("g/")) == []
    with pytest.raises(CropNotFound, match="before the service kept crops"):
        g.read_crop(res.id)
    manager.close()
