"""The bulk-indexing pipeline, shared by service jobs and ``reid index``.

Members are read one at a time (archives are sequential) and identified by the sha256 of
their bytes (the item's external id, so the same crop is never stored twice in a gallery,
whichever archive or folder brings it); those already present are skipped. The new ones are
grouped into full batches, and each batch goes to one of ``workers`` threads, which decodes
and preprocesses it (PIL and numpy release the GIL) and runs the model on it. The workers
run side by side, each on its share of the cores (:meth:`ModelRuntime.for_workers`), so
decoding one batch overlaps the model on another without two thread pools fighting over the
same cores. Batches are committed in order, one gallery transaction each, and progress is
reported only after the commit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import PreprocessConfig, to_array
from service.api.uploads import predictions
from service.cpu import available_cpus
from service.errors import ImageDecodeError
from service.gallery import Gallery, NewItem
from service.gallery.crops import Crop, CropConfig, make_crop
from service.images import decode_upload
from service.jobs.naming import DEFAULT_FPS, ItemInfo
from service.jobs.rules import NamingRules, resolve
from service.jobs.sources import Member, Source
from service.jobs.store import Failure
from service.runtime import Inference

logger = logging.getLogger(__name__)


class Model(Protocol):
    """What the pipeline needs of :class:`service.runtime.ModelRuntime`."""

    preprocess: PreprocessConfig
    schema: AttributeSchema

    def run_batch(self, batch: np.ndarray) -> Inference: ...

    def for_workers(self, workers: int) -> Model: ...


@dataclass(frozen=True)
class IndexConfig:
    """How a source is indexed."""

    batch_size: int = 32
    """Images per model run (full except the last, and where a member fails to decode)."""
    workers: int = 0
    """Threads that each decode a batch and run the model on it; 0: one per core."""
    max_image_pixels: int = 4096 * 4096
    """Largest decoded image accepted (width x height)."""
    fps: float = DEFAULT_FPS
    """Frame rate turning dataset frame numbers into timestamps."""
    crop: CropConfig | None = None
    """How the crop kept with each item is made (None: no crop is kept)."""


@dataclass
class IndexProgress:
    """What one committed step changed."""

    added: int = 0
    duplicates: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time since the previous report."""


class Claims(Protocol):
    """What a resumable job remembers of the items it adds (:class:`JobManager`'s store).

    Before a batch is stored its external ids are claimed; when the job is resumed after a
    crash, members found in the gallery under an id it claimed are its own additions, counted
    as added, not as duplicates.
    """

    def claimed(self) -> set[str]: ...

    def claim(self, external_ids: list[str]) -> None: ...


@dataclass(frozen=True)
class _New:
    """A member not yet in the gallery."""

    name: str
    data: bytes
    external_id: str
    info: ItemInfo
    raw_name_hex: str | None = None

    def failure(self, reason: str) -> Failure:
        if self.raw_name_hex is not None:
            reason = f"{reason} (raw name bytes: {self.raw_name_hex})"
        return Failure(self.name, reason)

    def metadata(self) -> dict[str, object]:
        raw = {} if self.raw_name_hex is None else {"file_bytes_hex": self.raw_name_hex}
        return {**self.info.metadata, "file": self.name, **raw}


@dataclass
class _Encoded:
    """A batch after its worker: the members that decoded, their model answer, the rest."""

    members: list[_New]
    inference: Inference | None
    failed: list[tuple[_New, str]]
    """Members that did not decode, with the reason."""
    crops: list[Crop] | None = None
    """The decoded members' crops (when crops are kept)."""


def external_id(data: bytes) -> str:
    """The identity of a crop: the sha256 of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def member_info(member: Member, infos: dict[str, ItemInfo], rules: NamingRules) -> ItemInfo | str:
    """Camera/time from the manifest, a dataset-style name or the job's rules; else why not."""
    return resolve(member.name, member.data or b"", member.mtime, infos, rules)


def available_workers(config: IndexConfig) -> int:
    """``config.workers``, or one per core when it is 0."""
    return config.workers or available_cpus()


