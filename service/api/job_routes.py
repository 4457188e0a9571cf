"""Bulk-indexing jobs: upload an archive, follow its progress, cancel it."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from pydantic import Field

from service.api.auth import require_read, require_write
from service.api.deps import GalleryName, JobsDep, one_file
from service.api.errors import ERROR_RESPONSES
from service.api.schemas import (
    ARCHIVE_TYPES,
    NULL_FORM,
    JobFailure,
    JobResponse,
    JobsResponse,
    from_epoch,
    links,
    multipart,
)
from service.errors import InvalidInput
from service.jobs import JobRecord
from service.jobs.rules import NamingRuleError, NamingRules

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"], responses=ERROR_RESPONSES)

JobId = Annotated[str, Path(description="Job id returned when the job was submitted")]
JOB_LINK = {"job_id": "$response.body#/id"}


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
        naming=job.naming,
    )


@router.post(
    "/galleries/{gallery}/jobs",
    status_code=202,
    summary="Bulk-index an archive of crops (tar or zip) into a gallery",
    dependencies=[Depends(require_write), Depends(one_file("archive"))],
    openapi_extra=multipart(archive=ARCHIVE_TYPES),
    responses=links(
        202,
        "The queued job",
        get_job=JOB_LINK,
        cancel_job=JOB_LINK,
    ),
)
def submit_job(
    gallery: GalleryName,
    archive: Annotated[
        UploadFile,
        File(
            description="tar (plain, gz, bz2, xz) or zip of JPEG/PNG/WebP crops named like "
            "Market-1501 (0002_c1s1_000451_03.jpg) or listed in a manifest.csv/manifest.json "
            "with file, camera and timestamp; other names take their camera from their "
            "folder (<camera>/<file>)"
        ),
    ],
    jobs: JobsDep,
    camera_level: Annotated[
        Annotated[int, Field(ge=1)] | None,
        NULL_FORM,
        Form(description="Folder level naming the camera, 1 = top (default: own folder)"),
    ] = None,
    time: Annotated[
        Literal["auto", "exif", "name", "mtime", "none"] | None,
        NULL_FORM,
        Form(description="Time source: auto (manifest or dataset name), exif, name, mtime, none"),
    ] = None,
    time_format: Annotated[
        Annotated[str, Field(max_length=200)] | None,
        NULL_FORM,
        Form(description="strftime pattern found in file names"),
    ] = None,
    time_regex: Annotated[
        Annotated[str, Field(max_length=500)] | None,
        NULL_FORM,
        Form(description="regex whose group 1 holds the time"),
    ] = None,
) -> JobResponse:
    """Store the archive and return the queued job at once; follow it at ``/v1/jobs/{id}``.

    Re-submitting the same crops adds nothing twice: an item's external id is the sha256 of
    its bytes.
    """
    try:
        rules = NamingRules.create(camera_level, time, time_format, time_regex, jobs.config.fps)
    except NamingRuleError as exc:
        raise InvalidInput(str(exc)) from None
    return job_response(jobs.submit(gallery, archive.file, archive.filename or "archive", rules))


@router.get("/jobs", summary="Recent jobs", dependencies=[Depends(require_read)])
def list_jobs(jobs: JobsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobsResponse:
    """Most recent first, without their failure lists."""
    return JobsResponse(jobs=[job_response(j, with_failures=False) for j in jobs.recent(limit)])


@router.get(
    "/jobs/{job_id}",
    summary="A job's progress and report",
    dependencies=[Depends(require_read)],
    operation_id="get_job",
)
def get_job(job_id: JobId, jobs: JobsDep) -> JobResponse:
    """State, counts, images/s and every failed member with its reason."""
    return job_response(jobs.get(job_id))


@router.delete(
    "/jobs/{job_id}",
    summary="Cancel a job (deprecated: use POST /v1/jobs/{job_id}/cancel)",
    dependencies=[Depends(require_write)],
    operation_id="delete_job",
    deprecated=True,  # a DELETE that leaves the job readable is not what HTTP DELETE means
)
def delete_job(job_id: JobId, jobs: JobsDep) -> JobResponse:
    """Same as ``POST /v1/jobs/{id}/cancel``, kept for older clients: the job is not deleted."""
    return job_response(jobs.cancel(job_id))


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job",
    dependencies=[Depends(require_write)],
    operation_id="cancel_job",
)
def cancel_job(job_id: JobId, jobs: JobsDep) -> JobResponse:
    """Cancel a queued or running job; items already added stay, and the job stays readable
    at ``GET /v1/jobs/{id}``. Finished jobs are unchanged."""
    return job_response(jobs.cancel(job_id))
