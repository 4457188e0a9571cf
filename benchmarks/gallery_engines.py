"""Gallery storage engines side by side: local (numpy / FAISS + SQLite) vs Milvus, through the
gallery.

Fills one gallery per engine with the same synthetic clustered 512-d embeddings through the
storage interface (:mod:`service.gallery.backend`) and measures, in process:

- insert rate (items/s, batches of 1,000, as acknowledged to the caller); on the Milvus
  server, then the time to flush and build the index (searches before that scan growing
  segments, so every search figure here is of the indexed collection);
- search k=10 p50/p99 without a filter, with a camera filter (1 of 6 cameras), a time range
  (a tenth of the items) and both;
- with re-ranking (not with ``--no-rerank``): exact-mode re-ranking p50/p99 (local: neighbour
  lists kept in memory, built once, build time reported; Milvus: the query's neighbourhood
  fetched by one batched search) and its fidelity to the full algorithm: top-10 overlap with
  the local exact re-ranker, which gives the full algorithm's distances
  (tests/service/gallery/test_exact_rerank.py).

Engines (``--engines``): ``local`` (numpy exact search, the default index), ``local-hnsw``
(FAISS HNSW, M 32, efSearch 128), ``lite`` (Milvus Lite in this process: a pure-Python engine
over FAISS, so its figures are not a Milvus server's), ``server-flat`` and ``server-hnsw``
(the Milvus standalone server from PyPI started here, or ``--milvus-uri``; HNSW M 32,
efConstruction 200, ef 128), each server engine once per ``--consistency`` level (one
collection per index type, filled once and searched through one client per level).
Without ``--engines``: ``local`` and ``lite`` (``server-flat`` with ``--milvus-server`` or
``--milvus-uri``), as earlier runs recorded.

Run (the full matrix, ~15-25 min on 2 cores): ``.venv/bin/python -m benchmarks.gallery_engines
--engines local local-hnsw lite server-flat server-hnsw --consistency Strong Session
--no-rerank``; ``--quick`` for a dry run (5,000 items, 20 searches per row, writes nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.results import load_note, write_section
from benchmarks.search import percentiles, timed
from reidcore.synthetic_features import make_clustered_features
from service.cpu import limit_numpy_blas
from service.gallery import (
    BackendConfig,
    GalleryBackend,
    GalleryManager,
    IndexOptions,
    MilvusOptions,
    NewItem,
    RerankParams,
    SearchFilter,
    open_backend,
)
from service.gallery.gallery import Gallery
from service.gallery.milvus_server import local_milvus_server

DIM = 512
MODEL = "b" * 64
T0 = 1.7e9
CAMERAS = 6
ENGINES = ("local", "local-hnsw", "lite", "server-flat", "server-hnsw")
HNSW_BUILD = {"M": 32, "efConstruction": 200}
HNSW_SEARCH = {"ef": 128}
INDEX_READY_TIMEOUT_S = 1800.0
WARM_UP_ITEMS = 3000


@dataclass(frozen=True)
class Engine:
    """One column of the comparison: an engine and, on a Milvus server, a consistency level."""

    name: str
    consistency: str = ""

    @property
    def server(self) -> bool:
        return self.name.startswith("server-")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.consistency})" if self.consistency else self.name


def engine_list(names: list[str], levels: list[str]) -> list[Engine]:
    """Every engine in ``names`` once, a server engine once per consistency level in ``levels``."""
    out: list[Engine] = []
    for name in dict.fromkeys(names):
        if name not in ENGINES:
            raise ValueError(f"unknown engine {name!r}; valid: {list(ENGINES)}")
        out += (
            [Engine(name, c) for c in dict.fromkeys(levels)]
            if name.startswith("server-")
            else [Engine(name)]
        )
    return out


def filters(items: int) -> dict[str, SearchFilter | None]:
    """The searches measured, by row label, for items stored as :func:`fill` stores them
    (camera ``cam{i % 6}``, timestamp ``T0 + i``): no filter, 1 camera of 6, the middle
    tenth of the time range, and both."""
    mid = T0 + 0.45 * items
    cam = frozenset({"cam1"})
    return {
        "search": None,
        f"camera (1 of {CAMERAS})": SearchFilter(cameras=cam),
        "time range (1/10 of items)": SearchFilter(time_from=mid, time_to=mid + 0.1 * items),
        "camera + time range": SearchFilter(cameras=cam, time_from=mid, time_to=mid + 0.1 * items),
    }


def features(items: int, queries: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """``items`` unit gallery embeddings, 10 per identity, and ``queries`` query embeddings
    (one more image of an identity each), synthetic and clustered."""
    fs = make_clustered_features(  # one image per identity is its query
        num_ids=max(-(-items // 10), queries), images_per_id=11, dim=dim, noise=0.8, seed=0
    )
    g = fs.gallery_features[:items]
    q = fs.query_features[:queries]
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (g, q)]
    return unit[0].astype(np.float32), unit[1].astype(np.float32)


def fill(g: Gallery, feats: np.ndarray) -> tuple[float, dict[int, int]]:
    """Items/s of adding ``feats`` in batches of 1,000, and each item id's row in ``feats``."""
    t0 = time.perf_counter()
    ids: list[int] = []
    for start in range(0, len(feats), 1000):
        chunk = feats[start : start + 1000]
        new = [
            NewItem(camera=f"cam{(start + i) % CAMERAS}", timestamp=T0 + start + i)
            for i in range(len(chunk))
        ]
        ids += [r.id for r in g.add(new, chunk)]
    return len(feats) / (time.perf_counter() - t0), {i: row for row, i in enumerate(ids)}


