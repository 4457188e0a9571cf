"""Crash safety: ``reid index`` killed with SIGKILL mid-way, again and again, then re-run.

After every kill: each item the job had reported done is stored and found by search, the
gallery's rows and its rebuilt index agree item for item, and re-running finishes the job
without a duplicate. A service job left running by a dead process resumes at startup.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.gallery import GalleryManager, local_backend
from service.jobs import JobState, JobStore
from service.runtime import ModelRuntime
from tests.service.conftest import TINY_DIM, random_image
from tests.service.gallery.helpers import stored
from tests.service.jobs.archives import crops, make_tar
from tests.service.test_jobs_api import wait

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 800
KILL_AFTER = (0, 120, 400, 650)  # items the running job has reported done (0: at once)


def _write_crops(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(N_IMAGES):
        p = folder / f"{i // 4:04d}_c{1 + i % 2}s1_{i:06d}_00.png"
        p.write_bytes(random_image(5000 + i, size=(64, 32)))
        paths.append(p)
    return paths


def _reported_done(data: Path) -> int:
    """Done count of the most recent job, read as any other process would."""
    db = data / "jobs.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT added + duplicates FROM jobs ORDER BY created DESC LIMIT 1"
        ).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()
    return int(row[0]) if row else 0


def _run_index(folder: Path, model_dir: Path, data: Path, kill_after: int | None) -> bool:
    """Run ``reid index``; SIGKILL it once ``kill_after`` items are done. True if killed."""
    cmd = [sys.executable, "-m", "reidcore.cli", "--log-level", "WARNING", "index", str(folder)]
    cmd += ["--gallery", "g", "--model", str(model_dir), "--data", str(data)]
    cmd += ["--batch-size", "8", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if kill_after is None:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
            return False
        end = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < end:
            if _reported_done(data) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return True
            time.sleep(0.003)
        return False  # it finished first
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _check_gallery(model_dir: Path, data: Path, acknowledged: list[Path]) -> int:
    """Index and metadata agree; every acknowledged crop is stored and found first."""
    runtime = ModelRuntime.load(model_dir)
    manager = GalleryManager(local_backend(data), runtime.manifest.model_id, TINY_DIM)
    manager.open_all()
    try:
        g = manager.get_or_create("g")  # a kill before the first add leaves none
        ids, emb = stored(g)
        assert len(ids) == len(g)  # the in-memory index holds exactly the stored rows
        items = g.store.fetch(ids.tolist())
        rows = [(i, items[i].external_id, emb[r]) for r, i in enumerate(ids.tolist())]
        by_ext = {e: (i, b) for i, e, b in rows}
        assert len(by_ext) == len(rows)  # no duplicate crops
        for path in acknowledged:
            ext = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            assert ext in by_ext, f"{path.name} was reported done but is not stored"
        for item_id, emb in by_ext.values():
            best = g.search(emb, 1)[0]
            assert best.item.id == item_id or best.score == pytest.approx(1.0, abs=1e-6)
        return len(rows)
    finally:
        manager.close()


@pytest.mark.slow
def test_sigkill_mid_index_then_rerun(model_dir: Path, tmp_path: Path) -> None:
    paths = _write_crops(tmp_path / "crops")
    data = tmp_path / "data"
    killed_mid_way = 0
    for kill_after in KILL_AFTER:
        killed = _run_index(tmp_path / "crops", model_dir, data, kill_after)
        done = _reported_done(data)
        killed_mid_way += killed and done < N_IMAGES
        stored = _check_gallery(model_dir, data, paths[:done])
        assert stored >= done
    assert killed_mid_way >= 2, "the kills should land mid-way on this data size"
    _run_index(tmp_path / "crops", model_dir, data, None)
    assert _check_gallery(model_dir, data, paths) == N_IMAGES
    store = JobStore(data / "jobs.sqlite3")
    last = store.recent(1)[0]
    store.close()
    assert last.state == JobState.SUCCEEDED and last.done == N_IMAGES and last.failed == 0


def test_running_service_job_resumes_at_startup(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """A job left 'running' (its process died) is resumed without adding anything twice."""
    data = tmp_path / "data"
    c = make_client(data)
    first = wait(
        c,
        c.post("/v1/galleries/g/jobs", files={"archive": ("a.tar", make_tar(crops(20)))}).json()[
            "id"
        ],
    )
    assert first["added"] == 20
    c.__exit__(None, None, None)
    archive = data / "jobs" / "uploads" / "killed.upload"
    archive.write_bytes(make_tar(crops(40)))  # the first 20 are those already stored
    store = JobStore(data / "jobs.sqlite3")
    job_id = store.create("g", "b.tar", str(archive), "0" * 64, state=JobState.QUEUED)
    store.start(job_id, 40)  # what the dead process had got to: running
    store.close()
    again = make_client(data)
    resumed = wait(again, job_id)
    assert (resumed["state"], resumed["added"], resumed["duplicates"]) == ("succeeded", 20, 20)
    assert again.get("/v1/galleries/g").json()["items"] == 40
    assert not archive.exists()
