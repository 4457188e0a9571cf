"""The service app under uvicorn in a thread of the calling process, on a socket bound
beforehand (so the port cannot be taken between choosing and listening).

Used by the demo (`reid demo` keeps serving from its own process) and by the tests and
benchmarks that need a real server on loopback.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

START_TIMEOUT_S = 120.0


class ServerStartError(RuntimeError):
    """uvicorn did not come up (its own log says why) or took too long."""


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``0``: any free port); raises OSError if taken."""
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it Nagle + delayed ACK add ~40 ms to every request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class ThreadedServer:
    """``app`` under uvicorn in a daemon thread, listening on ``sock``."""

    def __init__(self, app: Any, sock: socket.socket, name: str = "reid-serve") -> None:
        import uvicorn

        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(app, lifespan="on", access_log=False, log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name=name
        )

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start and wait until the lifespan (model, galleries) has finished loading."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise ServerStartError(f"the service did not start on {self.url}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"the service did not start within {timeout_s:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Ask uvicorn to shut down (lifespan close included) and wait for it."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)
        self._sock.close()


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL."""
    server = ThreadedServer(app, bind_socket(host, port))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
