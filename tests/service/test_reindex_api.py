"""Re-index after a model upgrade, through the HTTP API and the job machinery, on every
gallery engine: every stored crop re-embedded with the served model into a new version
that replaces the old one only when complete."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reidcore.cli import main as reid_main
from service.gallery import GalleryManager
from service.gallery.blobs import BlobConfig, open_blobs
from service.jobs import IndexConfig, IndexProgress
from service.jobs import reindex as reindex_mod
from service.jobs.reindex import reindex_gallery, staging_name
from service.runtime import ModelRuntime, RuntimeOptions
from tests.service.conftest import random_image
from tests.service.gallery.helpers import ENGINES, make_backend, stored_by_external
from tests.service.test_jobs_api import wait

N = 12


@pytest.fixture(params=ENGINES)
def gallery_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def images(n: int = N, offset: int = 0) -> dict[str, bytes]:
    # 64x32 (h x w) crops: twice the model input, so the kept thumbnail is 32x16.
    return {f"p{i}.png": random_image(100 + i, size=(64, 32)) for i in range(offset, offset + n)}


def add(client: Any, imgs: dict[str, bytes], gallery: str = "g") -> list[int]:
    files = [("images", (name, data, "image/png")) for name, data in imgs.items()]
    items = [
        {"camera": f"c{i % 2}", "external_id": name, "metadata": {"n": i}}
        for i, name in enumerate(imgs)
    ]
    r = client.post(
        f"/v1/galleries/{gallery}/items", files=files, data={"items": json.dumps(items)}
    )
    assert r.status_code == 200, r.text
    return [it["id"] for it in r.json()["items"]]


def search(client: Any, image: bytes, k: int = 3, gallery: str = "g") -> Any:
    return client.post(
        f"/v1/galleries/{gallery}/search",
        files={"image": ("q.png", image, "image/png")},
        data={"k": str(k)},
    )


def embed(client: Any, image: bytes) -> np.ndarray:
    r = client.post("/v1/embed", files=[("images", ("q.png", image, "image/png"))])
    assert r.status_code == 200, r.text
    return np.array(r.json()["embeddings"][0]["embedding"], dtype=np.float32)


def test_reindex_after_model_upgrade(
    make_client: Callable[..., Any], tmp_path: Path, other_model_dir: Path
) -> None:
    data = tmp_path / "data"
    old = make_client(data)
    imgs = images()
    add(old, imgs)
    old_model = old.get("/v1/galleries/g").json()["model_id"]
    old.__exit__(None, None, None)

    stale, fresh = data / "blobs" / "g" / "stale.jpg", data / "blobs" / "g" / "fresh.jpg"
    for orphan in (stale, fresh):  # crops of adds cut short before their item was stored
        orphan.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    c = make_client(data, model=other_model_dir)
    refused = search(c, imgs["p0.png"])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_mismatch"
    r = c.post("/v1/galleries/g/reindex")
    assert r.status_code == 202, r.text
    assert r.json()["source"] == "reindex:g"
    job = wait(c, r.json()["id"])
    assert job["state"] == "succeeded", job
    assert (job["total"], job["added"], job["failed"]) == (N, N, 0)

    stats = c.get("/v1/galleries/g").json()
    assert stats["items"] == N and stats["model_id"] != old_model
    for name, data_ in imgs.items():
        found = search(c, data_, k=1).json()["matches"][0]
        assert found["item"]["external_id"] == name
        # The thumbnail covers the model input: its embedding is the original's (JPEG loss).
        assert found["score"] > 0.995
        assert found["item"]["metadata"]["n"] == int(name[1:-4])
        assert c.get(found["item"]["image_url"]).status_code == 200
    # The re-indexed gallery is the served model's: what the model gives for the original.
    ref = embed(c, imgs["p3.png"])
    top = search(c, imgs["p3.png"], k=N).json()["matches"]
    assert top[0]["score"] == pytest.approx(float(ref @ ref), abs=0.005)
    assert not stale.exists() and fresh.exists()  # swept after the re-index, if old enough
    assert len(list((data / "blobs" / "g").iterdir())) == N + 1
    galleries = c.get("/v1/galleries").json()["galleries"]
    assert [g["name"] for g in galleries] == ["g"]  # the new version never listed apart


def test_gallery_without_crops_is_refused(
    make_client: Callable[..., Any], tmp_path: Path, other_model_dir: Path
) -> None:
    data = tmp_path / "data"
    old = make_client(data, crops=False)
    add(old, images(3))
    old.__exit__(None, None, None)
    c = make_client(data, model=other_model_dir)
    r = c.post("/v1/galleries/g/reindex")
    assert r.status_code == 409
    body = r.json()["error"]
    assert body["code"] == "not_reindexable"
    assert "none of its 3 items has a stored crop" in body["message"]
    assert c.post("/v1/galleries/nope/reindex").status_code == 404


def test_partial_gallery_needs_allow_partial(
    make_client: Callable[..., Any], tmp_path: Path, other_model_dir: Path
) -> None:
    data = tmp_path / "data"
    first = make_client(data, crops=False)
    add(first, images(2))
    first.__exit__(None, None, None)
    second = make_client(data)
    add(second, images(3, offset=2))
    second.__exit__(None, None, None)
    c = make_client(data, model=other_model_dir)
    r = c.post("/v1/galleries/g/reindex")
    assert r.status_code == 409 and "2 of its 5 items have no stored crop" in r.text
    r = c.post("/v1/galleries/g/reindex", json={"allow_partial": True})
    assert r.status_code == 202, r.text
    job = wait(c, r.json()["id"])
    assert (job["state"], job["added"], job["failed"]) == ("succeeded", 3, 2)
    assert all("no stored crop" in f["reason"] for f in job["failures"])
    assert c.get("/v1/galleries/g").json()["items"] == 3
    bad = c.post("/v1/galleries/g/reindex", json={"allow_partial": "maybe"})
    assert bad.status_code == 422


def _setup(tmp_path: Path, engine: str, model_dir: Path) -> tuple[GalleryManager, ModelRuntime]:
    runtime = ModelRuntime.load(model_dir, RuntimeOptions(threads=1))
    blobs = open_blobs(BlobConfig("file", root=tmp_path / "blobs"))
    backend = make_backend(tmp_path, engine)
    return GalleryManager(backend, runtime.manifest.model_id, runtime.dim, blobs), runtime


def test_cancel_resume_and_searches_meanwhile(
    make_client: Callable[..., Any], tmp_path: Path, model_dir: Path, gallery_engine: str
) -> None:
    """Same model (e.g. after changing the crop size): searches answer from the old version
    throughout; a cancelled run keeps its new version, the next run resumes it; items added
    and deleted meanwhile are carried over."""
    data = tmp_path / "data"
    c = make_client(data)
    ids = add(c, images())
    c.__exit__(None, None, None)
    manager, runtime = _setup(data, gallery_engine, model_dir)
    # make_client's blobs live under <data>/blobs, the same as _setup's.
    g = manager.get("g")
    before = stored_by_external(g)
    config = IndexConfig(batch_size=4)
    seen: list[int] = []

    def report(p: IndexProgress) -> None:
        seen.append(p.added)
        # The old version answers searches while the new one is built.
        hit = manager.get("g").search(before["p5.png"], 1)[0]
        assert hit.item.id == ids[5]

    totals: list[int] = []

    def start(total: int) -> bool:
        totals.append(total)
        return True

    done = reindex_gallery(
        manager,
        "g",
        runtime,
        config,
        start,
        report,
        cancelled=lambda: len(seen) >= 2,
    )
    assert not done and seen == [0, 4]
    assert staging_name("g") in manager.backend.names()
    g = manager.get("g")
    g.delete(ids[0])  # deleted while the re-index was paused: left out of the new version
    seen.clear()
    done = reindex_gallery(manager, "g", runtime, config, start, report)
    assert done and totals == [N, N - 1] and seen[0] == 3 and sum(seen) == N - 1
    assert staging_name("g") not in manager.backend.names()
    g = manager.get("g")
    after = stored_by_external(g)
    assert sorted(map(str, after)) == sorted(str(n) for n in before if n != "p0.png")
    for name, emb in after.items():  # the same model, from a thumbnail at model size
        assert float(emb @ before[name]) > 0.995
    items = g.store.fetch(g.store.item_ids().tolist())
    blobs = manager.blobs
    assert blobs is not None
    assert all(it.crop is not None and blobs.get(it.crop) for it in items.values())
    manager.close()


def test_cancelled_job_drops_the_new_version(
    make_client: Callable[..., Any],
    tmp_path: Path,
    other_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    old = make_client(data)
    add(old, images(6))
    old.__exit__(None, None, None)
    c = make_client(data, model=other_model_dir, index_batch_size=2)
    jobs = c.app.state.jobs
    gate, embedded = threading.Event(), threading.Event()
    real = reindex_mod._Run.embed

    def slow(self: Any, items: Any) -> Any:  # the first batch, then wait for the cancel
        out = real(self, items)
        embedded.set()
        gate.wait(10)
        return out

    monkeypatch.setattr(reindex_mod._Run, "embed", slow)
    job = c.post("/v1/galleries/g/reindex").json()
    assert embedded.wait(10)
    again = c.post("/v1/galleries/g/reindex")
    assert again.status_code == 409 and "already being re-indexed" in again.text
    assert c.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    gate.set()
    done = wait(c, job["id"])
    assert (done["state"], done["added"]) == ("cancelled", 2)
    assert staging_name("g") not in jobs.galleries.backend.names()
    refused = c.get("/v1/galleries/g")  # the old version, untouched: still another model's
    assert refused.status_code == 409


def test_cli_reindex(
    make_client: Callable[..., Any],
    tmp_path: Path,
    other_model_dir: Path,
    gallery_engine: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REID_GALLERY_BACKEND", gallery_engine)
    data = tmp_path / "data"
    old = make_client(data)
    imgs = images(5)
    add(old, imgs)
    old.__exit__(None, None, None)
    argv = ["index", "--reindex", "--gallery", "g", "--model", str(other_model_dir)]
    assert reid_main([*argv, "--data", str(data), "--no-progress"]) == 0
    c = make_client(data, model=other_model_dir)
    assert c.get("/v1/galleries/g").json()["items"] == 5
    hit = search(c, imgs["p2.png"], k=1).json()["matches"][0]
    assert hit["item"]["external_id"] == "p2.png" and hit["score"] > 0.995
    assert reid_main(["index", "--gallery", "g", "--data", str(data)]) == 2  # no DIR


def test_job_resumes_after_restart(
    make_client: Callable[..., Any],
    tmp_path: Path,
    other_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    old = make_client(data)
    imgs = images(6)
    add(old, imgs)
    old.__exit__(None, None, None)
    c = make_client(data, model=other_model_dir, index_batch_size=2)
    jobs = c.app.state.jobs
    gate, embedded = threading.Event(), threading.Event()
    real = reindex_mod._Run.embed

    def slow(self: Any, items: Any) -> Any:
        out = real(self, items)
        embedded.set()
        gate.wait(10)
        return out

    monkeypatch.setattr(reindex_mod._Run, "embed", slow)
    job = c.post("/v1/galleries/g/reindex").json()
    assert embedded.wait(10)
    closer = threading.Thread(target=c.__exit__, args=(None, None, None))
    closer.start()  # the service stops while the job runs
    assert _until(jobs._stop.is_set)
    gate.set()
    closer.join(30)
    monkeypatch.undo()
    again = make_client(data, model=other_model_dir, index_batch_size=2)
    done = wait(again, job["id"])
    assert (done["state"], done["total"], done["added"], done["failed"]) == ("succeeded", 6, 6, 0)
    hit = search(again, imgs["p4.png"], k=1).json()["matches"][0]
    assert hit["item"]["external_id"] == "p4.png" and hit["score"] > 0.995
    assert again.get("/v1/galleries/g").json()["items"] == 6


def _until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("keep_original", [True, False])
def test_small_thumbnails_and_kept_originals(
    make_client: Callable[..., Any], tmp_path: Path, other_model_dir: Path, keep_original: bool
) -> None:
    """The caveat, measured: thumbnails smaller than the model input re-embed an upscaled
    image; kept originals re-embed exactly what the original gives."""
    data = tmp_path / "data"
    small = {"crop_width": 4, "crop_height": 8, "crop_keep_original": keep_original}
    old = make_client(data, **small)
    imgs = images(4)
    add(old, imgs)
    old.__exit__(None, None, None)
    c = make_client(data, model=other_model_dir, **small)
    job = wait(c, c.post("/v1/galleries/g/reindex").json()["id"])
    assert job["state"] == "succeeded"
    scores = []
    for name, original in imgs.items():
        ref = embed(c, original)
        hit = search(c, original, k=1).json()["matches"][0]
        assert hit["item"]["external_id"] == name or not keep_original
        scores.append(hit["score"] / float(ref @ ref))
    if keep_original:
        assert min(scores) > 0.9999
    else:
        assert min(scores) < 0.995  # a 4x8 thumbnail upscaled to 16x32 is not the original
