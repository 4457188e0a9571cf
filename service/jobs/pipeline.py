"""The bulk-indexing pipeline, shared by service jobs and ``reid index``.

Members are read one at a time (archives are sequential), identified by the sha256 of their
bytes (the item's external id, so the same crop is never stored twice in a gallery, whichever
archive or folder brings it), skipped when already present, decoded and preprocessed in a
thread pool (PIL and numpy release the GIL) while the model runs the previous batch, and fed
to the model in full batches. Each batch is one gallery transaction; progress is reported
only after it committed.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import PreprocessConfig, to_array
from service.api.uploads import predictions
from service.errors import ImageDecodeError
from service.gallery import Gallery, NewItem
from service.images import decode_upload
from service.jobs.naming import DEFAULT_FPS, ItemInfo, parse_dataset_name
from service.jobs.sources import Member, Source
from service.jobs.store import Failure
from service.runtime import Inference

logger = logging.getLogger(__name__)


class Model(Protocol):
    """What the pipeline needs of :class:`service.runtime.ModelRuntime`."""

    preprocess: PreprocessConfig
    schema: AttributeSchema

    def run_batch(self, batch: np.ndarray) -> Inference: ...


@dataclass(frozen=True)
class IndexConfig:
    """How a source is indexed."""

    batch_size: int = 32
    """Images per model run (every run is full except the last)."""
    decode_threads: int = 2
    """Threads decoding and preprocessing images."""
    max_image_pixels: int = 4096 * 4096
    """Largest decoded image accepted (width x height)."""
    fps: float = DEFAULT_FPS
    """Frame rate turning dataset frame numbers into timestamps."""


@dataclass
class IndexProgress:
    """What one committed step changed."""

    added: int = 0
    duplicates: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time since the previous report."""


@dataclass(frozen=True)
class _Ready:
    """A member waiting for its decoded input tensor."""

    name: str
    external_id: str
    info: ItemInfo
    tensor: Future[np.ndarray]


def external_id(data: bytes) -> str:
    """The identity of a crop: the sha256 of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def member_info(member: Member, infos: dict[str, ItemInfo], fps: float) -> ItemInfo | None:
    """Camera/time from the manifest, else from a dataset-style file name."""
    return infos.get(posixpath.normpath(member.name)) or parse_dataset_name(member.name, fps)


def _decode(data: bytes, name: str, max_pixels: int, cfg: PreprocessConfig) -> np.ndarray:
    return to_array(decode_upload(data, max_pixels, name), cfg)  # [3, H, W]


def _chunks(it: Iterator[Member], size: int) -> Iterator[list[Member]]:
    chunk: list[Member] = []
    for m in it:
        chunk.append(m)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Indexer:
    """One run of the pipeline over a source (see :func:`index_source`)."""

    def __init__(
        self,
        source: Source,
        gallery: Gallery,
        model: Model,
        config: IndexConfig,
        report: Callable[[IndexProgress], None],
        pool: ThreadPoolExecutor,
    ) -> None:
        self.source, self.gallery, self.model, self.config = source, gallery, model, config
        self.report, self.pool = report, pool
        self.pending = IndexProgress()
        self.batch: list[tuple[_Ready, np.ndarray]] = []
        self.clock = time.perf_counter()

    def submit(self, chunk: list[Member]) -> list[_Ready]:
        """Identify, deduplicate and start decoding one chunk of members."""
        candidates: list[tuple[Member, str, ItemInfo]] = []
        for m in chunk:
            if m.data is None:
                self.pending.failures.append(Failure(m.name, m.error or "unreadable"))
                continue
            info = member_info(m, self.source.infos, self.config.fps)
            if info is None:
                reason = "no camera/timestamp: not in a manifest and not a Market-1501/DukeMTMC-style name"
                self.pending.failures.append(Failure(m.name, reason))
                continue
            candidates.append((m, external_id(m.data), info))
        known = self.gallery.find_external([e for _, e, _ in candidates])
        self.pending.duplicates += sum(1 for _, e, _ in candidates if e in known)
        cfg, px = self.model.preprocess, self.config.max_image_pixels
        return [
            _Ready(m.name, e, info, self.pool.submit(_decode, m.data or b"", m.name, px, cfg))
            for m, e, info in candidates
            if e not in known
        ]

    def collect(self, ready: list[_Ready]) -> None:
        """Wait for decoded tensors; run the model whenever a batch is full."""
        for r in ready:
            try:
                tensor = r.tensor.result()
            except ImageDecodeError as exc:
                self.pending.failures.append(Failure(r.name, str(exc)))
                continue
            self.batch.append((r, tensor))
            if len(self.batch) >= self.config.batch_size:
                self.flush()

    def flush(self) -> None:
        """Model + one gallery transaction for the batch, then report (after the commit)."""
        if self.batch:
            out = self.model.run_batch(np.stack([t for _, t in self.batch]))  # [B, 3, H, W]
            items = [
                NewItem(
                    camera=r.info.camera,
                    timestamp=r.info.timestamp,
                    external_id=r.external_id,
                    metadata={**r.info.metadata, "file": r.name},
                    attributes=predictions(self.model.schema, out.attributes, row),
                )
                for row, (r, _) in enumerate(self.batch)
            ]
            results = self.gallery.add(items, out.embeddings)
            created = sum(1 for x in results if x.created)
            self.pending.added += created
            self.pending.duplicates += len(results) - created
            self.batch = []
        now = time.perf_counter()
        self.pending.seconds, self.clock = now - self.clock, now
        self.report(self.pending)
        self.pending = IndexProgress()


def index_source(
    source: Source,
    gallery: Gallery,
    model: Model,
    config: IndexConfig,
    report: Callable[[IndexProgress], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> bool:
    """Index every member of ``source`` into ``gallery``; False when cancelled mid-way.

    ``report`` is called after each committed batch (and once at the end) with what changed.
    Members already in the gallery (same bytes) are counted as duplicates, never re-added;
    unreadable or non-image members are reported as failures with their reason.
    """
    with ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode") as pool:
        run = _Indexer(source, gallery, model, config, report, pool)
        previous: list[_Ready] = []
        for chunk in _chunks(source.members(), config.batch_size):
            if cancelled():
                for r in previous:
                    r.tensor.cancel()
                return False
            current = run.submit(chunk)  # decodes while the previous chunk runs the model
            run.collect(previous)
            previous = current
        run.collect(previous)
        run.flush()
    return True
