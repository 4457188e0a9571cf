"""``reid index --shard i/n``: disjoint parts by name; shards together index everything once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reidcore.cli import main
from service.jobs.shard import Shard
from tests.service.gallery.helpers import make_backend, stored_by_external
from tests.service.jobs.archives import crops


def test_parse() -> None:
    assert Shard.parse("1/4") == Shard(1, 4) and Shard.parse(" 0/1 ") == Shard(0, 1)
    for bad in ["4/4", "1", "-1/3", "a/b", "0/0", "1/2/3"]:
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)


def test_shards_partition_the_names() -> None:
    names = [f"cam{i % 5}/{i:05d}.jpg" for i in range(2000)] + ["é/ü.png", "x\udcff.jpg"]
    parts = [{n for n in names if Shard(i, 3).holds(n)} for i in range(3)]
    assert sum(len(p) for p in parts) == len(names) and set().union(*parts) == set(names)
    assert min(len(p) for p in parts) > 600  # an even split, not one shard doing everything


def test_shards_index_a_folder_into_one_milvus_gallery_once(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    src = tmp_path / "src"
    src.mkdir()
    members = crops(24)
    for name, data in members.items():
        (src / name).write_bytes(data)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("REID_GALLERY_BACKEND", "milvus")
    base = ["index", str(src), "--gallery", "g", "--model", str(model_dir)]
    base += ["--data", str(data_dir), "--no-progress"]
    for shard in ["0/3", "1/3", "2/3", "1/3"]:  # the last: a restarted shard
        assert main([*base, "--shard", shard]) == 0
    capsys.readouterr()
    assert main([*base, "--shard", "0/1"]) == 0  # overlaps every shard
    out = capsys.readouterr().out
    assert " 0 added" in out and f"{len(members)} already" in out, out
    assert main([*base, "--shard", "3/3"]) == 2
    from service.gallery import GalleryManager
    from service.runtime import ModelRuntime

    runtime = ModelRuntime.load(model_dir)
    manager = GalleryManager(
        make_backend(data_dir, "milvus"), runtime.manifest.model_id, runtime.dim
    )
    try:
        by_ext = stored_by_external(manager.get("g"))
        files = {
            i.metadata["file"]
            for i in manager.get("g")
            .store.fetch(manager.get("g").store.item_ids().tolist())
            .values()
        }
    finally:
        manager.close()
    assert len(by_ext) == len(members) and files == set(members)
