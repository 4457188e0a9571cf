"""Optional API keys: none, write endpoints only, or every /v1 endpoint.

The key comes in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (both, if sent, must be
valid; a malformed ``Authorization`` counts as a wrong key) and is compared with
every configured key in constant time (``hmac.compare_digest``, no early exit), so timing
says nothing about which key or how much of it matched. /healthz and /readyz never need a
key; /metrics needs one only when ``metrics_public`` is false and auth is on.

What a route needs is declared once, by its dependency (:func:`require_read`,
:func:`require_write`, :func:`require_metrics`). :class:`service.asgi.AuthGate` reads that
declaration and refuses keyless requests from their headers alone, before any byte of
their body is read; the dependencies check again inside the app.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from fastapi import Request
from pydantic import SecretStr
from starlette.routing import BaseRoute

from service.errors import Unauthorized
from service.settings import Settings

logger = logging.getLogger(__name__)

Need = Literal["read", "write", "metrics"]
"""What a route does: reads /v1 data, changes galleries or jobs, or serves /metrics."""

MISSING_KEY = "this endpoint needs an API key (Authorization: Bearer KEY or X-API-Key)"
WRONG_KEY = "the API key is not valid"


def presented_keys(headers: Mapping[str, str]) -> list[str | None]:
    """Every credential the headers carry: the ``Authorization`` value (None unless it is
    ``Bearer KEY``) and the ``X-API-Key`` value, for those present. ``headers``:
    case-insensitive."""
    keys: list[str | None] = []
    if "authorization" in headers:
        scheme, _, value = headers["authorization"].partition(" ")
        keys.append(value.strip() or None if scheme.lower() == "bearer" else None)
    if "x-api-key" in headers:
        keys.append(headers["x-api-key"] or None)
    return keys


def key_matches(given: str, keys: list[SecretStr]) -> bool:
    """Whether ``given`` equals one of ``keys``, in time independent of where they differ."""
    g = given.encode()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(g, k.get_secret_value().encode())
    return ok


def has_valid_key(settings: Settings, headers: Mapping[str, str]) -> bool:
    """Whether the headers carry a configured key, and nothing that is not one."""
    return refusal_of_keys(settings, presented_keys(headers)) is None


def refusal_of_keys(settings: Settings, presented: list[str | None]) -> str | None:
    """Why ``presented`` credentials are refused, or None: every one must be a valid key
    (a wrong or malformed one next to a right one is still refused)."""
    if not presented:
        return MISSING_KEY
    valid = [k is not None and key_matches(k, settings.api_keys) for k in presented]
    return None if all(valid) else WRONG_KEY


def key_needed(settings: Settings, need: Need | None) -> bool:
    """Whether a request of kind ``need`` must carry a key under ``settings``."""
    if need is None or settings.auth_mode == "none":
        return False
    if need == "read":
        return settings.auth_mode == "all"
    if need == "metrics":
        return not settings.metrics_public
    return True


def refusal(settings: Settings, need: Need | None, headers: Mapping[str, str]) -> str | None:
    """Why a request of kind ``need`` with ``headers`` is refused (401), or None."""
    if not key_needed(settings, need):
        return None
    return refusal_of_keys(settings, presented_keys(headers))


def _enforce(request: Request, need: Need) -> None:
    message = refusal(request.app.state.settings, need, request.headers)
    if message is not None:
        if message == WRONG_KEY:
            logger.warning("%s %s: wrong API key", request.method, request.url.path)
        raise Unauthorized(message)


def require_read(request: Request) -> None:
    """Dependency of endpoints that only read: a key when auth_mode is all."""
    _enforce(request, "read")


def require_write(request: Request) -> None:
    """Dependency of endpoints that change galleries or jobs: a key unless auth_mode is none."""
    _enforce(request, "write")


def require_metrics(request: Request) -> None:
    """Dependency of /metrics: a key when metrics_public is false and auth is on."""
    _enforce(request, "metrics")


NEEDS: dict[Callable[[Request], None], Need] = {
    require_read: "read",
    require_write: "write",
    require_metrics: "metrics",
}


def route_need(route: BaseRoute) -> Need | None:
    """What ``route`` declares by its auth dependency (None: open)."""
    for dep in getattr(route, "dependencies", ()):
        need = NEEDS.get(getattr(dep, "dependency", None))  # type: ignore[arg-type]
        if need is not None:
            return need
    return None


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def declare_security(doc: dict[str, Any], settings: Settings, routes: list[BaseRoute]) -> None:
    """State in the OpenAPI document ``doc`` which operations need a key under ``settings``
    (either scheme will do), so that clients and contract tests know."""
    needing = [r for r in routes if key_needed(settings, route_need(r))]
    if not needing:
        return
    doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for route in needing:
        operations = doc.get("paths", {}).get(getattr(route, "path", ""), {})
        for method in getattr(route, "methods", None) or ():
            if method.lower() in operations:
                operations[method.lower()]["security"] = [{"bearer": []}, {"apiKey": []}]
