"""ASGI guards in front of the app, so that a slow, stalled or keyless client delays only itself.

- :class:`AuthGate` refuses requests that need a key and lack a valid one with 401 from
  their headers alone: not one byte of their body is read, and the connection is closed.
- :class:`BodyGuard` reads a request's whole body before the app sees it (and before the
  request counts as in flight), under a size limit, a read timeout and a minimum rate, in a
  bounded pool of bodies being received; keyed and keyless requests have separate pools,
  so keyless clients cannot fill the one keyed clients use. Bodies over ``spool_bytes`` go
  to a temporary file.

The in-flight limit (:class:`service.metrics.AdmissionControl`) sits inside them, so it
counts only requests whose body is in.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import has_valid_key, refusal, route_need
from service.api.errors import error_response, overloaded_response
from service.settings import Settings

logger = logging.getLogger(__name__)

KEYED = "reid.keyed"
"""Scope key set by :class:`AuthGate`: whether the request carries a valid API key."""
ROUTED = "reid.routed"
"""Scope key set by :class:`AuthGate`: whether a route fully matches (path and method)."""

ARCHIVE_PATH = re.compile(r"^/v1/galleries/[^/]+/jobs/?$")
"""Archive uploads of bulk-indexing jobs: allowed ``max_archive_bytes`` instead."""
CHUNK = 64 * 1024


def full_match(routes: list[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route that handles ``scope`` (path and method), if any."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
    return None


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a non-zero Content-Length or chunked)."""
    headers = Headers(scope=scope)
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


