"""Persistent bulk-indexing jobs: ``<data>/jobs.sqlite3`` (WAL, synchronous=FULL).

A job's counters are committed after the gallery transaction that stored its items, so a
count that was ever reported is never ahead of what the gallery holds, even across a kill.
Failed members are kept with their reason for the job's report.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    gallery TEXT NOT NULL,
    source TEXT NOT NULL,
    archive_path TEXT,
    archive_sha256 TEXT,
    state TEXT NOT NULL,
    total INTEGER,
    added INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    run_seconds REAL NOT NULL DEFAULT 0,
    naming TEXT
);
CREATE TABLE IF NOT EXISTS failures (
    job_id TEXT NOT NULL,
    member TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_job ON failures (job_id);
"""


CLAIMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    job_id TEXT NOT NULL,
    external_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS claims_job ON claims (job_id);
"""
"""External ids a running job is about to store (see :meth:`JobStore.claim`)."""


class JobState(str, Enum):
    """Life cycle: queued -> running -> succeeded | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Failure:
    """One member that could not be indexed."""

    member: str
    """Its path inside the archive or folder."""
    reason: str
    """Why (not an image, unsafe path, over the size limit, no camera/timestamp...)."""


@dataclass(frozen=True)
class JobRecord:
    """A job as stored."""

    id: str
    gallery: str
    source: str
    """Uploaded file name or indexed folder."""
    state: JobState
    total: int | None
    """Members to index (None until the archive has been scanned)."""
    added: int
    """New items stored in the gallery."""
    duplicates: int
    """Members already in the gallery (same content), not added again."""
    failed: int
    error: str | None
    """Why the whole job failed, if it did."""
    created: float
    started: float | None
    finished: float | None
    run_seconds: float
    """Time spent running (summed over resumptions)."""
    archive_path: str | None = None
    archive_sha256: str | None = None
    failures: list[Failure] = field(default_factory=list)
    naming: dict[str, Any] | None = None
    """The camera/time rules the job was run with (``service.jobs.rules.NamingRules``)."""

    @property
    def done(self) -> int:
        """Members processed successfully: added or already present."""
        return self.added + self.duplicates

    @property
    def images_per_second(self) -> float | None:
        """Processed members (done + failed) per second of running time."""
        if self.run_seconds <= 0:
            return None
        return (self.done + self.failed) / self.run_seconds


_COLUMNS = (
    "id, gallery, source, state, total, added, duplicates, failed, error, created, started,"
    " finished, run_seconds, archive_path, archive_sha256, naming"
)


class JobRecords(Protocol):
    """Where jobs are kept: :class:`JobStore` (SQLite, one data directory) or
    :class:`service.jobs.milvus_jobs.MilvusJobStore` (shared by every replica)."""

    def create(
        self,
        gallery: str,
        source: str,
        archive_path: str | None = None,
        archive_sha256: str | None = None,
        state: JobState = JobState.QUEUED,
        naming: dict[str, Any] | None = None,
    ) -> str: ...

    def start(self, job_id: str, total: int) -> bool: ...

    def cancel_queued(self, job_id: str) -> bool: ...

    def claim(self, job_id: str, external_ids: Sequence[str]) -> None: ...

    def claimed(self, job_id: str) -> set[str]: ...

    def forget_claims(self, job_id: str) -> None: ...

    def progress(
        self, job_id: str, added: int, duplicates: int, failures: Sequence[Failure], seconds: float
    ) -> None: ...

    def set_state(self, job_id: str, state: JobState, error: str | None = None) -> None: ...

    def finish(self, job_id: str, state: JobState, error: str | None = None) -> None: ...

    def get(self, job_id: str, with_failures: bool = True) -> JobRecord | None: ...

    def recent(self, limit: int = 100) -> list[JobRecord]: ...

    def unfinished(self) -> list[JobRecord]: ...

    def close(self) -> None: ...


