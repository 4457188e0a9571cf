"""Job records in Milvus (``docs/scale-out.md``): the same interface as :class:`JobStore`.

Three collections of the galleries' database, read at Strong consistency so every replica
sees the current state of every job:

- ``reid_jobs``: one row per job, keyed by its id, the whole :class:`JobRecord` (less its
  failures) as JSON plus ``state`` and ``created`` for filtering; rewritten (upsert) on every
  change;
- ``reid_job_failures``: one row per failed member, numbered in the order reported;
- ``reid_job_claims``: the external ids a running job is about to store (keyed by job and
  external id, so claiming twice is harmless).

Milvus has no transactions: a change is a read and an upsert under this process's lock. The
counters are only written by the replica running the job; the conditional transitions
(:meth:`start`, :meth:`cancel_queued`, :meth:`finish`) are atomic within one process, not
between replicas.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from service.jobs.store import Failure, JobRecord, JobState

JOBS = "reid_jobs"
FAILURES = "reid_job_failures"
CLAIMS = "reid_job_claims"
_STRONG = "Strong"
_JOB_ID = re.compile(r"[0-9a-f]{32}")
"""What :meth:`MilvusJobStore.create` makes (anything else names no job: never in a filter)."""
_TEXT = 8192
"""Longest member name or failure reason kept (longer ones are cut)."""
_UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


def _ensure(client: Any, name: str, fields: Iterable[tuple[str, Any, dict[str, Any]]]) -> None:
    """Create collection ``name`` (a VARCHAR key, ``fields``, an unused 2-d vector) once."""
    from pymilvus import DataType, MilvusClient, MilvusException

    if not client.has_collection(name):
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, max_length=640, is_primary=True)
        for field, kind, kwargs in fields:
            schema.add_field(field, getattr(DataType, kind), **kwargs)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector
        index = client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="L2")
        try:
            client.create_collection(
                name, schema=schema, index_params=index, consistency_level=_STRONG
            )
        except MilvusException:
            if not client.has_collection(name):
                raise  # not another replica creating it at the same time
    client.load_collection(name)


def _to_row(job: JobRecord) -> dict[str, Any]:
    record = dataclasses.asdict(job)
    record["state"] = job.state.value
    del record["failures"]
    return {
        "key": job.id,
        "state": job.state.value,
        "created": job.created,
        "record": json.dumps(record),
        "vec": [0.0, 0.0],
    }


def _from_row(row: dict[str, Any], failures: list[Failure]) -> JobRecord:
    record = json.loads(row["record"])
    record["state"] = JobState(record["state"])
    return JobRecord(**record, failures=failures)


class MilvusJobStore:
    """The jobs of one Milvus database; thread-safe (one lock per process)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._lock = threading.Lock()
        _ensure(
            client,
            JOBS,
            [
                ("state", "VARCHAR", {"max_length": 16}),
                ("created", "DOUBLE", {}),
                ("record", "VARCHAR", {"max_length": 65535}),
            ],
        )
        _ensure(
            client,
            FAILURES,
            [
                ("job_id", "VARCHAR", {"max_length": 32}),
                ("n", "INT64", {}),
                ("member", "VARCHAR", {"max_length": _TEXT}),
                ("reason", "VARCHAR", {"max_length": _TEXT}),
            ],
        )
        _ensure(
            client,
            CLAIMS,
            [
                ("job_id", "VARCHAR", {"max_length": 32}),
                ("external_id", "VARCHAR", {"max_length": 600}),
            ],
        )

    def close(self) -> None:
        """Nothing to release: the client belongs to the gallery backend."""

    # ------------------------------------------------------------------ rows
    def _load(self, job_id: str) -> JobRecord | None:
        if not _JOB_ID.fullmatch(job_id):
            return None
        rows = self.client.get(
            JOBS, ids=[job_id], output_fields=["record"], consistency_level=_STRONG
        )
        return _from_row(rows[0], []) if rows else None

    def _save(self, job: JobRecord) -> None:
        self.client.upsert(JOBS, [_to_row(job)])

    def _change(self, job_id: str, states: Sequence[JobState] | None, **changes: Any) -> bool:
        """Apply ``changes`` when the job is in one of ``states`` (any when None)."""
        with self._lock:
            job = self._load(job_id)
            if job is None or (states is not None and job.state not in states):
                return False
            self._save(dataclasses.replace(job, **changes))
            return True

    def _scan(self, collection: str, filt: str, fields: list[str]) -> list[dict[str, Any]]:
        it = self.client.query_iterator(
            collection,
            batch_size=4096,
            filter=filt,
            output_fields=fields,
            consistency_level=_STRONG,
        )
        out: list[dict[str, Any]] = []
        try:
            while batch := it.next():
                out += batch
        finally:
            it.close()
        return out

    # ------------------------------------------------------------------ the JobStore interface
    def create(
        self,
        gallery: str,
        source: str,
        archive_path: str | None = None,
        archive_sha256: str | None = None,
        state: JobState = JobState.QUEUED,
        naming: dict[str, Any] | None = None,
    ) -> str:
        job = JobRecord(
            id=uuid.uuid4().hex,
            gallery=gallery,
            source=source,
            state=state,
            total=None,
            added=0,
            duplicates=0,
            failed=0,
            error=None,
            created=time.time(),
            started=None,
            finished=None,
            run_seconds=0.0,
            archive_path=archive_path,
            archive_sha256=archive_sha256,
            naming=naming,
        )
        with self._lock:
            self._save(job)
        return job.id

    def start(self, job_id: str, total: int) -> bool:
        with self._lock:
            job = self._load(job_id)
            if job is None or job.state not in _UNFINISHED:
                return False
            self.client.delete(FAILURES, filter=f'job_id == "{job_id}"')
            self._save(
                dataclasses.replace(
                    job,
                    state=JobState.RUNNING,
                    total=total,
                    added=0,
                    duplicates=0,
                    failed=0,
                    started=job.started if job.started is not None else time.time(),
                    error=None,
                )
            )
            return True

    def cancel_queued(self, job_id: str) -> bool:
        return self._change(
            job_id, (JobState.QUEUED,), state=JobState.CANCELLED, finished=time.time()
        )

    def claim(self, job_id: str, external_ids: Sequence[str]) -> None:
        rows = [
            {"key": f"{job_id}:{e}", "job_id": job_id, "external_id": e, "vec": [0.0, 0.0]}
            for e in dict.fromkeys(external_ids)
        ]
        if rows:
            self.client.upsert(CLAIMS, rows)

    def claimed(self, job_id: str) -> set[str]:
        if not _JOB_ID.fullmatch(job_id):
            return set()
        rows = self._scan(CLAIMS, f'job_id == "{job_id}"', ["external_id"])
        return {str(r["external_id"]) for r in rows}

    def forget_claims(self, job_id: str) -> None:
        if _JOB_ID.fullmatch(job_id):
            self.client.delete(CLAIMS, filter=f'job_id == "{job_id}"')

    def progress(
        self, job_id: str, added: int, duplicates: int, failures: Sequence[Failure], seconds: float
    ) -> None:
        with self._lock:
            job = self._load(job_id)
            if job is None:
                return
            if failures:
                self.client.upsert(
                    FAILURES,
                    [
                        {
                            "key": f"{job_id}:{job.failed + i}",
                            "job_id": job_id,
                            "n": job.failed + i,
                            "member": f.member[:_TEXT],
                            "reason": f.reason[:_TEXT],
                            "vec": [0.0, 0.0],
                        }
                        for i, f in enumerate(failures)
                    ],
                )
            self._save(
                dataclasses.replace(
                    job,
                    added=job.added + added,
                    duplicates=job.duplicates + duplicates,
                    failed=job.failed + len(failures),
                    run_seconds=job.run_seconds + seconds,
                )
            )

    def set_state(self, job_id: str, state: JobState, error: str | None = None) -> None:
        with self._lock:
            job = self._load(job_id)
            if job is not None:
                finished = time.time() if state.finished else None
                self._save(
                    dataclasses.replace(
                        job,
                        state=state,
                        error=job.error if error is None else error,
                        finished=finished,
                    )
                )

    def finish(self, job_id: str, state: JobState, error: str | None = None) -> None:
        with self._lock:
            job = self._load(job_id)
            if job is not None and job.state in _UNFINISHED:
                self._save(
                    dataclasses.replace(
                        job,
                        state=state,
                        error=job.error if error is None else error,
                        finished=time.time(),
                    )
                )

    def get(self, job_id: str, with_failures: bool = True) -> JobRecord | None:
        job = self._load(job_id)
        if job is None or not with_failures:
            return job
        rows = self._scan(FAILURES, f'job_id == "{job_id}"', ["n", "member", "reason"])
        rows.sort(key=lambda r: int(r["n"]))
        return dataclasses.replace(job, failures=[Failure(r["member"], r["reason"]) for r in rows])

    def recent(self, limit: int = 100) -> list[JobRecord]:
        rows = self._scan(JOBS, 'key != ""', ["record", "created"])
        rows.sort(key=lambda r: -float(r["created"]))
        return [_from_row(r, []) for r in rows[:limit]]

    def unfinished(self) -> list[JobRecord]:
        states = json.dumps([s.value for s in _UNFINISHED])
        rows = self._scan(JOBS, f"state in {states}", ["record", "created"])
        rows.sort(key=lambda r: float(r["created"]))
        return [_from_row(r, []) for r in rows]