async def answer(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Send ``response`` and close the connection, whatever is left of the request body."""
    response.headers["connection"] = "close"
    await response(scope, receive, send)


class AuthGate:
    """401 before the body for routes whose dependency asks for a key (see auth.py).

    Unknown /v1 paths count as reads (so under auth_mode=all they need a key too).
    """

    def __init__(self, app: ASGIApp, settings: Settings, routes: Callable[[], list[BaseRoute]]):
        self.app = app
        self.settings = settings
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = full_match(self.routes(), scope)
        if route is not None:
            need = route_need(route)
        else:
            need = "read" if str(scope.get("path", "")).startswith("/v1/") else None
        headers = Headers(scope=scope)
        message = refusal(self.settings, need, headers)
        if message is not None:
            logger.info("%s %s: refused, %s", scope.get("method"), scope.get("path"), message)
            response = error_response(
                401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="reid"'}
            )
            await answer(scope, receive, send, response)
            return
        scope[KEYED] = has_valid_key(self.settings, headers)
        scope[ROUTED] = route is not None
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class BodyLimits:
    """How request bodies are received (from :class:`service.settings.Settings`)."""

    max_bytes: int
    """Largest body (413 above)."""
    max_archive_bytes: int
    """Largest body of an archive upload (``ARCHIVE_PATH``)."""
    timeout_s: float
    """Longest wait for the next piece of a body, and the grace before the rate counts."""
    min_rate: float
    """Bytes per second a body must average, after the grace of ``timeout_s`` (408 below)."""
    max_receiving: int
    """Bodies being received at once, per pool (keyed, keyless): 429 past it."""
    retry_after_s: float
    """Retry-After of the 429 when a pool is full."""
    spool_bytes: int = 1024 * 1024
    """Bodies larger than this are kept in a temporary file instead of memory."""

    @classmethod
    def from_settings(cls, s: Settings) -> BodyLimits:
        return cls(
            max_bytes=s.max_request_bytes,
            max_archive_bytes=max(s.max_archive_bytes, s.max_request_bytes),
            timeout_s=s.body_read_timeout_s,
            min_rate=s.body_min_rate,
            max_receiving=s.max_receiving_requests,
            retry_after_s=s.retry_after_s,
        )

    def limit(self, path: str) -> int:
        return self.max_archive_bytes if ARCHIVE_PATH.match(path) else self.max_bytes


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientGone(Exception):
    pass


class Body:
    """A received body: in memory up to ``spool_bytes``, then in a temporary file."""

    def __init__(self, spool_bytes: int) -> None:
        self.spool_bytes = spool_bytes
        self.memory = bytearray()
        self.file: IO[bytes] | None = None

    async def write(self, data: bytes) -> None:
        if self.file is None and len(self.memory) + len(data) <= self.spool_bytes:
            self.memory += data
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="reid-body-")  # noqa: SIM115 (closed by close())
            await asyncio.to_thread(self.file.write, bytes(self.memory))
            self.memory = bytearray()
        await asyncio.to_thread(self.file.write, data)

    async def chunks(self) -> list[bytes] | None:
        """The body as one chunk when in memory (None: read it from :attr:`file`)."""
        if self.file is None:
            return [bytes(self.memory)]
        await asyncio.to_thread(self.file.seek, 0)
        return None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


async def read_body(receive: Receive, limit: int, limits: BodyLimits) -> Body:
    """The whole body, or BodyTooLarge / BodyTimeout / ClientGone.

    Each piece must come within ``timeout_s``, and the whole body by ``timeout_s`` plus its
    size at ``min_rate`` (Apache mod_reqtimeout's rule).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    received = 0
    body = Body(limits.spool_bytes)
    try:
        while True:
            deadline = start + limits.timeout_s + received / limits.min_rate
            wait = min(limits.timeout_s, deadline - loop.time())
            if wait <= 0:
                raise BodyTimeout
            try:
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            data = message.get("body", b"")
            received += len(data)
            if received > limit:
                raise BodyTooLarge(received)
            await body.write(data)
            if not message.get("more_body", False):
                return body
    except BaseException:
        body.close()
        raise


def replay(body: Body, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` again, then waits on the connection."""
    pending: list[bytes] | None = None
    done = rewound = False

    async def replayed() -> Message:
        nonlocal pending, done, rewound
        if done:
            return await receive()  # http.disconnect, when it comes
        if not rewound:  # once: a spooled body is then read on from the file
            rewound = True
            pending = await body.chunks()
        if pending is not None:  # in memory: one message
            done = True
            return {"type": "http.request", "body": pending[0], "more_body": False}
        assert body.file is not None
        data = await asyncio.to_thread(body.file.read, CHUNK)
        done = len(data) < CHUNK
        return {"type": "http.request", "body": data, "more_body": not done}

    return replayed


class BodyGuard:
    """Receive each request's body in full, within limits, before the app runs."""

    def __init__(
        self, app: ASGIApp, limits: BodyLimits, on_reject: Callable[[], None] = lambda: None
    ) -> None:
        self.app = app
        self.limits = limits
        self.on_reject = on_reject
        """Called for each 429 of a full pool (a metric)."""
        self.receiving = {True: 0, False: 0}
        """Bodies being received now, by pool (keyed or not)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get(ROUTED, True) or not has_body(scope):
            await self.app(scope, receive, send)  # no body, or a 404/405 that reads none
            return
        path = str(scope.get("path", ""))
        limit = self.limits.limit(path)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await answer(scope, receive, send, too_large(int(declared), limit))
            return
        pool = bool(scope.get(KEYED, False))
        if self.receiving[pool] >= self.limits.max_receiving:
            self.on_reject()
            message = f"more than {self.limits.max_receiving} request bodies being received"
            await answer(
                scope, receive, send, overloaded_response(message, self.limits.retry_after_s)
            )
            return
        self.receiving[pool] += 1
        try:
            body = await read_body(receive, limit, self.limits)
        except BodyTooLarge as exc:
            await answer(scope, receive, send, too_large(exc.args[0], limit))
            return
        except BodyTimeout:
            await answer(scope, receive, send, timed_out(self.limits))
            return
        except ClientGone:
            return
        finally:
            self.receiving[pool] -= 1
        try:
            await self.app(scope, replay(body, receive), send)
        finally:
            body.close()


def too_large(size: int, limit: int) -> Response:
    message = f"request body of {size} bytes or more is over the limit of {limit} bytes"
    return error_response(413, "payload_too_large", message)


def timed_out(limits: BodyLimits) -> Response:
    message = (
        f"the request body came too slowly: each part must arrive within {limits.timeout_s:g} s "
        f"and the whole at {limits.min_rate:g} bytes/s or faster"
    )
    return error_response(408, "request_timeout", message)
