"""A local S3-compatible server for the blob-store tests: moto's standalone server
(``moto[server]``) on 127.0.0.1, a real HTTP endpoint that boto3 talks to as to S3 or MinIO."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str = "test-key"
    secret_access_key: str = "test-secret"

    def settings(self, bucket: str) -> dict[str, object]:
        """Service settings keeping crops in ``bucket`` of this server."""
        return {
            "blob_backend": "s3",
            "s3_endpoint_url": self.endpoint_url,
            "s3_bucket": bucket,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3-compatible server, started once for the session."""
    server_mod = pytest.importorskip(
        "moto.server", reason="moto[server] (a local S3-compatible server) is not installed"
    )
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
