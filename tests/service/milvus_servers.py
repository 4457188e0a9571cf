"""A Milvus standalone server (PyPI ``milvus``) the tests can kill and restart on its data.

The package's launcher probes each port by binding it without SO_REUSEADDR, so right after
a kill the ports the dead server used (their connections in TIME_WAIT) look taken and a
restart would move to other ports, or fail for a port that was set. Here the probe sets
SO_REUSEADDR (the server itself, written in Go, binds with it), so the restarted server gets
the same ports and the clients' URI stays valid.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from pathlib import Path
from typing import Any

from service.gallery.milvus_server import COMPONENTS


def _bind_reusable(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


class KillableMilvus:
    """One standalone server on ``data_dir``: :meth:`start`, :meth:`kill` (SIGKILL),
    :meth:`start` again on the same data and ports."""

    def __init__(self, data_dir: Path) -> None:
        from milvus import MilvusServer

        self.server: Any = MilvusServer(data_dir=str(data_dir))
        for component in COMPONENTS:
            self.server.config.set(f"{component}.ip", "127.0.0.1")
        config = self.server.config
        config.try_bind_port = _bind_reusable
        # Probe from random ports, not the defaults every other server on the machine
        # probes too (two servers starting at once could both pick a default).
        base = random.randrange(20000, 50000, 100)
        ports = sorted(k for k in config.configurable_items if k.endswith("_port"))
        for i, key in enumerate(ports):
            config.configurable_items[key][1] = base + 5 * i
        self.server.webservice_port = base + 90
        self._etcd_ports = (base + 70, base + 75)  # client, peer: the same on every restart
        write = config.write_config

        def write_config() -> None:
            write()
            self._embed_etcd_on_own_ports(Path(config.base_data_dir))

        config.write_config = write_config
        self.uri = ""

    def _embed_etcd_on_own_ports(self, base: Path) -> None:
        """The embedded etcd listens on 2379 and 2380 unless told otherwise (the launcher's
        etcd port is not passed to it), so a second server on the machine would fail."""
        client, peer = self._etcd_ports
        etcd = base / "configs" / "embed-etcd.yaml"
        etcd.write_text(
            "name: default\n"
            f"listen-client-urls: http://127.0.0.1:{client}\n"
            f"advertise-client-urls: http://127.0.0.1:{client}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer}\n"
        )
        milvus = base / "configs" / "milvus.yaml"
        text = milvus.read_text()
        text = text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd}\n", 1)
        milvus.write_text(text)

    def start(self, attempts: int = 5) -> str:
        """Start (waits until healthy) and return the URI, the same on every restart."""
        for attempt in range(attempts):
            try:
                self.server.start()
                break
            except (RuntimeError, TimeoutError):  # a port still held: wait, try again
                self.server.stop()
                if attempt == attempts - 1:
                    raise
                time.sleep(2.0)
        uri = f"http://127.0.0.1:{self.server.listen_port}"
        if self.uri and uri != self.uri:
            raise RuntimeError(f"restarted on {uri}, not {self.uri}")
        self.uri = uri
        return uri

    def kill(self) -> None:
        """SIGKILL the server (no shutdown of any kind)."""
        proc = self.server.server_proc
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        self.server.stop()

    def stop(self) -> None:
        self.server.stop()
