"""Re-index a gallery after a model upgrade: re-embed every stored crop with the model now
served, into a new version of the gallery that replaces the old one only when complete.

The new version is built as a hidden gallery (:func:`staging_name`, a name no gallery may
have, so it is never listed or opened by the API) whose items name the same crops as the
old ones; searches keep answering from the old version (when it was built with the model
now served: one built with another model is refused until it is replaced). When every crop
is embedded, the old version is closed, what changed in it meanwhile is carried over (items
added are embedded, items deleted are dropped), and the new version takes its name in one
engine operation (a file rename, a collection rename); crops that no item names (left by an
add cut short between its crop and its item, over an hour ago) are then removed.
Interrupted, the job resumes where it stopped: the crops already in the new version are
skipped. Cancelled or failed, the new version is dropped and the old one is left as it was.

Item ids change (the new version allocates its own); external ids, cameras, times, metadata
and crops stay; attributes are predicted again by the new model. Each crop is embedded from
the original upload when it was kept (``crop_keep_original``), else from the thumbnail,
which equals embedding the original when the thumbnail covers the new model's input size
(the default: :mod:`service.gallery.crops`).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reidcore.preprocess import to_array
from service.api.uploads import predictions
from service.errors import GalleryNotFound, ModelMismatch, NotReindexable
from service.gallery import GalleryManager, GalleryStore, Item, NewItem
from service.gallery.blobs import BlobStore, original_key, sweep_orphans
from service.jobs.pipeline import IndexConfig, IndexProgress, Model
from service.jobs.store import Failure

logger = logging.getLogger(__name__)

STAGING = "_reindex_"
"""Prefix of a gallery's new version while it is built (no gallery name starts with ``_``)."""
SOURCE = "reindex:"
"""Prefix of a re-index job's ``source`` (``reindex:<gallery>``)."""
_SCAN = 1000


def staging_name(gallery: str) -> str:
    return STAGING + gallery


def job_source(gallery: str) -> str:
    return SOURCE + gallery


def open_old(galleries: GalleryManager, name: str) -> GalleryStore:
    """Gallery ``name`` opened with the model it was built with (to read its items)."""
    backend = galleries.backend
    try:
        return backend.open(name, *backend.recorded_model(name))
    except LookupError:
        raise GalleryNotFound(name) from None


def scan(store: GalleryStore) -> Iterator[Item]:
    """Every item of ``store``, by ascending id."""
    ids = store.item_ids().tolist()
    for start in range(0, len(ids), _SCAN):
        chunk = ids[start : start + _SCAN]
        found = store.fetch(chunk)
        yield from (found[i] for i in chunk if i in found)


def check_reindexable(galleries: GalleryManager, name: str, allow_partial: bool) -> int:
    """Raise :class:`NotReindexable` unless gallery ``name`` has crops to re-embed (all of
    its items, or some with ``allow_partial``); returns its number of items."""
    if galleries.blobs is None:
        raise NotReindexable("this service keeps no crops (setting crops=false)")
    store = open_old(galleries, name)
    try:
        items = list(scan(store))
    finally:
        store.close()
    without = sum(1 for it in items if it.crop is None)
    if items and without == len(items):
        raise NotReindexable(
            f"gallery {name!r} cannot be re-indexed: none of its {len(items)} items has a "
            "stored crop (it was built before the service kept crops); index the original "
            "images again with `reid index` or a bulk job"
        )
    if without and not allow_partial:
        raise NotReindexable(
            f"gallery {name!r}: {without} of its {len(items)} items have no stored crop and "
            "would be left out of the re-indexed gallery; ask again with allow_partial=true "
            "to re-index the others"
        )
    return len(items)


