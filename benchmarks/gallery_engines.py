"""Gallery storage engines side by side: local (FAISS + SQLite) vs Milvus, through the gallery.

Fills one gallery per engine with the same synthetic clustered 512-d embeddings through the
storage interface (:mod:`service.gallery.backend`) and measures, in process:

- insert rate (items/s, batches of 1,000);
- search k=10 p50/p99, without a filter and with a camera + time filter;
- exact-mode re-ranking p50/p99 (local: neighbour lists kept in memory, built once, build
  time reported; Milvus: the query's neighbourhood fetched by one batched search), and its
  fidelity to the full algorithm: top-10 overlap with the local exact re-ranker, which gives
  the full algorithm's distances (tests/service/gallery/test_exact_rerank.py).

Milvus here is Milvus Lite in this process unless ``--milvus-uri`` names a server or
``--milvus-server`` starts the PyPI Milvus standalone server on this machine; Lite is a
pure-Python engine over FAISS, so its figures are not a Milvus server's.

Run: ``.venv/bin/python -m benchmarks.gallery_engines [--items 10000] [--queries 50]
[--milvus-server] [--consistency Strong|Session]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import write_section
from benchmarks.search import percentiles, timed
from reidcore.synthetic_features import make_clustered_features
from service.cpu import limit_numpy_blas
from service.gallery import (
    BackendConfig,
    GalleryManager,
    MilvusOptions,
    NewItem,
    RerankParams,
    SearchFilter,
    local_backend,
    open_backend,
)
from service.gallery.gallery import Gallery
from service.gallery.milvus_server import local_milvus_server

DIM = 512
MODEL = "b" * 64
T0 = 1.7e9


def features(items: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    fs = make_clustered_features(
        num_ids=max(items // 10, 1), images_per_id=10, dim=DIM, noise=0.8, seed=0
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
            NewItem(camera=f"cam{(start + i) % 6}", timestamp=T0 + start + i)
            for i in range(len(chunk))
        ]
        ids += [r.id for r in g.add(new, chunk)]
    return len(feats) / (time.perf_counter() - t0), {i: row for row, i in enumerate(ids)}


def measure(
    g: Gallery, queries: np.ndarray, p: RerankParams, row_of: dict[int, int]
) -> dict[str, object]:
    n = len(queries)
    it = iter(range(10**9))

    def q() -> np.ndarray:
        return queries[next(it) % n]

    filt = SearchFilter(cameras=frozenset({"cam1", "cam2"}), time_from=T0, time_to=T0 + 1e9)
    out: dict[str, object] = {
        "search": timed(lambda: g.search(q(), 10), n),
        "filtered": timed(lambda: g.search(q(), 10, filt), n),
    }
    t0 = time.perf_counter()
    g.search(queries[0], 10, rerank=p)  # local: builds the lists
    out["first_rerank_s"] = time.perf_counter() - t0
    out["rerank"] = timed(lambda: g.search(q(), 10, rerank=p), n)
    out["top10"] = [[row_of[m.item.id] for m in g.search(x, 10, rerank=p)] for x in queries]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--milvus-uri", default="", help="a Milvus server; default Milvus Lite")
    ap.add_argument(
        "--milvus-server", action="store_true", help="start a Milvus standalone server here"
    )
    ap.add_argument("--consistency", default="Strong", choices=["Strong", "Session", "Bounded"])
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    blas = limit_numpy_blas()  # as the service runs
    feats, queries = features(args.items, args.queries)
    p = RerankParams()  # the service's defaults: shortlist 100, k1 20, k2 6, exact mode
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        uri = args.milvus_uri
        if args.milvus_server:
            uri = stack.enter_context(local_milvus_server(Path(tmp) / "server"))
        milvus = MilvusOptions(uri=uri, consistency=args.consistency)
        engines = {
            "local": local_backend(Path(tmp) / "local"),
            "milvus": open_backend(BackendConfig("milvus", Path(tmp) / "milvus", milvus=milvus)),
        }
        for name, backend in engines.items():
            manager = GalleryManager(backend, MODEL, DIM)
            g = manager.get_or_create("g")
            rate, row_of = fill(g, feats)
            results[name] = {"insert": rate, **measure(g, queries, p, row_of)}
            manager.close()
    if blas is not None:
        blas.restore_original_limits()
    engine = "Milvus Lite (in process)"
    if args.milvus_server or args.milvus_uri:
        engine = "Milvus standalone 2.3.5 on this machine" if args.milvus_server else "Milvus"
    body = report(results, args.items, p, f"{engine}, {args.consistency} consistency")
    print(body)
    if not args.no_write:
        command = "python -m benchmarks.gallery_engines " + " ".join(argv or sys.argv[1:])
        server = f"_server_{args.consistency.lower()}" if args.milvus_server else ""
        title = "Gallery engines: local vs Milvus" + (
            f" server ({args.consistency})" if args.milvus_server else ""
        )
        name = "gallery_engines" + server
        write_section(name, title, body, command)
    return 0


def report(results: dict[str, dict[str, object]], items: int, p: RerankParams, label: str) -> str:
    local_top = results["local"]["top10"]
    assert isinstance(local_top, list)
    lines = [
        f"{items:,} items x {DIM}, {len(local_top)} queries, k=10; re-ranking: exact mode, "
        f"shortlist {p.shortlist}, k1 {p.k1}, k2 {p.k2}. Milvus engine: {label}.",
        "",
        "| | local | milvus |",
        "|---|---|---|",
    ]

    def row(label: str, key: str) -> str:
        cells = []
        for name in ("local", "milvus"):
            samples = results[name][key]
            assert isinstance(samples, list)
            p50, p99 = percentiles(samples)
            cells.append(f"{p50:.2f} / {p99:.2f}")
        return f"| {label} (ms, p50 / p99) | " + " | ".join(cells) + " |"

    lines.append(
        "| insert (items/s) | "
        + " | ".join(f"{float(results[n]['insert']):,.0f}" for n in ("local", "milvus"))
        + " |"
    )  # type: ignore[arg-type]
    lines.append(row("search", "search"))
    lines.append(row("search, cameras 2 of 6 + time range", "filtered"))
    lines.append(row("search + exact-mode re-ranking", "rerank"))
    lines.append(
        "| first re-ranked search (s) | "
        + " | ".join(f"{float(results[n]['first_rerank_s']):.1f}" for n in ("local", "milvus"))
        + " |"
    )  # type: ignore[arg-type]
    mil_top = results["milvus"]["top10"]
    assert isinstance(mil_top, list)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(local_top, mil_top, strict=True)])
    lines += [
        "",
        f"Milvus neighbourhood re-ranking vs the full algorithm (local exact re-ranker): mean "
        f"top-10 overlap {overlap:.3f}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
