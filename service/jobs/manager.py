"""Bulk-indexing jobs of the service: upload, queue, one worker thread, cancel, resume.

Uploaded archives are kept under ``<data>/jobs/uploads/`` until their job finishes, so a job
interrupted by a shutdown or a kill is resumed when the service starts again; resuming
re-reads the archive and skips what the gallery already holds (external id = content hash),
so nothing is added twice. Jobs run one at a time, in submission order.

This is the one-machine manager (records in ``<data>/jobs.sqlite3``); with the Milvus backend
the service runs :class:`service.jobs.leased.LeasedJobManager`, which keeps records in Milvus
and uploads in the blob store and runs each job under a lease, so any replica answers for
any job and resumes a job whose replica died. The methods marked as hooks are where the two
differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import tarfile
import threading
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from service.errors import (
    GalleryNotFound,
    InvalidInput,
    JobNotFound,
    NotReindexable,
    ServiceError,
)
from service.gallery import GalleryManager, check_name
from service.jobs import reindex
from service.jobs.pipeline import IndexConfig, IndexProgress, Model, index_source
from service.jobs.rules import NamingRules
from service.jobs.sources import ArchiveLimits, open_source
from service.jobs.store import JobRecord, JobRecords, JobState, JobStore

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
        store: JobRecords | None = None,
    ) -> None:
        """``store``: where job records live (default: ``<data>/jobs.sqlite3``)."""
        self.root = Path(data_dir) / "jobs"
        self.uploads = self.root / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.store: JobRecords = store or JobStore(Path(data_dir) / "jobs.sqlite3")
        self.galleries, self.model, self.config, self.limits = galleries, model, config, limits
        self.max_archive_bytes = max_archive_bytes
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancel: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="index-jobs", daemon=True)

    def start(self) -> None:
        """Re-queue jobs left unfinished by a previous process, remove uploads no job holds
        (a kill during an upload leaves one), then start the worker."""
        unfinished = self.store.unfinished()
        for job in unfinished:
            logger.info("resuming job %s (%s, gallery %s)", job.id, job.source, job.gallery)
            self._queue.put(job.id)
        kept = {Path(j.archive_path).name for j in unfinished if j.archive_path}
        for stray in self.uploads.glob("*.upload"):
            if stray.name not in kept:
                logger.info("removing %s, an upload no job holds", stray)
                stray.unlink(missing_ok=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the worker; a running job goes back to queued and resumes at next start."""
        self._stop.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.store.close()

    def submit(
        self, gallery: str, upload: BinaryIO, filename: str, rules: NamingRules | None = None
    ) -> JobRecord:
        """Store the archive and queue a job for it; returns at once. ``rules`` (camera folder
        level, time source) are recorded in the job and used when it runs."""
        check_name(gallery)
        rules = rules or NamingRules(fps=self.config.fps)
        self._check_gallery(gallery)  # other model: refused now, before the upload
        path = self.uploads / f"{uuid.uuid4().hex}.upload"
        try:
            sha = save_upload(upload, path, self.max_archive_bytes)
            check_archive(path, filename)
            self.galleries.get_or_create(gallery)  # created only for an accepted archive
            archive = self._keep_upload(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        job_id = self.store.create(gallery, filename, archive, sha, naming=rules.to_dict())
        self._queue.put(job_id)
        logger.info("job %s queued: %s (%s) into gallery %s", job_id, filename, sha[:12], gallery)
        return self.get(job_id)

    def submit_reindex(self, gallery: str, allow_partial: bool = False) -> JobRecord:
        """Queue a re-index of ``gallery`` with the served model (:mod:`service.jobs.reindex`);
        :class:`NotReindexable` when it has no crops or a re-index of it is unfinished."""
        check_name(gallery)
        source = reindex.job_source(gallery)
        for job in self.store.unfinished():
            if job.source == source and not job.archive_path:
                raise NotReindexable(
                    f"gallery {gallery!r} is already being re-indexed: job {job.id}"
                )
        reindex.check_reindexable(self.galleries, gallery, allow_partial)
        job_id = self.store.create(gallery, source)
        self._queue.put(job_id)
        logger.info("job %s queued: re-index of gallery %s", job_id, gallery)
        return self.get(job_id)

    def _run_reindex(self, job: JobRecord) -> None:
        """Run a re-index job; cancelled or failed, its new version is dropped."""
        try:
            completed = reindex.reindex_gallery(
                self.galleries,
                job.gallery,
                self.model,
                self.config,
                lambda total: self.store.start(job.id, total),
                self._reporter(job.id),
                lambda: self._should_stop(job.id),
            )
        except Exception as exc:
            if not self._owns(job.id):
                return  # another replica took the job over: its new version is not ours
            reindex.drop_new_version(self.galleries, job.gallery)
            if not isinstance(exc, ServiceError):
                raise
            self._finish(job.id, JobState.FAILED, str(exc))
            return
        if completed:
            self._finish(job.id, JobState.SUCCEEDED)
        elif not self._cancel_requested(job.id):
            self._interrupted(job.id)  # shutting down: resume at start (or on another replica)
        else:  # cancelled (while running, or while queued: then already marked)
            reindex.drop_new_version(self.galleries, job.gallery)
            self._finish(job.id, JobState.CANCELLED)

    def _check_gallery(self, name: str) -> None:
        """Raise :class:`ModelMismatch` when ``name`` exists under another model."""
        with contextlib.suppress(GalleryNotFound):
            self.galleries.get(name)

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
        if job.state == JobState.QUEUED and self.store.cancel_queued(job_id):
            self._discard_upload(job)  # the worker's start() now refuses it
        elif job.state in (JobState.QUEUED, JobState.RUNNING):  # started meanwhile
            self._cancel.add(job_id)
        return self.get(job_id)

    # ------------------------------------------------------------------ hooks
    def _keep_upload(self, path: Path) -> str:
        """Where a saved, accepted upload is kept for its job (recorded as archive_path)."""
        return str(path)

    def _archive_file(self, job: JobRecord) -> contextlib.AbstractContextManager[Path]:
        """The job's archive as a file on this machine, for the time the job runs."""
        return contextlib.nullcontext(Path(job.archive_path or ""))

    def _discard_upload(self, job: JobRecord) -> None:
        if job.archive_path:
            Path(job.archive_path).unlink(missing_ok=True)

    def _cancel_requested(self, job_id: str) -> bool:
        return job_id in self._cancel

    def _owns(self, job_id: str) -> bool:
        """Whether this process may still write the job's progress and outcome."""
        return True

    def _interrupted(self, job_id: str) -> None:
        """A running job stopped without finishing (shutdown): queued again."""
        self.store.set_state(job_id, JobState.QUEUED)

    # ------------------------------------------------------------------ running
    def _should_stop(self, job_id: str) -> bool:
        """Checked by the pipeline between batches."""
        return self._stop.is_set() or self._cancel_requested(job_id) or not self._owns(job_id)

    def _reporter(self, job_id: str) -> Callable[[IndexProgress], None]:
        """What the pipeline calls after each committed batch (dropped once not owned)."""

        def report(p: IndexProgress) -> None:
            if self._owns(job_id):
                self.store.progress(job_id, p.added, p.duplicates, p.failures, p.seconds)

        return report

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
        if not job.archive_path and job.source == reindex.job_source(job.gallery):
            self._run_reindex(job)
            return
        if not job.archive_path:  # a `reid index` run that was killed: nothing to resume here
            msg = "interrupted; run the same `reid index` command again (nothing is added twice)"
            self.store.set_state(job_id, JobState.FAILED, msg)
            return
        with contextlib.ExitStack() as stack:
            try:
                path = stack.enter_context(self._archive_file(job))
            except FileNotFoundError:
                self._finish(job_id, JobState.FAILED, f"the upload of {job.source!r} is gone")
                return
            self._run_archive(job, path)

    def _run_archive(self, job: JobRecord, path: Path) -> None:
        job_id = job.id
        try:
            source = open_source(path, self.limits, label=job.source)
            gallery = self.galleries.get_or_create(job.gallery)
        except ServiceError as exc:
            self._finish(job_id, JobState.FAILED, str(exc))
            return
        if not self.store.start(job_id, len(source.names)):  # cancelled while it was opened
            if self._cancel_requested(job_id):  # asked for, not yet marked (another replica)
                self._finish(job_id, JobState.CANCELLED)
            return
        try:
            completed = index_source(
                source,
                gallery,
                self.model,
                self.config,
                self._reporter(job_id),
                lambda: self._should_stop(job_id),
                NamingRules.from_dict(job.naming) if job.naming else None,
                _Claims(self.store, job_id),
            )
        except Exception as exc:
            if not self._owns(job_id):
                return  # taken over by another replica: its outcome is not ours to write
            if self._gallery_exists(job.gallery):
                if not isinstance(exc, ServiceError):
                    raise
                msg = str(exc)
            else:
                msg = f"gallery {job.gallery!r} was deleted while the job ran"
            self._finish(job_id, JobState.FAILED, msg)
            return
        if completed:
            self._finish(job_id, JobState.SUCCEEDED)
        elif self._cancel_requested(job_id):
            self._finish(job_id, JobState.CANCELLED)
        elif self._owns(job_id):  # shutting down: resume at the next start
            self._interrupted(job_id)

    def _gallery_exists(self, name: str) -> bool:
        try:
            self.galleries.get(name)
        except GalleryNotFound:
            return False
        return True

    def _finish(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """End the job, unless it already ended (a cancel that came first stays) or another
        replica took it over."""
        if not self._owns(job_id):
            return
        self.store.finish(job_id, state, error)
        self.store.forget_claims(job_id)
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


class _Claims:
    """The job store's claims of one job (:class:`service.jobs.pipeline.Claims`)."""

    def __init__(self, store: JobRecords, job_id: str) -> None:
        self.store, self.job_id = store, job_id

    def claimed(self) -> set[str]:
        return self.store.claimed(self.job_id)

    def claim(self, external_ids: list[str]) -> None:
        self.store.claim(self.job_id, external_ids)
