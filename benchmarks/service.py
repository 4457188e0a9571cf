"""Service operations benchmark (loopback only, bounded in count and time).

1. Raw model speed: ONNX Runtime on preprocessed batches of ``max_batch``, images/s, run
   two ways: one run at a time over every core, and one run per core side by side (the
   way bulk indexing runs it). The better of the two is "raw".
2. Bulk indexing (the jobs/``reid index`` pipeline) of real CUHK03 crops: images/s and its
   ratio to (1), measured in the same run.
3. Search over HTTP (uvicorn on 127.0.0.1) at 1, 8 and 32 concurrent clients, with
   micro-batching on and off: p50/p99 latency, requests/s and the server's CPU time per
   request. The clients are :mod:`benchmarks.loadgen` (one asyncio process, keep-alive
   connections, requests built once), so that on 2 cores they take little from the server.
4. Overload: 32 and 128 clients against ``max_inflight_requests=4``: how fast a 429 comes.

The model is ``--model DIR`` if given, else ``models/osnet_x0_25_msmt17/1`` (written by
``reid export`` from ../shared/weights when possible), else the tiny test model (said so).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.loadgen import load_in_process, multipart_request
from benchmarks.results import load_note, write_section
from reidcore.preprocess import to_array
from service.app import create_app
from service.cpu import available_cpus
from service.gallery import GalleryManager, local_backend
from service.images import decode_upload
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
REQUESTS_PER_LEVEL = 480
OVERLOAD_CLIENTS = (32, 128)
OVERLOAD_PER_CLIENT = 8
BULK_RUNS = 3


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


def raw_model_speed(runtime: ModelRuntime, workers: int = 1, seconds: float = 6.0) -> float:
    """Images/s of the model alone on full batches of random preprocessed input.

    ``workers`` threads run batches side by side on ``runtime.for_workers(workers)``.
    """
    model = runtime.for_workers(workers)
    cfg = runtime.preprocess
    batch = np.random.default_rng(0).standard_normal(
        (runtime.max_batch, 3, cfg.height, cfg.width), dtype=np.float32
    )
    model.run_batch(batch)  # warm-up
    stop = time.perf_counter() + seconds

    def loop(_: int) -> int:
        n = 0
        while time.perf_counter() < stop:
            model.run_batch(batch)
            n += len(batch)
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        n = sum(pool.map(loop, range(workers)))
    return n / (time.perf_counter() - t0)


def preprocess_speed(files: list[Path], runtime: ModelRuntime) -> float:
    """Images/s of decode + preprocess alone, one thread, over the crops' bytes in memory."""
    data = [f.read_bytes() for f in files]
    out = np.empty((3, runtime.preprocess.height, runtime.preprocess.width), dtype=np.float32)
    t0 = time.perf_counter()
    for d in data:
        to_array(decode_upload(d, 1 << 26), runtime.preprocess, out=out)
    return len(data) / (time.perf_counter() - t0)


def bulk_index_speed(runtime: ModelRuntime, folder: Path, data: Path) -> tuple[float, int]:
    """Images/s of the indexing pipeline (default workers) over ``folder`` into a fresh gallery."""
    source = open_source(folder, ArchiveLimits())
    manager = GalleryManager(local_backend(data), runtime.manifest.model_id, runtime.dim)
    gallery = manager.get_or_create("bench")
    t0 = time.perf_counter()
    index_source(
        source, gallery, runtime, IndexConfig(batch_size=runtime.max_batch), lambda p: None
    )
    seconds = time.perf_counter() - t0
    count = len(gallery)
    manager.close()
    return len(source.names) / seconds, count


