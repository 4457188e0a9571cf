"""Re-index on the real Milvus standalone server (PyPI ``milvus``, started here): the new
version replaces the old collection by drop + rename on the server, and another replica that
refused the old gallery (built by another model) serves the re-indexed one at its next call.

Skipped, with the reason, when the server package is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reidcore.preprocess import preprocess_batch
from service.errors import ModelMismatch
from service.gallery import BackendConfig, GalleryManager, MilvusOptions, NewItem
from service.gallery import open_backend as open_engine
from service.gallery.blobs import FileBlobStore
from service.gallery.crops import CropConfig, make_crop
from service.gallery.milvus_server import local_milvus_server
from service.images import decode_upload
from service.jobs import IndexConfig
from service.jobs.reindex import reindex_gallery, staging_name
from service.runtime import ModelRuntime, RuntimeOptions
from tests.service.conftest import random_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus standalone server on 127.0.0.1 for this module (~20 s to start)."""
    pytest.importorskip("milvus", reason="the Milvus server package (milvus) is absent")
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    with local_milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri


def _replica(uri: str, tmp: Path, runtime: ModelRuntime) -> GalleryManager:
    options = MilvusOptions(uri=uri, index_type="FLAT")
    backend = open_engine(BackendConfig("milvus", tmp, milvus=options))
    blobs = FileBlobStore(tmp / "blobs")  # shared by the replicas (one folder here)
    return GalleryManager(backend, runtime.manifest.model_id, runtime.dim, blobs)


def _embed(runtime: ModelRuntime, images: list[bytes]) -> np.ndarray:
    cfg = runtime.preprocess
    decoded = [decode_upload(b, 1 << 24, "x", cfg) for b in images]
    return runtime.run_batch(preprocess_batch(decoded, cfg)).embeddings


def test_reindex_replaces_the_collection_on_the_server(
    milvus_uri: str, tmp_path: Path, model_dir: Path, other_model_dir: Path
) -> None:
    old_rt = ModelRuntime.load(model_dir, RuntimeOptions(threads=1))
    new_rt = ModelRuntime.load(other_model_dir, RuntimeOptions(threads=1))
    images = [random_image(300 + i, size=(64, 32)) for i in range(10)]
    writer = _replica(milvus_uri, tmp_path, old_rt)
    g = writer.get_or_create("reidx")
    cfg = old_rt.preprocess
    crops = [
        make_crop(decode_upload(b, 1 << 24, "x", cfg), None, CropConfig(), (cfg.width, cfg.height))
        for b in images
    ]
    items = [NewItem("c1", 1000.0 + i, f"e{i}") for i in range(len(images))]
    g.add(items, _embed(old_rt, images), crops)
    writer.close()

    other = _replica(milvus_uri, tmp_path, new_rt)  # a replica already serving the new model
    with pytest.raises(ModelMismatch):
        other.get("reidx")
    runner = _replica(milvus_uri, tmp_path, new_rt)
    totals: list[int] = []

    def start(total: int) -> bool:
        totals.append(total)
        return True

    done = reindex_gallery(
        runner, "reidx", new_rt, IndexConfig(batch_size=4), start, lambda p: None
    )
    assert done and totals == [10]
    assert staging_name("reidx") not in runner.backend.names()
    assert runner.backend.recorded_model("reidx") == (new_rt.manifest.model_id, new_rt.dim)
    served = other.get("reidx")  # no restart: the refused gallery is looked at again
    assert len(served) == 10
    queries = _embed(new_rt, images)
    for i, q in enumerate(queries):
        [hit] = served.search(q, 1)
        assert hit.item.external_id == f"e{i}" and hit.score > 0.995
        assert hit.item.crop is not None and served.read_crop(hit.item.id)[1] == crops[i].thumbnail
    runner.delete("reidx")
    other.close()
    runner.close()
