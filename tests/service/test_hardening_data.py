"""Hostile data through the API: timestamps out of range, galleries deleted under writers,
rejected submissions, leftover uploads and the cancel/start race of a job."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import GalleryNotFound
from service.gallery import GalleryManager, NewItem, local_backend
from service.runtime import ModelRuntime
from tests.service.conftest import TINY_DIM, random_image
from tests.service.jobs.archives import crops, make_tar
from tests.service.test_jobs_api import submit, wait

OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


def add_one(client: Any, timestamp: object, gallery: str = "g") -> Any:
    items = json.dumps([{"camera": "c1", "timestamp": timestamp}])
    files = [("images", ("a.png", random_image(1), "image/png"))]
    return client.post(f"/v1/galleries/{gallery}/items", files=files, data={"items": items})


def search(client: Any, gallery: str = "g", **params: str) -> Any:
    files = {"image": ("q.png", random_image(2), "image/png")}
    return client.post(f"/v1/galleries/{gallery}/search", files=files, data=params)


# ------------------------------------------------------------------ timestamps (item 4)
@pytest.mark.parametrize("timestamp", [*OUT_OF_RANGE, 1e18, -1e18])
def test_item_timestamp_out_of_range_is_refused_naming_the_field(
    make_client: Callable[..., Any], tmp_path: Path, timestamp: object
) -> None:
    c = make_client(tmp_path)
    r = add_one(c, timestamp)
    assert r.status_code == 422, r.text
    assert "items[0].timestamp" in r.json()["error"]["message"]
    assert c.get("/v1/galleries/g").status_code == 404  # nothing stored, nothing created


@pytest.mark.parametrize("field", ["time_from", "time_to"])
@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_search_time_out_of_range_is_422_naming_the_field(
    make_client: Callable[..., Any], tmp_path: Path, field: str, value: str
) -> None:
    c = make_client(tmp_path)
    assert add_one(c, "2024-05-01T12:00:00Z").status_code == 200
    r = search(c, **{field: value})
    assert r.status_code == 422, r.text
    assert field in r.text


def test_gallery_holding_out_of_range_times_still_answers(
    make_client: Callable[..., Any], model_dir: Path, tmp_path: Path
) -> None:
    """Items an older version stored with times no datetime holds: stats, GET, search 200."""
    runtime = ModelRuntime.load(model_dir)
    manager = GalleryManager(local_backend(tmp_path), runtime.manifest.model_id, TINY_DIM)
    stamps = [1e18, -1e18, float("inf"), float("-inf"), 253402351199.0, -62135647200.0]
    emb = np.random.default_rng(0).normal(size=(len(stamps), TINY_DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    manager.get_or_create("g").add([NewItem("c1", t) for t in stamps], emb)
    manager.close()
    c = make_client(tmp_path)
    stats = c.get("/v1/galleries/g")
    assert stats.status_code == 200, stats.text
    assert stats.json()["time_min"].startswith("0001-01-01")
    assert stats.json()["time_max"].startswith("9999-12-31")
    for item_id in range(1, len(stamps) + 1):
        assert c.get(f"/v1/galleries/g/items/{item_id}").status_code == 200
    r = search(c, k="10")
    assert r.status_code == 200, r.text
    assert len(r.json()["matches"]) == len(stamps)


# ------------------------------------------------------------------ races (item 9)
def test_gallery_deleted_during_an_add_answers_404(
    make_client: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_client(tmp_path)
    assert add_one(c, 1.0).status_code == 200
    engine, galleries = c.app.state.engine, c.app.state.galleries
    infer = engine.infer

    def infer_then_delete(images: Any) -> Any:  # the DELETE lands while the add runs
        out = infer(images)
        galleries.delete("g")
        return out

    monkeypatch.setattr(engine, "infer", infer_then_delete)
    r = add_one(c, 2.0)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "gallery_not_found"


def test_gallery_deletion_waits_for_a_write_under_way(model_dir: Path, tmp_path: Path) -> None:
    runtime = ModelRuntime.load(model_dir)
    manager = GalleryManager(local_backend(tmp_path), runtime.manifest.model_id, TINY_DIM)
    gallery = manager.get_or_create("g")
    inside, release = threading.Event(), threading.Event()
    store_add = gallery.store.add

    def slow_add(*args: Any) -> Any:
        inside.set()
        release.wait(10)
        return store_add(*args)

    gallery.store.add = slow_add  # type: ignore[method-assign]
    emb = np.eye(1, TINY_DIM, dtype=np.float32)
    results: list[Any] = []
    writer = threading.Thread(target=lambda: results.append(gallery.add([NewItem("c", 1.0)], emb)))
    writer.start()
    assert inside.wait(10)
    deleter = threading.Thread(target=manager.delete, args=("g",))
    deleter.start()
    deleter.join(0.2)
    assert deleter.is_alive()  # waits for the add under way
    release.set()
    writer.join(10)
    deleter.join(10)
    assert results and results[0][0].created
    with pytest.raises(GalleryNotFound):
        gallery.add([NewItem("c", 2.0)], emb)
    with pytest.raises(GalleryNotFound):
        gallery.stats()
    manager.close()


class DeletingModel:
    """The runtime, deleting the job's gallery once its first batch is stored."""

    def __init__(self, runtime: ModelRuntime, galleries: GalleryManager) -> None:
        self.runtime, self.galleries, self.calls = runtime, galleries, 0
        self.preprocess, self.schema = runtime.preprocess, runtime.schema

    def for_workers(self, workers: int) -> DeletingModel:
        return self

    def run_batch(self, batch: np.ndarray) -> Any:
        self.calls += 1
        if self.calls == 2:
            self.galleries.delete("g")
        return self.runtime.run_batch(batch)


