"""The HTTP layer under hostile clients (issue 17, items 1, 3 and 10).

Slow-client tests use a real uvicorn on loopback and raw sockets: a stalled body is a
property of the connection, which an in-process client cannot reproduce. Socket timeouts
there are hang guards only, never assertions on how long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.types import Message

from service.api.auth import route_need
from service.app import create_app
from service.settings import Settings
from service.threaded import serve_in_thread
from tests.service.conftest import random_image

KEY = "k-hardening-1"
KEYED = {"X-API-Key": KEY}
HANG_GUARD_S = 30.0
IMAGE = random_image(5)


def _settings(model_dir: Path, data_dir: Path, **overrides: Any) -> Settings:
    return Settings(model_dir=model_dir, data_dir=data_dir, **overrides)


@contextmanager
def _served(model_dir: Path, data_dir: Path, **overrides: Any) -> Iterator[str]:
    with serve_in_thread(create_app(_settings(model_dir, data_dir, **overrides))) as url:
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=HANG_GUARD_S)
    return sock


def _stall(url: str, path: str, length: int = 1_000_000, headers: str = "") -> socket.socket:
    """A connection that sends a request's headers and one multipart boundary line, then
    nothing more (the lock-out client of the issue)."""
    sock = _connect(url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}"
        "Content-Type: multipart/form-data; boundary=b0undary\r\n"
        f"Content-Length: {length}\r\n\r\n--b0undary\r\n"
    )
    sock.sendall(head.encode())
    return sock


def _read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the hang guard)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _status(raw: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", raw)
    assert match, raw[:200]
    return int(match.group(1))


def _embed(client: httpx.Client, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/v1/embed", files=[("images", ("q.png", IMAGE))], headers=headers)


# ---------------------------------------------------------------- item 1: lock-out


def test_stalled_keyless_bodies_do_not_lock_out_anyone(model_dir: Path, tmp_path: Path) -> None:
    """64 stalled keyless uploads (over the default in-flight limit of 64) leave keyed and
    keyless clients answered: in flight counts only requests whose body is in."""
    with (
        _served(model_dir, tmp_path, auth_mode="write", api_keys=[KEY]) as url,
        ExitStack() as stack,
        httpx.Client(base_url=url, timeout=HANG_GUARD_S) as client,
    ):
        for _ in range(64):
            stack.callback(_stall(url, "/v1/embed").close)
        time.sleep(0.2)  # let the server accept and start reading them all
        assert _embed(client, KEYED).status_code == 200
        assert _embed(client).status_code == 200
        files = {"image": ("q.png", IMAGE)}
        r = client.post("/v1/galleries/none/search", files=files, headers=KEYED)
        assert r.status_code == 404, r.text  # answered, not refused as overloaded
        assert client.get("/v1/jobs", headers=KEYED).status_code == 200


def test_full_keyless_pool_leaves_keyed_clients_served(model_dir: Path, tmp_path: Path) -> None:
    """Past max_receiving_requests keyless bodies, keyless ones get 429; keyed ones have
    their own pool."""
    overrides = {"auth_mode": "write", "api_keys": [KEY], "max_receiving_requests": 2}
    with (
        _served(model_dir, tmp_path, **overrides) as url,
        ExitStack() as stack,
        httpx.Client(base_url=url, timeout=HANG_GUARD_S) as client,
    ):
        for _ in range(2):
            stack.callback(_stall(url, "/v1/embed").close)
        time.sleep(0.2)
        refused = _embed(client)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "overloaded"
        assert "retry-after" in refused.headers
        assert _embed(client, KEYED).status_code == 200
        metrics = client.get("/metrics").text
    assert 'reid_http_rejected_total{reason="receiving"} 1.0' in metrics


def test_stalled_body_times_out_with_408(model_dir: Path, tmp_path: Path) -> None:
    with _served(model_dir, tmp_path, body_read_timeout_s=0.3) as url:
        sock = _stall(url, "/v1/embed")
        raw = _read_response(sock)  # returns because the server closes the connection
        sock.close()
    assert _status(raw) == 408
    assert b'"request_timeout"' in raw
    assert b"connection: close" in raw.lower()


def test_trickled_body_under_min_rate_times_out(model_dir: Path, tmp_path: Path) -> None:
    """Every piece arrives within the read timeout, but the whole comes too slowly."""
    overrides = {"body_read_timeout_s": 1.0, "body_min_rate": 50.0}
    with _served(model_dir, tmp_path, **overrides) as url:
        sock = _stall(url, "/v1/embed")
        sock.settimeout(0.1)
        raw = b""
        deadline = time.monotonic() + HANG_GUARD_S
        while not raw and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # closed after the answer
                sock.sendall(b"x")
            try:
                raw = sock.recv(65536)
            except TimeoutError:
                continue
        sock.close()
    assert _status(raw) == 408


def test_streamed_body_over_the_limit_is_413(model_dir: Path, tmp_path: Path) -> None:
    """A chunked body (no Content-Length to check up front) is cut off at the limit."""

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 1024

    with (
        _served(model_dir, tmp_path, max_request_bytes=16 * 1024) as url,
        httpx.Client(base_url=url, timeout=HANG_GUARD_S) as client,
    ):
        headers = {"Content-Type": "multipart/form-data; boundary=b"}
        r = client.post("/v1/embed", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


# ---------------------------------------------------------------- item 3: auth before body


def test_keyless_archive_upload_is_refused_before_its_body(model_dir: Path, tmp_path: Path) -> None:
    """300 MB announced, nothing sent: the 401 comes anyway (the old code waited for the
    body, so this read would hit the hang guard)."""
    with _served(model_dir, tmp_path, auth_mode="write", api_keys=[KEY]) as url:
        sock = _stall(url, "/v1/galleries/g/jobs", length=300_000_000)
        raw = _read_response(sock)
        sock.close()
    assert _status(raw) == 401
    assert b"www-authenticate: bearer" in raw.lower()
    assert b"connection: close" in raw.lower()
    assert not (tmp_path / "g").exists()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _keyed_routes(settings: Settings) -> list[tuple[str, str]]:
    """(method, path) of every route that needs a key under ``settings``."""
    from service.api.auth import key_needed

    app = create_app(settings)
    return [
        (method, _concrete(route.path))
        for route in app.state.routes
        if isinstance(route, APIRoute) and key_needed(settings, route_need(route))
        for method in sorted(route.methods)
    ]


async def _call_without_body(app: Any, method: str, path: str) -> list[Message]:
    """One request through the ASGI app whose body may never be read."""
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError(f"{method} {path}: the body was read before the key was checked")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"multipart/form-data; boundary=b0undary"),
            (b"content-length", b"1000000"),
            (b"x-api-key", b"wrong"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(("mode", "metrics_public"), [("write", True), ("all", False)])
def test_every_keyed_route_refuses_before_reading(
    model_dir: Path, tmp_path: Path, mode: str, metrics_public: bool
) -> None:
    settings = _settings(
        model_dir, tmp_path, auth_mode=mode, api_keys=[KEY], metrics_public=metrics_public
    )
    routes = _keyed_routes(settings)
    assert len(routes) >= (5 if mode == "write" else 15)
    app = create_app(settings)  # no lifespan: the refusal must not need the model either
    for method, path in routes:
        sent = asyncio.run(_call_without_body(app, method, path))
        assert sent[0]["status"] == 401, (method, path)
        body = json.loads(sent[1]["body"])
        assert body["error"]["code"] == "unauthorized"


# ---------------------------------------------------------------- item 10: small ones


@pytest.fixture
def keyed_client(make_client: Callable[..., Any], tmp_path: Path) -> Any:
    client = make_client(tmp_path / "d", auth_mode="all", api_keys=[KEY], metrics_public=False)
    files = [("images", ("a.png", IMAGE))]
    data = {"items": json.dumps([{"camera": "c1", "timestamp": 0}])}
    r = client.post("/v1/galleries/secret-site/items", files=files, data=data, headers=KEYED)
    assert r.status_code == 200, r.text
    return client


@pytest.mark.parametrize("item_id", [2**63, 2**64, 10**30])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_item_ids_past_int64_are_422(keyed_client: Any, item_id: int, method: str) -> None:
    r = keyed_client.request(method, f"/v1/galleries/secret-site/items/{item_id}", headers=KEYED)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"


def test_largest_int64_item_id_is_404(keyed_client: Any) -> None:
    r = keyed_client.get(f"/v1/galleries/secret-site/items/{2**63 - 1}", headers=KEYED)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "item_not_found"


def test_readyz_hides_galleries_without_a_key(keyed_client: Any) -> None:
    anonymous = keyed_client.get("/readyz")
    assert anonymous.status_code == 200
    assert anonymous.json()["ready"] is True
    assert anonymous.json()["galleries"] is None
    assert "secret-site" not in anonymous.text
    wrong = keyed_client.get("/readyz", headers={"X-API-Key": "nope"})
    assert wrong.json()["galleries"] is None
    keyed = keyed_client.get("/readyz", headers=KEYED).json()
    assert [g["name"] for g in keyed["galleries"]] == ["secret-site"]


def test_readyz_lists_galleries_when_metrics_name_them(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = make_client(tmp_path / "d", auth_mode="all", api_keys=[KEY], metrics_public=True)
    assert client.get("/readyz").json()["galleries"] == []


SINGLE_FILE_FIELDS = [
    ("/v1/attributes", "image", {}),
    ("/v1/galleries/secret-site/search", "image", {"k": "1"}),
    ("/v1/galleries/secret-site/jobs", "archive", {}),
]


@pytest.mark.parametrize(("path", "field", "form"), SINGLE_FILE_FIELDS)
def test_two_files_in_a_single_file_field_are_422(
    keyed_client: Any, path: str, field: str, form: dict[str, str]
) -> None:
    files = [(field, ("a.png", IMAGE)), (field, ("b.png", random_image(6)))]
    r = keyed_client.post(path, files=files, data=form, headers=KEYED)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == f"body.{field}"
    assert "2 sent" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v1/jobs/abc", "DELETE, GET"),
        ("PUT", "/v1/galleries/secret-site", "DELETE, GET"),
        ("TRACE", "/v1/embed", "POST"),
        ("GET", "/v1/galleries/secret-site/items", "POST"),
        ("DELETE", "/healthz", "GET"),
    ],
)
def test_405_says_what_is_allowed(keyed_client: Any, method: str, path: str, allow: str) -> None:
    r = keyed_client.request(method, path, headers=KEYED)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    assert r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEY, "Authorization": "Bearer wrong"},
        {"X-API-Key": KEY, "Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": ""},
        {"Authorization": "Bearer"},
    ],
)
def test_any_wrong_credential_is_refused(keyed_client: Any, headers: dict[str, str]) -> None:
    """A right key does not excuse a wrong or malformed one beside it."""
    r = keyed_client.get("/v1/galleries", headers=headers)
    assert r.status_code == 401, r.text
    assert keyed_client.get("/readyz", headers=headers).json()["galleries"] is None
    both = {"X-API-Key": KEY, "Authorization": f"Bearer {KEY}"}
    assert keyed_client.get("/v1/galleries", headers=both).status_code == 200
