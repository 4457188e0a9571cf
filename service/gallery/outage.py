"""Whether an exception means the gallery storage (Milvus) cannot be reached right now.

Such a failure is the deployment's, not the client's and not a bug: the API answers 503 with
Retry-After instead of 500, so clients and load balancers retry (a Milvus server restarting,
reloading its collections or briefly unreachable). Only errors raised by the Milvus client
(``pymilvus``) or its transport (``grpc``) count, recognised by their gRPC status or message.
"""

from __future__ import annotations

from collections.abc import Iterator

_SIGNS = (  # pymilvus' codes are too coarse (1 is any unexpected error): its messages say it
    "unavailable",
    "connect",  # "Fail connecting to server", "should create connection first", "refused"
    "deadline exceeded",
    "not ready",
    "not loaded",
    "socket closed",
)
_GRPC_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _code(exc: BaseException) -> object:
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError.code() -> StatusCode
        try:
            code = code()
        except Exception:  # noqa: BLE001 - a code we cannot read is no code
            return None
    return getattr(code, "name", code)


def storage_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the Milvus client failing to reach its server."""
    for e in _chain(exc):
        module = type(e).__module__
        if not module.startswith(("pymilvus", "grpc")):
            continue
        if _code(e) in _GRPC_CODES:
            return True
        if any(sign in str(e).lower() for sign in _SIGNS):
            return True
    return False