def search_load(url: str, request: bytes, clients: int, per_client: int) -> dict[str, float]:
    """``clients`` concurrent clients, ``per_client`` requests each: latency, rate, server CPU.

    The server runs in this process and the clients in another, so this process's CPU
    time over the run is the server's.
    """
    cpu0 = time.process_time()
    results, wall = load_in_process(url, request, clients, per_client)
    cpu = time.process_time() - cpu0
    ok = np.array([r.seconds for r in results if r.status == 200]) * 1000
    refused = np.array([r.seconds for r in results if r.status == 429]) * 1000

    def pct(x: np.ndarray, q: float) -> float:
        return float(np.percentile(x, q)) if x.size else float("nan")

    return {
        "p50": pct(ok, 50),
        "p99": pct(ok, 99),
        "rps": len(results) / wall,
        "cpu_ms": cpu / len(results) * 1000,
        "ok": float(ok.size),
        "refused": float(refused.size),
        "refused_p50": pct(refused, 50),
        "refused_p99": pct(refused, 99),
        "refused_max": float(refused.max()) if refused.size else float("nan"),
        "errors": float(sum(r.status not in (200, 429) for r in results)),
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
    cores = available_cpus()
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
        raw_one = raw_model_speed(runtime, 1)
        raw_per_core = raw_model_speed(runtime, cores)
        raw = max(raw_one, raw_per_core)
        print(
            f"raw model: {raw_one:.1f} images/s one run at a time, {raw_per_core:.1f} one per core"
        )
        prep = preprocess_speed(files, runtime)
        # Every core busy with the model or with decoding: the most bulk indexing can reach.
        ceiling = 1.0 / (1.0 / raw + 1.0 / (cores * prep))
        print(f"decode + preprocess: {prep:.1f} images/s on one core; ceiling {ceiling:.1f}")
        runs = []
        for i in range(BULK_RUNS):  # into fresh galleries; the last one is searched below
            data = tmp / f"data{i}"
            speed, stored = bulk_index_speed(runtime, crops, data)
            runs.append(speed)
        bulk = float(np.median(runs))
        print(
            f"bulk index: {bulk:.1f} images/s median of {', '.join(f'{r:.1f}' for r in runs)} "
            f"({bulk / raw:.0%} of raw, {bulk / ceiling:.0%} of the ceiling), {stored} stored"
        )
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
                request = multipart_request(url, "/v1/galleries/bench/search", {"image": query})
                search_load(url, request, 4, 16)  # warm-up
                for clients in CONCURRENCY:
                    m = search_load(url, request, clients, REQUESTS_PER_LEVEL // clients)
                    rows.append((batching, clients, m))
                    print(
                        f"micro-batching {'on ' if batching else 'off'} clients {clients:2d}: "
                        f"p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms, {m['rps']:.1f} req/s, "
                        f"server CPU {m['cpu_ms']:.2f} ms/request, {m['errors']:.0f} errors"
                    )
        overload_settings = Settings(model_dir=model_dir, data_dir=data, max_inflight_requests=4)
        over = []
        with serve_in_thread(create_app(overload_settings)) as url:
            request = multipart_request(url, "/v1/galleries/bench/search", {"image": query})
            search_load(url, request, 4, 4)  # warm-up
            for clients in OVERLOAD_CLIENTS:
                m = search_load(url, request, clients, OVERLOAD_PER_CLIENT)
                over.append((clients, m))
                print(
                    f"overload, {clients} clients x {OVERLOAD_PER_CLIENT}: {m['ok']:.0f} answered, "
                    f"{m['refused']:.0f} refused; 429 in p50 {m['refused_p50']:.1f} ms, "
                    f"p99 {m['refused_p99']:.1f} ms, max {m['refused_max']:.1f} ms"
                )
    body = [
        f"Model: {model_note}, input {runtime.preprocess.height}x{runtime.preprocess.width}, "
        f"dim {runtime.dim}, providers {runtime.providers}. Crops: {len(files)} CUHK03-NP "
        f"train JPEGs. {load_note()}",
        "",
        "| measurement | images/s |",
        "| --- | --- |",
        f"| raw model, batches of 32, one run at a time over {cores} cores | {raw_one:.1f} |",
        f"| raw model, batches of 32, {cores} runs side by side on 1 core each | {raw_per_core:.1f} |",
        f"| decode + preprocess alone, one thread | {prep:.1f} |",
        f"| ceiling: {cores} cores each busy with the model or decoding | {ceiling:.1f} "
        f"({ceiling / raw:.0%} of the better raw figure) |",
        f"| bulk indexing ({cores} workers: decode + model, SQLite commit per batch), median "
        f"of {BULK_RUNS} runs ({', '.join(f'{r:.0f}' for r in runs)}) | "
        f"{bulk:.1f} ({bulk / raw:.0%} of the better raw figure, {bulk / ceiling:.0%} of "
        "the ceiling) |",
        "",
        "The ceiling is 1 / (1/raw + 1/(cores × decode rate)): the time of an image's model "
        "share plus its decoding, with no core ever idle. Bulk indexing cannot pass it however "
        "it is scheduled; where the model is light next to the decoding it is below 100 % of "
        "raw.",
        "",
        f"Search over loopback HTTP, {REQUESTS_PER_LEVEL} requests per level, flat exact index "
        f"of {stored} items. Clients: one asyncio process, keep-alive connections opened "
        "before the clock, requests built once (`benchmarks/loadgen.py`). Server CPU is the "
        "server process's CPU time over the level divided by the requests:",
        "",
        "| micro-batching | clients | p50 ms | p99 ms | requests/s | server CPU ms/request | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    body += [
        f"| {'on' if b else 'off'} | {c} | {m['p50']:.1f} | {m['p99']:.1f} | {m['rps']:.1f} | "
        f"{m['cpu_ms']:.2f} | {m['errors']:.0f} |"
        for b, c, m in rows
    ]
    body += [
        "",
        f"Overload: clients × {OVERLOAD_PER_CLIENT} searches each, back to back, against "
        "`max_inflight_requests=4`; client-side time from send to the 429 answer:",
        "",
        "| clients | answered 200 | refused 429 | 429 p50 ms | 429 p99 ms | 429 max ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    body += [
        f"| {c} | {m['ok']:.0f} | {m['refused']:.0f} | {m['refused_p50']:.1f} | "
        f"{m['refused_p99']:.1f} | {m['refused_max']:.1f} |"
        for c, m in over
    ]
    command = "python -m benchmarks.service " + " ".join(sys.argv[1:])
    title = "Service: bulk indexing and search under concurrency"
    if args.section != "service":
        title += f" ({args.section})"
    write_section(args.section, title, "\n".join(body), command.strip())


if __name__ == "__main__":
    main()
