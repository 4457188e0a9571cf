"""Uploads streamed into and out of both blob stores (a folder, and an S3-compatible server:
moto's, on 127.0.0.1): the bytes come back exactly, a missing key is FileNotFoundError, and
the S3 store's local copy is removed after use."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.gallery.blobs import BlobConfig, BlobStore, open_blobs
from tests.service.blob_servers import S3Server, s3_server

__all__ = ["s3_server"]


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "file":
        store = open_blobs(BlobConfig("file", root=tmp_path / "blobs"))
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = open_blobs(
            BlobConfig(
                "s3",
                endpoint_url=server.endpoint_url,
                bucket=f"u{time.time_ns()}",
                access_key_id=server.access_key_id,
                secret_access_key=server.secret_access_key,
            )
        )
    yield store
    store.close()


def test_a_file_goes_in_and_comes_back_exactly(blobs: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 17)  # several copy chunks, not a multiple of one
    src = io.BytesIO(b"skipped" + data)
    src.seek(7)  # from the file's position to its end
    blobs.put_file("_jobs/a.upload", src)
    spool = tmp_path / "spool"
    with blobs.local_file("_jobs/a.upload", spool) as path:
        assert path.read_bytes() == data
    if blobs.kind == "s3":  # read through a downloaded copy, removed after use
        assert not path.exists() and list(spool.iterdir()) == []
    else:  # read in place
        assert path.parent.parent == tmp_path / "blobs"
    assert blobs.get("_jobs/a.upload") == data
    blobs.delete(["_jobs/a.upload"])
    with pytest.raises(FileNotFoundError), blobs.local_file("_jobs/a.upload", spool):
        pass
