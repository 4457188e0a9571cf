"""Cost per query of the search options α-QE, DBA and camera normalisation at 100k items.

In process, on a local (FAISS + SQLite) gallery of synthetic clustered 512-d embeddings over
6 cameras (:func:`benchmarks.search.fill_gallery`), k=10, default settings (shortlist
``REID_QUERY_TRICKS_SHORTLIST``): plain search, then each option alone and all together, a
different gallery item as the query each time. ``benchmarks/search.py`` adds the same rows
to its table; ``python -m benchmarks.query_tricks_cost [--items 100000] [--requests 50]``
measures them alone and writes section ``query_tricks_cost`` of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reidcore.query_tricks import Expansion, QueryTricks
from service.gallery import Gallery
from service.gallery.query_tricks import TrickParams
from service.settings import Settings

VARIANTS: dict[str, QueryTricks] = {
    "α-QE n=2": QueryTricks(qe=Expansion(2, 3.0)),
    "DBA n=1": QueryTricks(dba=Expansion(1, 3.0)),
    "DBA n=5": QueryTricks(dba=Expansion(5, 3.0)),
    "camera norm": QueryTricks(camera_norm=True),
    "camera norm + DBA n=1 + α-QE n=2": QueryTricks(
        qe=Expansion(2, 3.0), dba=Expansion(1, 3.0), camera_norm=True
    ),
}


def trick_rows(
    g: Gallery,
    feats: np.ndarray,
    n: int,
    settings: Settings,
    timed: Callable[[Callable[[], object], int], list[float]],
) -> tuple[dict[str, list[float]], float]:
    """(label -> ms per search, seconds of the first camera-normalised search, which sums
    the camera means of the whole gallery)."""
    rng = np.random.default_rng(3)
    shortlist = settings.query_tricks_shortlist
    t0 = time.perf_counter()
    g.search(feats[0], 10, tricks=TrickParams(QueryTricks(camera_norm=True), "cam0", shortlist))
    build_s = time.perf_counter() - t0
    rows = {}
    for label, tricks in VARIANTS.items():
        params = TrickParams(tricks, "cam0", shortlist)
        rows[f"search k=10 + {label} (shortlist {shortlist})"] = timed(
            lambda p=params: g.search(feats[rng.integers(len(feats))], 10, tricks=p), n
        )
    return rows, build_s


def main(argv: list[str] | None = None) -> int:
    from benchmarks.results import load_note, write_section
    from benchmarks.search import DIM, fill_gallery, percentiles, timed
    from service.cpu import limit_numpy_blas
    from service.gallery import GalleryManager, local_backend

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=50)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    blas = limit_numpy_blas()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(model_dir=Path(tmp), data_dir=Path(tmp), threads=2)
        manager = GalleryManager(local_backend(settings.data_dir), "m" * 64, DIM)
        feats = fill_gallery(manager, args.items)
        g = manager.get("g")
        rng = np.random.default_rng(4)
        rows = {
            "search k=10, exact (numpy)": timed(
                lambda: g.search(feats[rng.integers(len(feats))], 10), args.requests
            )
        }
        more, build_s = trick_rows(g, feats, args.requests, settings, timed)
        rows.update(more)
        manager.close()
    if blas is not None:
        blas.restore_original_limits()
    lines = ["| measured | p50 ms | p99 ms | n |", "|---|---|---|---|"]
    for k, v in rows.items():
        p50, p99 = percentiles(v)
        lines.append(f"| {k} | {p50:.1f} | {p99:.1f} | {len(v)} |")
    body = "\n".join(lines) + (
        f"\n\nGallery: {args.items} items x {DIM}-d (synthetic clustered, 6 cameras), local "
        f"engine, flat index. The first camera-normalised search summed the camera means of "
        f"the gallery: {build_s:.1f} s (once; adds and deletes keep them current). "
        f"{load_note()}\n"
    )
    print(body)
    command = "python -m benchmarks.query_tricks_cost " + " ".join(argv or sys.argv[1:])
    write_section("query_tricks_cost", "Query-side tricks: cost per query", body, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