def index_ready(g: Gallery, items: int) -> float:
    """Seconds to flush a Milvus server collection and finish indexing its ``items`` rows."""
    store = g.store
    client, collection = store.client, store.collection  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    client.flush(collection)
    while time.perf_counter() - t0 < INDEX_READY_TIMEOUT_S:
        info = client.describe_index(collection, "vec")  # its "state" says Finished early
        if int(info.get("indexed_rows", 0)) >= items and not int(info.get("pending_index_rows", 0)):
            break
        time.sleep(0.5)
    return time.perf_counter() - t0


def measure(
    g: Gallery, queries: np.ndarray, searches: int, items: int, p: RerankParams | None
) -> dict[str, object]:
    """p50/p99 samples of every search in :func:`filters` (``searches`` calls each), and of
    re-ranked searches when ``p`` is given (with each query's re-ranked top-10 item ids)."""
    it = iter(range(10**9))

    def q() -> np.ndarray:
        return queries[next(it) % len(queries)]

    def searches_with(f: SearchFilter | None) -> list[float]:
        return timed(lambda: g.search(q(), 10, f), searches)

    out: dict[str, object] = {label: searches_with(f) for label, f in filters(items).items()}
    if p is not None:
        t0 = time.perf_counter()
        g.search(queries[0], 10, rerank=p)  # local: builds the lists
        out["first_rerank_s"] = time.perf_counter() - t0
        out["rerank"] = timed(lambda: g.search(q(), 10, rerank=p), searches)
        out["top10"] = [[m.item.id for m in g.search(x, 10, rerank=p)] for x in queries]
    return out


class Engines:
    """Opens each engine's backend; one Milvus server (started on first need) for all."""

    def __init__(self, tmp: Path, stack: contextlib.ExitStack, uri: str) -> None:
        self.tmp, self.stack, self.uri = tmp, stack, uri
        self.filled: dict[str, dict[int, int]] = {}
        """Server collections filled in this run: item id -> row in the features."""

    def server_uri(self) -> str:
        if not self.uri:
            self.uri = self.stack.enter_context(local_milvus_server(self.tmp / "server"))
            warm_up_server(self.uri, self.tmp / "warm-up")
        return self.uri

    def backend(self, e: Engine) -> GalleryBackend:
        if e.name in ("local", "local-hnsw"):
            index = IndexOptions(kind="hnsw" if e.name == "local-hnsw" else "flat")
            return open_backend(BackendConfig("local", self.tmp / e.name, index))
        if e.name == "lite":
            return open_backend(BackendConfig("milvus", self.tmp / "lite"))
        hnsw = e.name == "server-hnsw"
        options = MilvusOptions(
            uri=self.server_uri(),
            index_type="HNSW" if hnsw else "FLAT",
            index_params=HNSW_BUILD if hnsw else {},
            search_params=HNSW_SEARCH if hnsw else {},
            consistency=e.consistency,
        )
        return open_backend(BackendConfig("milvus", self.tmp / "milvus", milvus=options))


def warm_up_server(uri: str, data_dir: Path, items: int = WARM_UP_ITEMS) -> None:
    """Fill and drop a throwaway gallery: on a freshly started server the first collection
    filled took ~1,000 items/s and the next ~3,000, whichever index type came first."""
    manager = GalleryManager(
        open_backend(BackendConfig("milvus", data_dir, milvus=MilvusOptions(uri=uri))), MODEL, DIM
    )
    try:
        fill(manager.get_or_create("warm_up"), features(items, 1)[0])
        manager.delete("warm_up")
    finally:
        manager.close()


def run_engine(
    engines: Engines, e: Engine, feats: np.ndarray, queries: np.ndarray, args: argparse.Namespace
) -> dict[str, object]:
    """Fill (or, for a server engine's later consistency levels, reopen) and measure."""
    manager = GalleryManager(engines.backend(e), MODEL, DIM)
    name = e.name.replace("server-", "g_")  # one collection per server index type
    try:
        out: dict[str, object] = {"insert": None, "ready_s": None}
        if name in engines.filled:
            g = manager.get(name)  # filled at an earlier consistency level
        else:
            if name in manager.backend.names():
                manager.delete(name)  # left by an earlier run on --milvus-uri
            g = manager.get_or_create(name)
            out["insert"], engines.filled[name] = fill(g, feats)
            out["ready_s"] = index_ready(g, len(feats)) if e.server else None
        rerank = None if args.no_rerank else RerankParams()
        out |= measure(g, queries, args.searches, len(feats), rerank)
        if "top10" in out:
            rows = engines.filled[name]
            out["top10"] = [[rows[i] for i in ids] for ids in out["top10"]]  # type: ignore[attr-defined]
        print(f"{e.label}: {summary(out)}", flush=True)
        return out
    finally:
        manager.close()


