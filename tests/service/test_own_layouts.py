"""Indexing the layouts camera systems export: one folder per camera, times from the user's
rule or unknown; the rules are recorded in the job; unknown times stay out of time filters."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reidcore.cli import main
from tests.service.conftest import random_image
from tests.service.jobs.archives import make_tar
from tests.service.test_jobs_api import submit, wait

NOON = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc).timestamp()


def _search(c: Any, image: bytes, **form: str) -> list[dict[str, Any]]:
    r = c.post("/v1/galleries/g/search", files={"image": ("q.png", image)}, data={"k": 5, **form})
    assert r.status_code == 200, r.text
    return list(r.json()["matches"])


def test_camera_folders_with_no_options(make_client: Callable[..., Any], tmp_path: Path) -> None:
    c = make_client(tmp_path / "data")
    members = {"cam1/frame_2.png": random_image(1), "export/cam2/frame_3.png": random_image(2)}
    members["loose.png"] = random_image(3)  # no folder, no convention: fails with a reason
    job = wait(c, submit(c, make_tar(members))["id"])
    assert (job["state"], job["added"], job["failed"]) == ("succeeded", 2, 1)
    assert job["failures"][0]["reason"].startswith("no camera:")
    assert job["naming"] == {
        "camera_level": None,
        "time": "auto",
        "time_format": None,
        "time_regex": None,
        "fps": 25.0,
    }
    (hit,) = _search(c, random_image(2))[:1]
    assert hit["item"]["camera"] == "cam2" and hit["item"]["timestamp"] is None
    assert len(_search(c, random_image(2))) == 2
    assert _search(c, random_image(2), time_from="2000-01-01T00:00:00Z") == []  # unknown times


def test_time_pattern_and_camera_level_options(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    c = make_client(tmp_path / "data")
    data = make_tar({"site/cam7/day1/f_20240501_120000.png": random_image(4)})
    r = c.post(
        "/v1/galleries/g/jobs",
        files={"archive": ("a.tar", data)},
        data={"camera_level": "2", "time_format": "%Y%m%d_%H%M%S"},
    )
    assert r.status_code == 202, r.text
    job = wait(c, r.json()["id"])
    assert job["naming"]["camera_level"] == 2 and job["naming"]["time"] == "name"
    item = _search(c, random_image(4), time_from="2024-05-01T11:59:00Z")[0]["item"]
    assert item["camera"] == "cam7" and item["timestamp"].startswith("2024-05-01T12:00:00")
    bad = c.post(
        "/v1/galleries/g/jobs",
        files={"archive": ("a.tar", data)},
        data={"time": "exif", "time_format": "%Y"},
    )
    assert bad.status_code in (400, 422) and "error" in bad.json()


def test_reid_index_folder_per_camera_with_mtime(
    model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    src = tmp_path / "src" / "cam1" / "2024-05-01"
    src.mkdir(parents=True)
    (src / "a.png").write_bytes(random_image(5))
    os.utime(src / "a.png", (NOON, NOON))
    data = tmp_path / "data"
    args = ["index", str(tmp_path / "src"), "--gallery", "g", "--model", str(model_dir)]
    args += ["--data", str(data), "--no-progress", "--camera-level", "1", "--time", "mtime"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 added" in out and "folder level 1; time mtime" in out
    from service.gallery import local_backend

    engine = local_backend(data)
    store = engine.open("g", *engine.recorded_model("g"))
    try:
        (item,) = store.fetch(store.item_ids().tolist()).values()
    finally:
        store.close()
    assert (item.camera, item.timestamp) == ("cam1", NOON)
    assert main([*args[:-2], "--time-regex", "("]) == 2


OLD_ITEMS = """CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, external_id TEXT UNIQUE,
camera TEXT NOT NULL, timestamp REAL NOT NULL, metadata TEXT NOT NULL, attributes TEXT NOT NULL,
embedding BLOB NOT NULL, created REAL NOT NULL)"""


def test_gallery_file_from_before_unknown_times_is_upgraded(tmp_path: Path) -> None:
    import math
    import sqlite3

    import numpy as np

    from service.gallery import NewItem, local_backend

    path = tmp_path / "galleries" / "old.sqlite3"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("model_id", "m"), ("dim", "2")])
    conn.execute(OLD_ITEMS)
    blob = np.array([1, 0], dtype=np.float32).tobytes()
    row = (7, "x", "c1", 5.0, "{}", "{}", blob, 0.0)
    conn.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
    conn.commit()
    conn.close()
    store = local_backend(tmp_path).open("old", "m", 2)
    try:
        added = store.add([NewItem("c2", math.nan, "y")], np.array([[0, 1]], dtype=np.float32))
        items = store.fetch([7, added[0].id])
    finally:
        store.close()
    assert added[0].id == 8 and items[7].timestamp == 5.0 and math.isnan(items[8].timestamp)
