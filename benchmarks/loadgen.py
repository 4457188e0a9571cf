"""A light HTTP/1.1 load generator for loopback benchmarks.

On a 2-core machine the clients share the CPU with the server, so a heavy client (a Python
HTTP library building a multipart body per request, a thread per client) measures itself as
much as the service. Here one asyncio process drives every client: each request's bytes
are built once, each client holds one keep-alive connection opened (and used once) before
the clock starts, and a response is read by its Content-Length only. The client's cost per
request is then a few tens of microseconds.

Several replicas: :func:`run_targets` gives each client a connection to every replica and
alternates its requests over them (:func:`round_robin`), the way a round-robin balancer
would, without one in the path.

Run :func:`run_load` in its own process (see :func:`load_in_process`) so that it shares no
GIL with a server running in the benchmark's process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Result:
    """One request as the client saw it."""

    status: int
    seconds: float
    """From the first byte sent to the last byte of the response received."""
    retry_after: str | None
    target: int = 0
    """Which of the targets (replicas) answered, by position."""


def multipart_request(url: str, path: str, fields: dict[str, bytes | str]) -> bytes:
    """The bytes of a ``multipart/form-data`` POST of ``fields`` (bytes values are files)."""
    boundary = uuid.uuid4().hex
    body = bytearray()
    for name, value in fields.items():
        body += f"--{boundary}\r\n".encode()
        if isinstance(value, bytes):
            body += (
                f'Content-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            body += value
        else:
            body += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    host = urlsplit(url).netloc
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + bytes(body)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> Result:
    t0 = time.perf_counter()
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return Result(status, time.perf_counter() - t0, headers.get("retry-after"))


def round_robin(client: int, k: int, targets: int) -> int:
    """The target (replica) of client ``client``'s ``k``-th request: each client alternates
    over the targets, clients starting on successive ones (an nginx-like round robin)."""
    return (client + k) % targets


Target = tuple[str, bytes]
"""A replica's base URL and the request bytes sent to it."""


async def _client(
    targets: list[Target],
    index: int,
    count: int | None,
    seconds: float | None,
    start: asyncio.Event,
    ready: list[int],
) -> list[Result]:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for url, request in targets:
            parts = urlsplit(url)
            conns.append(await asyncio.open_connection(parts.hostname, parts.port))
            await _exchange(*conns[-1], request)  # warm the connection, off the clock
        ready.append(1)
        await start.wait()
        deadline = time.perf_counter() + seconds if seconds is not None else math.inf
        out: list[Result] = []
        while (count is None or len(out) < count) and time.perf_counter() < deadline:
            t = round_robin(index, len(out), len(targets))
            result = await _exchange(*conns[t], targets[t][1])
            out.append(dataclasses.replace(result, target=t))
        return out
    finally:
        for _, writer in conns:
            writer.close()


async def _load(
    targets: list[Target], clients: int, count: int | None, seconds: float | None
) -> tuple[list[Result], float]:
    start, ready = asyncio.Event(), list[int]()
    tasks = [
        asyncio.create_task(_client(targets, i, count, seconds, start, ready))
        for i in range(clients)
    ]
    while len(ready) < clients:
        if any(t.done() for t in tasks):  # a client failed to connect: raise its error
            for t in tasks:
                if t.done():
                    t.result()
        await asyncio.sleep(0.005)
    t0 = time.perf_counter()
    start.set()
    results = [r for rs in await asyncio.gather(*tasks) for r in rs]
    return results, time.perf_counter() - t0


def run_load(url: str, request: bytes, clients: int, per_client: int) -> tuple[list[Result], float]:
    """``clients`` concurrent keep-alive connections, ``per_client`` requests each, back to back.

    Returns every result and the wall time from the start signal to the last answer.
    """
    return run_targets([(url, request)], clients, per_client)


def run_targets(
    targets: list[Target], clients: int, per_client: int | None = None, seconds: float | None = None
) -> tuple[list[Result], float]:
    """``clients`` concurrent clients, each with a keep-alive connection to every target and
    sending its requests to them in :func:`round_robin` order, back to back, until it has sent
    ``per_client`` or ``seconds`` have passed (whichever comes first; at least one is given)."""
    if per_client is None and seconds is None:
        raise ValueError("give per_client or seconds")
    return asyncio.run(_load(targets, clients, per_client, seconds))


def load_in_process(
    url: str, request: bytes, clients: int, per_client: int
) -> tuple[list[Result], float]:
    """:func:`run_load` in a fresh process (no GIL shared with an in-process server)."""
    return targets_in_process([(url, request)], clients, per_client)


def targets_in_process(
    targets: list[Target], clients: int, per_client: int | None = None, seconds: float | None = None
) -> tuple[list[Result], float]:
    """:func:`run_targets` in a fresh process (no GIL shared with an in-process server)."""
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(1) as pool:
        return pool.apply(run_targets, (targets, clients, per_client, seconds))
