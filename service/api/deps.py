"""Dependencies of the endpoints, as ``Annotated`` aliases over ``app.state``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError

from service.batching import InferenceEngine
from service.errors import ManifestError
from service.gallery import GalleryManager
from service.gallery.manager import NAME_RE
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


GalleryName = Annotated[
    str,
    Path(
        description="Gallery name: 1-64 letters, digits, _ . -, starting with a letter or digit",
        json_schema_extra={"pattern": NAME_RE.pattern},  # checked by the manager: 400 + why
    ),
]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[ModelRuntime, Depends(get_runtime)]
GalleriesDep = Annotated[GalleryManager, Depends(get_galleries)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]


def one_file(field: str) -> Callable[[Request], Awaitable[None]]:
    """Dependency: 422 when the single-file form field ``field`` was sent more than once
    (the endpoint would otherwise take the last one silently)."""

    async def check(request: Request) -> None:
        sent = len((await request.form()).getlist(field))  # parsed once, cached by Starlette
        if sent > 1:
            problem = f"one file expected, {sent} sent"
            error = {"type": "too_many_files", "loc": ("body", field), "msg": problem}
            raise RequestValidationError([error])

    return check
