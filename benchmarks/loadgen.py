"""A light HTTP/1.1 load generator for loopback benchmarks.

On a 2-core machine the clients share the CPU with the server, so a heavy client (a Python
HTTP library building a multipart body per request, a thread per client) measures itself as
much as the service. Here one asyncio process drives every client: each request's bytes
are built once, each client holds one keep-alive connection opened (and used once) before
the clock starts, and a response is read by its Content-Length only. The client's cost per
request is then a few tens of microseconds.

Run :func:`run_load` in its own process (see :func:`load_in_process`) so that it shares no
GIL with a server running in the benchmark's process.
"""

from __future__ import annotations

import asyncio
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


async def _client(
    url: str, request: bytes, count: int, start: asyncio.Event, ready: list[int]
) -> list[Result]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        await _exchange(reader, writer, request)  # warm the connection, off the clock
        ready.append(1)
        await start.wait()
        return [await _exchange(reader, writer, request) for _ in range(count)]
    finally:
        writer.close()


async def _load(
    url: str, request: bytes, clients: int, per_client: int
) -> tuple[list[Result], float]:
    start, ready = asyncio.Event(), list[int]()
    tasks = [
        asyncio.create_task(_client(url, request, per_client, start, ready)) for _ in range(clients)
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
    return asyncio.run(_load(url, request, clients, per_client))


def load_in_process(
    url: str, request: bytes, clients: int, per_client: int
) -> tuple[list[Result], float]:
    """:func:`run_load` in a fresh process (no GIL shared with an in-process server)."""
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(1) as pool:
        return pool.apply(run_load, (url, request, clients, per_client))
