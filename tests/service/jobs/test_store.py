"""The job stores behind one interface: SQLite (one data directory) and Milvus (Milvus Lite in
this process; every replica of a scaled-out service reads the same records)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.jobs.store import Failure, JobRecords, JobState, JobStore


@pytest.fixture(params=["sqlite", "milvus"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobRecords]:
    if request.param == "sqlite":
        sqlite = JobStore(tmp_path / "jobs.sqlite3")
        yield sqlite
        sqlite.close()
        return
    yield from _milvus(tmp_path)


def _milvus(tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip(
        "pymilvus", reason="the milvus extra (pymilvus, milvus-lite) is not installed"
    )
    from service.gallery import BackendConfig, MilvusOptions, open_backend
    from service.jobs.milvus_jobs import MilvusJobStore

    backend = open_backend(BackendConfig("milvus", tmp_path, milvus=MilvusOptions()))
    try:
        yield MilvusJobStore(backend.client)  # type: ignore[attr-defined]
    finally:
        backend.close()


def test_life_cycle_counts_and_failures_in_order(store: JobRecords) -> None:
    rules = {"camera_level": 1}
    job_id = store.create("g", "a.zip", "/up/x.upload", "ab" * 32, naming=rules)
    job = store.get(job_id)
    assert job is not None
    assert (job.state, job.total, job.added, job.naming) == (JobState.QUEUED, None, 0, rules)
    assert [j.id for j in store.unfinished()] == [job_id]
    assert store.start(job_id, 10)
    store.progress(job_id, 3, 1, [Failure("a.jpg", "not an image")], 0.5)
    store.progress(job_id, 2, 0, [Failure("b.jpg", "too big"), Failure("c.jpg", "x")], 0.25)
    job = store.get(job_id)
    assert job is not None
    assert (job.state, job.total, job.added, job.duplicates, job.failed) == (
        JobState.RUNNING,
        10,
        5,
        1,
        3,
    )
    assert job.run_seconds == pytest.approx(0.75)
    assert [f.member for f in job.failures] == ["a.jpg", "b.jpg", "c.jpg"]
    assert job.archive_path == "/up/x.upload" and job.archive_sha256 == "ab" * 32
    store.finish(job_id, JobState.SUCCEEDED)
    store.finish(job_id, JobState.FAILED, "too late")  # a finished job stays as it is
    done = store.get(job_id, with_failures=False)
    assert done is not None
    assert (done.state, done.error, done.failures) == (JobState.SUCCEEDED, None, [])
    assert done.finished is not None
    assert store.unfinished() == []
    assert not store.start(job_id, 10)


def test_resume_restarts_counters_and_keeps_claims(store: JobRecords) -> None:
    job_id = store.create("g", "a.zip", "/up/x.upload", "00" * 32)
    assert store.start(job_id, 4)
    store.claim(job_id, ["e1", "e2"])
    store.claim(job_id, ["e2", "e3"])  # claiming again is harmless
    store.progress(job_id, 2, 0, [Failure("bad.jpg", "no")], 1.0)
    assert store.start(job_id, 4)  # resumed after a kill: counts from zero again
    job = store.get(job_id)
    assert job is not None
    assert (job.added, job.failed, job.failures) == (0, 0, [])
    assert job.run_seconds == pytest.approx(1.0)  # running time sums over resumptions
    assert store.claimed(job_id) == {"e1", "e2", "e3"}
    other = store.create("g", "b.zip")
    assert store.claimed(other) == set()
    store.forget_claims(job_id)
    assert store.claimed(job_id) == set()


def test_cancel_queued_only_and_recent_newest_first(store: JobRecords) -> None:
    first = store.create("g", "a.zip")
    second = store.create("g", "b.zip")
    assert store.start(first, 1)
    assert not store.cancel_queued(first)  # running: the worker cancels it
    assert store.cancel_queued(second)
    assert not store.start(second, 1)  # cancelled before its worker started it
    cancelled = store.get(second)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED
    assert [j.id for j in store.recent()] == [second, first]
    assert [j.id for j in store.recent(limit=1)] == [second]
    store.set_state(first, JobState.QUEUED)  # a shutdown puts it back
    store.set_state(first, JobState.FAILED, "boom " * 4000)  # a very long error is kept
    failed = store.get(first)
    assert failed is not None and failed.state == JobState.FAILED
    assert failed.error is not None and failed.error.startswith("boom boom")
    assert failed.finished is not None


def test_unknown_ids_name_no_job(store: JobRecords) -> None:
    for job_id in ("0" * 32, 'x" or key != "', "../etc"):
        assert store.get(job_id) is None
        assert store.claimed(job_id) == set()
        assert not store.cancel_queued(job_id)


def test_a_lease_is_held_by_one_replica_until_it_expires(tmp_path: Path) -> None:
    """Two stores on one database play two replicas; a shared clock plays the time."""
    now = [1000.0]
    for store in _milvus(tmp_path):
        other = type(store)(store.client, clock=lambda: now[0])
        store.clock = lambda: now[0]
        job_id = store.create("g", "a.zip")
        first = store.take_lease(job_id, 30)
        assert first is not None and first.term == 1
        assert other.take_lease(job_id, 30) is None  # held
        now[0] += 20
        assert store.renew_lease(first, 30)  # now held until 1050
        now[0] += 25
        assert other.take_lease(job_id, 30) is None
        now[0] += 10  # 1055: expired (its replica stopped renewing: killed)
        second = other.take_lease(job_id, 30)
        assert second is not None and second.term == 2
        assert not store.renew_lease(first, 30)  # taken over: the old holder stops
        assert store.take_lease(job_id, 30) is None
        other.release_lease(second)
        third = store.take_lease(job_id, 30)  # released: free at once
        assert third is not None and third.term == 3
        assert other.take_lease("../x", 30) is None


def test_rival_claims_of_one_term_both_lose_and_the_next_term_wins(tmp_path: Path) -> None:
    for store in _milvus(tmp_path):
        job_id = store.create("g", "a.zip")
        for token in ("rival-a", "rival-b"):  # two replicas claimed term 1 at once
            store._lease_row(job_id, 1, token, store.clock() + 30)
        assert store.take_lease(job_id, 30) is not None  # nobody holds term 1: term 2
        assert [int(r["term"]) for r in store._lease_rows(job_id)].count(2) == 1
