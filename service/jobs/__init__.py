"""Bulk indexing: archive and folder sources, the indexing pipeline and persistent jobs."""

from service.jobs.manager import JobManager
from service.jobs.pipeline import IndexConfig, IndexProgress, index_source
from service.jobs.sources import ArchiveLimits, Member, Source, open_source
from service.jobs.store import Failure, JobRecord, JobState, JobStore

__all__ = [
    "ArchiveLimits",
    "Failure",
    "IndexConfig",
    "IndexProgress",
    "JobManager",
    "JobRecord",
    "JobState",
    "JobStore",
    "Member",
    "Source",
    "index_source",
    "open_source",
]