def summary(out: dict[str, object]) -> str:
    parts = [f"insert {out['insert']:,.0f} items/s" if out["insert"] else "same collection"]
    for key, v in out.items():
        if isinstance(v, list) and v and isinstance(v[0], float):
            p50, p99 = percentiles(v)
            parts.append(f"{key} {p50:.2f}/{p99:.2f} ms")
    return ", ".join(parts)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50, help="distinct query vectors")
    ap.add_argument("--searches", type=int, default=100, help="timed searches per row")
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=None)
    ap.add_argument("--milvus-uri", default="", help="a Milvus server for the server engines")
    ap.add_argument(
        "--milvus-server", action="store_true", help="without --engines: local vs server-flat"
    )
    ap.add_argument(
        "--consistency", nargs="+", default=["Strong"], choices=["Strong", "Session", "Bounded"]
    )
    ap.add_argument("--no-rerank", action="store_true", help="search rows only")
    ap.add_argument("--quick", action="store_true", help="dry run: 5,000 items, writes nothing")
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    ap.add_argument("--section", default="", help="RESULTS.md section (default from the flags)")
    args = ap.parse_args(argv)
    if args.quick:
        args.items, args.queries, args.searches, args.no_write = 5000, 10, 20, True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    server = args.milvus_server or bool(args.milvus_uri)
    names = args.engines or ["local", "server-flat" if server else "lite"]
    chosen = engine_list(names, args.consistency)
    blas = limit_numpy_blas()  # as the service runs
    feats, queries = features(args.items, args.queries)
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        engines = Engines(Path(tmp), stack, args.milvus_uri)
        for e in chosen:
            results[e.label] = run_engine(engines, e, feats, queries, args)
    if blas is not None:
        blas.restore_original_limits()
    body = report(results, args) + f"\n\n{load_note()}"
    print(body)
    if not args.no_write:
        command = "python -m benchmarks.gallery_engines " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        write_section(section_name(args), title(args), body, command.strip())
    return 0


def section_name(args: argparse.Namespace) -> str:
    if args.section:
        return str(args.section)
    if args.engines:
        return "gallery_engines_matrix"
    server = args.milvus_server or args.milvus_uri
    return "gallery_engines" + (f"_server_{args.consistency[0].lower()}" if server else "")


def title(args: argparse.Namespace) -> str:
    if args.engines:
        return f"Gallery engines at {args.items:,} x {DIM}: insert rate and search latency"
    server = args.milvus_server or args.milvus_uri
    return "Gallery engines: local vs Milvus" + (
        f" server ({args.consistency[0]})" if server else ""
    )


def report(results: dict[str, dict[str, object]], args: argparse.Namespace) -> str:
    labels = list(filters(args.items))
    rerank = not args.no_rerank
    head = ["engine", "insert items/s", "flush + index s"] + [f"{x} ms p50 / p99" for x in labels]
    if rerank:
        head += ["re-ranked ms p50 / p99", "first re-ranked s", "top-10 overlap with local"]
    lines = [
        f"{args.items:,} items x {DIM} (synthetic clustered, unit vectors), k=10, "
        f"{args.searches} timed searches per cell over {args.queries} queries, after 3 "
        "warm-up searches. Milvus server: 2.3.5 from PyPI on this machine (it shares the "
        "cores with this process); Lite: in process. Server engines with several consistency "
        "levels search one collection per index type, filled once (insert shown on the first).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    local_top = results.get("local", {}).get("top10")
    for label, r in results.items():
        cells = [label, f"{r['insert']:,.0f}" if r["insert"] else "(same)"]
        cells.append(f"{r['ready_s']:.1f}" if r.get("ready_s") is not None else "")
        cells += ["{:.2f} / {:.2f}".format(*percentiles(r[x])) for x in labels]  # type: ignore[arg-type]
        if rerank:
            cells.append("{:.2f} / {:.2f}".format(*percentiles(r["rerank"])))  # type: ignore[arg-type]
            cells.append(f"{r['first_rerank_s']:.1f}")
            cells.append(f"{top10_overlap(local_top, r['top10']):.3f}" if local_top else "")  # type: ignore[arg-type]
        lines.append("| " + " | ".join(cells) + " |")
    if rerank:
        lines += [
            "",
            f"Re-ranking: exact mode, shortlist {RerankParams().shortlist}, k1 "
            f"{RerankParams().k1}, k2 {RerankParams().k2}; the overlap is with the local exact "
            "re-ranker (the full algorithm's distances; ids are assigned in the same order by "
            "every engine).",
        ]
    return "\n".join(lines)


def top10_overlap(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean fraction of each query's top-10 that two result lists share."""
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)]))


if __name__ == "__main__":
    raise SystemExit(main())
