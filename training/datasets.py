"""The data a :class:`~training.config.TrainConfig` describes: samples, labels, attributes,
the validation split, and a training loader whose every epoch is reproducible.

Reproducibility: :meth:`TrainLoader.start_epoch` re-seeds the sampler, the augmentation
stream and the worker seeds from ``(seed, epoch)``, so epoch ``e`` draws the same batches
and augmentations whether training started at epoch 0 or resumed at epoch ``e`` (workers are
not persistent for that reason: each epoch starts them with seeds derived from the epoch).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from torch.utils.data import Sampler as TorchSampler

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import PreprocessConfig
from training.config import DataConfig
from training.data.attributes import AttributeTable, join_attributes, load_attributes
from training.data.errors import DatasetError
from training.data.loader import ReidBatch, ReidImageDataset, build_eval_loader, make_loader
from training.data.readers import read_camera_folders, read_crops_csv, read_market, read_msmt17
from training.data.sampler import PKSampler
from training.data.split import relabel, split_validation
from training.data.transforms import TrainTransform, TrainTransformConfig
from training.data.types import ReidDataset, Sample
from training.distributed import DistInfo

logger = logging.getLogger(__name__)


@dataclass
class EvalSplit:
    """Query and gallery images with their per-image attribute labels (or None)."""

    query: list[Sample]
    """Query images (original identities)."""
    gallery: list[Sample]
    """Gallery images (original identities)."""
    query_attributes: np.ndarray | None
    """int64 ``[Nq, M]`` attribute classes, -1 unknown; None without attributes."""
    gallery_attributes: np.ndarray | None
    """int64 ``[Ng, M]``; None without attributes."""


@dataclass
class PreparedData:
    """Training samples with labels 0..C-1, attributes and the evaluation split."""

    name: str
    """Dataset name as recorded in checkpoints (e.g. ``market-val100-seed0``)."""
    train: list[Sample]
    """Training images with their original identities."""
    labels: list[int]
    """Training label (0..C-1) of each training image."""
    num_classes: int
    """Number of training identities C."""
    train_attributes: np.ndarray | None
    """int64 ``[N, M]`` attribute classes of each training image; None without attributes."""
    schema: AttributeSchema
    """Attribute schema (empty without attributes)."""
    evaluation: EvalSplit | None
    """Query/gallery to validate on; None when ``val_ids == 0`` and ``eval_split == val``."""
    preprocess: PreprocessConfig
    """The shared evaluation/serving preprocessing (input size, mean/std)."""


def read_dataset(cfg: DataConfig) -> ReidDataset:
    """The samples of ``cfg.root`` in ``cfg.format``; DatasetError naming the root if it fails."""
    if not cfg.root:
        raise DatasetError("data.root is empty: give the dataset folder (or CSV file)")
    root = Path(cfg.root)
    if not root.exists():
        raise DatasetError(f"data.root {root} does not exist (format {cfg.format})")
    match cfg.format:
        case "market":
            return read_market(root)
        case "msmt17":
            return read_msmt17(root)
        case "folders":
            crops = read_camera_folders(root)
            return ReidDataset(name=root.name, root=str(root), train=crops.samples)
        case "csv":
            crops = read_crops_csv(root)
            return ReidDataset(name=root.stem, root=str(root), train=crops.samples)
        case _:
            raise DatasetError(f"unknown data.format {cfg.format!r}")


def _evaluation_split(cfg: DataConfig, ds: ReidDataset) -> tuple[list[Sample], EvalSplit | None]:
    """Training samples left after carving validation, and the query/gallery to evaluate on."""
    if cfg.eval_split == "test":
        if not ds.query or not ds.gallery:
            raise DatasetError(f"data.eval_split=test but {ds.root} has no query/gallery split")
        return ds.train, EvalSplit(ds.query, ds.gallery, None, None)
    if cfg.val_ids == 0:
        return ds.train, None
    train, query, gallery = split_validation(ds.train, cfg.val_ids, cfg.val_seed)
    return train, EvalSplit(query, gallery, None, None)


def _attach_attributes(
    table: AttributeTable, train: Sequence[Sample], evaluation: EvalSplit | None
) -> np.ndarray:
    """Per-image attribute labels of the training set (and, in place, of the eval split)."""
    train_attr, missing = join_attributes(train, table)
    if len(missing) == len({s.pid for s in train}):
        raise DatasetError(
            f"no training identity has an attribute annotation in {table.schema.source} "
            "(wrong data.attributes file or data.attribute_split?)"
        )
    if evaluation is not None:
        evaluation.query_attributes = join_attributes(evaluation.query, table)[0]
        evaluation.gallery_attributes = join_attributes(evaluation.gallery, table)[0]
    return train_attr


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Read, split, annotate and relabel the dataset ``cfg`` names."""
    ds = read_dataset(cfg)
    if not ds.train:
        raise DatasetError(f"{cfg.root} has no training images")
    train, evaluation = _evaluation_split(cfg, ds)
    schema, train_attr = AttributeSchema.empty(), None
    if cfg.attributes:
        table = load_attributes(cfg.attributes, cfg.attribute_split, cfg.attribute_colours)
        schema = table.schema
        train_attr = _attach_attributes(table, train, evaluation)
    relabelled, mapping = relabel(train)
    name = ds.name if evaluation is None or cfg.eval_split == "test" else f"{ds.name}-val"
    logger.info(
        "data %s: %d training images of %d identities, %d attributes, evaluation on %s",
        name,
        len(train),
        len(mapping),
        len(schema),
        "none"
        if evaluation is None
        else f"{len(evaluation.query)} q / {len(evaluation.gallery)} g",
    )
    return PreparedData(
        name=name,
        train=list(train),
        labels=[s.pid for s in relabelled],
        num_classes=len(mapping),
        train_attributes=train_attr,
        schema=schema,
        evaluation=evaluation,
        preprocess=PreprocessConfig(height=cfg.height, width=cfg.width),
    )


