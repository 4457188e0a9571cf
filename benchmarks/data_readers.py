"""Time of the dataset readers, image verification, validation split and attribute loading.

On the real data in ../shared/data: reading CUHK03-NP's training folder (7,365 images),
decoding all of them with :func:`verify_images`, carving a 100-identity validation split,
and loading both APR attribute files. Each step is timed as the best of a few repeats
(verification once: it reads every file).

Run: ``.venv/bin/python -m benchmarks.data_readers`` (about 10 seconds on 2 cores).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.results import write_section
from training.data.attributes import load_attribute_tables
from training.data.readers import read_market, verify_images
from training.data.split import split_validation

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Shortest wall time of ``repeats`` calls, in seconds, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    if not DATA.is_dir():
        print(f"real data not available: {DATA} does not exist", file=sys.stderr)
        sys.exit(1)
    root = DATA / "cuhk03-np-detected"
    t_read, ds = best_of(lambda: read_market(root), 5)
    t_verify, failures = best_of(lambda: verify_images(ds.train, raise_on_failure=False), 1)
    t_split, (train, query, gallery) = best_of(lambda: split_validation(ds.train, 100, 0), 5)
    rows = [
        f"| read_market (CUHK03-NP train, {len(ds.train)} images) | {t_read * 1e3:.1f} ms |",
        f"| verify_images (decode all {len(ds.train)}; {len(failures)} failures) | "
        f"{t_verify:.2f} s ({len(ds.train) / t_verify:.0f} images/s) |",
        f"| split_validation (100 ids: {len(train)} train / {len(query)} query / "
        f"{len(gallery)} gallery) | {t_split * 1e3:.1f} ms |",
    ]
    for name in ("market", "duke"):
        path = DATA / "attributes" / f"{name}_attribute.mat"
        t_att, tables = best_of(partial(load_attribute_tables, path), 5)
        sizes = ", ".join(f"{s} {len(t)}" for s, t in tables.items())
        rows.append(f"| load_attribute_tables ({name}: {sizes} ids) | {t_att * 1e3:.1f} ms |")
    body = "| step | time |\n| --- | --- |\n" + "\n".join(rows) + "\n"
    print(body)
    write_section(
        "data_readers",
        "Dataset readers, image verification, validation split, attribute files",
        body,
        ".venv/bin/python -m benchmarks.data_readers",
    )


if __name__ == "__main__":
    main()
