"""The service side of the main job: an embedded uvicorn server, bulk indexing, stored vectors.

``reid demo`` runs the real application (:func:`service.app.create_app`) under uvicorn in a
thread of its own process, on a socket bound before any long work starts (a busy port fails
at once, not after training). Imports of the service package happen inside the functions,
so ``reid --help`` stays light.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import socket
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from quickstart.client import ReidClient, ServiceCallError
from service.gallery.backend import GalleryBackend
from service.threaded import ServerStartError, ThreadedServer, bind_socket

logger = logging.getLogger(__name__)

"""Longest wait for the service to load its model and galleries."""
ITEMS_BATCH = 32
"""Images per ``POST /v1/galleries/{g}/items`` request when the jobs API is absent."""


class DemoError(RuntimeError):
    """A step of the main job cannot go on; the message names the file, value or port."""


@dataclass(frozen=True)
class GalleryImage:
    """One crop of the gallery or query split, with its ground truth."""

    path: Path
    """Image file."""
    pid: int
    """Identity (0 distractor, -1 junk)."""
    camid: int
    """Camera number (1-based, as in the file name)."""
    name: str = ""
    """Unique name inside the dataset (archive member, item ``file``); default the file name."""
    timestamp: float | None = None
    """Capture time in seconds (dataset names: frame / 25 fps); None when unknown."""
    time_kind: str = "datetime"
    """``offset`` when ``timestamp`` counts from the start of a recording (dataset frame
    times), ``datetime`` for wall-clock times; stored as item metadata ``time_kind``."""

    @property
    def member(self) -> str:
        """The name the gallery stores for this crop (its ``file`` metadata)."""
        return self.name or self.path.name


def bind_port(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (0: any free port), or :class:`DemoError`."""
    try:
        return bind_socket(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise DemoError(
                f"port {port} on {host} is already in use: stop what listens there or pass "
                "--port N (0 picks a free port)"
            ) from None
        raise DemoError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class DemoEngine:
    """Where the demo's gallery lives: ``local`` (FAISS + SQLite in the data folder) or
    ``milvus`` (a Milvus server at ``milvus_uri``; empty: Milvus Lite in this process, in
    ``<data>/milvus.db``)."""

    kind: str = "local"
    milvus_uri: str = ""

    def settings(self) -> dict[str, Any]:
        """The service settings that choose this engine."""
        return {"gallery_backend": self.kind, "milvus_uri": self.milvus_uri}

    def open(self, data_dir: Path) -> GalleryBackend:
        """This engine, opened beside the service (Milvus Lite: the same in-process server)."""
        from service.gallery import BackendConfig, MilvusOptions, open_backend

        milvus = MilvusOptions(uri=self.milvus_uri)
        return open_backend(BackendConfig(self.kind, data_dir, milvus=milvus))

    def clear(self, data_dir: Path, gallery: str) -> str | None:
        """Drop ``gallery`` of an earlier run on a Milvus server (the data folder, Milvus
        Lite's included, is emptied anyway); what was done, or None."""
        if self.kind != "milvus" or not self.milvus_uri:
            return None
        backend = self.open(data_dir)
        try:
            if gallery not in backend.names():
                return None
            backend.drop(gallery)
        finally:
            backend.close()
        return f"dropped gallery {gallery!r} of an earlier demo run on {self.milvus_uri}"


def start_service(
    model_dir: Path,
    data_dir: Path,
    sock: socket.socket,
    max_k: int,
    engine: DemoEngine = DemoEngine(),
) -> ThreadedServer:
    """Create the app over ``model_dir``/``data_dir`` (galleries in ``engine``) and serve it on
    ``sock``."""
    from service.app import create_app
    from service.settings import Settings

    host, port = sock.getsockname()[:2]
    settings = Settings(  # an open local demo: REID_AUTH_MODE etc. in the environment do not apply
        model_dir=model_dir,
        data_dir=data_dir,
        host=host,
        port=port,
        max_k=max(1000, max_k),
        auth_mode="none",
        api_keys=[],
        **engine.settings(),
    )
    service = ThreadedServer(create_app(settings), sock)
    try:
        service.start()
    except ServerStartError as exc:
        raise DemoError(f"{exc} (see the log above)") from None
    return service


# --------------------------------------------------------------------------- indexing


def index_gallery(
    client: ReidClient, gallery: str, images: Sequence[GalleryImage], work_dir: Path
) -> dict[str, Any]:
    """Index ``images`` into ``gallery``: a jobs-API archive if offered, else item batches.

    Returns ``{"method", "added", "failed", "failures"}``; raises :class:`DemoError` when the
    job fails.
    """
    if client.has_jobs_api():
        return _index_with_job(client, gallery, images, work_dir)
    logger.info("the service has no jobs API: indexing in batches of %d items", ITEMS_BATCH)
    return _index_with_items(client, gallery, images)


def write_archive(images: Sequence[GalleryImage], path: Path) -> Path:
    """An uncompressed tar of the images (JPEG does not compress further) under their member
    names, with a ``manifest.json`` giving each one's camera, time (null: unknown) and
    identity, whatever the names look like."""
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = json.dumps([_manifest_entry(img) for img in images]).encode()
    with tarfile.open(path, "w") as tar:
        for img in images:
            tar.add(img.path, arcname=img.member)
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return path


MANIFEST = "manifest.json"
"""The demo archive's manifest (see :mod:`service.jobs.naming`)."""


def _manifest_entry(img: GalleryImage) -> dict[str, Any]:
    return {
        "file": img.member,
        "camera": f"c{img.camid}",
        "timestamp": img.timestamp,
        "metadata": {"identity": img.pid, "time_kind": img.time_kind},
    }


def _index_with_job(
    client: ReidClient, gallery: str, images: Sequence[GalleryImage], work_dir: Path
) -> dict[str, Any]:
    archive = write_archive(images, work_dir / f"{gallery}-gallery.tar")
    try:
        job = client.submit_archive(gallery, archive)
        logger.info("job %s queued for %d images", job["id"], len(images))
        bar = tqdm(total=len(images), desc="indexing (job)", unit="img")

        def show(j: dict[str, Any]) -> None:
            bar.n = int(j["done"]) + int(j["failed"])
            bar.set_postfix(state=j["state"], added=j["added"], failed=j["failed"])
            bar.refresh()

        try:
            job = client.wait_job(job["id"], show)
        finally:
            bar.close()
    finally:
        archive.unlink(missing_ok=True)
    if job["state"] != "succeeded":
        raise DemoError(f"indexing job {job['id']} ended {job['state']}: {job.get('error')}")
    failures = [f"{f['member']}: {f['reason']}" for f in job.get("failures") or []]
    return {
        "method": f"jobs API (job {job['id']})",
        "added": int(job["added"]) + int(job["duplicates"]),
        "failed": int(job["failed"]),
        "failures": failures,
    }


def item_fields(img: GalleryImage) -> dict[str, Any]:
    """``items`` entry for one crop: camera, timestamp (null: unknown), file and identity."""
    return {
        "camera": f"c{img.camid}",
        "timestamp": img.timestamp,
        "external_id": img.member,
        "metadata": {"file": img.member, "identity": img.pid, "time_kind": img.time_kind},
    }


def _index_with_items(
    client: ReidClient, gallery: str, images: Sequence[GalleryImage]
) -> dict[str, Any]:
    added = 0
    with tqdm(total=len(images), desc="indexing (items)", unit="img") as bar:
        for start in range(0, len(images), ITEMS_BATCH):
            chunk = images[start : start + ITEMS_BATCH]
            try:
                client.add_items(gallery, [i.path for i in chunk], [item_fields(i) for i in chunk])
            except ServiceCallError as exc:
                raise DemoError(f"indexing {chunk[0].path.parent}: {exc}") from None
            added += len(chunk)
            bar.update(len(chunk))
    return {"method": "POST /items batches", "added": added, "failed": 0, "failures": []}


# --------------------------------------------------------------------------- stored vectors


def read_stored_embeddings(
    data_dir: Path, gallery: str, backend: GalleryBackend | None = None
) -> tuple[list[str], np.ndarray]:
    """Member names (item metadata ``file``) and float32 embeddings the gallery stored, by id.

    Read through the gallery storage interface (default: the local engine of ``data_dir``,
    opened beside the running service, which SQLite's WAL allows), under the model the
    gallery was built with.
    """
    from service.gallery import GalleryMissing, local_backend

    engine = backend or local_backend(data_dir)
    try:
        store = engine.open(gallery, *engine.recorded_model(gallery))
    except GalleryMissing:
        raise DemoError(
            f"gallery {gallery!r} does not exist in {data_dir}: was anything indexed?"
        ) from None
    try:
        ids, emb = store.vectors(store.item_ids().tolist())
        items = store.fetch(ids.tolist())
    finally:
        store.close()
    files = [str(items[i].metadata.get("file", "")) for i in ids.tolist()]
    return files, emb
