"""Service operations benchmark (loopback only, bounded in count and time).

1. Raw model speed: ONNX Runtime on preprocessed batches of ``max_batch``, images/s.
2. Bulk indexing (the jobs/``reid index`` pipeline) of real CUHK03 crops: images/s and its
   ratio to (1), measured in the same run.
3. Search over HTTP (uvicorn on 127.0.0.1) at 1, 8 and 32 concurrent clients, with
   micro-batching on and off: p50/p99 latency and requests/s.

The model is ``--model DIR`` if given, else ``models/osnet_x0_25_msmt17/1`` (written by
``reid export`` from ../shared/weights when possible), else the tiny test model (said so).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from benchmarks.results import load_note, write_section
from service.app import create_app
from service.gallery import GalleryManager, IndexOptions
from service.jobs import ArchiveLimits, IndexConfig, index_source, open_source
from service.runtime import ModelRuntime, RuntimeOptions
from service.settings import Settings
from service.threaded import serve_in_thread

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CROPS = REPO.parent / "shared" / "data" / "cuhk03-np-detected" / "bounding_box_train"
WEIGHTS = REPO.parent / "shared" / "weights" / "osnet_x0_25_msmt17.pth"
OSNET_DIR = REPO / "models" / "osnet_x0_25_msmt17" / "1"
CONCURRENCY = (1, 8, 32)
REQUESTS_PER_LEVEL = 96


def choose_model(arg: str | None, tmp: Path) -> tuple[Path, str]:
    """The model folder to measure and how it was obtained."""
    if arg:
        return Path(arg), f"`{arg}`"
    if not (OSNET_DIR / "manifest.json").exists() and WEIGHTS.exists():
        cmd = [sys.executable, "-m", "reidcore.cli", "export", "--checkpoint", str(WEIGHTS)]
        cmd += ["--out", str(OSNET_DIR), "--calibration-images", str(CROPS)]
        try:
            subprocess.run(cmd, check=True, timeout=600, capture_output=True)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"export of {WEIGHTS.name} failed ({exc}); using the tiny test model")
    if (OSNET_DIR / "manifest.json").exists():
        return OSNET_DIR, "OSNet x0.25 (MSMT17 weights) exported by `reid export`"
    from tests.service.tiny_model import write_tiny_model_folder

    return write_tiny_model_folder(tmp / "tiny" / "1"), "the TINY test model (no export available)"


def raw_model_speed(runtime: ModelRuntime, seconds: float = 8.0) -> float:
    """Images/s of the model alone on full batches of random preprocessed input."""
    cfg = runtime.preprocess
    batch = np.random.default_rng(0).standard_normal(
        (runtime.max_batch, 3, cfg.height, cfg.width), dtype=np.float32
    )
    runtime.run_batch(batch)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        runtime.run_batch(batch)
        n += len(batch)
    return n / (time.perf_counter() - t0)


def bulk_index_speed(runtime: ModelRuntime, folder: Path, data: Path) -> tuple[float, int]:
    """Images/s of the indexing pipeline over ``folder`` into a fresh gallery."""
    source = open_source(folder, ArchiveLimits())
    manager = GalleryManager(data, runtime.manifest.model_id, runtime.dim, IndexOptions())
    gallery = manager.get_or_create("bench")
    t0 = time.perf_counter()
    index_source(
        source, gallery, runtime, IndexConfig(batch_size=runtime.max_batch), lambda p: None
    )
    seconds = time.perf_counter() - t0
    count = len(gallery)
    manager.close()
    return len(source.names) / seconds, count


def search_load(url: str, query: bytes, clients: int) -> dict[str, float]:
    """``REQUESTS_PER_LEVEL`` searches spread over ``clients`` concurrent clients.

    The clients are threads in up to 4 client processes, started and warmed before the
    clock starts, so that they neither share the server's GIL nor count their start-up.
    """
    per_client = max(1, REQUESTS_PER_LEVEL // clients)
    processes = min(clients, 4)
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        warm = [pool.submit(_client_process, url, query, 1, 1) for _ in range(processes)]
        for w in warm:
            w.result()
        t0 = time.perf_counter()
        jobs = [
            pool.submit(_client_process, url, query, clients // processes, per_client)
            for _ in range(processes)
        ]
        results = [x for j in jobs for x in j.result()]
        wall = time.perf_counter() - t0
    lat = np.array([t for t, s in results if s == 200]) * 1000
    return {
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "rps": len(results) / wall,
        "errors": float(sum(s != 200 for _, s in results)),
    }


def _search_loop(url: str, query: bytes, count: int) -> list[tuple[float, int]]:
    """``count`` searches back to back: (seconds, status) of each."""
    out = []
    with httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(count):
            t0 = time.perf_counter()
            r = c.post("/v1/galleries/bench/search", files={"image": ("q.jpg", query)})
            out.append((time.perf_counter() - t0, r.status_code))
    return out


def _client_process(
    url: str, query: bytes, threads: int, per_client: int
) -> list[tuple[float, int]]:
    """One client process running ``threads`` search loops (no GIL shared with the server)."""
    with ThreadPoolExecutor(threads) as pool:
        jobs = [pool.submit(_search_loop, url, query, per_client) for _ in range(threads)]
        return [x for j in jobs for x in j.result()]


def overload_latency(
    url: str, query: bytes, processes: int = 4, threads: int = 8, per_client: int = 8
) -> dict[str, float]:
    """A bounded flood of searches past ``max_inflight_requests``: how fast a refusal comes.

    The clients run in separate processes so that their Python threads do not hold the
    server's GIL. Returns the count of 200s and 429s and the client-side p50/p99/max of the
    429s (ms).
    """
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        jobs = [
            pool.submit(_client_process, url, query, threads, per_client) for _ in range(processes)
        ]
        results = [x for j in jobs for x in j.result()]
    refused = np.array([t for t, s in results if s == 429]) * 1000
    ok = sum(s == 200 for _, s in results)
    if refused.size == 0:
        return {"ok": float(ok), "refused": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "ok": float(ok),
        "refused": float(refused.size),
        "p50": float(np.percentile(refused, 50)),
        "p99": float(np.percentile(refused, 99)),
        "max": float(refused.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model folder to measure")
    parser.add_argument("--images", type=int, default=1024, help="crops to bulk-index")
    parser.add_argument(
        "--section",
        default="service",
        help="RESULTS.md section to write (e.g. service_resnet50 for a second model)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model_dir, model_note = choose_model(args.model, tmp)
        runtime = ModelRuntime.load(model_dir, RuntimeOptions(max_batch=32))
        crops = tmp / "crops"
        crops.mkdir()
        files = sorted(CROPS.glob("*.jpg"))[: args.images]
        if not files:
            raise SystemExit(f"no crops in {CROPS}: this benchmark reads the CUHK03 folder")
        for f in files:
            (crops / f.name).symlink_to(f)
        raw = raw_model_speed(runtime)
        print(f"raw model: {raw:.1f} images/s")
        data = tmp / "data"
        bulk, stored = bulk_index_speed(runtime, crops, data)
        print(f"bulk index: {bulk:.1f} images/s ({bulk / raw:.0%} of raw), {stored} stored")
        query = files[len(files) // 2].read_bytes()
        rows = []
        for batching in (True, False):
            settings = Settings(
                model_dir=model_dir,
                data_dir=data,
                micro_batching=batching,
                max_inflight_requests=256,
            )
            with serve_in_thread(create_app(settings)) as url:
                search_load(url, query, 4)  # warm-up
                for clients in CONCURRENCY:
                    m = search_load(url, query, clients)
                    rows.append((batching, clients, m))
                    print(
                        f"micro-batching {'on ' if batching else 'off'} clients {clients:2d}: "
                        f"p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms, {m['rps']:.1f} req/s, "
                        f"{m['errors']:.0f} errors"
                    )
        overload_settings = Settings(model_dir=model_dir, data_dir=data, max_inflight_requests=4)
        with serve_in_thread(create_app(overload_settings)) as url:
            over = overload_latency(url, query)
        print(
            f"overload (4 processes x 8 clients x 8, max_inflight_requests=4): {over['ok']:.0f} answered, "
            f"{over['refused']:.0f} refused; 429 in p50 {over['p50']:.1f} ms, "
            f"p99 {over['p99']:.1f} ms, max {over['max']:.1f} ms"
        )
    body = [
        f"Model: {model_note}, input {runtime.preprocess.height}x{runtime.preprocess.width}, "
        f"dim {runtime.dim}, providers {runtime.providers}. Crops: {len(files)} CUHK03-NP "
        f"train JPEGs. {load_note()}",
        "",
        "| measurement | images/s |",
        "| --- | --- |",
        f"| raw model, batches of 32 | {raw:.1f} |",
        f"| bulk indexing (decode threads + full batches + SQLite) | {bulk:.1f} ({bulk / raw:.0%} of raw) |",
        "",
        f"Search over loopback HTTP from separate client processes, {REQUESTS_PER_LEVEL} "
        "requests per level, flat exact index "
        f"of {stored} items:",
        "",
        "| micro-batching | clients | p50 ms | p99 ms | requests/s | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    body += [
        f"| {'on' if b else 'off'} | {c} | {m['p50']:.1f} | {m['p99']:.1f} | {m['rps']:.1f} | {m['errors']:.0f} |"
        for b, c, m in rows
    ]
    body += [
        "",
        "Overload: 32 clients (4 client processes × 8 threads) × 8 searches against "
        "`max_inflight_requests=4`; client-side time from send to the 429 answer:",
        "",
        "| answered 200 | refused 429 | 429 p50 ms | 429 p99 ms | 429 max ms |",
        "| --- | --- | --- | --- | --- |",
        f"| {over['ok']:.0f} | {over['refused']:.0f} | {over['p50']:.1f} | {over['p99']:.1f} | "
        f"{over['max']:.1f} |",
    ]
    command = "python -m benchmarks.service " + " ".join(sys.argv[1:])
    title = "Service: bulk indexing and search under concurrency"
    if args.section != "service":
        title += f" ({args.section})"
    write_section(args.section, title, "\n".join(body), command.strip())


if __name__ == "__main__":
    main()
