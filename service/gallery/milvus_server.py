"""A Milvus standalone server on this machine (PyPI ``milvus``), for tests, benchmarks and demos.

The package ships the real server (embedded etcd and local storage, ~1 GB of memory, 10-20 s
to start). Every component is bound to 127.0.0.1, never to the machine's other addresses.
Production deployments run Milvus from its official images or Helm chart instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


@contextmanager
def local_milvus_server(data_dir: Path) -> Iterator[str]:
    """Start the server on ``data_dir`` and yield its URI; stopped on exit.

    Raises ImportError when the ``milvus`` package is not installed.
    """
    from milvus import MilvusServer

    server = MilvusServer(data_dir=str(data_dir))
    for component in COMPONENTS:
        server.config.set(f"{component}.ip", "127.0.0.1")
    server.start()  # waits until healthy
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
