"""The in-process server runner used by the demo, tests and benchmarks."""

from __future__ import annotations

import socket

import httpx
import pytest
from fastapi import FastAPI

from service.threaded import bind_socket, serve_in_thread


def test_bound_socket_says_tcp_so_accepted_connections_get_nodelay() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; a socket made
    # with proto 0 left Nagle on and added ~40 ms to every request.
    sock = bind_socket()
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_bind_socket_refuses_a_taken_port() -> None:
    first = bind_socket()
    first.listen()
    try:
        with pytest.raises(OSError):
            bind_socket(port=first.getsockname()[1])
    finally:
        first.close()


def test_serve_in_thread_serves_and_stops() -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with serve_in_thread(app) as url:
        assert httpx.get(f"{url}/ping").json() == {"pong": "yes"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/ping", timeout=2)
