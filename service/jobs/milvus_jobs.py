"""Job records in Milvus (``docs/scale-out.md``): the same interface as :class:`JobStore`.

Three collections of the galleries' database, read at Strong consistency so every replica
sees the current state of every job:

- ``reid_jobs``: one row per job, keyed by its id, the whole :class:`JobRecord` (less its
  failures) as JSON plus ``state`` and ``created`` for filtering; rewritten (upsert) when its
  state changes;
- ``reid_job_progress``: the counters of each run of a job (its lease term: a replica that
  took the job over starts a new run from zero), rewritten after every batch; a job's counts
  are those of its latest run. A replica that lost the job and has not noticed yet writes to
  its own run's row, which nobody reads any more: it cannot add to the new run's counts;
- ``reid_job_failures``: one row per failed member of a run, numbered in the order reported;
- ``reid_job_claims``: the external ids a running job is about to store (keyed by job and
  external id, so claiming twice is harmless);
- ``reid_job_leases``: who runs a job until when (:meth:`MilvusJobStore.take_lease`), taken
  with the claim rule of the item id blocks (:mod:`service.gallery.milvus_ids`);
- ``reid_job_cancels``: one row per job some replica was asked to cancel (the running
  replica reads it between batches, :class:`service.jobs.leased.Heartbeat`).

The service uses it with ``REID_GALLERY_BACKEND=milvus`` (:class:`service.jobs.leased.
LeasedJobManager`).

Milvus has no transactions: a change is a read and an upsert under this process's lock. The
counters are only written by the replica holding the job's lease; the conditional transitions
(:meth:`start`, :meth:`cancel_queued`, :meth:`finish`) are atomic within one process, not
between replicas. That is why a cancel is a row of its own: a flag inside the record could be
overwritten by the running replica's next progress write (read, change, upsert).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from service.gallery.milvus_tables import Field, ensure_keyed_collection
from service.jobs.store import Failure, JobRecord, JobState

JOBS = "reid_jobs"
FAILURES = "reid_job_failures"
CLAIMS = "reid_job_claims"
LEASES = "reid_job_leases"
CANCELS = "reid_job_cancels"
PROGRESS = "reid_job_progress"
_COUNTS = ("total", "added", "duplicates", "failed", "run_seconds")
"""The fields of a :class:`JobRecord` kept per run in ``reid_job_progress``."""
_STRONG = "Strong"
_JOB_ID = re.compile(r"[0-9a-f]{32}")
"""What :meth:`MilvusJobStore.create` makes (anything else names no job: never in a filter)."""
_TEXT = 8192
"""Longest member name or failure reason kept (longer ones are cut)."""
_UNFINISHED = (JobState.QUEUED, JobState.RUNNING)
_MAX_ROWS = 16384
"""Most rows of :meth:`MilvusJobStore._query` (the lease terms of one job, the runs of the
jobs of one listing, the unfinished jobs)."""


@dataclass(frozen=True)
class Lease:
    """The right to run one job: its term (1, 2, ... per job) and this holder's row."""

    job_id: str
    term: int
    token: str


