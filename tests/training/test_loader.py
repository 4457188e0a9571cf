from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import ImageDecodeError, PreprocessConfig, decode_image, to_array
from training.config import DataConfig
from training.data import loader as loader_mod
from training.data.errors import DatasetError
from training.data.loader import ReidBatch, ReidImageDataset, build_eval_loader, collate_items
from training.data.sampler import PKSampler
from training.data.transforms import EvalTransform
from training.data.types import Sample
from training.datasets import PreparedData, TrainLoader
from training.distributed import DistInfo

SMALL = PreprocessConfig(height=32, width=16)
N_IDS, PER_ID = 6, 3


@pytest.fixture(scope="module")
def jpeg_samples(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """6 identities × 3 tiny JPEGs, named Market-style, identities 11, 13, ... on disk."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(N_IDS):
        for j in range(PER_ID):
            pid, cam = 11 + 2 * i, 1 + j % 2
            path = root / f"{pid:04d}_c{cam}s1_{j:06d}_00.jpg"
            arr = rng.integers(0, 256, size=(40, 18, 3), dtype=np.uint8)
            Image.fromarray(arr).save(path, quality=90)
            samples.append(Sample(str(path), pid, cam))
    return samples


def train_labels(samples: list[Sample]) -> list[int]:
    ids = sorted({s.pid for s in samples})
    return [ids.index(s.pid) for s in samples]


def attribute_table(n: int) -> np.ndarray:
    return np.arange(n * 2, dtype=np.int64).reshape(n, 2) % 5


def small_loader(
    samples: list[Sample],
    num_workers: int,
    attributes: np.ndarray | None = None,
    seed: int = 1,
    **data: object,
) -> TrainLoader:
    """The trainer's :class:`TrainLoader` at 32×16 with P=3, K=2 (``data`` overrides)."""
    labels = train_labels(samples)
    prepared = PreparedData(
        name="jpegs",
        train=list(samples),
        labels=labels,
        num_classes=len(set(labels)),
        train_attributes=attributes,
        schema=AttributeSchema.empty(),
        evaluation=None,
        preprocess=SMALL,
    )
    fields: dict[str, object] = dict(height=SMALL.height, width=SMALL.width, p=3, k=2)
    fields.update(workers=num_workers, **data)
    return TrainLoader(prepared, DataConfig(**fields), seed, DistInfo())  # type: ignore[arg-type]


def epoch_batches(loader: TrainLoader, epoch: int) -> list[ReidBatch]:
    loader.start_epoch(epoch)
    return list(loader)


def check_batch(batch: ReidBatch, samples: list[Sample], labels: list[int], n: int) -> None:
    assert isinstance(batch, ReidBatch)
    assert batch.images.shape == (n, 3, 32, 16) and batch.images.dtype == torch.float32
    idx = batch.indices.tolist()
    assert batch.pids.tolist() == [labels[i] for i in idx]
    assert batch.camids.tolist() == [samples[i].camid for i in idx]
    assert batch.attributes is not None
    np.testing.assert_array_equal(batch.attributes.numpy(), attribute_table(len(samples))[idx])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_loader_yields_pk_batches_in_sampler_order(
    jpeg_samples: list[Sample], num_workers: int
) -> None:
    labels = train_labels(jpeg_samples)
    attrs = attribute_table(len(jpeg_samples))
    loader = small_loader(jpeg_samples, num_workers, attrs)
    sampler = loader.sampler
    assert isinstance(sampler, PKSampler)
    for epoch in range(2):
        batches = epoch_batches(loader, epoch)
        assert len(batches) == len(loader) > 0
        for batch in batches:
            check_batch(batch, jpeg_samples, labels, 6)
            pids = batch.pids.view(3, 2)
            assert (pids == pids[:, :1]).all() and len(set(pids[:, 0].tolist())) == 3
        got = torch.cat([b.indices for b in batches]).numpy()
        np.testing.assert_array_equal(got, sampler.epoch_indices(epoch))


def test_fixed_length_epochs_restart_the_sampler_with_new_shuffles(
    jpeg_samples: list[Sample],
) -> None:
    loader = small_loader(jpeg_samples, 0)
    n = len(loader)
    batches = list(loader.epoch_batches(3, 2 * n + 1))
    assert len(batches) == 2 * n + 1
    first = torch.cat([b.indices for b in batches[:n]])
    second = torch.cat([b.indices for b in batches[n : 2 * n]])
    assert first.shape == second.shape  # each pass: one whole sampler epoch
    assert first.tolist() != second.tolist()  # reshuffled
    np.testing.assert_array_equal(first.numpy(), loader.sampler.epoch_indices(3))  # type: ignore[attr-defined]
    again = list(loader.epoch_batches(3, 2 * n + 1))  # a pure function of (seed, epoch)
    assert [b.indices.tolist() for b in again] == [b.indices.tolist() for b in batches]
    assert len(list(loader.epoch_batches(3, 0))) == n


def test_random_sampler_mode_covers_the_dataset_once(jpeg_samples: list[Sample]) -> None:
    loader = small_loader(jpeg_samples, 0, sampler="random", batch_size=4)
    batches = epoch_batches(loader, 0)
    assert len(batches) == len(jpeg_samples) // 4
    seen = torch.cat([b.indices for b in batches]).tolist()
    assert len(set(seen)) == len(seen) == 4 * len(batches)
    assert batches[0].attributes is None


def test_workers_augment_differently_and_reproducibly(tmp_path: Path) -> None:
    """All samples are one image: without per-worker seeding both workers would match."""
    path = tmp_path / "0001_c1s1_000000_00.jpg"
    Image.fromarray(np.full((40, 18, 3), 128, dtype=np.uint8)).save(path)
    samples = [Sample(str(path), 1 + i // 2, 1) for i in range(8)]

    def one_run() -> list[torch.Tensor]:
        loader = small_loader(samples, 2, seed=3, sampler="random", batch_size=4)
        return [b.images for b in epoch_batches(loader, 0)]

    first, second = one_run(), one_run()
    assert not torch.equal(first[0], first[1])  # batch 0 from worker 0, batch 1 from worker 1
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_epoch_is_the_same_whether_or_not_earlier_epochs_ran(
    jpeg_samples: list[Sample], num_workers: int
) -> None:
    """What makes resume exact: epoch 1 of a fresh loader equals epoch 1 after epoch 0."""
    ran = small_loader(jpeg_samples, num_workers)
    epoch0 = epoch_batches(ran, 0)
    after = epoch_batches(ran, 1)
    fresh = epoch_batches(small_loader(jpeg_samples, num_workers), 1)
    assert len(after) == len(fresh) > 0
    for a, b in zip(after, fresh, strict=True):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    assert not torch.equal(epoch0[0].images, after[0].images)  # epochs do differ


def test_train_loader_errors_name_the_setting(jpeg_samples: list[Sample]) -> None:
    with pytest.raises(DatasetError, match="data.p=7, data.k=2"):
        small_loader(jpeg_samples, 0, p=7)  # 6 identities
    with pytest.raises(DatasetError, match="no full batch of 64"):
        small_loader(jpeg_samples, 0, sampler="random", batch_size=64)  # 18 images


@pytest.mark.parametrize("num_workers", [0, 2])
def test_eval_loader_matches_shared_preprocessing(
    jpeg_samples: list[Sample], num_workers: int
) -> None:
    loader = build_eval_loader(jpeg_samples, SMALL, batch_size=5, num_workers=num_workers)
    batches = list(loader)
    assert [len(b.indices) for b in batches] == [5, 5, 5, 3]
    images = torch.cat([b.images for b in batches])
    ref = np.stack([to_array(decode_image(Path(s.path).read_bytes()), SMALL) for s in jpeg_samples])
    np.testing.assert_array_equal(images.numpy(), ref)
    assert torch.cat([b.pids for b in batches]).tolist() == [s.pid for s in jpeg_samples]


def test_each_image_is_decoded_once_per_use(
    jpeg_samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def counting_decode(data: bytes, max_pixels: int | None = None) -> Image.Image:
        calls.append(len(data))
        return decode_image(data, max_pixels)

    monkeypatch.setattr(loader_mod, "decode_image", counting_decode)
    ds = ReidImageDataset(jpeg_samples, EvalTransform(SMALL))
    for i in range(len(ds)):
        ds[i]
    assert len(calls) == len(jpeg_samples)


def test_undecodable_image_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "0001_c1s1_000000_00.jpg"
    bad.write_bytes(b"not a jpeg at all")
    missing = tmp_path / "0002_c1s1_000000_00.jpg"
    ds = ReidImageDataset(
        [Sample(str(bad), 1, 1), Sample(str(missing), 2, 1)], EvalTransform(SMALL)
    )
    with pytest.raises(ImageDecodeError, match=str(bad)):
        ds[0]
    with pytest.raises(ImageDecodeError, match=str(missing)):
        ds[1]


def test_dataset_checks_label_and_attribute_lengths(jpeg_samples: list[Sample]) -> None:
    t = EvalTransform(SMALL)
    with pytest.raises(ValueError, match="labels"):
        ReidImageDataset(jpeg_samples, t, labels=[0, 1])
    with pytest.raises(ValueError, match="attribute_labels"):
        ReidImageDataset(jpeg_samples, t, attribute_labels=np.zeros((3, 2), dtype=np.int64))


def test_collate_stacks_items(jpeg_samples: list[Sample]) -> None:
    ds = ReidImageDataset(jpeg_samples, EvalTransform(SMALL), attribute_labels=attribute_table(18))
    batch = collate_items([ds[4], ds[0]])
    assert batch.indices.tolist() == [4, 0]
    assert torch.equal(batch.images[0], ds[4].image)
    assert batch.attributes is not None and batch.attributes.shape == (2, 2)
    assert batch.to("cpu").pids.tolist() == [jpeg_samples[4].pid, jpeg_samples[0].pid]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning memory needs CUDA")
def test_pin_memory_pins_every_tensor(jpeg_samples: list[Sample]) -> None:
    ds = ReidImageDataset(jpeg_samples, EvalTransform(SMALL), attribute_labels=attribute_table(18))
    pinned = collate_items([ds[0], ds[1]]).pin_memory()
    assert pinned.images.is_pinned() and pinned.pids.is_pinned()
    assert pinned.attributes is not None and pinned.attributes.is_pinned()
