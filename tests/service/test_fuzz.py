"""Property-based hostile inputs against the whole app (tiny model): never a 5xx, never a
hang, and the service stays consistent (stats and search answer 200 afterwards).

Generated: upload bytes and image headers (PNG/JPEG/WebP magic over junk, PNG headers that
declare any size, truncated real images), archive members (any name bytes, any content,
manifests of any JSON or CSV), form fields (items JSON, search options), path and query
parameters. Examples are derandomized so CI runs the same ones every time.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import time
import urllib.parse
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import random_image
from tests.service.jobs.archives import market_name

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
JOB_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def client(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("fuzz")
    s = Settings(model_dir=model_dir, data_dir=data, index_batch_size=4, index_workers=1)  # type: ignore[call-arg]
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        items = json.dumps([{"camera": f"c{i}", "timestamp": 1000 + i} for i in range(3)])
        files = [("images", (f"{i}.png", random_image(i), "image/png")) for i in range(3)]
        assert c.post("/v1/galleries/g/items", files=files, data={"items": items}).is_success
        yield c


def no_5xx(r: Any) -> None:
    assert r.status_code < 500, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"


def consistent(c: TestClient) -> None:
    """Stats and a search of the seeded gallery still answer 200."""
    assert c.get("/v1/galleries/g").status_code == 200
    files = {"image": ("q.png", random_image(0), "image/png")}
    r = c.post("/v1/galleries/g/search", files=files, data={"k": "5"})
    assert r.status_code == 200, r.text
    assert r.json()["matches"]


# ------------------------------------------------------------------ strategies
def _png_header(width: int, height: int, tail: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + tail
    )


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b""]
REAL = random_image(7, size=(24, 12))
REAL_JPEG = random_image(8, fmt="JPEG", size=(24, 12))

image_bytes = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda m, b: m + b, st.sampled_from(MAGIC), st.binary(max_size=512)),
    st.builds(
        _png_header,
        st.integers(0, 2**31 - 1),
        st.integers(0, 2**31 - 1),
        st.binary(max_size=64),
    ),
    st.builds(lambda n: REAL[:n], st.integers(0, len(REAL))),
    st.builds(lambda n: REAL_JPEG[:n], st.integers(0, len(REAL_JPEG))),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.floats(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=30),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "NaN", "1e18"]),
)
form_text = st.text(max_size=40)


# ------------------------------------------------------------------ uploads
@FUZZ
@given(blobs=st.lists(image_bytes, min_size=1, max_size=4), names=st.lists(form_text, max_size=4))
def test_any_upload_bytes_to_embed_and_attributes(
    client: TestClient, blobs: list[bytes], names: list[str]
) -> None:
    files = [
        ("images", ((names[i : i + 1] or ["x"])[0], b, "image/png")) for i, b in enumerate(blobs)
    ]
    no_5xx(client.post("/v1/embed", files=files))
    no_5xx(
        client.post("/v1/attributes", files={"image": ("a", blobs[0], "application/octet-stream")})
    )


@FUZZ
@given(
    blob=image_bytes,
    fields=st.dictionaries(
        st.sampled_from(
            [
                "k",
                "cameras",
                "exclude_cameras",
                "time_from",
                "time_to",
                "min_score",
                "rerank",
                "extra",
            ]
        ),
        form_text,
        max_size=5,
    ),
)
def test_any_search_fields(client: TestClient, blob: bytes, fields: dict[str, str]) -> None:
    no_5xx(client.post("/v1/galleries/g/search", files={"image": ("q", blob)}, data=fields))
    no_5xx(
        client.post(
            "/v1/galleries/g/search", files={"image": ("q", REAL, "image/png")}, data=fields
        )
    )
    consistent(client)


@FUZZ
@given(
    entries=st.lists(
        st.fixed_dictionaries(
            {"camera": st.one_of(form_text, json_values), "timestamp": timestamps},
            optional={"external_id": st.one_of(form_text, json_values), "metadata": json_values},
        ),
        min_size=1,
        max_size=2,
    ),
    raw=st.one_of(st.none(), form_text),
)
def test_any_items_field(
    client: TestClient, entries: list[dict[str, Any]], raw: str | None
) -> None:
    text = raw if raw is not None else json.dumps(entries)
    files = [
        ("images", (f"{i}.png", random_image(100 + i), "image/png")) for i in range(len(entries))
    ]
    r = client.post("/v1/galleries/fuzzitems/items", files=files, data={"items": text})
    no_5xx(r)
    event(f"add items: {r.status_code}")
    r = client.get("/v1/galleries/fuzzitems")
    no_5xx(r)
    if r.status_code == 200:  # whatever was stored reads back
        for item_id in range(1, r.json()["items"] + 1):
            no_5xx(client.get(f"/v1/galleries/fuzzitems/items/{item_id}"))
        no_5xx(
            client.post(
                "/v1/galleries/fuzzitems/search",
                files={"image": ("q", REAL, "image/png")},
                data={"k": "50"},
            )
        )
    consistent(client)


# ------------------------------------------------------------------ path and query parameters
path_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#"), max_size=40
)


@FUZZ
@given(
    gallery=st.one_of(path_text, st.just("g")),
    item=st.one_of(path_text, st.integers(min_value=-(2**80), max_value=2**80).map(str)),
    job=path_text,
    limit=st.one_of(path_text, st.integers(min_value=-(2**70), max_value=2**70).map(str)),
)
def test_any_path_and_query_parameters(
    client: TestClient, gallery: str, item: str, job: str, limit: str
) -> None:
    def quote(s: str) -> str:
        return urllib.parse.quote(s, safe="") or "%20"

    for r in (
        client.get(f"/v1/galleries/{quote(gallery)}"),
        client.get(f"/v1/galleries/{quote(gallery)}/items/{quote(item)}"),
        client.get(f"/v1/jobs/{quote(job)}"),
        client.get("/v1/jobs", params={"limit": limit}),
        client.post(f"/v1/jobs/{quote(job)}/cancel"),
    ):
        no_5xx(r)
    consistent(client)


# ------------------------------------------------------------------ archives and manifests
member_names = st.one_of(
    st.builds(market_name, st.integers(0, 50)),
    st.binary(min_size=1, max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.text(min_size=1, max_size=40),
    st.sampled_from(["manifest.json", "sub/manifest.csv", "../x.png", "/abs.png", "a\x00b.png"]),
)
member_data = st.one_of(
    image_bytes, st.just(REAL), json_values.map(lambda v: json.dumps(v).encode())
)
manifest_json = st.one_of(
    json_values,
    st.dictionaries(
        st.builds(market_name, st.integers(0, 50)),
        st.fixed_dictionaries(
            {"camera": st.one_of(form_text, json_values), "timestamp": timestamps},
            optional={"metadata": json_values},
        ),
        max_size=3,
    ),
).map(lambda v: json.dumps(v).encode())


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repeated names are part of the test
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members:
                safe = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                zf.writestr(safe.replace("\x00", "_") or "_", data)
    return buf.getvalue()


def _wait(c: TestClient, job_id: str) -> dict[str, Any]:
    end = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < end:
        r = c.get(f"/v1/jobs/{job_id}")
        no_5xx(r)
        if r.json()["state"] not in ("queued", "running"):
            return dict(r.json())
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} hangs")


@FUZZ
@given(
    good=st.lists(
        st.tuples(st.builds(market_name, st.integers(0, 50)), st.sampled_from([REAL, REAL_JPEG])),
        max_size=3,
    ),
    members=st.lists(st.tuples(member_names, member_data), min_size=1, max_size=5),
    manifest=st.one_of(st.none(), st.none(), manifest_json, st.binary(max_size=200)),
    kind=st.sampled_from(["tar", "zip"]),
)
def test_any_archive_members_and_manifests(
    client: TestClient,
    good: list[tuple[str, bytes]],
    members: list[tuple[str, bytes]],
    manifest: bytes | None,
    kind: str,
) -> None:
    members = [*good, *members]
    if manifest is not None:
        members = [*members, ("manifest.json", manifest)]
    data = _tar(members) if kind == "tar" else _zip(members)
    r = client.post("/v1/galleries/fuzzjobs/jobs", files={"archive": (f"a.{kind}", data)})
    no_5xx(r)
    if r.status_code == 202:
        job = _wait(client, r.json()["id"])
        event(f"job {job['state']}: {(job['error'] or '').split(': ', 1)[-1][:30]}")
        assert "internal error" not in (job["error"] or ""), job
        assert job["state"] in ("succeeded", "failed"), job
        if job["state"] == "succeeded":
            assert job["added"] + job["duplicates"] + job["failed"] == job["total"], job
        stats = client.get("/v1/galleries/fuzzjobs")
        no_5xx(stats)
        if stats.status_code == 200:
            for item_id in range(1, stats.json()["items"] + 1):
                no_5xx(client.get(f"/v1/galleries/fuzzjobs/items/{item_id}"))
    consistent(client)
