"""Torch ``Dataset`` over re-ID image records, the ``DataLoader`` options every re-ID loader
shares (:func:`make_loader`) and the evaluation loader.

Each image is read and decoded exactly once per use (in the worker that serves it) and the
decoded PIL image goes straight to the transform. Batches are :class:`ReidBatch` records;
``pin_memory`` works on them (they define ``pin_memory()``). The training loader, whose
epochs are seeded for exact resume, is :class:`training.datasets.TrainLoader`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torch.utils.data import Sampler as TorchSampler

from reidcore.preprocess import ImageDecodeError, PreprocessConfig, decode_image
from training.data.transforms import EvalTransform
from training.data.types import Sample

logger = logging.getLogger(__name__)

Transform = Callable[[Image.Image], torch.Tensor]


@dataclass
class ReidItem:
    """One transformed sample."""

    image: torch.Tensor
    """float32 ``[3, H, W]``."""
    pid: int
    """Training label (relabelled identity) when the dataset has labels, else the pid on disk."""
    camid: int
    """Camera index."""
    attributes: torch.Tensor | None
    """int64 ``[M]`` attribute classes, or None without attribute labels."""
    index: int
    """Position of the sample in the dataset."""


@dataclass
class ReidBatch:
    """A collated batch of :class:`ReidItem`."""

    images: torch.Tensor
    """float32 ``[N, 3, H, W]``."""
    pids: torch.Tensor
    """int64 ``[N]``."""
    camids: torch.Tensor
    """int64 ``[N]``."""
    attributes: torch.Tensor | None
    """int64 ``[N, M]``, or None."""
    indices: torch.Tensor
    """int64 ``[N]`` dataset positions."""

    def pin_memory(self) -> ReidBatch:
        """Page-locked copies, for asynchronous host-to-GPU transfer (``DataLoader`` calls it)."""
        return ReidBatch(
            images=self.images.pin_memory(),
            pids=self.pids.pin_memory(),
            camids=self.camids.pin_memory(),
            attributes=None if self.attributes is None else self.attributes.pin_memory(),
            indices=self.indices.pin_memory(),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ReidBatch:
        """The batch on ``device``."""
        return ReidBatch(
            images=self.images.to(device, non_blocking=non_blocking),
            pids=self.pids.to(device, non_blocking=non_blocking),
            camids=self.camids.to(device, non_blocking=non_blocking),
            attributes=None
            if self.attributes is None
            else self.attributes.to(device, non_blocking=non_blocking),
            indices=self.indices.to(device, non_blocking=non_blocking),
        )


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack equal-shaped CPU tensors into ``[N, ...]``.

    In a worker, ``default_collate`` writes straight into shared memory (no extra copy
    on the way to the main process; workers run torch single-threaded). In the main
    process the copy goes through numpy: torch's multi-threaded stack stalled for
    0.1-1.3 s per 64-image batch when other work kept the 2 cores busy (18 ms on one thread).
    """
    if torch.utils.data.get_worker_info() is not None:
        return default_collate(list(images))
    out = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype)
    out_np = out.numpy()
    for i, img in enumerate(images):
        out_np[i] = img.numpy()
    return out


def collate_items(items: Sequence[ReidItem]) -> ReidBatch:
    """Stack :class:`ReidItem` records into one :class:`ReidBatch`."""
    attrs = [it.attributes for it in items]
    return ReidBatch(
        images=stack_images([it.image for it in items]),
        pids=torch.tensor([it.pid for it in items], dtype=torch.int64),
        camids=torch.tensor([it.camid for it in items], dtype=torch.int64),
        attributes=None if attrs[0] is None else torch.stack(attrs),  # type: ignore[arg-type]
        indices=torch.tensor([it.index for it in items], dtype=torch.int64),
    )


def load_image(path: str) -> Image.Image:
    """Read and decode one image file to RGB; errors name the file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image {path}: {exc}") from None
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{path}: {exc}") from None


class ReidImageDataset(Dataset[ReidItem]):
    """Samples on disk -> :class:`ReidItem` through ``transform``.

    ``labels`` (one per sample) are the training targets, usually the pids relabelled to
    ``0..C-1``; without them an item carries the sample's own pid. ``attribute_labels`` is
    an ``[N, M]`` integer array of attribute classes per sample.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform,
        labels: Sequence[int] | None = None,
        attribute_labels: np.ndarray | None = None,
    ) -> None:
        n = len(samples)
        if labels is not None and len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} samples")
        if attribute_labels is not None and (
            attribute_labels.ndim != 2 or attribute_labels.shape[0] != n
        ):
            raise ValueError(f"attribute_labels must be [{n}, M], got {attribute_labels.shape}")
        self.samples = list(samples)
        self.transform = transform
        self.labels = None if labels is None else [int(v) for v in labels]
        self.attributes = (
            None
            if attribute_labels is None
            else torch.from_numpy(np.ascontiguousarray(attribute_labels, dtype=np.int64))
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ReidItem:
        sample = self.samples[index]
        image = self.transform(load_image(sample.path))  # decoded once, transformed once
        return ReidItem(
            image=image,
            pid=sample.pid if self.labels is None else self.labels[index],
            camid=sample.camid,
            attributes=None if self.attributes is None else self.attributes[index],
            index=index,
        )


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: give each worker's transform its own random stream.

    The worker seed is drawn by torch from the loader's generator, so it differs per
    worker and per start, and is reproducible for a given loader seed.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "reseed"):
        transform.reseed(info.seed)  # type: ignore[union-attr]
    logger.debug("worker %d seeded with %d", worker_id, info.seed)


WORKER_START_METHOD = "forkserver"
"""How DataLoader worker processes start (see :func:`make_loader`)."""


def make_loader(
    dataset: ReidImageDataset,
    *,
    batch_size: int,
    num_workers: int,
    generator: torch.Generator,
    pin_memory: bool,
    sampler: TorchSampler[int] | None = None,
    drop_last: bool = False,
    persistent_workers: bool = False,
) -> DataLoader[ReidItem]:
    """A ``DataLoader`` of :class:`ReidBatch` with the options every re-ID loader shares.

    Shared by :class:`training.datasets.TrainLoader` and :func:`build_eval_loader`: batches
    collated by :func:`collate_items`, and with workers, each worker's transform reseeded by
    :func:`seed_worker` from ``generator`` (so a seeded generator makes the augmentation
    reproducible). Without a ``sampler`` the samples come in order. ``persistent_workers``
    applies only when ``num_workers > 0``.

    Workers start through a fork server, not a plain ``fork`` of this process: a process
    that already runs threads (ONNX Runtime pools, a web server, torch's own) can fork a
    worker while one of them holds a lock, and that worker then waits forever.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_items,
        pin_memory=pin_memory,
        generator=generator,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=persistent_workers and num_workers > 0,
        multiprocessing_context=WORKER_START_METHOD if num_workers > 0 else None,
    )


def build_eval_loader(
    samples: Sequence[Sample],
    preprocess: PreprocessConfig,
    batch_size: int = 128,
    num_workers: int = 2,
    attribute_labels: np.ndarray | None = None,
) -> DataLoader[ReidItem]:
    """Batches in sample order through the shared serving preprocessing; pids as on disk."""
    dataset = ReidImageDataset(samples, EvalTransform(preprocess), None, attribute_labels)
    return make_loader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=True,
    )
