"""Bulk-indexing jobs shared by service replicas (``REID_GALLERY_BACKEND=milvus``).

Every replica reaches the same three things, so any replica answers for any job and a job
outlives the replica that accepted it (``docs/scale-out.md``):

- the record and progress: :class:`service.jobs.milvus_jobs.MilvusJobStore`, read at Strong
  consistency;
- the uploaded archive: the deployment's blob store (S3/MinIO, or a directory every replica
  mounts), under ``_jobs/`` (gallery names start with a letter or digit, so no gallery's crops
  live there);
- who runs the job: a lease in the store. Each replica's worker takes the lease of a job that
  was just submitted to it, or of the oldest job that is queued or whose lease expired (its
  replica died), renews it on a heartbeat while it runs, and gives it back at the end.

A replica that stops renewing (killed, cut off) loses the job once the lease expires; the
replica that takes it over replays the archive from the start: members the gallery already
holds are skipped by their content sha256 and those the job's claims name count as added, so
the final counts are exact and nothing is added twice. A replica writes progress only while
its lease is valid by its own clock (less a margin for clock skew): once it may have been
taken over it stops without writing anything.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service.gallery import GalleryManager
from service.gallery.blobs import BlobStore, sweep_orphans
from service.jobs.manager import JobManager
from service.jobs.milvus_jobs import Lease
from service.jobs.pipeline import IndexConfig, Model
from service.jobs.sources import ArchiveLimits
from service.jobs.store import JobRecord, JobRecords, JobState

logger = logging.getLogger(__name__)

UPLOADS = "_jobs"
"""Blob key folder of uploaded archives."""
SWEEP_AGE_S = 3600.0
"""Uploads no unfinished job names are removed at start once older than this (a replica
killed between storing an upload and recording its job leaves one)."""
SKEW = 0.2
"""Share of a lease not relied on, for the clocks of two replicas disagreeing."""
BEATS_PER_LEASE = 4
"""Renewals per lease length."""


class LeasedRecords(JobRecords, Protocol):
    """Job records with leases and cancel requests (:class:`MilvusJobStore`)."""

    def take_lease(self, job_id: str, seconds: float) -> Lease | None: ...

    def renew_lease(self, lease: Lease, seconds: float) -> bool: ...

    def release_lease(self, lease: Lease) -> None: ...

    def request_cancel(self, job_id: str) -> None: ...

    def cancel_requested(self, job_id: str) -> bool: ...


@dataclass(frozen=True)
class LeaseTimes:
    """How replicas share jobs (settings ``job_lease_s``, ``job_poll_s``)."""

    lease_s: float = 30.0
    """A job's lease length: a dead replica's job is taken over this long after its last
    renewal."""
    poll_s: float = 5.0
    """How often an idle worker looks for queued jobs and expired leases."""


class Heartbeat:
    """Keeps one job's lease while this replica runs it, and hears of cancels.

    Used as a context manager around the run: a thread renews the lease every
    ``1/BEATS_PER_LEASE`` of its length and reads whether a cancel was requested (by any
    replica); the lease is given back at the end while still held.
    """

    def __init__(self, store: LeasedRecords, lease: Lease, seconds: float, taken_at: float):
        """``taken_at``: ``time.monotonic()`` just before the lease was taken."""
        self.store, self.lease, self.seconds = store, lease, seconds
        self.valid_until = taken_at + seconds * (1 - SKEW)
        self.lost = threading.Event()
        """Set once a renewal was refused: another replica holds the job."""
        self.cancel = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{lease.job_id[:8]}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._check_cancel()  # a job cancelled before its run starts is not started
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        if self.holds():
            try:
                self.store.release_lease(self.lease)
            except Exception:  # the store unreachable: the lease expires instead
                logger.warning("job %s: lease not released", self.lease.job_id, exc_info=True)

    def holds(self) -> bool:
        """Whether no other replica can have taken the job over yet."""
        return not self.lost.is_set() and time.monotonic() < self.valid_until

    def _beat(self) -> None:
        while not self._done.wait(self.seconds / BEATS_PER_LEASE):
            self._renew()
            self._check_cancel()

    def _check_cancel(self) -> None:
        with contextlib.suppress(Exception):  # unreachable: asked again at the next beat
            if self.store.cancel_requested(self.lease.job_id):
                self.cancel.set()

    def _renew(self) -> None:
        started = time.monotonic()
        try:
            renewed = self.store.renew_lease(self.lease, self.seconds)
        except Exception as exc:  # unreachable: holds() runs out unless a later renewal works
            logger.warning("job %s: lease not renewed (%s)", self.lease.job_id, exc)
            return
        if renewed:
            self.valid_until = started + self.seconds * (1 - SKEW)
        else:
            self.lost.set()
            logger.warning("job %s: taken over by another replica; stopping", self.lease.job_id)


class LeasedJobManager(JobManager):
    """The jobs of every replica: records in a :class:`LeasedRecords`, uploads in a
    :class:`BlobStore`, each run under a lease (see the module's note)."""

    def __init__(
        self,
        data_dir: Path,
        galleries: GalleryManager,
        model: Model,
        config: IndexConfig,
        limits: ArchiveLimits,
        max_archive_bytes: int,
        store: LeasedRecords,
        blobs: BlobStore,
        times: LeaseTimes | None = None,
    ) -> None:
        super().__init__(data_dir, galleries, model, config, limits, max_archive_bytes, store)
        self.shared, self.blobs = store, blobs
        self.times = times or LeaseTimes()
        self._beat: Heartbeat | None = None
        """The lease of the job this replica's worker runs now."""

    def start(self) -> None:
        """Remove this replica's leftover local copies and old uploads no job names, then
        start the worker (it resumes what is unfinished, whichever replica accepted it)."""
        for stray in [*self.uploads.glob("*.upload"), *self.uploads.glob(".blob-*")]:
            stray.unlink(missing_ok=True)
        kept = lambda: {j.archive_path for j in self.store.unfinished() if j.archive_path}  # noqa: E731
        swept = sweep_orphans(self.blobs, UPLOADS, kept, SWEEP_AGE_S)
        if swept:
            logger.info("removed %d uploads no job holds", swept)
        self._thread.start()

    def cancel(self, job_id: str) -> JobRecord:
        """Ask the replica running the job to stop (it reads the request between batches);
        a queued job is cancelled at once."""
        job = self.get(job_id)
        if job.state.finished:
            return job
        self.shared.request_cancel(job_id)
        beat = self._beat
        if beat is not None and beat.lease.job_id == job_id:
            beat.cancel.set()
        if job.state == JobState.QUEUED and self.store.cancel_queued(job_id):
            self._discard_upload(job)
        return self.get(job_id)

    # ------------------------------------------------------------------ hooks
    def _keep_upload(self, path: Path) -> str:
        key = f"{UPLOADS}/{path.name}"
        with open(path, "rb") as src:
            self.blobs.put_file(key, src)
        path.unlink()
        return key

    def _archive_file(self, job: JobRecord) -> contextlib.AbstractContextManager[Path]:
        return self.blobs.local_file(job.archive_path or "", self.uploads)

    def _discard_upload(self, job: JobRecord) -> None:
        if job.archive_path:
            self.blobs.delete([job.archive_path])

    def _cancel_requested(self, job_id: str) -> bool:
        beat = self._beat
        here = beat is not None and beat.lease.job_id == job_id and beat.cancel.is_set()
        return here or job_id in self._cancel

    def _owns(self, job_id: str) -> bool:
        beat = self._beat
        return beat is not None and beat.lease.job_id == job_id and beat.holds()

    def _interrupted(self, job_id: str) -> None:
        if self._owns(job_id):
            self.store.set_state(job_id, JobState.QUEUED)  # any replica takes it on release

    # ------------------------------------------------------------------ the worker
    def _work(self) -> None:
        wait = 0.0
        while not self._stop.is_set():
            try:
                hint = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                hint = ""
            if hint is None:
                break
            try:
                ran = self._run_next(hint)
            except Exception as exc:  # the store unreachable: try again at the next poll
                logger.warning(
                    "jobs: no work looked for (%s); again in %s s", exc, self.times.poll_s
                )
                ran = False
            wait = 0.0 if ran else self.times.poll_s

    def _run_next(self, hint: str) -> bool:
        """Run the job ``hint`` (just submitted here), or else the oldest unfinished job
        whose lease this replica can take; False when there was none."""
        for job_id in [hint] if hint else [j.id for j in self.store.unfinished()]:
            taken_at = time.monotonic()
            lease = self.shared.take_lease(job_id, self.times.lease_s)
            if lease is not None:
                self._run_leased(lease, taken_at)
                return True
        return False

    def _run_leased(self, lease: Lease, taken_at: float) -> None:
        with Heartbeat(self.shared, lease, self.times.lease_s, taken_at) as beat:
            self._beat = beat
            try:
                self._run(lease.job_id)
            except Exception as exc:
                logger.exception("job %s: unexpected error", lease.job_id)
                self._fail(lease.job_id, exc)
            finally:
                self._beat = None

    def _fail(self, job_id: str, exc: Exception) -> None:
        """Record an unexpected error as the job's failure; where even that cannot be
        written (the store unreachable), the lease runs out and the job is resumed."""
        try:
            self._finish(job_id, JobState.FAILED, f"internal error: {_describe(exc)}")
        except Exception:
            logger.warning("job %s: failure not recorded; resumed once its lease expires", job_id)


def _describe(exc: Any) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
