"""Optional API keys: none, write endpoints only, or every /v1 endpoint.

The key comes in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` and is compared with
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
from typing import Literal

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


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request's headers carry, if any (``headers``: case-insensitive)."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None


def key_matches(given: str, keys: list[SecretStr]) -> bool:
    """Whether ``given`` equals one of ``keys``, in time independent of where they differ."""
    g = given.encode()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(g, k.get_secret_value().encode())
    return ok


def has_valid_key(settings: Settings, headers: Mapping[str, str]) -> bool:
    """Whether the headers carry one of the configured keys."""
    given = presented_key(headers)
    return given is not None and bool(settings.api_keys) and key_matches(given, settings.api_keys)


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
    given = presented_key(headers)
    if given is None:
        return MISSING_KEY
    if not key_matches(given, settings.api_keys):
        return WRONG_KEY
    return None


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
