"""Throughput of the training data path alone: read + decode + augment + collate, no model.

P×K batches (P=16, K=4) at 256×128 through the loader training uses (``prepare_data`` then
:class:`training.datasets.TrainLoader`, epoch 0 started as the trainer starts it) with 0, 1
and 2 worker processes, on the CUHK03-NP training crops in ../shared/data when present, else
on generated JPEGs of the same size (the report says which). Also times decode and augment
per image in this process, to show where the time goes. About a minute in all.

    .venv/bin/python -m benchmarks.dataloader [--seconds 12] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.results import write_section
from reidcore.preprocess import decode_image
from training.config import DataConfig
from training.data.loader import load_image
from training.data.transforms import TrainTransform, TrainTransformConfig
from training.data.types import Sample
from training.datasets import PreparedData, TrainLoader, prepare_data
from training.distributed import DistInfo

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03-np-detected"
"""A Market-layout root (only ``bounding_box_train/`` is used)."""
P, K = 16, 4


@dataclass
class Run:
    """One loader measurement."""

    workers: int
    first_batch_s: float
    """Seconds from creating the iterator to the first batch (worker start-up included: the
    trainer's workers restart every epoch, so every epoch pays it)."""
    images: int
    """Images in the batches after the first."""
    seconds: float
    """Seconds those batches took."""
    cpu_s: float
    """CPU seconds of this process over those batches (all of the work when workers == 0)."""

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def generated_root(root: Path, n_ids: int = 150, per_id: int = 8) -> Path:
    """A Market-layout ``root`` of random-texture 64×128 training JPEGs (stand-in for real
    crops)."""
    folder = root / "bounding_box_train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for pid in range(1, n_ids + 1):
        for j in range(per_id):
            path = folder / f"{pid:04d}_c{1 + j % 2}s1_{j:06d}_00.jpg"
            base = rng.integers(0, 256, size=(8, 4, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((64, 128), Image.Resampling.BILINEAR)
            noise = rng.integers(-20, 21, size=(128, 64, 3))
            arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(path, quality=90)
    return root


def data_config(root: Path, workers: int) -> DataConfig:
    """All of ``root``'s training images (no validation split), P×K batches, default augmentation."""
    return DataConfig(format="market", root=str(root), val_ids=0, p=P, k=K, workers=workers)


def time_loader(data: PreparedData, root: Path, workers: int, budget_s: float) -> Run:
    """Iterate the trainer's loader for about ``budget_s`` seconds (or one epoch)."""
    loader = TrainLoader(data, data_config(root, workers), seed=0, info=DistInfo())
    loader.start_epoch(0)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    images = 0
    c1 = time.process_time()
    for batch in it:
        images += len(batch.indices)
        if time.perf_counter() - t1 > budget_s:
            break
    t2, c2 = time.perf_counter(), time.process_time()
    del it, loader  # stops the workers
    return Run(workers, t1 - t0, images, t2 - t1, c2 - c1)


def time_stages(samples: Sequence[Sample], n: int = 300) -> dict[str, float]:
    """CPU milliseconds per image for read+decode and for augment, in this process.

    CPU time rather than wall time: it does not grow when other work holds the cores.
    """
    picks = [samples[i] for i in np.random.default_rng(0).choice(len(samples), n)]
    t0 = time.process_time()
    decoded = [load_image(s.path) for s in picks]
    t1 = time.process_time()
    transform = TrainTransform(TrainTransformConfig(), seed=0)
    for img in decoded:
        transform(img)
    t2 = time.process_time()
    raw = [Path(s.path).read_bytes() for s in picks]
    t3 = time.process_time()
    for data in raw:
        decode_image(data)
    t4 = time.process_time()
    return {
        "read + decode": 1e3 * (t1 - t0) / n,
        "decode only (bytes in memory)": 1e3 * (t4 - t3) / n,
        "augment + normalise (256×128)": 1e3 * (t2 - t1) / n,
    }


def dataset_root(tmp: Path) -> tuple[Path, str]:
    """The real CUHK03-NP root, else a generated one; and a description."""
    if (REAL / "bounding_box_train").is_dir():
        return REAL, "real CUHK03-NP detected training crops (bounding_box_train, 64×128 JPEGs)"
    return generated_root(tmp), "generated 64×128 JPEGs (../shared/data absent)"


def report(runs: list[Run], stages: dict[str, float], source: str, n: int, load: str) -> str:
    """The RESULTS.md section body."""
    lines = [
        f"Data: {source}, {n} images. Batches of P={P} × K={K} at 256×128 with flip, "
        "pad-crop, random erasing; `prepare_data` + `TrainLoader` as the trainer uses them "
        "(workers restart each epoch), no model.",
        f"Load average before the run: {load} (the 2 cores are shared with other work; "
        "figures are noisy and a lower bound of what an idle machine gives).",
        "",
        "| workers | images/s (after first batch) | first batch (s) | images timed "
        "| main-process CPU ms/image |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        cpu_ms = 1e3 * r.cpu_s / max(r.images, 1)
        lines.append(
            f"| {r.workers} | {r.rate:.0f} | {r.first_batch_s:.2f} | {r.images} | {cpu_ms:.2f} |"
        )
    lines += [
        "",
        "With 0 workers the CPU ms/image is the whole pipeline's cost, independent of how busy "
        "the machine is: 1000 / it is what one free core would deliver. With workers it is "
        "only the main process's share (receiving batches).",
    ]
    lines += ["", "Per image, single process, CPU time:", ""]
    lines += [f"- {name}: {ms:.2f} ms" for name, ms in stages.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="budget per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        root, source = dataset_root(Path(tmp))
        data = prepare_data(data_config(root, 0))
        print(f"data: {source}, {len(data.train)} images; load average {load}")
        stages = time_stages(data.train)
        for name, ms in stages.items():
            print(f"  {name}: {ms:.2f} CPU ms/image")
        runs = []
        for workers in args.workers:
            run = time_loader(data, root, workers, args.seconds)
            print(
                f"  workers={workers}: {run.rate:.0f} images/s "
                f"(first batch {run.first_batch_s:.2f} s, {run.images} images timed, "
                f"main-process CPU {1e3 * run.cpu_s / max(run.images, 1):.2f} ms/image)"
            )
            runs.append(run)
    body = report(runs, stages, source, len(data.train), load)
    path = write_section(
        "dataloader", "Training data loader throughput", body, "python -m benchmarks.dataloader"
    )
    print(f"wrote section 'dataloader' of {path}")


if __name__ == "__main__":
    main()
