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

Scale-out search instead (only this, when ``--backend`` or ``--replicas`` is given): a
gallery of ``--items`` synthetic embeddings (default 100,000) on the local backend or on the
Milvus standalone server (started here, or ``--milvus-uri``), one or two ``reid serve``
processes on it, and /search at 1, 8 and 32 clients for ``--seconds`` each; the load
generator alternates each client's requests over the replicas (round robin, no balancer).
Full run (~10 min on 2 cores): ``python -m benchmarks.service --backend local milvus
--replicas 1 2 --consistency Strong Session``; ``--quick`` for a dry run (writes nothing).

The model is ``--model DIR`` if given, else ``models/osnet_x0_25_msmt17/1`` (written by
``reid export`` from ../shared/weights when possible), else the tiny test model (said so).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.gallery_engines import (
    HNSW_BUILD,
    HNSW_SEARCH,
    features,
    fill,
    index_ready,
    warm_up_server,
)
from benchmarks.loadgen import Target, multipart_request, targets_in_process
from benchmarks.results import load_note, write_section
from benchmarks.search import query_jpegs
from reidcore.preprocess import to_array
from service.app import create_app
from service.cpu import available_cpus
from service.gallery import (
    BackendConfig,
    GalleryBackend,
    GalleryManager,
    MilvusOptions,
    local_backend,
    open_backend,
)
from service.gallery.milvus_server import local_milvus_server
from service.images import decode_upload
from service.jobs import ArchiveLimits, IndexConfig, index_source, open_source
from service.manifest import load_manifest
from service.runtime import ModelRuntime, RuntimeOptions
from service.settings import Settings
from service.threaded import bind_socket, serve_in_thread

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
BACKENDS = ("local", "milvus")


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


