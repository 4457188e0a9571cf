"""Dependencies of the endpoints, as ``Annotated`` aliases over ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.batching import InferenceEngine
from service.errors import ManifestError
from service.gallery import GalleryManager
from service.jobs import JobManager
from service.runtime import ModelRuntime
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_runtime(request: Request) -> ModelRuntime:
    runtime: ModelRuntime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ManifestError("the model is not loaded")
    return runtime


def get_galleries(request: Request) -> GalleryManager:
    galleries: GalleryManager | None = getattr(request.app.state, "galleries", None)
    if galleries is None:
        raise ManifestError("the galleries are not open")
    return galleries


def get_engine(request: Request) -> InferenceEngine:
    engine: InferenceEngine | None = getattr(request.app.state, "engine", None)
    if engine is None:
        raise ManifestError("the model is not loaded")
    return engine


def get_jobs(request: Request) -> JobManager:
    jobs: JobManager | None = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise ManifestError("the job manager is not running")
    return jobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[ModelRuntime, Depends(get_runtime)]
GalleriesDep = Annotated[GalleryManager, Depends(get_galleries)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