@dataclass
class _Run:
    """One re-index run: the old version, the new one and the model."""

    old: GalleryStore
    new: GalleryStore
    blobs: BlobStore
    model: Model
    config: IndexConfig

    def embed(self, items: Sequence[Item]) -> tuple[int, list[Failure]]:
        """Embed these items' crops into the new version; (added, failures)."""
        cfg = self.model.preprocess
        tensors = np.empty((len(items), 3, cfg.height, cfg.width), dtype=np.float32)
        ok: list[Item] = []
        failures = []
        for it, data in zip(items, self._crops(items), strict=True):
            why = self._load(it, data, tensors, len(ok))
            if why is None:
                ok.append(it)
            else:
                failures.append(Failure(f"item {it.id}", why))
        if not ok:
            return 0, failures
        out = self.model.run_batch(tensors[: len(ok)])
        new = [
            NewItem(
                camera=it.camera,
                timestamp=it.timestamp,
                external_id=it.external_id,
                metadata=it.metadata,
                attributes=predictions(self.model.schema, out.attributes, row),
                crop=it.crop,
                local=None if out.local is None else out.local[row],
            )
            for row, it in enumerate(ok)
        ]
        self.new.add(new, out.embeddings)
        return len(ok), failures

    def _crops(self, items: Sequence[Item]) -> list[bytes | None]:
        """Each item's original upload when it was kept, else its thumbnail (all fetched
        at once: one round trip's latency per batch on an object store)."""
        keys = [it.crop for it in items if it.crop is not None]
        got = self.blobs.get_many([original_key(k) for k in keys] + keys)
        n = len(keys)
        best = [orig or thumb for orig, thumb in zip(got[:n], got[n:], strict=True)]
        found = dict(zip(keys, best, strict=True))
        return [None if it.crop is None else found[it.crop] for it in items]

    def _load(self, it: Item, data: bytes | None, out: np.ndarray, row: int) -> str | None:
        """Decode the item's crop ``data`` into ``out[row]``; why not, when it cannot be."""
        if it.crop is None:
            return "no stored crop (added before crops were kept): left out"
        if data is None:
            return "its crop is missing from the blob store: left out"
        try:
            with Image.open(io.BytesIO(data)) as img:
                to_array(img.convert("RGB"), self.model.preprocess, out=out[row])
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return f"its crop does not decode ({exc}): left out"
        return None

    def pending(self) -> tuple[list[Item], int]:
        """(items of the old version whose crops the new one lacks, items already done)."""
        done = {it.crop for it in scan(self.new)}
        items = list(scan(self.old))
        todo = [it for it in items if it.crop is None or it.crop not in done]
        return todo, len(items) - len(todo)

    def drop_gone(self) -> None:
        """Remove from the new version the items deleted from the old one meanwhile."""
        kept = {it.crop for it in scan(self.old)}
        for it in scan(self.new):
            if it.crop not in kept:
                self.new.delete(it.id)


def reindex_gallery(
    galleries: GalleryManager,
    name: str,
    model: Model,
    config: IndexConfig,
    start: Callable[[int], bool],
    report: Callable[[IndexProgress], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> bool:
    """Re-embed gallery ``name``'s crops with ``model`` and replace it (module docstring).

    ``start(total)`` is called once the old version's size is known (False: do not run);
    ``report`` after each committed batch. Returns False when cancelled or not started: the
    new version is then kept for a resume; :func:`drop_new_version` discards it.
    """
    if galleries.blobs is None:
        raise NotReindexable("this service keeps no crops (setting crops=false)")
    backend = galleries.backend
    old = open_old(galleries, name)
    try:
        new = backend.open(staging_name(name), galleries.model_id, galleries.dim, create=True)
    except ModelMismatch:  # left by a re-index for an earlier model: start afresh
        backend.drop(staging_name(name))
        new = backend.open(staging_name(name), galleries.model_id, galleries.dim, create=True)
    run = _Run(old, new, galleries.blobs, model, config)
    try:
        completed = _embed_all(run, start, report, cancelled)
    except BaseException:
        new.close()
        raise
    finally:
        old.close()
    if not completed:
        new.close()
        return False
    _replace(galleries, name, run)
    return True


def _embed_all(
    run: _Run,
    start: Callable[[int], bool],
    report: Callable[[IndexProgress], None],
    cancelled: Callable[[], bool],
) -> bool:
    """Embed every crop the new version lacks, a batch at a time; False when cancelled."""
    todo, done = run.pending()
    if not start(len(todo) + done):
        return False
    report(IndexProgress(added=done))  # embedded before an interruption
    clock = time.perf_counter()
    size = run.config.batch_size
    for begin in range(0, len(todo), size):
        if cancelled():
            return False
        added, failures = run.embed(todo[begin : begin + size])
        now = time.perf_counter()
        report(IndexProgress(added=added, failures=failures, seconds=now - clock))
        clock = now
    return not cancelled()


def _replace(galleries: GalleryManager, name: str, run: _Run) -> None:
    """Carry over what changed in the old version meanwhile, then let the new one take its
    name; every gallery operation of this process waits meanwhile."""
    with galleries.exclusive(name):
        if name not in galleries.backend.names():
            run.new.close()
            galleries.backend.drop(staging_name(name))
            raise GalleryNotFound(name)
        run.old = open_old(galleries, name)
        try:
            todo, _ = run.pending()
            for begin in range(0, len(todo), run.config.batch_size):
                run.embed([it for it in todo[begin : begin + run.config.batch_size] if it.crop])
            run.drop_gone()
        finally:
            run.old.close()
            run.new.close()
        galleries.backend.replace(staging_name(name), name)
    logger.info("gallery %s re-indexed with model %s", name, galleries.model_id[:12])
    store = galleries.get(name).store
    swept = sweep_orphans(run.blobs, name, lambda: {it.crop for it in scan(store) if it.crop})
    if swept:
        logger.info("gallery %s: %d crops no item named (an add cut short) removed", name, swept)


def drop_new_version(galleries: GalleryManager, name: str) -> None:
    """Discard the new version of a cancelled or failed re-index (the old one stays)."""
    galleries.backend.drop(staging_name(name))
