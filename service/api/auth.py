"""Optional API keys: none, write endpoints only, or every /v1 endpoint.

The key comes in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` and is compared with
every configured key in constant time (``hmac.compare_digest``, no early exit), so timing
says nothing about which key or how much of it matched. /healthz and /readyz never need a
key; /metrics needs one only when ``metrics_public`` is false and auth is on.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Request
from pydantic import SecretStr

from service.errors import Unauthorized
from service.settings import Settings

logger = logging.getLogger(__name__)


def presented_key(request: Request) -> str | None:
    """The key a request carries, if any."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def key_matches(given: str, keys: list[SecretStr]) -> bool:
    """Whether ``given`` equals one of ``keys``, in time independent of where they differ."""
    g = given.encode()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(g, k.get_secret_value().encode())
    return ok


def check_key(request: Request) -> None:
    """Raise :class:`Unauthorized` unless the request carries a configured key."""
    settings: Settings = request.app.state.settings
    given = presented_key(request)
    if given is None:
        raise Unauthorized(
            "this endpoint needs an API key (Authorization: Bearer KEY or X-API-Key)"
        )
    if not key_matches(given, settings.api_keys):
        logger.warning("%s %s: wrong API key", request.method, request.url.path)
        raise Unauthorized("the API key is not valid")


def require_read(request: Request) -> None:
    """Dependency of endpoints that only read: a key when auth_mode is all."""
    if request.app.state.settings.auth_mode == "all":
        check_key(request)


def require_write(request: Request) -> None:
    """Dependency of endpoints that change galleries or jobs: a key unless auth_mode is none."""
    if request.app.state.settings.auth_mode != "none":
        check_key(request)


def require_metrics(request: Request) -> None:
    """Dependency of /metrics: a key when metrics_public is false and auth is on."""
    settings: Settings = request.app.state.settings
    if not settings.metrics_public and settings.auth_mode != "none":
        check_key(request)
