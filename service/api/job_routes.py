"""Bulk-indexing jobs: upload an archive, follow its progress, cancel it."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, Query, UploadFile

from service.api.auth import require_read, require_write
from service.api.deps import JobsDep
from service.api.errors import ERROR_RESPONSES
from service.api.schemas import JobFailure, JobResponse, JobsResponse, from_epoch
from service.jobs import JobRecord

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"], responses=ERROR_RESPONSES)

JobId = Annotated[str, Path(description="Job id returned when the job was submitted")]


def job_response(job: JobRecord, with_failures: bool = True) -> JobResponse:
    return JobResponse(
        id=job.id,
        gallery=job.gallery,
        source=job.source,
        state=job.state.value,
        total=job.total,
        done=job.done,
        added=job.added,
        duplicates=job.duplicates,
        failed=job.failed,
        images_per_second=job.images_per_second,
        error=job.error,
        created=from_epoch(job.created),
        started=None if job.started is None else from_epoch(job.started),
        finished=None if job.finished is None else from_epoch(job.finished),
        archive_sha256=job.archive_sha256,
        failures=[JobFailure(member=f.member, reason=f.reason) for f in job.failures]
        if with_failures
        else None,
    )


@router.post(
    "/galleries/{gallery}/jobs",
    status_code=202,
    summary="Bulk-index an archive of crops (tar or zip) into a gallery",
    dependencies=[Depends(require_write)],
)
def submit_job(
    gallery: Annotated[str, Path(description="Gallery name (created on first use)")],
    archive: Annotated[
        UploadFile,
        File(
            description="tar (plain, gz, bz2, xz) or zip of JPEG/PNG/WebP crops named like "
            "Market-1501 (0002_c1s1_000451_03.jpg) or listed in a manifest.csv/manifest.json "
            "with file, camera and timestamp"
        ),
    ],
    jobs: JobsDep,
) -> JobResponse:
    """Store the archive and return the queued job at once; follow it at ``/v1/jobs/{id}``.

    Re-submitting the same crops adds nothing twice: an item's external id is the sha256 of
    its bytes.
    """
    return job_response(jobs.submit(gallery, archive.file, archive.filename or "archive"))


@router.get("/jobs", summary="Recent jobs", dependencies=[Depends(require_read)])
def list_jobs(jobs: JobsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobsResponse:
    """Most recent first, without their failure lists."""
    return JobsResponse(jobs=[job_response(j, with_failures=False) for j in jobs.recent(limit)])


@router.get(
    "/jobs/{job_id}", summary="A job's progress and report", dependencies=[Depends(require_read)]
)
def get_job(job_id: JobId, jobs: JobsDep) -> JobResponse:
    """State, counts, images/s and every failed member with its reason."""
    return job_response(jobs.get(job_id))


@router.delete("/jobs/{job_id}", summary="Cancel a job", dependencies=[Depends(require_write)])
def delete_job(job_id: JobId, jobs: JobsDep) -> JobResponse:
    """Cancel a queued or running job; items already added stay. Finished jobs are unchanged."""
    return job_response(jobs.cancel(job_id))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job", dependencies=[Depends(require_write)])
def cancel_job(job_id: JobId, jobs: JobsDep) -> JobResponse:
    """Same as ``DELETE /v1/jobs/{id}``."""
    return job_response(jobs.cancel(job_id))
