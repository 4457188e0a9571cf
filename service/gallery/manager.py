"""All galleries of a data directory: ``<data>/galleries/<name>.sqlite3``.

Galleries open when the service starts. One built with another model stays listed but is
refused (:class:`ModelMismatch`) until deleted or served with its own model; the others
keep working.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from service.errors import GalleryNotFound, InvalidInput, ModelMismatch
from service.gallery.search import IndexOptions
from service.gallery.store import Gallery, rerank_lists_path

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SUFFIX = ".sqlite3"


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

    def __init__(self, data_dir: Path, model_id: str, dim: int, options: IndexOptions) -> None:
        self.root = Path(data_dir) / "galleries"
        self.model_id = model_id
        self.dim = dim
        self.options = options
        self._lock = threading.Lock()
        self._open: dict[str, Gallery] = {}
        self._refused: dict[str, ModelMismatch] = {}

    def open_all(self) -> None:
        """Open every gallery file of the data directory (rebuilding its index)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._discover_locked()

    def _discover_locked(self, only: str | None = None) -> None:
        """Open gallery files not open yet: all of them, or only ``only``.

        Another process (``reid index``) may have created them since the service started.
        """
        if only is not None:
            names = [only]
        else:
            names = [p.name[: -len(SUFFIX)] for p in sorted(self.root.glob(f"*{SUFFIX}"))]
        for name in names:
            path = self.root / f"{name}{SUFFIX}"
            if name in self._open or name in self._refused or not path.is_file():
                continue
            try:
                self._open[name] = Gallery.open(name, path, self.model_id, self.dim, self.options)
            except FileNotFoundError:  # gone, or still being created by another process
                continue
            except ModelMismatch as exc:
                logger.error("%s", exc)
                self._refused[name] = exc

    def close(self) -> None:
        with self._lock:
            for g in self._open.values():
                g.close()
            self._open.clear()

    def get(self, name: str) -> Gallery:
        """An open gallery; raises :class:`GalleryNotFound` or :class:`ModelMismatch`."""
        with self._lock:
            return self._get_locked(name)

    def _get_locked(self, name: str) -> Gallery:
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
                path = self.root / f"{name}{SUFFIX}"
                self.root.mkdir(parents=True, exist_ok=True)
                self._open[name] = Gallery.open(
                    name, path, self.model_id, self.dim, self.options, create=True
                )
                logger.info("gallery %s opened at %s (created if new)", name, path)
            return self._get_locked(name)

    def delete(self, name: str) -> None:
        """Delete a gallery and its files (refused galleries too)."""
        with self._lock:
            if name not in self._open and name not in self._refused:
                raise GalleryNotFound(name)
            gallery = self._open.pop(name, None)
            self._refused.pop(name, None)
            if gallery is not None:
                gallery.close()
            base = self.root / f"{name}{SUFFIX}"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{base}{suffix}").unlink(missing_ok=True)
            rerank_lists_path(base).unlink(missing_ok=True)
        logger.info("gallery %s deleted", name)

    def statuses(self) -> list[GalleryStatus]:
        """Every gallery, open or refused, sorted by name."""
        with self._lock:
            if self.root.is_dir():
                self._discover_locked()
            out = [GalleryStatus(n, "open", len(g)) for n, g in self._open.items()]
            out += [GalleryStatus(n, "model_mismatch", 0, str(e)) for n, e in self._refused.items()]
        return sorted(out, key=lambda s: s.name)
