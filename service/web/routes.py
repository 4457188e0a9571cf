"""Routes of the try-it page: ``GET /`` (the page) and ``GET /ui/{name}`` (its assets).

Only the files listed in :data:`ASSETS` are served, read from this package's folder, so
nothing else on disk (this module included) is reachable through these routes.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent
"""Folder of the page's files (this package)."""

ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""Served file name -> its media type."""

# The page loads only its own script and style and talks only to this service; item
# thumbnails arrive as data: URIs and the query preview as a blob: URL.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@cache
def read_asset(name: str) -> bytes:
    """Bytes of one of :data:`ASSETS` (read once per process)."""
    if name not in ASSETS:
        raise StarletteHTTPException(
            404, f"no page file {name!r}; the page's files are {', '.join(sorted(ASSETS))}"
        )
    path = WEB_DIR / name
    try:
        return path.read_bytes()
    except OSError as exc:  # a broken install: package data missing
        logger.error("page file %s cannot be read: %s", path, exc)
        raise StarletteHTTPException(404, f"page file {name!r} is missing from {WEB_DIR}") from None


def asset_response(name: str) -> Response:
    """One page file with its media type, revalidated on each load, under the page's CSP."""
    return Response(
        read_asset(name),
        media_type=ASSETS[name],
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/")
def page() -> Response:
    """The try-it page."""
    return asset_response("index.html")


@router.get("/ui/{name}")
def asset(name: str) -> Response:
    """The page's script and style sheet."""
    return asset_response(name)