def test_gallery_deleted_during_a_job_fails_it_with_a_clear_message(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    c = make_client(tmp_path, index_batch_size=4, index_workers=1)
    jobs = c.app.state.jobs
    jobs.model = DeletingModel(c.app.state.runtime, c.app.state.galleries)
    job = wait(c, submit(c, make_tar(crops(16)))["id"])
    assert job["state"] == "failed"
    assert job["error"] == "gallery 'g' was deleted while the job ran"
    assert c.get("/v1/galleries/g").status_code == 404


def test_rejected_job_submission_creates_no_gallery(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    c = make_client(tmp_path)
    r = c.post("/v1/galleries/newg/jobs", files={"archive": ("a.tar", b"not an archive" * 100)})
    assert r.status_code == 400, r.text
    assert c.get("/v1/galleries/newg").status_code == 404
    assert [g["name"] for g in c.get("/v1/galleries").json()["galleries"]] == []


def test_upload_left_by_a_kill_is_removed_at_start(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    uploads = tmp_path / "jobs" / "uploads"
    uploads.mkdir(parents=True)
    stray = uploads / "0123456789abcdef.upload"
    stray.write_bytes(b"half an archive")
    c = make_client(tmp_path)
    assert not stray.exists()
    job = wait(c, submit(c, make_tar(crops(2)))["id"])  # jobs still work
    assert job["state"] == "succeeded"


@pytest.mark.parametrize("where", ["start", "open_source"])
def test_cancel_at_the_instant_the_worker_picks_the_job_wins(
    make_client: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """The cancel lands after the worker read the job as queued and before it starts it."""
    import service.jobs.manager as manager_mod

    c = make_client(tmp_path)
    jobs = c.app.state.jobs
    target = (jobs.store, "start") if where == "start" else (manager_mod, "open_source")
    original = getattr(*target)

    def cancel_first(*args: Any, **kwargs: Any) -> Any:
        for job in jobs.store.unfinished():
            jobs.cancel(job.id)
        return original(*args, **kwargs)

    monkeypatch.setattr(*target, cancel_first)
    job = wait(c, submit(c, make_tar(crops(4)))["id"])
    assert job["state"] == "cancelled", job
    assert job["added"] == 0
    assert c.get("/v1/galleries/g").json()["items"] == 0


def test_deeply_nested_manifest_fails_the_job_naming_the_upload_and_the_file(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    c = make_client(tmp_path)
    nested = ("[" * 100_000 + "]" * 100_000).encode()
    archive = make_tar({**crops(2), "manifest.json": nested})
    job = wait(c, submit(c, archive, name="bad.tar")["id"])
    assert job["state"] == "failed"
    assert job["error"] == "bad.tar: manifest.json: invalid JSON (nested too deeply)"
    assert c.get("/v1/galleries/g").json()["items"] == 0