def search_load(
    targets: list[Target],
    clients: int,
    per_client: int | None = None,
    seconds: float | None = None,
    clocks: Mapping[str, Callable[[], float]] | None = None,
) -> dict[str, float]:
    """``clients`` concurrent clients over ``targets`` (round robin), ``per_client`` requests
    each or for ``seconds``: latency, rate, and CPU ms per request of each of ``clocks``.

    The default clock is this process's CPU time: with the server in this process and the
    clients in another, that is the server's.
    """
    clocks = clocks if clocks is not None else {"server": time.process_time}
    cpu0 = {k: clock() for k, clock in clocks.items()}
    results, wall = targets_in_process(targets, clients, per_client, seconds)
    cpu = {k: clock() - cpu0[k] for k, clock in clocks.items()}
    ok = np.array([r.seconds for r in results if r.status == 200]) * 1000
    refused = np.array([r.seconds for r in results if r.status == 429]) * 1000

    def pct(x: np.ndarray, q: float) -> float:
        return float(np.percentile(x, q)) if x.size else float("nan")

    n = max(len(results), 1)
    return {
        "p50": pct(ok, 50),
        "p99": pct(ok, 99),
        "rps": len(results) / wall,
        **{f"{k}_cpu_ms": v / n * 1000 for k, v in cpu.items()},
        "ok": float(ok.size),
        "refused": float(refused.size),
        "refused_p50": pct(refused, 50),
        "refused_p99": pct(refused, 99),
        "refused_max": float(refused.max()) if refused.size else float("nan"),
        "errors": float(sum(r.status not in (200, 429) for r in results)),
        **{f"target{t}": float(sum(r.target == t for r in results)) for t in range(len(targets))},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model folder to measure")
    parser.add_argument("--images", type=int, default=1024, help="crops to bulk-index")
    parser.add_argument(
        "--section",
        default=None,
        help="RESULTS.md section to write (default service, or service_scale_out with "
        "--backend/--replicas; e.g. service_resnet50 for a second model)",
    )
    scale = parser.add_argument_group(
        "scale-out search (runs only this part when --backend or --replicas is given)"
    )
    scale.add_argument("--backend", nargs="+", choices=BACKENDS, default=None)
    scale.add_argument("--replicas", nargs="+", type=int, choices=(1, 2), default=None)
    scale.add_argument(
        "--consistency", nargs="+", choices=["Strong", "Session", "Bounded"], default=["Strong"]
    )
    scale.add_argument("--milvus-index", choices=["FLAT", "HNSW"], default="HNSW")
    scale.add_argument("--milvus-uri", default="", help="a running server (default: start one)")
    scale.add_argument("--items", type=int, default=100_000, help="gallery items (synthetic)")
    scale.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    scale.add_argument("--quick", action="store_true", help="dry run: 5,000 items, 3 s, no write")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.seconds, args.no_write = 5000, 3.0, True
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.backend is not None or args.replicas is not None:
        scale_out(args, argv)
    else:
        full(args, argv)


def full(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Model speed, bulk indexing, search under concurrency and overload, in this process."""
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
                search_load([(url, request)], 4, 16)  # warm-up
                for clients in CONCURRENCY:
                    m = search_load([(url, request)], clients, REQUESTS_PER_LEVEL // clients)
                    rows.append((batching, clients, m))
                    print(
                        f"micro-batching {'on ' if batching else 'off'} clients {clients:2d}: "
                        f"p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms, {m['rps']:.1f} req/s, "
                        f"server CPU {m['server_cpu_ms']:.2f} ms/request, {m['errors']:.0f} errors"
                    )
        overload_settings = Settings(model_dir=model_dir, data_dir=data, max_inflight_requests=4)
        over = []
        with serve_in_thread(create_app(overload_settings)) as url:
            request = multipart_request(url, "/v1/galleries/bench/search", {"image": query})
            search_load([(url, request)], 4, 4)  # warm-up
            for clients in OVERLOAD_CLIENTS:
                m = search_load([(url, request)], clients, OVERLOAD_PER_CLIENT)
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
        f"{m['server_cpu_ms']:.2f} | {m['errors']:.0f} |"
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
    section = args.section or "service"
    title = "Service: bulk indexing and search under concurrency"
    if section != "service":
        title += f" ({section})"
    if not args.no_write:
        write_section(section, title, "\n".join(body), command_line(argv))


def command_line(argv: list[str] | None) -> str:
    return " ".join(["python -m benchmarks.service", *(argv if argv is not None else sys.argv[1:])])


# ---------------------------------------------------------------- scale-out search


@dataclass(frozen=True)
class ScaleConfig:
    """One row group of the scale-out table: a backend, replicas, a consistency level."""

    backend: str
    replicas: int
    consistency: str = ""


def scale_configs(backends: list[str], replicas: list[int], levels: list[str]) -> list[ScaleConfig]:
    """Local: one replica (its gallery lives in that process); Milvus: every replica count
    at every consistency level."""
    out = [ScaleConfig("local", 1)] if "local" in backends else []
    if "milvus" in backends:
        out += [
            ScaleConfig("milvus", n, c)
            for c in dict.fromkeys(levels)
            for n in sorted(set(replicas))
        ]
    return out


def parse_stat(text: str) -> tuple[str, int, int]:
    """(command name, parent pid, user + system CPU clock ticks) of a /proc/PID/stat line."""
    head, rest = text.rsplit(")", 1)
    fields = rest.split()
    return head.split("(", 1)[1], int(fields[1]), int(fields[11]) + int(fields[12])


def _stat(pid: int) -> tuple[str, int, int] | None:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # gone, or not Linux


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by ``pids`` (their threads included), in seconds."""
    ticks = sum(st[2] for st in map(_stat, pids) if st is not None)
    return ticks / os.sysconf("SC_CLK_TCK")


def milvus_pids() -> list[int]:
    """This process's descendants that run the Milvus server binary."""
    stats = {int(p.name): _stat(int(p.name)) for p in Path("/proc").glob("[0-9]*")}
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        if st is not None:
            children.setdefault(st[1], []).append(pid)
    found, todo = [], list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        st = stats.get(pid)
        if st is not None and st[0].startswith("milvus"):
            found.append(pid)
    return found


def milvus_options(uri: str, index: str, consistency: str = "Strong") -> MilvusOptions:
    """The benchmark's Milvus collection: FLAT, or HNSW as :mod:`benchmarks.gallery_engines`
    builds and searches it."""
    hnsw = index == "HNSW"
    return MilvusOptions(
        uri=uri,
        index_type=index,
        index_params=HNSW_BUILD if hnsw else {},
        search_params=HNSW_SEARCH if hnsw else {},
        consistency=consistency,
    )


def replica_env(cfg: ScaleConfig, uri: str, index: str) -> dict[str, str]:
    """The environment of a ``reid serve`` replica (no REID_ setting inherited from ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REID_")}
    env["REID_MAX_INFLIGHT_REQUESTS"] = "256"  # measure latency, not 429s, at 32 clients
    if cfg.backend == "milvus":
        options = milvus_options(uri, index, cfg.consistency)
        env |= {
            "REID_GALLERY_BACKEND": "milvus",
            "REID_MILVUS_URI": options.uri,
            "REID_MILVUS_CONSISTENCY": options.consistency,
            "REID_MILVUS_INDEX_TYPE": options.index_type,
            "REID_MILVUS_INDEX_PARAMS": json.dumps(options.index_params),
            "REID_MILVUS_SEARCH_PARAMS": json.dumps(options.search_params),
        }
    return env


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica {url} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"replica {url} not ready within {timeout_s:.0f} s")


@contextlib.contextmanager
def replicas(
    model_dir: Path, data_dirs: list[Path], env: dict[str, str]
) -> Iterator[tuple[list[str], list[int]]]:
    """``reid serve`` processes, one per data dir, on free loopback ports: (URLs, pids)."""
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for data in data_dirs:
            sock = bind_socket()
            port = sock.getsockname()[1]
            sock.close()
            log = data.with_suffix(".log")
            cmd = [sys.executable, "-m", "reidcore.cli", "serve", "--model", str(model_dir)]
            cmd += ["--data", str(data), "--port", str(port)]
            with log.open("wb") as out:
                procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
            wait_ready(urls[-1], procs[-1], log)
        yield urls, [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def fill_backend(backend: GalleryBackend, model_id: str, feats: np.ndarray) -> tuple[float, float]:
    """Items/s of filling gallery ``bench``, then seconds to flush and index (Milvus server)."""
    manager = GalleryManager(backend, model_id, feats.shape[1])
    try:
        g = manager.get_or_create("bench")
        rate, _ = fill(g, feats)
        server = backend.kind == "milvus" and not getattr(backend, "lite", True)
        return rate, index_ready(g, len(feats)) if server else 0.0
    finally:
        manager.close()


def query_image() -> bytes:
    """A real CUHK03 crop where the data is here, else a synthetic person-sized JPEG."""
    crops = sorted(CROPS.glob("*.jpg"))
    return crops[len(crops) // 2].read_bytes() if crops else query_jpegs(1)[0]


class ScaleRun:
    """The galleries, the Milvus server and the model a scale-out run shares between rows."""

    def __init__(self, args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> None:
        self.args, self.tmp, self.stack = args, tmp, stack
        self.model_dir, self.model_note = choose_model(args.model, tmp)
        self.manifest = load_manifest(self.model_dir)
        self.feats, _ = features(args.items, 1, self.manifest.embedding.dim)
        self.uri: str = args.milvus_uri
        self.server_pids: list[int] = []
        self.fills: dict[str, tuple[float, float]] = {}
        """Backend -> (items/s of filling its gallery, seconds to flush and index it)."""

    def data_dirs(self, cfg: ScaleConfig) -> list[Path]:
        """The replicas' data directories, the backend's gallery filled on first use."""
        if cfg.backend == "local":
            if "local" not in self.fills:
                backend = local_backend(self.tmp / "local")
                self.fills["local"] = fill_backend(backend, self.manifest.model_id, self.feats)
            return [self.tmp / "local"]
        if "milvus" not in self.fills:
            if not self.uri:
                self.uri = self.stack.enter_context(local_milvus_server(self.tmp / "milvus"))
                self.server_pids = milvus_pids()
                warm_up_server(self.uri, self.tmp / "warm-up")
            options = milvus_options(self.uri, self.args.milvus_index)
            backend = open_backend(BackendConfig("milvus", self.tmp / "filler", milvus=options))
            self.fills["milvus"] = fill_backend(backend, self.manifest.model_id, self.feats)
        return [self.tmp / f"r{i}" for i in range(cfg.replicas)]

    def measure(self, cfg: ScaleConfig, query: bytes) -> list[dict[str, float]]:
        """One row per concurrency level, with ``cfg``'s replicas serving the gallery."""
        dirs = self.data_dirs(cfg)
        print(f"{cfg}: gallery filled at {self.fills[cfg.backend][0]:,.0f} items/s", flush=True)
        env = replica_env(cfg, self.uri, self.args.milvus_index)
        out = []
        with replicas(self.model_dir, dirs, env) as (urls, pids):
            path = "/v1/galleries/bench/search"
            targets = [(u, multipart_request(u, path, {"image": query})) for u in urls]
            clocks = {
                "replicas": functools.partial(cpu_seconds, pids),
                "milvus": functools.partial(cpu_seconds, self.server_pids),
            }
            search_load(targets, 4, per_client=4 * len(urls))  # warm-up
            for clients in CONCURRENCY:
                out.append(search_load(targets, clients, seconds=self.args.seconds, clocks=clocks))
                print(scale_row(cfg, clients, out[-1], bool(self.server_pids)), flush=True)
        return out


def scale_out(args: argparse.Namespace, argv: list[str] | None) -> None:
    """/search at 1/8/32 clients: local (one replica) and Milvus server (1-2 replicas)."""
    cores = available_cpus()
    print(f"{cores} CPUs: the replicas, the Milvus server and the clients all share them")
    backends, counts = args.backend or list(BACKENDS), args.replicas or [1, 2]
    rows: list[tuple[ScaleConfig, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp_s, contextlib.ExitStack() as stack:
        run = ScaleRun(args, Path(tmp_s), stack)
        for cfg in scale_configs(backends, counts, args.consistency):
            levels = run.measure(cfg, query_image())
            rows += [(cfg, c, m) for c, m in zip(CONCURRENCY, levels, strict=True)]
    body = scale_report(rows, run, cores)
    print(body)
    if not args.no_write:
        title = "Service scale-out: /search on local and on Milvus, 1 and 2 replicas"
        write_section(args.section or "service_scale_out", title, body, command_line(argv))


def scale_row(cfg: ScaleConfig, clients: int, m: dict[str, float], milvus_cpu: bool) -> str:
    split = " / ".join(f"{m[f'target{t}']:.0f}" for t in range(cfg.replicas))
    cells = [
        cfg.backend,
        str(cfg.replicas),
        cfg.consistency or "-",
        str(clients),
        f"{m['rps']:.1f}",
        f"{m['p50']:.1f}",
        f"{m['p99']:.1f}",
        f"{m['replicas_cpu_ms']:.2f}",
        f"{m['milvus_cpu_ms']:.2f}" if milvus_cpu and cfg.backend == "milvus" else "-",
        split,
        f"{m['errors']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def scale_report(
    rows: list[tuple[ScaleConfig, int, dict[str, float]]], run: ScaleRun, cores: int
) -> str:
    args, model_note, milvus_cpu = run.args, run.model_note, bool(run.server_pids)
    filled = "; ".join(
        f"{b}: {rate:,.0f} items/s" + (f", then flush + index {ready:.1f} s" if ready else "")
        for b, (rate, ready) in run.fills.items()
    )
    lines = [
        f"Model: {model_note}. Gallery: {len(run.feats):,} synthetic clustered embeddings, filled "
        f"through the storage interface ({filled}). Milvus: the standalone server 2.3.5 from "
        f"PyPI on this machine, {args.milvus_index} index. Each replica is a `reid serve` "
        "process (REID_MAX_INFLIGHT_REQUESTS=256); the load generator "
        "(`benchmarks/loadgen.py`, one asyncio process) gives every client a keep-alive "
        "connection to each replica and alternates its requests over them (round robin, no "
        f"balancer in the path). {args.seconds:g} s per level, after a warm-up. CPU ms per "
        "request: CPU time of the replica processes and of the Milvus server over the level, "
        "divided by the requests (Milvus's includes its background work, time ticks and "
        "compaction, which dominates at low request rates).",
        "",
        f"**This machine has {cores} CPUs.** The Milvus server, every replica and the load "
        "generator share them, so two replicas here compete for the same cores: their rows "
        "show what a second process costs and whether it overlaps the waits (Strong reads wait "
        "on Milvus, not on the CPU), not the throughput a second machine would add. On separate "
        "machines, requests/s of CPU-bound levels scale with the replicas until Milvus's query "
        "nodes are the limit.",
        "",
        "| backend | replicas | consistency | clients | requests/s | p50 ms | p99 ms "
        "| replicas CPU ms/req | Milvus CPU ms/req | requests per replica | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [scale_row(cfg, c, m, milvus_cpu) for cfg, c, m in rows]
    lines += ["", load_note()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
