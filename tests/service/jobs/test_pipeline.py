"""The bulk-indexing pipeline with several workers: same gallery as one worker, full
batches, repeats and bad members inside one source, and the per-worker model sessions."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import pytest

from service.gallery import Gallery, GalleryManager, local_backend
from service.jobs import ArchiveLimits, IndexConfig, IndexProgress, index_source, open_source
from service.jobs.pipeline import Model
from service.runtime import Inference, ModelRuntime, RuntimeOptions
from tests.service.conftest import TINY_DIM, random_image
from tests.service.gallery.helpers import stored_by_external
from tests.service.jobs.archives import crops, make_tar, market_name


class CountingModel:
    """A runtime wrapper recording every batch size and the most runs seen at once."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.preprocess, self.schema = runtime.preprocess, runtime.schema
        self.sizes: list[int] = []
        self.running = self.most_running = 0
        self.workers_asked: list[int] = []
        self._lock = threading.Lock()
        self._overlap = threading.Barrier(2, timeout=0.5)

    def for_workers(self, workers: int) -> Model:
        self.workers_asked.append(workers)
        return self

    def run_batch(self, batch: np.ndarray) -> Inference:
        with self._lock:
            self.sizes.append(len(batch))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            # give a second worker the chance to be inside at the same time
            with contextlib.suppress(threading.BrokenBarrierError):
                self._overlap.wait()
            return self.runtime.run_batch(batch)
        finally:
            with self._lock:
                self.running -= 1


def index(
    tmp: Path, runtime: ModelRuntime | CountingModel, members: dict[str, bytes], **config: int
) -> tuple[Gallery, GalleryManager, list[IndexProgress]]:
    rt = runtime.runtime if isinstance(runtime, CountingModel) else runtime
    manager = GalleryManager(local_backend(tmp / "data"), rt.manifest.model_id, TINY_DIM)
    gallery = manager.get_or_create("g")
    path = tmp / "a.tar"
    path.write_bytes(make_tar(members))
    reports: list[IndexProgress] = []
    done = index_source(
        open_source(path, ArchiveLimits()), gallery, runtime, IndexConfig(**config), reports.append
    )
    assert done
    return gallery, manager, reports


def stored(gallery: Gallery) -> dict[str | None, np.ndarray]:
    """External id -> embedding of every stored item."""
    return stored_by_external(gallery)


def test_workers_store_what_one_worker_stores(model_dir: Path, tmp_path: Path) -> None:
    members = crops(37)
    one, m1, _ = index(tmp_path / "one", ModelRuntime.load(model_dir), members, workers=1)
    counting = CountingModel(ModelRuntime.load(model_dir))
    many, m3, reports = index(tmp_path / "many", counting, members, workers=3, batch_size=8)
    a, b = stored(one), stored(many)
    assert len(a) == 37 and a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    assert counting.workers_asked == [3]
    assert counting.sizes.count(8) == 4 and sorted(counting.sizes) == [5, 8, 8, 8, 8]
    assert counting.most_running >= 2  # the workers really ran the model side by side
    assert sum(p.added for p in reports) == 37
    # ids follow the source's order: batches are committed in order
    ids = many.store.item_ids().tolist()
    fetched = many.store.fetch(ids)
    names = [fetched[i].metadata["file"] for i in ids]
    assert names == list(members)
    m1.close()
    m3.close()


def test_repeats_and_bad_members_inside_one_source(model_dir: Path, tmp_path: Path) -> None:
    """A crop repeated in one source is stored once; a member that does not decode is a
    failure and costs only its own row of its batch."""
    good = crops(20)
    first = next(iter(good.values()))
    members = {
        **good,
        market_name(500): first,  # same bytes as the first crop, another name
        market_name(501): b"\x89PNG\r\n\x1a\n but truncated",
        market_name(502): random_image(7),
        market_name(503): first,
        market_name(504): random_image(8),
        market_name(505): random_image(8),  # a repeat in the same batch: still in flight
    }
    counting = CountingModel(ModelRuntime.load(model_dir))
    gallery, manager, reports = index(tmp_path, counting, members, workers=2, batch_size=4)
    assert len(gallery) == 22
    assert sum(p.added for p in reports) == 22
    assert sum(p.duplicates for p in reports) == 3
    failures = [f for p in reports for f in p.failures]
    assert [f.member for f in failures] == [market_name(501)]
    # 23 members reach the workers: 5 full batches, then 501, 502 and 504, of which 501
    # does not decode
    assert sorted(counting.sizes) == [2, 4, 4, 4, 4, 4]
    manager.close()


def test_for_workers_splits_the_cores(model_dir: Path) -> None:
    runtime = ModelRuntime.load(model_dir, RuntimeOptions(threads=4, device="cpu"))
    assert runtime.for_workers(1) is runtime
    shared = runtime.for_workers(2)
    assert shared is not runtime and shared.options.threads == 2
    assert runtime.for_workers(2) is shared  # made once
    assert runtime.for_workers(4).options.threads == 1
    assert runtime.for_workers(64).options.threads == 1
    assert shared.observers is runtime.observers
    cfg = runtime.preprocess
    batch = np.random.default_rng(0).standard_normal((3, 3, cfg.height, cfg.width), np.float32)
    np.testing.assert_allclose(
        shared.run_batch(batch).embeddings, runtime.run_batch(batch).embeddings, atol=1e-5
    )


def test_index_workers_setting_reaches_the_pipeline(tmp_path: Path, model_dir: Path) -> None:
    from service.settings import Settings

    settings = Settings(model_dir=model_dir, data_dir=tmp_path, index_workers=3)
    assert settings.index_config().workers == 3
    with pytest.raises(ValueError):
        Settings(model_dir=model_dir, data_dir=tmp_path, index_workers=-1)
