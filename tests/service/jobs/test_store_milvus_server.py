"""Job records on the real Milvus standalone server (PyPI ``milvus``, started here), written
through one client and read through another, as two service replicas would: the reader sees
the writer's exact counts, failures and claims at its next read (Strong reads).

Skipped, with the reason, when the server package is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.jobs.store import Failure, JobState

pytest.importorskip("milvus", reason="the Milvus server package (milvus) is absent")
pytest.importorskip("pymilvus", reason="the milvus extra is not installed")

from pymilvus import MilvusClient  # noqa: E402

from service.gallery.milvus_server import local_milvus_server  # noqa: E402
from service.jobs.milvus_jobs import MilvusJobStore  # noqa: E402


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus standalone server on 127.0.0.1 for this module (~20 s to start)."""
    with local_milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri


def test_a_job_written_through_one_client_is_read_exactly_through_another(
    milvus_uri: str, tmp_path: Path
) -> None:
    one = MilvusJobStore(MilvusClient(uri=milvus_uri))
    two = MilvusJobStore(MilvusClient(uri=milvus_uri))  # collections already there: reused
    job_id = one.create("g", "a.zip", "s3://bucket/x.upload", "cd" * 32)
    assert [j.id for j in two.unfinished()] == [job_id]
    assert one.start(job_id, 100)
    one.claim(job_id, [f"e{i}" for i in range(40)])
    for step in range(4):
        one.progress(job_id, 8, 2, [Failure(f"bad{step}.jpg", "not an image")], 0.5)
    seen = two.get(job_id)
    assert seen is not None
    assert (seen.state, seen.total, seen.added, seen.duplicates, seen.failed) == (
        JobState.RUNNING,
        100,
        32,
        8,
        4,
    )
    assert [f.member for f in seen.failures] == [f"bad{s}.jpg" for s in range(4)]
    assert two.claimed(job_id) == {f"e{i}" for i in range(40)}
    assert not two.cancel_queued(job_id)  # running: not cancelled from the other client
    one.finish(job_id, JobState.SUCCEEDED)
    done = two.get(job_id, with_failures=False)
    assert done is not None and done.state == JobState.SUCCEEDED
    assert two.unfinished() == []
