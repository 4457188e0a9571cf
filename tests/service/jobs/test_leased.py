"""Jobs shared by replicas (:class:`LeasedJobManager`) on Milvus Lite in this process: two
managers with their own job stores on one database and one blob folder play two replicas.

What one replica accepts the other reads and cancels; a job left running by a replica that
died (its lease no longer renewed) is taken over once the lease expires and finished with
exact counts, its earlier additions counted as added and nothing stored twice. The same on
the real server, with processes killed: tests/service/test_replicas_milvus_server.py.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.gallery import GalleryManager, NewItem
from service.gallery.blobs import FileBlobStore
from service.jobs import ArchiveLimits, Failure, IndexConfig, JobState
from service.jobs.leased import UPLOADS, LeasedJobManager, LeaseTimes
from service.jobs.pipeline import external_id
from service.runtime import Inference, ModelRuntime
from tests.service.conftest import TINY_DIM
from tests.service.gallery.helpers import make_backend
from tests.service.jobs.archives import crops, make_tar

pytest.importorskip("pymilvus", reason="the milvus extra (pymilvus, milvus-lite) is not installed")

from service.jobs.milvus_jobs import MilvusJobStore  # noqa: E402

# Leases long enough that a loaded 2-core CI machine still renews them in time (a heartbeat
# four times per lease); the tests that need one to expire wait that long.
TIMES = LeaseTimes(lease_s=3.0, poll_s=0.05)


class GatedModel:
    """The tiny model, each batch held until ``gate`` is set (a job that is still running)."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime, self.gate, self.entered = runtime, threading.Event(), threading.Event()
        self.preprocess, self.schema = runtime.preprocess, runtime.schema

    def run_batch(self, batch: np.ndarray) -> Inference:
        self.entered.set()
        assert self.gate.wait(20)
        return self.runtime.run_batch(batch)

    def for_workers(self, workers: int) -> GatedModel:
        return self


@pytest.fixture
def world(model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., LeasedJobManager]]:
    """Factory of replicas over one Milvus Lite database and one blob folder."""
    runtime = ModelRuntime.load(model_dir)
    backend = make_backend(tmp_path / "db", "milvus")
    galleries = GalleryManager(backend, runtime.manifest.model_id, TINY_DIM)
    blobs = FileBlobStore(tmp_path / "blobs")
    made: list[LeasedJobManager] = []

    def replica(name: str, model: Any = runtime, start: bool = True) -> LeasedJobManager:
        store = MilvusJobStore(backend.client)  # type: ignore[attr-defined]
        config = IndexConfig(batch_size=4, workers=1)
        jobs = LeasedJobManager(
            tmp_path / name, galleries, model, config, ArchiveLimits(), 2**30, store, blobs, TIMES
        )
        if start:
            jobs.start()
        made.append(jobs)
        return jobs

    yield replica
    for jobs in made:
        if jobs._thread.is_alive():
            jobs.close()
    galleries.close()


def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_any_replica_reads_and_cancels_a_job_another_runs(
    world: Callable[..., LeasedJobManager], model_dir: Path
) -> None:
    gated = GatedModel(ModelRuntime.load(model_dir))
    a, b = world("a", model=gated), world("b", start=False)
    job = a.submit("g", io.BytesIO(make_tar(crops(12))), "a.tar")
    assert gated.entered.wait(20)  # A runs it, its first batch held
    assert (b.get(job.id).state, b.get(job.id).total) == (JobState.RUNNING, 12)
    assert b.cancel(job.id).state == JobState.RUNNING  # asked; A stops at its next batch
    time.sleep(TIMES.lease_s)  # A's heartbeat reads the request meanwhile
    gated.gate.set()
    _until(lambda: b.get(job.id).state == JobState.CANCELLED)
    done = b.get(job.id)
    assert done.added < 12 and len(b.galleries.get("g")) == done.added
    assert list(b.blobs.list(f"{UPLOADS}/")) == []  # the upload went with the job


def test_a_dead_replicas_job_is_resumed_with_exact_counts(
    world: Callable[..., LeasedJobManager],
) -> None:
    members = crops(10)
    images = list(members.values())
    members["0100_c1s1_010000_00.png"] = images[3]  # the same bytes twice
    dead = world("dead", start=False)  # accepted the job, stored 4 items, then died
    job = dead.submit("g", io.BytesIO(make_tar(members)), "a.tar")
    lease = dead.shared.take_lease(job.id, TIMES.lease_s)
    assert lease is not None and dead.shared.start(job.id, 11)
    ids = [external_id(d) for d in images[:4]]
    dead.shared.claim(job.id, ids + [external_id(images[4])])  # claimed, died before the add
    emb = np.eye(4, TINY_DIM, dtype=np.float32)
    items = [NewItem(camera="c1", timestamp=1.0, external_id=e) for e in ids]
    dead.galleries.get("g").add(items, emb)
    dead.shared.progress(job.id, 4, 0, [], 1.0)
    survivor = world("survivor")  # polls; takes the job over once the lease expired
    _until(lambda: survivor.get(job.id).state == JobState.SUCCEEDED)
    done = survivor.get(job.id)
    assert (done.total, done.added, done.duplicates, done.failed) == (11, 10, 1, 0)
    g = survivor.galleries.get("g")
    assert len(g) == 10
    assert set(g.find_external([external_id(d) for d in images])) == {
        external_id(d) for d in images
    }
    assert survivor.shared.claimed(job.id) == set()  # forgotten once finished


def test_a_replica_that_lost_the_job_cannot_change_its_counts(
    world: Callable[..., LeasedJobManager],
) -> None:
    """The old holder's late writes go to its own run (term), which nobody reads any more."""
    old, new = world("old", start=False), world("new", start=False)
    job = old.submit("g", io.BytesIO(make_tar(crops(2))), "a.tar")
    assert old.shared.take_lease(job.id, TIMES.lease_s) is not None
    assert old.shared.start(job.id, 2)
    old.shared.progress(job.id, 1, 0, [], 0.5)
    time.sleep(TIMES.lease_s * 1.1)  # its heartbeat stalled: the lease expired
    assert new.shared.take_lease(job.id, TIMES.lease_s) is not None
    assert new.shared.start(job.id, 2)
    old.shared.progress(job.id, 1, 0, [Failure("late.png", "written after losing the job")], 9)
    new.shared.progress(job.id, 2, 0, [], 0.25)
    seen = new.get(job.id)
    assert (seen.total, seen.added, seen.failed, seen.failures) == (2, 2, 0, [])
    assert seen.run_seconds == pytest.approx(0.75)  # the old run's time is carried over


def test_a_cancel_request_alone_cancels_a_queued_job_before_it_runs(
    world: Callable[..., LeasedJobManager],
) -> None:
    """A replica asked to cancel, then died before marking the job: the next run sees the
    request and cancels it without indexing anything."""
    asked = world("asked", start=False)
    job = asked.submit("g", io.BytesIO(make_tar(crops(4))), "a.tar")
    asked.shared.request_cancel(job.id)  # ... and no cancel_queued: it died here
    worker = world("worker")
    _until(lambda: worker.get(job.id).state == JobState.CANCELLED)
    assert len(worker.galleries.get("g")) == 0
