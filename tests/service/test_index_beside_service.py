"""`reid index` run as its own process beside a running service: what it adds is searched
at once, with no restart, in an existing gallery and in one it creates."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.service.jobs.archives import crops

REPO = Path(__file__).resolve().parents[2]


def reid_index(folder: Path, gallery: str, model_dir: Path, data: Path) -> None:
    cmd = [sys.executable, "-m", "reidcore.cli", "--log-level", "WARNING", "index", str(folder)]
    cmd += ["--gallery", gallery, "--model", str(model_dir), "--data", str(data), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()


def write(folder: Path, members: dict[str, bytes]) -> None:
    folder.mkdir()
    for name, data in members.items():
        (folder / name).write_bytes(data)


def test_reid_index_beside_a_live_service(
    make_client: Callable[..., Any], model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    c = make_client(data)
    first = crops(6)  # one through the API now, five by `reid index` later
    spec = '[{"camera": "c1", "timestamp": "2026-01-01T00:00:00Z"}]'
    r = c.post(
        "/v1/galleries/g/items",
        files={"images": ("a.png", first.popitem()[1])},
        data={"items": spec},
    )
    assert r.status_code == 200, r.text
    more = crops(12, offset=100)
    write(tmp_path / "more", more)
    reid_index(tmp_path / "more", "g", model_dir, data)
    assert c.get("/v1/galleries/g").json()["items"] == 13
    name, image = list(more.items())[4]
    hits = c.post("/v1/galleries/g/search", files={"image": ("q.png", image)}).json()["matches"]
    assert hits[0]["item"]["metadata"]["file"] == name and hits[0]["score"] > 0.999

    write(tmp_path / "new", first)  # a gallery the service has never seen
    reid_index(tmp_path / "new", "fresh", model_dir, data)
    names = [g["name"] for g in c.get("/v1/galleries").json()["galleries"]]
    assert names == ["fresh", "g"]
    name, image = list(first.items())[2]
    hits = c.post("/v1/galleries/fresh/search", files={"image": ("q.png", image)}).json()
    assert hits["matches"][0]["item"]["metadata"]["file"] == name