class TrainLoader:
    """Augmented training batches; call :meth:`start_epoch` before iterating each epoch."""

    def __init__(self, data: PreparedData, cfg: DataConfig, seed: int, info: DistInfo) -> None:
        self.seed = seed
        transform_cfg = TrainTransformConfig(
            preprocess=data.preprocess, flip_p=cfg.flip_p, pad=cfg.pad, erase_p=cfg.erase_p
        )
        self.transform = TrainTransform(transform_cfg, seed=seed)
        self.dataset = ReidImageDataset(
            data.train, self.transform, data.labels, data.train_attributes
        )
        self.sampler_generator = torch.Generator()
        self.sampler = self._build_sampler(data.labels, cfg, info)
        self.batch_size = cfg.p * cfg.k if cfg.sampler == "pk" else cfg.batch_size
        self.generator = torch.Generator()
        self.loader = make_loader(
            self.dataset,
            batch_size=self.batch_size,
            num_workers=cfg.workers,
            generator=self.generator,
            pin_memory=info.device.type == "cuda",
            sampler=self.sampler,
            drop_last=True,
        )
        if len(self.loader) == 0:
            raise DatasetError(
                f"{len(data.train)} training images make no full batch of {self.batch_size}"
            )

    def _build_sampler(
        self, labels: list[int], cfg: DataConfig, info: DistInfo
    ) -> TorchSampler[int]:
        if cfg.sampler == "pk":
            try:
                return PKSampler(
                    labels, cfg.p, cfg.k, self.seed, rank=info.rank, world_size=info.world_size
                )
            except ValueError as exc:
                raise DatasetError(f"data.p={cfg.p}, data.k={cfg.k}: {exc}") from None
        if info.distributed:
            return DistributedSampler(
                self.dataset,
                num_replicas=info.world_size,
                rank=info.rank,
                seed=self.seed,
                drop_last=True,
            )
        return RandomSampler(self.dataset, generator=self.sampler_generator)

    def start_epoch(self, epoch: int, pass_index: int = 0) -> None:
        """Select epoch ``epoch``'s batches and augmentation streams (a pure function of
        ``(seed, epoch, pass_index)``; ``pass_index`` counts the sampler's passes within an
        epoch of fixed length)."""
        key = [self.seed, epoch, 7] + ([pass_index] if pass_index else [])
        epoch_seed = int(np.random.default_rng(key).integers(2**62))
        if isinstance(self.sampler, PKSampler | DistributedSampler):  # later passes: own order
            self.sampler.set_epoch(epoch + (pass_index << 32))
        self.sampler_generator.manual_seed(epoch_seed)
        self.transform.reseed(epoch_seed + 1)  # main-process loading (workers reseed their own)
        self.generator.manual_seed(epoch_seed + 2)  # worker seeds derive from this

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[ReidBatch]:
        return iter(self.loader)

    def epoch_batches(self, epoch: int, steps: int) -> Iterator[ReidBatch]:
        """Epoch ``epoch``'s batches: one pass of the sampler (``steps`` = 0), or exactly
        ``steps`` batches over as many passes as needed, each reshuffled."""
        self.start_epoch(epoch)
        if steps == 0:
            yield from self.loader
            return
        done, pass_index = 0, 0
        while True:
            for batch in self.loader:
                if done == steps:
                    return
                yield batch
                done += 1
            pass_index += 1
            self.start_epoch(epoch, pass_index)


def build_eval_loaders(
    split: EvalSplit, preprocess: PreprocessConfig, batch_size: int, workers: int
) -> tuple[DataLoader[ReidBatch], DataLoader[ReidBatch]]:
    """Query and gallery loaders through the shared evaluation preprocessing."""
    return (
        build_eval_loader(split.query, preprocess, batch_size, workers),  # type: ignore[return-value]
        build_eval_loader(split.gallery, preprocess, batch_size, workers),
    )
