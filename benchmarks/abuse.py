"""Abuse benchmark (issue 17): the service under the two keyless attacks it used to fail.

1. Lock-out: ``--stalled`` (96) keyless connections each send the headers of a 1 MB
   multipart upload to /v1/embed and one boundary line, then stall (a helper thread
   reopens any the server drops, so the attack lasts the whole measurement). Meanwhile
   keyed clients search a gallery: their p50/p99 latency and status codes, against the same
   searches with no attack. Keyless searches are counted too.
2. Memory: 32 PNGs of 4096x4096 pixels (~49 KB each) posted once to /v1/embed, then the same
   pixels sent within the per-request budget (8 concurrent requests of 8 images): the peak
   RSS (VmHWM) of the server process before and after.

The server is ``reid serve`` in its own process (so its RSS is its own), with
``REID_AUTH_MODE=write`` and default limits; the model is ``--model DIR`` if given, else
the exported OSNet x0.25 when present, else the tiny test model (said so in the results).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.loadgen import Result, load_in_process, multipart_request
from benchmarks.results import load_note, write_section
from service.threaded import bind_socket

REPO = Path(__file__).resolve().parents[1]
OSNET_DIR = REPO / "models" / "osnet_x0_25_msmt17" / "1"
KEY = "abuse-benchmark-key"
GALLERY_ITEMS = 256
SEARCH_CLIENTS = 4
SEARCHES_PER_CLIENT = 100
BIG_SIDE = 4096


def choose_model(arg: str | None, tmp: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), f"`{arg}`"
    if (OSNET_DIR / "manifest.json").exists():
        return OSNET_DIR, "OSNet x0.25 (MSMT17 weights) exported by `reid export`"
    from tests.service.tiny_model import write_tiny_model_folder

    return write_tiny_model_folder(tmp / "tiny" / "1"), "the TINY test model (no export found)"


def free_port() -> int:
    sock = bind_socket()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@contextmanager
def served(model: Path, data: Path) -> Iterator[tuple[str, int]]:
    """``reid serve`` in a child process; yields its URL and pid."""
    port = free_port()
    env = {**os.environ, "REID_AUTH_MODE": "write", "REID_API_KEYS": KEY}
    cmd = [sys.executable, "-m", "reidcore.cli", "serve", "--model", str(model)]
    cmd += ["--data", str(data), "--port", str(port)]
    quiet = subprocess.DEVNULL  # its access log would drown the results
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=quiet, stderr=quiet)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("reid serve did not start")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the highest resident set size the process has had, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def crop(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return png(rng.integers(0, 256, size=(128, 64, 3), dtype=np.uint8))


def big_png(seed: int) -> bytes:
    """4096x4096 pixels that compress to tens of KB: flat colour with a few stripes."""
    arr = np.full((BIG_SIDE, BIG_SIDE, 3), seed % 256, dtype=np.uint8)
    arr[:: 64 + seed % 7] = 255 - seed % 256
    return png(arr)


# ---------------------------------------------------------------- 1. lock-out


class StalledClients:
    """``count`` connections stalled inside a request body; dropped ones are reopened."""

    HEAD = (
        b"POST /v1/embed HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=stall\r\n"
        b"Content-Length: 1000000\r\n\r\n--stall\r\n"
    )

    def __init__(self, url: str, count: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.addr = (host, int(port))
        self.count = count
        self.socks: list[socket.socket] = []
        self.reopened = 0
        self.answers: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, daemon=True)

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.addr, timeout=10)
        sock.sendall(self.HEAD)
        sock.setblocking(False)
        return sock

    def _keep(self) -> None:
        while not self._stop.wait(0.25):
            for i, sock in enumerate(self.socks):
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue  # still stalled
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 "):
                    status = int(data[9:12])
                    self.answers[status] = self.answers.get(status, 0) + 1
                sock.close()
                self.socks[i] = self._open()
                self.reopened += 1

    def __enter__(self) -> StalledClients:
        self.socks = [self._open() for _ in range(self.count)]
        self._thread.start()
        time.sleep(0.5)  # let the server accept and start reading every one
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def keyed(request: bytes) -> bytes:
    return request.replace(
        b"\r\nContent-Type:", f"\r\nX-API-Key: {KEY}\r\nContent-Type:".encode(), 1
    )


def summary(results: list[Result]) -> dict[str, object]:
    ms = np.array([r.seconds for r in results if r.status == 200]) * 1000
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {
        "n": len(results),
        "p50": float(np.percentile(ms, 50)) if ms.size else float("nan"),
        "p99": float(np.percentile(ms, 99)) if ms.size else float("nan"),
        "statuses": statuses,
    }


def fill_gallery(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": KEY}) as client:
        for start in range(0, GALLERY_ITEMS, 32):
            seeds = range(start, min(start + 32, GALLERY_ITEMS))
            files = [("images", (f"{s}.png", crop(s), "image/png")) for s in seeds]
            items = [{"camera": f"c{s % 4}", "timestamp": 1_700_000_000 + s} for s in seeds]
            r = client.post(
                "/v1/galleries/bench/items", files=files, data={"items": json.dumps(items)}
            )
            r.raise_for_status()


def lockout(model: Path, tmp: Path, stalled: int) -> dict[str, object]:
    with served(model, tmp / "lockout") as (url, _pid):
        fill_gallery(url)
        search = multipart_request(
            url, "/v1/galleries/bench/search", {"image": crop(9999), "k": "10"}
        )
        load = (SEARCH_CLIENTS, SEARCHES_PER_CLIENT)
        baseline = summary(load_in_process(url, keyed(search), *load)[0])
        with StalledClients(url, stalled) as attack:
            under = summary(load_in_process(url, keyed(search), *load)[0])
            keyless = summary(load_in_process(url, search, 1, 20)[0])
            health = httpx.get(f"{url}/healthz", timeout=10).status_code
            still_open = len(attack.socks)
        return {
            "baseline": baseline,
            "under": under,
            "keyless": keyless,
            "healthz": health,
            "stalled": still_open,
            "reopened": attack.reopened,
            "stalled_answers": attack.answers,
        }


# ---------------------------------------------------------------- 2. memory


def embed(url: str, blobs: list[bytes]) -> int:
    files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
    return httpx.post(f"{url}/v1/embed", files=files, timeout=300).status_code


def memory(model: Path, tmp: Path) -> dict[str, object]:
    blobs = [big_png(s) for s in range(32)]
    with served(model, tmp / "memory") as (url, pid):
        embed(url, [crop(0)])  # warm: first model run, thread pools
        before = peak_rss_mib(pid)
        attack_status = embed(url, blobs)
        after_attack = peak_rss_mib(pid)
        with ThreadPoolExecutor(8) as pool:
            parts = [blobs[(8 * i) % 32 : (8 * i) % 32 + 8] for i in range(8)]
            statuses = list(pool.map(lambda b: embed(url, b), parts))
        after_budget = peak_rss_mib(pid)
    return {
        "png_kb": float(np.mean([len(b) for b in blobs]) / 1024),
        "before": before,
        "attack_status": attack_status,
        "after_attack": after_attack,
        "budget_statuses": statuses,
        "after_budget": after_budget,
    }


# ---------------------------------------------------------------- report


def render(lock: dict[str, object], mem: dict[str, object], model_note: str, stalled: int) -> str:
    def row(name: str, s: dict[str, object]) -> str:
        return f"| {name} | {s['n']} | {s['p50']:.1f} | {s['p99']:.1f} | {s['statuses']} |"

    return "\n".join(
        [
            f"Model: {model_note}. Server: `reid serve` in its own process, "
            "`REID_AUTH_MODE=write`, default limits. " + load_note(),
            "",
            f"### Lock-out: {stalled} keyless connections stalled inside a 1 MB /v1/embed body",
            "",
            f"Keyed searches: {SEARCH_CLIENTS} keep-alive clients x {SEARCHES_PER_CLIENT}, "
            f"gallery of {GALLERY_ITEMS} items, k=10 (latency of the 200 answers).",
            "",
            "| searches | n | p50 ms | p99 ms | statuses |",
            "|---|---|---|---|---|",
            row("keyed, no attack", lock["baseline"]),  # type: ignore[arg-type]
            row("keyed, under attack", lock["under"]),  # type: ignore[arg-type]
            row("keyless, under attack", lock["keyless"]),  # type: ignore[arg-type]
            "",
            f"/healthz under attack: {lock['healthz']}. Stalled connections open at the end: "
            f"{lock['stalled']}; reopened after the server dropped them: {lock['reopened']} "
            f"(their answers: {lock['stalled_answers']}).",
            "",
            "### Memory: 4096x4096 PNGs posted to /v1/embed",
            "",
            f"PNG size {mem['png_kb']:.0f} KB each. Peak RSS (VmHWM) of the server process:",
            "",
            "| moment | peak RSS MiB | answer |",
            "|---|---|---|",
            f"| started, one small embed done | {mem['before']:.0f} | |",
            f"| after 32 PNGs in one request | {mem['after_attack']:.0f} | {mem['attack_status']} |",
            f"| after 8 concurrent requests of 8 PNGs | {mem['after_budget']:.0f} | "
            f"{mem['budget_statuses']} |",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: exported OSNet, else tiny)")
    parser.add_argument("--stalled", type=int, default=96, help="stalled keyless connections")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model, note = choose_model(args.model, tmp)
        lock = lockout(model, tmp, args.stalled)
        mem = memory(model, tmp)
    body = render(lock, mem, note, args.stalled)
    print(body)
    command = "python -m benchmarks.abuse" + (f" --model {args.model}" if args.model else "")
    write_section(
        "abuse", "Abuse: lock-out by stalled uploads, memory from small PNGs", body, command
    )


if __name__ == "__main__":
    main()
