"""Two ``reid serve`` processes on one real Milvus standalone server (PyPI ``milvus``, started
here) and one shared blob folder: any replica answers for any job, a job whose replica is
killed with SIGKILL is finished by the other with exact counts and each image stored once,
and a job survives the Milvus server itself being killed and restarted on its data.

Skipped, with the reason, when the server package is not installed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.gallery import BackendConfig, GalleryManager, MilvusOptions, open_backend
from service.runtime import ModelRuntime
from tests.service.conftest import TINY_DIM
from tests.service.jobs.archives import crops, make_tar, market_name

pytest.importorskip("milvus", reason="the Milvus server package (milvus) is absent")
pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
httpx = pytest.importorskip("httpx", reason="httpx (the test client's HTTP library) is absent")

from tests.service.milvus_servers import KillableMilvus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LEASE_S = 6.0
"""Short leases, so that a killed replica's job is taken over within seconds."""

UNFINISHED = ("queued", "running")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableMilvus]:
    """A Milvus standalone server on 127.0.0.1 for this module (10-20 s to start)."""
    server = KillableMilvus(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Replica:
    """One ``reid serve`` process of the scaled-out service."""

    def __init__(self, model_dir: Path, data: Path, uri: str, blobs: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "REID_GALLERY_BACKEND": "milvus",
            "REID_MILVUS_URI": uri,
            "REID_BLOB_DIR": str(blobs),
            "REID_JOB_LEASE_S": str(LEASE_S),
            "REID_JOB_POLL_S": "0.5",
            "REID_INDEX_BATCH_SIZE": "4",  # many small batches: the kill lands mid-job
            "REID_INDEX_WORKERS": "1",
            "REID_ATTRIBUTE_WARMUP": "false",
        }
        cmd = [sys.executable, "-m", "reidcore.cli", "--log-level", "WARNING", "serve"]
        cmd += ["--model", str(model_dir), "--data", str(data), "--port", str(self.port)]
        self.log = open(data.with_suffix(".log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        end = time.monotonic() + 120
        while not self._ready():
            assert self.proc.poll() is None, data.with_suffix(".log").read_text()
            assert time.monotonic() < end, "replica not ready in 120 s"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def job_when_readable(self, job_id: str) -> dict[str, Any]:
        """The job, or ``{"state": "unknown"}`` while Milvus does not answer: a 503 with
        Retry-After, or a 500 for a Milvus error not recognised as an outage (a server that
        answers while it reloads its collections)."""
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code in (200, 500, 503), r.text
        assert r.status_code != 503 or "Retry-After" in r.headers
        return dict(r.json()) if r.status_code == 200 else {"state": "unknown"}

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.http.close()
        self.log.close()


@pytest.fixture
def replicas(
    milvus: KillableMilvus, model_dir: Path, tmp_path: Path
) -> Iterator[Callable[[str], Replica]]:
    """Starts replicas, each with its own data folder, all on one server and blob folder."""
    started: list[Replica] = []

    def start(name: str) -> Replica:
        (tmp_path / name).mkdir()
        started.append(Replica(model_dir, tmp_path / name, milvus.uri, tmp_path / "blobs"))
        return started[-1]

    yield start
    for r in started:
        r.close()


def _archive(n: int, offset: int) -> tuple[bytes, list[bytes]]:
    """``n`` distinct crops, one of them twice, and a file that is no crop: n + 2 members."""
    members = crops(n, offset)
    images = list(members.values())
    members[market_name(offset + n + 1)] = images[0]  # the same bytes again: a duplicate
    members["readme.txt"] = b"no camera, no image"
    return make_tar(members), images


def _until(check: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]) -> Any:
    end = time.monotonic() + 240
    while not done(job := check()):
        assert time.monotonic() < end, f"still {job}"
        time.sleep(0.1)
    return job


def _stored_once(model_dir: Path, uri: str, gallery: str, images: list[bytes]) -> int:
    """How many items ``gallery`` holds; asserts each image is one of them."""
    model_id = ModelRuntime.load(model_dir).manifest.model_id
    backend = open_backend(BackendConfig("milvus", model_dir, milvus=MilvusOptions(uri=uri)))
    manager = GalleryManager(backend, model_id, TINY_DIM)
    try:
        g = manager.get(gallery)
        ext = ["sha256:" + hashlib.sha256(b).hexdigest() for b in images]
        found = g.find_external(ext)
        assert sorted(found) == sorted(ext), "an acknowledged image is missing"
        return len(g)
    finally:
        manager.close()


def test_a_job_survives_its_replica_being_killed(
    replicas: Callable[[str], Replica], milvus: KillableMilvus, model_dir: Path
) -> None:
    a, b = replicas("a"), replicas("b")
    data, images = _archive(40, 0)
    r = a.http.post("/v1/galleries/g/jobs", files={"archive": ("a.tar", data)})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert b.job(job_id)["source"] == "a.tar"  # accepted by A, known to B
    _until(lambda: b.job(job_id), lambda j: j["done"] >= 8 or j["state"] not in UNFINISHED)
    a.kill()
    after = b.job(job_id)  # A is dead: whatever is left, B must do
    assert after["state"] in UNFINISHED, f"not killed mid-job: {after}"
    last = _until(lambda: b.job(job_id), lambda j: j["state"] not in UNFINISHED)
    assert last["state"] == "succeeded", last
    assert (last["total"], last["added"], last["duplicates"], last["failed"]) == (42, 40, 1, 1)
    assert [f["member"] for f in last["failures"]] == ["readme.txt"]
    assert _stored_once(model_dir, milvus.uri, "g", images) == 40
    assert b.http.get("/v1/galleries/g").json()["items"] == 40


def test_a_job_survives_a_restart_of_the_milvus_server(
    replicas: Callable[[str], Replica], milvus: KillableMilvus, model_dir: Path
) -> None:
    a = replicas("a")
    data, images = _archive(24, 1000)
    r = a.http.post("/v1/galleries/h/jobs", files={"archive": ("b.tar", data)})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    seen = _until(lambda: a.job(job_id), lambda j: j["done"] >= 8 or j["state"] not in UNFINISHED)
    acknowledged = seen["done"]
    milvus.kill()
    milvus.start()  # the same data folder and ports
    ended = ("succeeded", "failed", "cancelled")
    last = _until(lambda: a.job_when_readable(job_id), lambda j: j["state"] in ended)
    if last["state"] == "succeeded":
        assert (last["added"], last["duplicates"], last["failed"]) == (24, 1, 1)
        assert _stored_once(model_dir, milvus.uri, "h", images) == 24
    else:  # failed cleanly: a reason, and nothing acknowledged lost
        assert last["state"] == "failed" and last["error"], last
        # members are indexed and reported in archive order: the first ones are acknowledged
        stored = _stored_once(model_dir, milvus.uri, "h", images[:acknowledged])
        assert acknowledged <= stored <= 24
    assert a.http.get("/readyz").status_code == 200
