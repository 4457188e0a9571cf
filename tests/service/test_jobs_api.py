"""Bulk-indexing jobs over the REST API: report, idempotence, safety, cancel, persistence."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.gallery import Gallery, GalleryManager
from service.jobs import ArchiveLimits, IndexConfig, IndexProgress, index_source, open_source
from service.runtime import ModelRuntime
from tests.service.conftest import TINY_DIM, random_image
from tests.service.gallery.helpers import ENGINES, make_backend, stored
from tests.service.jobs.archives import crops, make_tar, make_zip


@pytest.fixture(params=ENGINES)
def gallery_engine(request: pytest.FixtureRequest) -> str:
    """Bulk jobs write into each gallery storage engine."""
    return str(request.param)


def submit(client: Any, data: bytes, gallery: str = "g", name: str = "a.tar") -> dict[str, Any]:
    r = client.post(f"/v1/galleries/{gallery}/jobs", files={"archive": (name, data)})
    assert r.status_code == 202, r.text
    return dict(r.json())


def wait(client: Any, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")


def test_job_report_counts_every_member(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data")
    members = crops(40)
    members["../escape.png"] = random_image(1)
    members["readme.txt"] = b"not an image"
    members["9999_c1s1_000001_00.png"] = b"not an image either"
    job = submit(c, make_tar(members, symlinks={"link.png": "/etc/passwd"}))
    assert job["state"] in ("queued", "running", "succeeded")
    done = wait(c, job["id"])
    assert done["state"] == "succeeded"
    assert (done["total"], done["added"], done["duplicates"], done["failed"]) == (44, 40, 0, 4)
    assert done["done"] == 40 and done["images_per_second"] > 0
    reasons = {f["member"]: f["reason"] for f in done["failures"]}
    assert "unsafe path" in reasons["../escape.png"]
    assert "symlink" in reasons["link.png"]
    assert reasons["readme.txt"].startswith("no camera:")
    assert "not a JPEG, PNG or WebP" in reasons["9999_c1s1_000001_00.png"]
    stats = c.get("/v1/galleries/g").json()
    assert stats["items"] == 40
    assert stats["cameras"] == {"c1": 14, "c2": 13, "c3": 13}  # i % 3 over 0..39


def test_resubmission_adds_nothing_twice(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data")
    first = wait(c, submit(c, make_tar(crops(30)))["id"])
    # the same crops again, plus 10 new ones, in another archive format
    second = wait(c, submit(c, make_zip(crops(40)), name="b.zip")["id"])
    assert (first["added"], first["duplicates"]) == (30, 0)
    assert (second["added"], second["duplicates"]) == (10, 30)
    assert c.get("/v1/galleries/g").json()["items"] == 40


def test_manifest_gives_camera_and_time(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data")
    manifest = [
        {
            "file": "p.png",
            "camera": "gate",
            "timestamp": "2024-05-01T12:00:00Z",
            "metadata": {"k": 1},
        }
    ]
    data = make_zip({"p.png": random_image(7), "manifest.json": json.dumps(manifest).encode()})
    assert wait(c, submit(c, data, name="m.zip")["id"])["added"] == 1
    r = c.post(
        "/v1/galleries/g/search",
        files={"image": ("q.png", random_image(7), "image/png")},
        data={"k": 1},
    )
    item = r.json()["matches"][0]["item"]
    assert item["camera"] == "gate"
    assert item["timestamp"].startswith("2024-05-01T12:00:00")
    assert item["metadata"] == {"k": 1, "file": "p.png"}
    assert r.json()["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_limits_fail_the_job_not_the_service(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    c = make_client(tmp_path / "data", archive_max_members=5, archive_max_member_bytes=50_000)
    too_many = wait(c, submit(c, make_zip(crops(6)), name="z.zip")["id"])
    assert too_many["state"] == "failed"
    assert "6 members, over the limit of 5" in too_many["error"]
    big = wait(
        c, submit(c, make_zip({"0001_c1s1_000001_00.png": bytes(60_000)}), name="y.zip")["id"]
    )
    assert big["state"] == "succeeded" and big["failed"] == 1
    assert "over the limit of 50000" in big["failures"][0]["reason"]


@pytest.mark.parametrize(
    ("gallery", "data", "status", "code"),
    [
        ("g", b"this is not an archive", 400, "invalid_input"),
        ("bad/name", make_tar(crops(1)), 404, "not_found"),
        ("-bad", make_tar(crops(1)), 400, "invalid_input"),
    ],
)
def test_bad_submissions(
    make_client: Callable[..., Any],
    tmp_path: Path,
    gallery: str,
    data: bytes,
    status: int,
    code: str,
) -> None:
    c = make_client(tmp_path / "data")
    r = c.post(f"/v1/galleries/{gallery}/jobs", files={"archive": ("x.tar", data)})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    assert not list((tmp_path / "data" / "jobs" / "uploads").iterdir())  # nothing left behind


def test_archive_size_limit_is_its_own(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data", max_request_bytes=10_000, max_archive_bytes=400_000)
    data = make_tar(crops(12))
    assert 10_000 < len(data) < 400_000
    assert wait(c, submit(c, data)["id"])["added"] == 12
    r = c.post("/v1/galleries/g/jobs", files={"archive": ("x.tar", bytes(500_000))})
    assert r.status_code == 413


def test_cancel_queued_jobs_and_unknown_job(
    make_client: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_client(tmp_path / "data")
    jobs = c.app.state.jobs
    gate, run = threading.Event(), jobs._run

    def held(job_id: str) -> None:  # the worker waits here until the jobs are cancelled
        gate.wait(10)
        run(job_id)

    monkeypatch.setattr(jobs, "_run", held)
    first, second = submit(c, make_tar(crops(5))), submit(c, make_tar(crops(6)))
    for job, how in ((first, "delete"), (second, "post")):
        if how == "delete":
            r = c.delete(f"/v1/jobs/{job['id']}")
        else:
            r = c.post(f"/v1/jobs/{job['id']}/cancel")
        assert (r.status_code, r.json()["state"]) == (200, "cancelled")
    gate.set()
    for job in (first, second):
        assert wait(c, job["id"])["state"] == "cancelled"
    assert c.get("/v1/galleries/g").json()["items"] == 0
    assert not list((tmp_path / "data" / "jobs" / "uploads").iterdir())  # archives removed
    r = c.post("/v1/jobs/nope/cancel")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "job_not_found")
    assert c.get("/v1/jobs/nope").status_code == 404


def test_report_survives_restart(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data")
    job = wait(c, submit(c, make_tar({**crops(3), "x.txt": b"?"}))["id"])
    c.__exit__(None, None, None)
    again = make_client(tmp_path / "data")
    report = again.get(f"/v1/jobs/{job['id']}").json()
    assert (report["state"], report["added"], report["failed"]) == ("succeeded", 3, 1)
    assert report["failures"][0]["member"] == "x.txt"
    listed = again.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]] and listed[0]["failures"] is None


def test_cancel_stops_between_batches(model_dir: Path, tmp_path: Path, gallery_engine: str) -> None:
    """The pipeline stops at the next batch once cancelled; what it reported is stored."""
    runtime = ModelRuntime.load(model_dir)
    backend = make_backend(tmp_path, gallery_engine)
    galleries = GalleryManager(backend, runtime.manifest.model_id, TINY_DIM)
    gallery = galleries.get_or_create("g")
    path = tmp_path / "a.tar"
    path.write_bytes(make_tar(crops(50)))
    reports: list[IndexProgress] = []
    completed = index_source(
        open_source(path, ArchiveLimits()),
        gallery,
        runtime,
        IndexConfig(batch_size=8),
        reports.append,
        cancelled=lambda: sum(p.added for p in reports) >= 16,
    )
    assert not completed
    added = sum(p.added for p in reports)
    assert 16 <= added < 50 and added % 8 == 0
    assert len(gallery) == added
    _assert_index_matches_store(gallery)
    galleries.close()


def _assert_index_matches_store(gallery: Gallery) -> None:
    """Every stored embedding is found first by search, and the counts agree."""
    ids, embs = stored(gallery)
    assert len(ids) == len(gallery)
    for item_id, emb in zip(ids.tolist(), embs, strict=True):
        best = gallery.search(emb, 1)[0]
        assert best.item.id == item_id or best.score == pytest.approx(1.0, abs=1e-6)