def _holder(rows: list[dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
    """The highest term claimed, and the row of the highest term claimed by one row alone
    (the current holder; terms claimed by several rows were lost by all of them)."""
    terms: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        terms.setdefault(int(r["term"]), []).append(r)
    won = [rs[0] for t, rs in sorted(terms.items()) if len(rs) == 1]
    return max(terms, default=0), (won[-1] if won else None)


def _ensure(client: Any, name: str, fields: Iterable[Field]) -> None:
    """Create collection ``name`` (a VARCHAR key and ``fields``) once and load it."""
    ensure_keyed_collection(client, name, ("key", "VARCHAR", {"max_length": 640}), fields)


def _to_row(job: JobRecord) -> dict[str, Any]:
    record = dataclasses.asdict(job)
    record["state"] = job.state.value
    record["error"] = None if job.error is None else job.error[:_TEXT]  # a row's size is bounded
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

    def __init__(self, client: Any, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock
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
            PROGRESS,
            [
                ("job_id", "VARCHAR", {"max_length": 32}),
                ("term", "INT64", {}),
                ("counts", "VARCHAR", {"max_length": 1024}),
            ],
        )
        _ensure(
            client,
            FAILURES,
            [
                ("job_id", "VARCHAR", {"max_length": 32}),
                ("term", "INT64", {}),
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
        _ensure(
            client,
            LEASES,
            [
                ("job_id", "VARCHAR", {"max_length": 32}),
                ("term", "INT64", {}),
                ("until", "DOUBLE", {}),
            ],
        )
        _ensure(client, CANCELS, [("at", "DOUBLE", {})])
        self._terms: dict[str, int] = {}
        """The lease term this process runs each job under (0: no lease taken)."""

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

    def _query(self, collection: str, filt: str, fields: list[str]) -> list[dict[str, Any]]:
        """Rows of a few per job (leases, runs): one query, not an iterator."""
        rows = self.client.query(
            collection,
            filter=filt,
            output_fields=fields,
            limit=_MAX_ROWS,
            consistency_level=_STRONG,
        )
        return list(rows)

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
        """A new run under this process's lease term: counters from zero, running time
        carried over from the previous run."""
        with self._lock:
            job = self._load(job_id)
            if job is None or job.state not in _UNFINISHED or self.cancel_requested(job_id):
                return False
            term = self._terms.get(job_id, 0)
            last = self._latest_counts([job_id]).get(job_id, {})
            self.client.delete(FAILURES, filter=f'job_id == "{job_id}" and term == {term}')
            counts = {"total": total, "added": 0, "duplicates": 0, "failed": 0}
            self._save_counts(job_id, term, {**counts, "run_seconds": last.get("run_seconds", 0)})
            started = job.started if job.started is not None else time.time()
            self._save(
                dataclasses.replace(job, state=JobState.RUNNING, started=started, error=None)
            )
            return True

    def _save_counts(self, job_id: str, term: int, counts: dict[str, Any]) -> None:
        row = {"key": f"{job_id}:{term}", "job_id": job_id, "term": term, "vec": [0.0, 0.0]}
        self.client.upsert(PROGRESS, [{**row, "counts": json.dumps(counts)}])

    def _latest_counts(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The counters of each job's latest run (jobs never started have none)."""
        if not job_ids:
            return {}
        filt = f"job_id in {json.dumps(list(job_ids))}"
        rows = self._query(PROGRESS, filt, ["job_id", "term", "counts"])
        latest: dict[str, tuple[int, dict[str, Any]]] = {}
        for r in rows:
            term = int(r["term"])
            if r["job_id"] not in latest or term > latest[r["job_id"]][0]:
                latest[r["job_id"]] = (term, {**json.loads(r["counts"]), "term": term})
        return {job: counts for job, (_, counts) in latest.items()}

    def _with_counts(self, jobs: list[JobRecord]) -> list[JobRecord]:
        counts = self._latest_counts([j.id for j in jobs])
        out = []
        for job in jobs:
            c = counts.get(job.id)
            out.append(job if c is None else dataclasses.replace(job, **{k: c[k] for k in _COUNTS}))
        return out

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
        """Add to the counters of this process's run of the job (its lease term)."""
        if not _JOB_ID.fullmatch(job_id):
            return
        with self._lock:
            term = self._terms.get(job_id, 0)
            rows = self.client.get(
                PROGRESS,
                ids=[f"{job_id}:{term}"],
                output_fields=["counts"],
                consistency_level=_STRONG,
            )
            if not rows:
                return  # the run was never started
            c = json.loads(rows[0]["counts"])
            if failures:
                self.client.upsert(
                    FAILURES,
                    [
                        {
                            "key": f"{job_id}:{term}:{c['failed'] + i}",
                            "job_id": job_id,
                            "term": term,
                            "n": c["failed"] + i,
                            "member": f.member[:_TEXT],
                            "reason": f.reason[:_TEXT],
                            "vec": [0.0, 0.0],
                        }
                        for i, f in enumerate(failures)
                    ],
                )
            c["added"] += added
            c["duplicates"] += duplicates
            c["failed"] += len(failures)
            c["run_seconds"] += seconds
            self._save_counts(job_id, term, c)

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
        if job is None:
            return None
        counts = self._latest_counts([job_id]).get(job_id)
        if counts is None:
            return job
        job = dataclasses.replace(job, **{k: counts[k] for k in _COUNTS})
        if not with_failures:
            return job
        filt = f'job_id == "{job_id}" and term == {counts["term"]}'
        rows = self._scan(FAILURES, filt, ["n", "member", "reason"])
        rows.sort(key=lambda r: int(r["n"]))
        return dataclasses.replace(job, failures=[Failure(r["member"], r["reason"]) for r in rows])

    def recent(self, limit: int = 100) -> list[JobRecord]:
        rows = self._scan(JOBS, 'key != ""', ["record", "created"])
        rows.sort(key=lambda r: -float(r["created"]))
        return self._with_counts([_from_row(r, []) for r in rows[:limit]])

    def unfinished(self) -> list[JobRecord]:
        states = json.dumps([s.value for s in _UNFINISHED])
        rows = self._query(JOBS, f"state in {states}", ["record", "created"])  # every poll
        rows.sort(key=lambda r: float(r["created"]))
        return self._with_counts([_from_row(r, []) for r in rows])

    # ------------------------------------------------------------------ cancels
    def request_cancel(self, job_id: str) -> None:
        """Ask whichever replica runs the job to cancel it (:meth:`cancel_requested`)."""
        if _JOB_ID.fullmatch(job_id):
            row = {"key": job_id, "at": self.clock(), "vec": [0.0, 0.0]}
            self.client.upsert(CANCELS, [row])

    def cancel_requested(self, job_id: str) -> bool:
        """Whether any replica was asked to cancel the job."""
        if not _JOB_ID.fullmatch(job_id):
            return False
        rows = self.client.get(
            CANCELS, ids=[job_id], output_fields=["at"], consistency_level=_STRONG
        )
        return bool(rows)

    # ------------------------------------------------------------------ leases
    def _lease_rows(self, job_id: str, term: int | None = None) -> list[dict[str, Any]]:
        filt = f'job_id == "{job_id}"' + ("" if term is None else f" and term == {term}")
        return self._query(LEASES, filt, ["key", "term", "until"])

    def _lease_row(self, job_id: str, term: int, token: str, until: float) -> None:
        row = {"key": token, "job_id": job_id, "term": term, "until": until, "vec": [0.0, 0.0]}
        self.client.upsert(LEASES, [row])

    def take_lease(self, job_id: str, seconds: float) -> Lease | None:
        """The job's lease for ``seconds``, unless another holder's has not expired.

        The claim rule: insert a row for the next term, then read that term's rows at Strong
        consistency; the claim holds when its row is the only one. Two claimants of one term
        cannot both win (the later read sees the earlier acknowledged insert); both may lose,
        and try again later (a next term).
        """
        if not _JOB_ID.fullmatch(job_id):
            return None
        last, holder = _holder(self._lease_rows(job_id))
        if holder is not None and float(holder["until"]) > self.clock():
            return None
        lease = Lease(job_id, last + 1, secrets.token_hex(16))
        self._lease_row(job_id, lease.term, lease.token, self.clock() + seconds)
        rows = self._lease_rows(job_id, lease.term)
        if [r["key"] for r in rows] != [lease.token]:
            return None
        self._terms[job_id] = lease.term  # this process's runs of the job count there
        return lease

    def renew_lease(self, lease: Lease, seconds: float) -> bool:
        """Extend the lease by ``seconds`` from now; False (and no longer the holder) once
        another replica took the job over (after this lease had expired)."""
        if not self._holds(lease):
            return False
        self._lease_row(lease.job_id, lease.term, lease.token, self.clock() + seconds)
        return self._holds(lease)  # a takeover that raced the renewal wins

    def release_lease(self, lease: Lease) -> None:
        """Give the job up at once (it may be taken by any replica now)."""
        if self._holds(lease):
            self._lease_row(lease.job_id, lease.term, lease.token, 0.0)

    def _holds(self, lease: Lease) -> bool:
        _, holder = _holder(self._lease_rows(lease.job_id))
        return holder is not None and holder["key"] == lease.token
