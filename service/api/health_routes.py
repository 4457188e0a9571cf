"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.auth import has_valid_key, key_needed
from service.api.schemas import GallerySummary, HealthResponse, ReadyResponse
from service.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Alive")
def healthz() -> HealthResponse:
    """The process answers."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    summary="Ready: model loaded, galleries open",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Not ready"}},
)
def readyz(request: Request) -> ReadyResponse | JSONResponse:
    """Model, execution providers the session really got, and every gallery's state (null
    when auth_mode=all and /metrics is private, unless the request carries a valid key)."""
    state = request.app.state
    runtime, galleries = getattr(state, "runtime", None), getattr(state, "galleries", None)
    if runtime is None or galleries is None:
        body = ReadyResponse(ready=False, model={}, providers=[], faiss_gpus=0, galleries=[])
        return JSONResponse(status_code=503, content=body.model_dump(mode="json"))
    m = runtime.manifest
    return ReadyResponse(
        ready=True,
        model={
            "name": m.name,
            "version": m.version,
            "sha256": m.model_id,
            "dim": runtime.dim,
            "variant": state.settings.model_variant,
            "attributes": runtime.schema.names,
        },
        providers=runtime.providers,
        faiss_gpus=state.faiss_gpus,
        galleries=[GallerySummary(**s.__dict__) for s in galleries.statuses()]
        if may_see_galleries(state.settings, request)
        else None,
    )


def may_see_galleries(settings: Settings, request: Request) -> bool:
    """Whether the caller may learn gallery names and sizes: it can read /v1/galleries or
    /metrics (which name them) without a key, or carries a valid key."""
    if not (key_needed(settings, "read") and key_needed(settings, "metrics")):
        return True
    return has_valid_key(settings, request.headers)
