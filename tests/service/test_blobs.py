"""The crop blob stores against real storage: files in a directory, and an S3-compatible
server (moto's, on 127.0.0.1) through boto3."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.gallery.blobs import (
    BlobConfig,
    BlobStore,
    FileBlobStore,
    crop_gallery,
    new_key,
    open_blobs,
    original_key,
    sweep_orphans,
)
from tests.service.blob_servers import S3Server, s3_server

__all__ = ["s3_server"]


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """Each blob store: files under tmp_path, or a fresh bucket of the local S3 server."""
    if request.param == "file":
        store = open_blobs(BlobConfig("file", root=tmp_path / "blobs"))
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = f"t{time.time_ns()}"
        store = open_blobs(
            BlobConfig(
                "s3",
                endpoint_url=server.endpoint_url,
                bucket=bucket,
                prefix="crops",
                access_key_id=server.access_key_id,
                secret_access_key=server.secret_access_key,
            )
        )
    yield store
    store.close()


def test_put_get_delete_list(blobs: BlobStore) -> None:
    a, b, c = new_key("g"), new_key("g"), new_key("g.2")
    assert len({a, b}) == 2 and crop_gallery(c) == "g.2"
    blobs.put(a, b"alpha")
    blobs.put(b, bytes(range(256)))
    blobs.put(c, b"other gallery")
    assert blobs.get(a) == b"alpha" and blobs.get(b) == bytes(range(256))
    assert blobs.get("g/absent.jpg") is None
    assert sorted(k for k, _ in blobs.list("g/")) == sorted([a, b])  # not g.2's
    blobs.delete([a, "g/absent.jpg"])
    assert blobs.get(a) is None and blobs.get(b) is not None
    blobs.delete_prefix("g/")
    assert list(blobs.list("g/")) == [] and blobs.get(c) == b"other gallery"


def test_sweep_removes_only_old_unreferenced_blobs(blobs: BlobStore) -> None:
    kept, orphan = new_key("g"), new_key("g")
    for key in (kept, original_key(kept), orphan):
        blobs.put(key, b"x")
    assert sweep_orphans(blobs, "g", lambda: {kept}, min_age_s=3600) == 0  # all too young
    assert sweep_orphans(blobs, "g", lambda: {kept}, min_age_s=-60) == 1
    assert sorted(k for k, _ in blobs.list("g/")) == sorted([kept, original_key(kept)])


def test_file_store_refuses_keys_outside_its_root(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    for bad in ("../x", "g/../../x", "", "g//x"):
        with pytest.raises(ValueError, match="invalid blob key"):
            store.put(bad, b"x")
    assert not (tmp_path / "x").exists()


def test_file_store_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    store.put("g/a.jpg", b"1")
    store.put("g/a.jpg", b"2")  # a rewrite replaces in one rename
    assert os.listdir(tmp_path / "g") == ["a.jpg"] and store.get("g/a.jpg") == b"2"


def test_put_many_stores_every_blob(blobs: BlobStore) -> None:
    pairs = [(f"g/{i}.jpg", bytes([i]) * (i + 1)) for i in range(40)]
    blobs.put_many(pairs)
    blobs.put_many([])
    blobs.put_many(pairs[:1])
    assert {k for k, _ in blobs.list("g/")} == {k for k, _ in pairs}
    assert all(blobs.get(k) == d for k, d in pairs)


def test_get_many_in_order(blobs: BlobStore) -> None:
    blobs.put_many([("g/a", b"1"), ("g/b", b"2")])
    assert blobs.get_many(["g/b", "g/none", "g/a"]) == [b"2", None, b"1"]
    assert blobs.get_many([]) == [] and blobs.get_many(["g/a"]) == [b"1"]
