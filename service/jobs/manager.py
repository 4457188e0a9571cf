"""Bulk-indexing jobs of the service: upload, queue, one worker thread, cancel, resume.

Uploaded archives are kept under ``<data>/jobs/uploads/`` until their job finishes, so a job
interrupted by a shutdown or a kill is resumed when the service starts again; resuming
re-reads the archive and skips what the gallery already holds (external id = content hash),
so nothing is added twice. Jobs run one at a time, in submission order.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path
from typing import BinaryIO

from service.errors import InvalidInput, JobNotFound, ServiceError
from service.gallery import GalleryManager, check_name
from service.jobs.pipeline import IndexConfig, IndexProgress, Model, index_source
from service.jobs.sources import ArchiveLimits, open_source
from service.jobs.store import JobRecord, JobState, JobStore

logger = logging.getLogger(__name__)

COPY_CHUNK = 2**20


def save_upload(upload: BinaryIO, path: Path, max_bytes: int) -> str:
    """Copy an upload to ``path`` and return its sha256; refuses more than ``max_bytes``."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as out:
        while chunk := upload.read(COPY_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise InvalidInput(f"archive is over the limit of {max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def check_archive(path: Path, filename: str) -> None:
    """Cheap check that ``path`` is a zip or tar archive (the full scan runs in the job)."""
    try:
        ok = zipfile.is_zipfile(path) or tarfile.is_tarfile(path)
    except OSError:
        ok = False
    if not ok:
        raise InvalidInput(f"{filename!r} is not a tar (optionally gz/bz2/xz) or zip archive")


class JobManager:
    """Persistent jobs of one data directory, run by one background thread."""

    def __init__(
        self,
        data_dir: Path,
        galleries: GalleryManager,
        model: Model,
        config: IndexConfig,
        limits: ArchiveLimits,
        max_archive_bytes: int,
    ) -> None:
        self.root = Path(data_dir) / "jobs"
        self.uploads = self.root / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(Path(data_dir) / "jobs.sqlite3")
        self.galleries, self.model, self.config, self.limits = galleries, model, config, limits
        self.max_archive_bytes = max_archive_bytes
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancel: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="index-jobs", daemon=True)

    def start(self) -> None:
        """Re-queue jobs left unfinished by a previous process, then start the worker."""
        for job in self.store.unfinished():
            logger.info("resuming job %s (%s, gallery %s)", job.id, job.source, job.gallery)
            self._queue.put(job.id)
        self._thread.start()

    def close(self) -> None:
        """Stop the worker; a running job goes back to queued and resumes at next start."""
        self._stop.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.store.close()

    def submit(self, gallery: str, upload: BinaryIO, filename: str) -> JobRecord:
        """Store the archive and queue a job for it; returns at once."""
        check_name(gallery)
        self.galleries.get_or_create(gallery)  # invalid name or other model: refused now
        path = self.uploads / f"{uuid.uuid4().hex}.upload"
        try:
            sha = save_upload(upload, path, self.max_archive_bytes)
            check_archive(path, filename)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        job_id = self.store.create(gallery, filename, str(path), sha)
        self._queue.put(job_id)
        logger.info("job %s queued: %s (%s) into gallery %s", job_id, filename, sha[:12], gallery)
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def recent(self, limit: int = 100) -> list[JobRecord]:
        return self.store.recent(limit)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job (items already added stay); finished jobs unchanged."""
        job = self.get(job_id)
        if job.state == JobState.QUEUED:
            self.store.set_state(job_id, JobState.CANCELLED)
            self._discard_upload(job)
        elif job.state == JobState.RUNNING:
            self._cancel.add(job_id)
        return self.get(job_id)

    def _work(self) -> None:
        while not self._stop.is_set():
            job_id = self._queue.get()
            if job_id is None:
                break
            try:
                self._run(job_id)
            except Exception:  # never let the worker die
                logger.exception("job %s: unexpected error", job_id)
                self._finish(job_id, JobState.FAILED, "internal error; see the service log")

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id, with_failures=False)
        if job is None or job.state.finished:
            return
        if not job.archive_path:  # a `reid index` run that was killed: nothing to resume here
            msg = "interrupted; run the same `reid index` command again (nothing is added twice)"
            self.store.set_state(job_id, JobState.FAILED, msg)
            return
        try:
            source = open_source(job.archive_path or "", self.limits)
            gallery = self.galleries.get_or_create(job.gallery)
        except ServiceError as exc:
            self._finish(job_id, JobState.FAILED, str(exc))
            return
        self.store.start(job_id, len(source.names))

        def report(p: IndexProgress) -> None:
            self.store.progress(job_id, p.added, p.duplicates, p.failures, p.seconds)

        try:
            completed = index_source(
                source,
                gallery,
                self.model,
                self.config,
                report,
                lambda: job_id in self._cancel or self._stop.is_set(),
            )
        except ServiceError as exc:
            self._finish(job_id, JobState.FAILED, str(exc))
            return
        if completed:
            self._finish(job_id, JobState.SUCCEEDED)
        elif job_id in self._cancel:
            self._finish(job_id, JobState.CANCELLED)
        else:  # shutting down: resume at the next start
            self.store.set_state(job_id, JobState.QUEUED)

    def _finish(self, job_id: str, state: JobState, error: str | None = None) -> None:
        self.store.set_state(job_id, state, error)
        self._cancel.discard(job_id)
        job = self.store.get(job_id, with_failures=False)
        if job is not None:
            self._discard_upload(job)
            logger.info(
                "job %s %s: %d added, %d duplicates, %d failed%s",
                job_id,
                state.value,
                job.added,
                job.duplicates,
                job.failed,
                f" ({error})" if error else "",
            )

    def _discard_upload(self, job: JobRecord) -> None:
        if job.archive_path:
            Path(job.archive_path).unlink(missing_ok=True)
