"""The one place where exceptions become HTTP responses, all of one JSON shape:
``{"error": {"code": ..., "message": ..., "details": ...}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from service.api.schemas import ErrorResponse
from service.errors import (
    CropNotFound,
    GalleryNotFound,
    ImageDecodeError,
    InvalidInput,
    ItemNotFound,
    JobNotFound,
    LocalDistanceUnavailable,
    ManifestError,
    ModelMismatch,
    NotReindexable,
    Overloaded,
    RequestTooLarge,
    ServiceError,
    Unauthorized,
    UnsupportedImageFormat,
)
from service.gallery.attribute_search import UnknownAttribute
from service.gallery.outage import storage_unavailable
from service.jobs.sources import ArchiveError

logger = logging.getLogger(__name__)

# Most specific first: the first matching class decides status and code.
STATUS: list[tuple[type[Exception], int, str]] = [
    (UnsupportedImageFormat, 415, "unsupported_image_format"),
    (ImageDecodeError, 400, "invalid_image"),
    (GalleryNotFound, 404, GalleryNotFound.code),
    (ItemNotFound, 404, ItemNotFound.code),
    (CropNotFound, 404, CropNotFound.code),
    (JobNotFound, 404, JobNotFound.code),
    (Unauthorized, 401, Unauthorized.code),
    (Overloaded, 429, Overloaded.code),
    (ArchiveError, 400, ArchiveError.code),
    (ModelMismatch, 409, ModelMismatch.code),
    (NotReindexable, 409, NotReindexable.code),
    (LocalDistanceUnavailable, 409, LocalDistanceUnavailable.code),
    (UnknownAttribute, 422, UnknownAttribute.code),
    (RequestTooLarge, 413, RequestTooLarge.code),
    (InvalidInput, 400, InvalidInput.code),
    (ManifestError, 503, ManifestError.code),
    (ServiceError, 500, ServiceError.code),
]

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

# For the OpenAPI document: the error shape under the statuses endpoints may answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": desc}
    for status, desc in [
        (400, "Bad input: unreadable image, invalid name or value"),
        (401, "API key missing or wrong (when the service requires keys)"),
        (404, "Gallery or item not found"),
        (
            409,
            "Gallery built with another model, not re-indexable (no stored crops), or without "
            "the local features a local_distance search needs",
        ),
        (413, "Request body too large"),
        (415, "Image is not JPEG, PNG or WebP"),
        (422, "Missing or malformed request fields"),
        (429, "Overloaded: retry after the Retry-After header's seconds"),
        (503, "Gallery storage (Milvus) unreachable: retry after the Retry-After header's seconds"),
    ]
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(status_code=status, content=body, headers=headers)


def overloaded_response(message: str, retry_after_s: float) -> JSONResponse:
    """429 with Retry-After, in the one error shape."""
    headers = {"Retry-After": str(max(0, round(retry_after_s)))}
    return error_response(429, Overloaded.code, message, headers=headers)


def _headers(request: Request, exc: Exception) -> dict[str, str] | None:
    if isinstance(exc, Overloaded):
        request.app.state.metrics.rejected.labels("model_queue").inc()
        return {"Retry-After": str(request.app.state.settings.retry_after_s)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="reid"'}
    return None


def classify(exc: Exception) -> tuple[int, str]:
    """HTTP status and error code of a domain exception."""
    for cls, status, code in STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    status, code = classify(exc)
    if status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(status, code, str(exc), headers=_headers(request, exc))


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details) or "invalid request"
    return error_response(422, "validation_error", summary, details)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # RFC 9110: every method of every route on this path
        headers["Allow"] = ", ".join(allowed_methods(request.app.state.routes, request.scope))
    return error_response(exc.status_code, code, str(exc.detail), headers=headers or None)


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves on ``scope``'s path."""
    methods: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s: gallery storage unavailable: %s", request.method, request.url.path, exc)
    return error_response(
        503,
        "storage_unavailable",
        "the gallery storage cannot be reached right now; retry after Retry-After seconds",
        headers={"Retry-After": str(request.app.state.settings.retry_after_s)},
    )


async def _storage(request: Request, exc: Exception) -> JSONResponse:
    """An error of the Milvus client: 503 when it cannot reach its server, else a 500."""
    if storage_unavailable(exc):
        return _unavailable(request, exc)
    logger.exception("%s %s: gallery storage error", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the service log")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if storage_unavailable(exc):  # a Milvus client error wrapped in another exception
        return _unavailable(request, exc)
    logger.exception("%s %s: unexpected error", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the service log")


def _storage_client_errors(app: FastAPI) -> list[type[Exception]]:
    """The Milvus client's exception classes, where the app uses Milvus (their own handler
    answers without the re-raise that Starlette does after a catch-all handler)."""
    if app.state.settings.gallery_backend != "milvus":
        return []
    import grpc
    from pymilvus import MilvusException

    return [MilvusException, grpc.RpcError]


def install_error_handlers(app: FastAPI) -> None:
    """Register the translation of every exception into the one error shape."""
    app.add_exception_handler(ServiceError, _domain)
    app.add_exception_handler(ImageDecodeError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    for cls in _storage_client_errors(app):
        app.add_exception_handler(cls, _storage)
    app.add_exception_handler(Exception, _unexpected)