class JobStore:
    """The jobs table of a data directory; thread-safe."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(SCHEMA)
        self._conn.executescript(CLAIMS_SCHEMA)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(jobs)")}
        if "naming" not in columns:  # a jobs file from before the naming rules
            self._conn.execute("ALTER TABLE jobs ADD COLUMN naming TEXT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, params: Sequence[object]) -> None:
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(sql, params)

    def create(
        self,
        gallery: str,
        source: str,
        archive_path: str | None = None,
        archive_sha256: str | None = None,
        state: JobState = JobState.QUEUED,
        naming: dict[str, Any] | None = None,
    ) -> str:
        """A new job; returns its id. ``naming`` records the camera/time rules it uses."""
        job_id = uuid.uuid4().hex
        rules = None if naming is None else json.dumps(naming)
        self._write(
            "INSERT INTO jobs (id, gallery, source, archive_path, archive_sha256, state, created,"
            " naming) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                gallery,
                source,
                archive_path,
                archive_sha256,
                state.value,
                time.time(),
                rules,
            ),
        )
        return job_id

    def start(self, job_id: str, total: int) -> bool:
        """Running over ``total`` members; counters and failures restart from zero (resume).

        Only a queued (or interrupted running) job starts: False, and nothing changed, when it
        was cancelled meanwhile (the check and the update are one transaction).
        """
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            started = self._conn.execute(
                "UPDATE jobs SET state = ?, total = ?, added = 0, duplicates = 0, failed = 0,"
                " started = COALESCE(started, ?), error = NULL WHERE id = ? AND state IN (?, ?)",
                (
                    JobState.RUNNING.value,
                    total,
                    time.time(),
                    job_id,
                    JobState.QUEUED.value,
                    JobState.RUNNING.value,
                ),
            ).rowcount
            if started:
                self._conn.execute("DELETE FROM failures WHERE job_id = ?", (job_id,))
        return bool(started)

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel the job if it is still queued (atomically); False when it is not."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            return bool(
                self._conn.execute(
                    "UPDATE jobs SET state = ?, finished = ? WHERE id = ? AND state = ?",
                    (JobState.CANCELLED.value, time.time(), job_id, JobState.QUEUED.value),
                ).rowcount
            )

    def claim(self, job_id: str, external_ids: Sequence[str]) -> None:
        """Record that the job is about to store these items (before the gallery commits)."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO claims VALUES (?, ?)", [(job_id, e) for e in external_ids]
            )

    def claimed(self, job_id: str) -> set[str]:
        """External ids the job claimed in earlier runs (an interrupted job being resumed)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT external_id FROM claims WHERE job_id = ?", (job_id,)
            ).fetchall()
        return {r[0] for r in rows}

    def forget_claims(self, job_id: str) -> None:
        """Drop a finished job's claims."""
        self._write("DELETE FROM claims WHERE job_id = ?", (job_id,))

    def progress(
        self, job_id: str, added: int, duplicates: int, failures: Sequence[Failure], seconds: float
    ) -> None:
        """Add to the counters (one transaction, after the gallery committed the items)."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "UPDATE jobs SET added = added + ?, duplicates = duplicates + ?,"
                " failed = failed + ?, run_seconds = run_seconds + ? WHERE id = ?",
                (added, duplicates, len(failures), seconds, job_id),
            )
            self._conn.executemany(
                "INSERT INTO failures VALUES (?, ?, ?)",
                [(job_id, f.member, f.reason) for f in failures],
            )

    def set_state(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """Move to ``state``; finished states record the time."""
        finished = time.time() if state.finished else None
        self._write(
            "UPDATE jobs SET state = ?, error = COALESCE(?, error), finished = ? WHERE id = ?",
            (state.value, error, finished, job_id),
        )

    def finish(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """Move a queued or running job to the finished ``state``; a finished job is left
        as it is (e.g. cancelled just before its worker failed to open it)."""
        self._write(
            "UPDATE jobs SET state = ?, error = COALESCE(?, error), finished = ?"
            " WHERE id = ? AND state IN (?, ?)",
            (
                state.value,
                error,
                time.time(),
                job_id,
                JobState.QUEUED.value,
                JobState.RUNNING.value,
            ),
        )

    def get(self, job_id: str, with_failures: bool = True) -> JobRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            fails = (
                self._conn.execute(
                    "SELECT member, reason FROM failures WHERE job_id = ? ORDER BY rowid",
                    (job_id,),
                ).fetchall()
                if row is not None and with_failures
                else []
            )
        if row is None:
            return None
        return _record(row, [Failure(m, r) for m, r in fails])

    def recent(self, limit: int = 100) -> list[JobRecord]:
        """The most recent jobs first, without their failure lists."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs ORDER BY created DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_record(r, []) for r in rows]

    def unfinished(self) -> list[JobRecord]:
        """Queued or running jobs, oldest first (to resume after a restart)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY created",
                (JobState.QUEUED.value, JobState.RUNNING.value),
            ).fetchall()
        return [_record(r, []) for r in rows]


def _record(row: tuple[Any, ...], failures: list[Failure]) -> JobRecord:
    return JobRecord(
        id=row[0],
        gallery=row[1],
        source=row[2],
        state=JobState(row[3]),
        total=row[4],
        added=row[5],
        duplicates=row[6],
        failed=row[7],
        error=row[8],
        created=row[9],
        started=row[10],
        finished=row[11],
        run_seconds=row[12],
        archive_path=row[13],
        archive_sha256=row[14],
        failures=failures,
        naming=None if row[15] is None else json.loads(row[15]),
    )