class _Indexer:
    """One run of the pipeline over a source (see :func:`index_source`)."""

    def __init__(
        self,
        source: Source,
        gallery: Gallery,
        model: Model,
        config: IndexConfig,
        report: Callable[[IndexProgress], None],
        rules: NamingRules,
        claims: Claims | None = None,
    ) -> None:
        self.source, self.gallery, self.model, self.config = source, gallery, model, config
        self.rules = rules
        self.report = report
        self.claims = claims
        self.claimed = set() if claims is None else claims.claimed()
        """External ids this job stored before it was interrupted (resumed jobs)."""
        self.pending = IndexProgress()
        self.in_flight: dict[str, list[_New]] = {}
        """External ids sent to a worker and not yet committed, with the later members of
        identical bytes waiting on them (stripped of their bytes): they share its outcome."""
        self.clock = time.perf_counter()

    def batches(
        self, members: Iterator[Member], cancelled: Callable[[], bool]
    ) -> Iterator[list[_New]]:
        """Full batches of members that are neither in the gallery nor on their way to it.

        Members are looked up in the gallery a batch at a time; unreadable ones and ones
        without camera/time become failures of the next report.
        """
        batch: list[_New] = []
        for chunk in _chunks(members, self.config.batch_size):
            if cancelled():
                return
            batch += self._new_members(chunk)
            while len(batch) >= self.config.batch_size:
                yield batch[: self.config.batch_size]
                batch = batch[self.config.batch_size :]
        if batch:
            yield batch

    def _new_members(self, chunk: list[Member]) -> list[_New]:
        candidates: list[_New] = []
        for m in chunk:
            if m.data is None:
                self.pending.failures.append(
                    Failure(m.name, m.failure_reason(m.error or "unreadable"))
                )
                continue
            info = member_info(m, self.source.infos, self.rules)
            if isinstance(info, str):  # why it has no camera
                self.pending.failures.append(Failure(m.name, m.failure_reason(info)))
                continue
            candidates.append(_New(m.name, m.data, external_id(m.data), info, m.raw_name_hex))
        known = self.gallery.find_external([c.external_id for c in candidates])
        fresh = []
        for c in candidates:
            if c.external_id in self.in_flight:
                self.in_flight[c.external_id].append(dataclasses.replace(c, data=b""))
            elif c.external_id not in known:
                self.in_flight[c.external_id] = []
                fresh.append(c)
            elif c.external_id in self.claimed:  # stored by this job before an interruption
                self.claimed.discard(c.external_id)
                self.pending.added += 1
            else:
                self.pending.duplicates += 1
        return fresh

    def encode(self, batch: list[_New]) -> _Encoded:
        """Decode, preprocess and run the model: a worker's part (any thread)."""
        cfg = self.model.preprocess
        tensors = np.empty((len(batch), 3, cfg.height, cfg.width), dtype=np.float32)
        decoded: list[_New] = []
        failed: list[tuple[_New, str]] = []
        crop = self.config.crop
        crops: list[Crop] | None = None if crop is None else []
        for m in batch:
            try:
                image = decode_upload(m.data, self.config.max_image_pixels, m.name, cfg)
                to_array(image, cfg, out=tensors[len(decoded)])
            except ImageDecodeError as exc:
                failed.append((m, str(exc)))
                continue
            if crop is not None and crops is not None:
                crops.append(make_crop(image, m.data, crop, (cfg.width, cfg.height)))
            decoded.append(m)
        inference = self.model.run_batch(tensors[: len(decoded)]) if decoded else None
        return _Encoded(decoded, inference, failed, crops)

    def commit(self, encoded: _Encoded) -> None:
        """One gallery transaction for the batch, then report (after the commit).

        Identical members waiting on a member of the batch share its outcome: duplicates of
        it once stored, failures with its reason when it did not decode.
        """
        for m, reason in encoded.failed:
            self.pending.failures += [
                r.failure(reason) for r in [m, *self.in_flight.pop(m.external_id)]
            ]
        if encoded.inference is not None:
            out = encoded.inference
            items = [
                NewItem(
                    camera=m.info.camera,
                    timestamp=math.nan if m.info.timestamp is None else m.info.timestamp,
                    external_id=m.external_id,
                    metadata=m.metadata(),
                    attributes=predictions(self.model.schema, out.attributes, row),
                    local=None if out.local is None else out.local[row],
                )
                for row, m in enumerate(encoded.members)
            ]
            if self.claims is not None:
                self.claims.claim([m.external_id for m in encoded.members])
            results = self.gallery.add(items, out.embeddings, encoded.crops)
            created = sum(1 for x in results if x.created)
            self.pending.added += created
            self.pending.duplicates += len(results) - created
        for m in encoded.members:
            self.pending.duplicates += len(self.in_flight.pop(m.external_id))
        self.flush()

    def flush(self) -> None:
        """Report what changed since the previous report."""
        now = time.perf_counter()
        self.pending.seconds, self.clock = now - self.clock, now
        self.report(self.pending)
        self.pending = IndexProgress()


def _chunks(it: Iterator[Member], size: int) -> Iterator[list[Member]]:
    chunk: list[Member] = []
    for m in it:
        chunk.append(m)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def index_source(
    source: Source,
    gallery: Gallery,
    model: Model,
    config: IndexConfig,
    report: Callable[[IndexProgress], None],
    cancelled: Callable[[], bool] = lambda: False,
    rules: NamingRules | None = None,
    claims: Claims | None = None,
) -> bool:
    """Index every member of ``source`` into ``gallery``; False when cancelled mid-way.

    ``report`` is called after each committed batch (and once at the end) with what changed.
    Members already in the gallery (same bytes) are counted as duplicates, never re-added,
    unless ``claims`` says this job itself stored them before it was interrupted (added);
    unreadable or non-image members are reported as failures with their reason, and so are
    the members identical to them. Camera and
    time of names with no convention come from ``rules`` (default: the camera folder, time
    unknown; :mod:`service.jobs.rules`); an unknown time is stored as NaN. Once
    cancelled, batches still with the workers are dropped: nothing is committed or reported
    after the last report.
    """
    workers = available_workers(config)
    rules = rules or NamingRules(fps=config.fps)
    run = _Indexer(source, gallery, model.for_workers(workers), config, report, rules, claims)
    with ThreadPoolExecutor(workers, thread_name_prefix="index") as pool:
        queued: deque[Future[_Encoded]] = deque()
        try:
            for batch in run.batches(source.members(), cancelled):
                queued.append(pool.submit(run.encode, batch))
                while len(queued) > workers:  # every worker busy, one batch ready behind
                    run.commit(queued.popleft().result())
                    if cancelled():
                        return False
            if cancelled():
                return False
            while queued:
                run.commit(queued.popleft().result())
        finally:
            for f in queued:
                f.cancel()
    run.flush()
    return True
