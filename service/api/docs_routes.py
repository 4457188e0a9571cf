"""API docs that work without internet: ``/docs`` (Swagger UI) and ``/redoc``.

FastAPI's own docs pages load Swagger UI's and ReDoc's JavaScript and CSS from a public CDN,
so on a network without internet (camera networks often are) they are blank pages. These
routes serve the same pages (FastAPI's ``get_swagger_ui_html`` / ``get_redoc_html``) with
the assets that the ``fastapi-offline`` package ships, under ``/docs/assets/``. Nothing on
them is loaded from another host; their Content-Security-Policy says so to the browser too
(the pages' one inline start-up script and Swagger UI's inline styles are allowed).
The app is created with ``docs_url=None, redoc_url=None`` and includes :data:`router`.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import metadata, resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
ASSET_PACKAGE = "fastapi_offline"
"""The package whose ``static/`` folder holds the assets."""
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
"""Served asset name -> its media type; nothing else of the package is reachable."""
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSET_MAX_AGE_S = 86_400
"""Browser cache lifetime of the assets; their URLs carry the package version."""

router = APIRouter(include_in_schema=False)


def asset_version() -> str:
    """Version of the asset package, appended to asset URLs so upgrades bust caches."""
    try:
        return metadata.version(ASSET_PACKAGE.replace("_", "-"))
    except metadata.PackageNotFoundError:  # pragma: no cover - a broken install
        return "0"


def asset_url(request: Request, name: str) -> str:
    """URL of asset ``name``, below the app's root path (behind a path-prefix proxy)."""
    return f"{request.scope.get('root_path', '')}{ASSETS_URL}/{name}?v={asset_version()}"


@cache
def read_asset(name: str) -> bytes:
    """Bytes of one of :data:`ASSETS` from the package (read once per process)."""
    if name not in ASSETS:
        raise StarletteHTTPException(
            404, f"no docs asset {name!r}; the docs assets are {', '.join(sorted(ASSETS))}"
        )
    try:
        return (resources.files(ASSET_PACKAGE) / "static" / name).read_bytes()
    except (OSError, ModuleNotFoundError) as exc:  # a broken install
        logger.error("docs asset %s cannot be read from %s: %s", name, ASSET_PACKAGE, exc)
        raise StarletteHTTPException(
            404, f"docs asset {name!r} is missing: install {ASSET_PACKAGE.replace('_', '-')}"
        ) from None


def _page(html: HTMLResponse) -> HTMLResponse:
    html.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    html.headers["Cache-Control"] = "no-cache"
    return html


@router.get(DOCS_URL)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over this service's OpenAPI schema, assets from this service."""
    root, app = request.scope.get("root_path", ""), request.app
    return _page(
        get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset_url(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset_url(request, "swagger-ui.css"),
            swagger_favicon_url=asset_url(request, "favicon.png"),
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )
    )


@router.get(OAUTH2_REDIRECT_URL)
def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page (inline script only)."""
    return _page(get_swagger_ui_oauth2_redirect_html())


@router.get(REDOC_URL)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this service's OpenAPI schema, without Google Fonts."""
    root, app = request.scope.get("root_path", ""), request.app
    return _page(
        get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset_url(request, "redoc.standalone.js"),
            redoc_favicon_url=asset_url(request, "favicon.png"),
            with_google_fonts=False,
        )
    )


@router.get(ASSETS_URL + "/{name}")
def asset(name: str) -> Response:
    """One docs asset, cacheable (its URL changes with the package version)."""
    return Response(
        read_asset(name),
        media_type=ASSETS[name],
        headers={
            "Cache-Control": f"public, max-age={ASSET_MAX_AGE_S}",
            "X-Content-Type-Options": "nosniff",
        },
    )
