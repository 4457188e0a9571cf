"""All galleries of one storage engine (:mod:`service.gallery.backend`) for one model.

Galleries open when the service starts. One built with another model stays listed but is
refused (:class:`ModelMismatch`) until deleted or served with its own model; the others
keep working.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from service.errors import GalleryNotFound, InvalidInput, ModelMismatch
from service.gallery.backend import GalleryBackend, GalleryMissing
from service.gallery.blobs import BlobStore
from service.gallery.gallery import Gallery

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class GalleryStatus:
    """One gallery as the data directory has it."""

    name: str
    status: str
    """open, or model_mismatch."""
    items: int
    error: str | None = None


def check_name(name: str) -> str:
    """Gallery names become file names: 1-64 of letters, digits, ``_ . -``."""
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"invalid gallery name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


class GalleryManager:
    """Opens, creates, lists and deletes the galleries of one model."""

    def __init__(
        self, backend: GalleryBackend, model_id: str, dim: int, blobs: BlobStore | None = None
    ) -> None:
        self.backend = backend
        self.blobs = blobs
        """Where crops are kept (None: galleries keep no crops)."""
        self.model_id = model_id
        self.dim = dim
        self._lock = threading.Lock()
        self._open: dict[str, Gallery] = {}
        self._refused: dict[str, ModelMismatch] = {}

    def open_all(self) -> None:
        """Open every gallery of the engine (the local engine rebuilds its indexes)."""
        with self._lock:
            self._discover_locked()

    def _discover_locked(self, only: str | None = None) -> None:
        """Open galleries not open yet: all of them, or only ``only``.

        Another process (``reid index``, a replica) may have created them since the service
        started.
        """
        names = [only] if only is not None else self.backend.names()
        for name in names:
            if name in self._open or name in self._refused or not NAME_RE.match(name):
                continue  # (names no gallery may have: a re-index's new version)
            try:
                store = self.backend.open(name, self.model_id, self.dim)
            except GalleryMissing:  # gone, or still being created by another process
                continue
            except ModelMismatch as exc:
                logger.error("%s", exc)
                self._refused[name] = exc
                continue
            self._open[name] = Gallery(store, self.blobs)

    def close(self) -> None:
        with self._lock:
            for g in self._open.values():
                g.close()
            self._open.clear()
        self.backend.close()

    def get(self, name: str) -> Gallery:
        """An open gallery; raises :class:`GalleryNotFound` or :class:`ModelMismatch`."""
        with self._lock:
            return self._get_locked(name)

    def _get_locked(self, name: str) -> Gallery:
        if name in self._refused and self._rebuilt_locked(name):
            del self._refused[name]  # re-indexed for this model by another replica or process
        if name not in self._open and name not in self._refused and NAME_RE.match(name):
            self._discover_locked(name)
        if name in self._refused:
            raise self._refused[name]
        if name not in self._open:
            raise GalleryNotFound(name)
        return self._open[name]

    def get_or_create(self, name: str) -> Gallery:
        """The gallery ``name``, created empty for this model if it does not exist."""
        check_name(name)
        with self._lock:
            if name not in self._open and name not in self._refused:
                store = self.backend.open(name, self.model_id, self.dim, create=True)
                self._open[name] = Gallery(store, self.blobs)
                logger.info("gallery %s opened on %s (created if new)", name, self.backend.kind)
            return self._get_locked(name)

    def delete(self, name: str) -> None:
        """Delete a gallery and its files (refused galleries too)."""
        with self._lock:
            if name not in self._open and name not in self._refused and NAME_RE.match(name):
                self._discover_locked(name)  # created by another process or replica
            if name not in self._open and name not in self._refused:
                raise GalleryNotFound(name)
            gallery = self._open.pop(name, None)
            self._refused.pop(name, None)
            if gallery is not None:
                gallery.close()
            self.backend.drop(name)
            if self.blobs is not None:
                self.blobs.delete_prefix(f"{name}/")
        logger.info("gallery %s deleted", name)

    def _rebuilt_locked(self, name: str) -> bool:
        """Whether refused gallery ``name`` now records this model (re-indexed elsewhere)."""
        try:
            return self.backend.recorded_model(name) == (self.model_id, self.dim)
        except GalleryMissing:
            return False

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Gallery ``name`` closed and every gallery operation waiting, for the block (a
        re-index replacing it with its new version); opened again afterwards."""
        with self._lock:
            gallery = self._open.pop(name, None)
            self._refused.pop(name, None)
            if gallery is not None:
                gallery.close()
            try:
                yield
            finally:
                self._discover_locked(name)

    def statuses(self) -> list[GalleryStatus]:
        """Every gallery, open or refused, sorted by name."""
        with self._lock:
            self._discover_locked()
            out = [GalleryStatus(n, "open", len(g)) for n, g in self._open.items()]
            out += [GalleryStatus(n, "model_mismatch", 0, str(e)) for n, e in self._refused.items()]
        return sorted(out, key=lambda s: s.name)
