"""Search by description at 100k gallery items: attribute search and the ``attributes``
filter of image search, in process over the local engine (FAISS + SQLite).

Fills a gallery with ``--items`` random 512-d unit embeddings, each with the predictions of
APR's Market-1501 schema (27 attributes: 26 binary, 4-class age; colours as binary
``up*``/``down*`` attributes grouped ``upcolor``/``downcolor``) drawn from Dirichlet
distributions, stored as the service stores them (every class's probability). Measures:

- the first attribute search (columns read from the store: one fetch of every item);
- attribute searches once the columns are current (the id listing that keeps them current
  included), with and without camera/time filters;
- image search k=10 without and with an ``attributes`` filter (broad: ~1/2 of the items
  match; narrow: ~1/40);
- what the class probabilities add to each item's stored JSON, and the columns' memory.

Run: ``.venv/bin/python -m benchmarks.attribute_search [--items 100000] [--requests 100]
[--engine local|milvus]`` (milvus: Milvus Lite in the process).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import load_note, write_section
from benchmarks.search import percentiles, timed
from reidcore.attributes import Attribute, AttributeSchema
from service.cpu import limit_numpy_blas
from service.gallery import (
    BackendConfig,
    Gallery,
    GalleryManager,
    NewItem,
    SearchFilter,
    open_backend,
)
from service.gallery.attribute_search import (
    ColumnCache,
    attribute_search,
    column_cache,
    matching_ids,
    stored_prediction,
)

DIM = 512
COLOURS = {
    "up": ("black", "white", "red", "purple", "yellow", "gray", "blue", "green"),
    "down": ("black", "white", "pink", "purple", "yellow", "gray", "blue", "green", "brown"),
}
BINARY = ("gender", "hair", "up", "down", "clothes", "hat", "backpack", "bag", "handbag")


def market_schema() -> AttributeSchema:
    """APR's Market-1501 attribute schema (binary colours), as training builds it."""
    names = {"gender": ("male", "female"), "hair": ("short", "long")}
    attrs = [Attribute(n, names.get(n, ("no", "yes"))) for n in BINARY]
    attrs.append(Attribute("age", ("young", "teenager", "adult", "old")))
    for part, colours in COLOURS.items():
        attrs += [Attribute(f"{part}{c}", ("no", "yes"), group=f"{part}color") for c in colours]
    return AttributeSchema(tuple(attrs), source="benchmark")


def predictions(schema: AttributeSchema, rng: np.random.Generator) -> dict[str, Any]:
    """One item's stored predictions, drawn at random."""
    return {a.name: stored_prediction(a, rng.dirichlet(np.ones(a.num_classes))) for a in schema}


def fill(manager: GalleryManager, schema: AttributeSchema, items: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((items, DIM)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    g = manager.get_or_create("g")
    for start in range(0, items, 10_000):
        chunk = feats[start : start + 10_000]
        new = [
            NewItem(
                camera=f"cam{(start + i) % 6}",
                timestamp=1.7e9 + start + i,
                attributes=predictions(schema, rng),
            )
            for i in range(len(chunk))
        ]
        g.add(new, chunk)
    return feats


def json_bytes(schema: AttributeSchema) -> tuple[int, int]:
    """Bytes of one item's attributes JSON without and with the class probabilities."""
    full = predictions(schema, np.random.default_rng(1))
    short = {n: {k: v for k, v in p.items() if k != "probabilities"} for n, p in full.items()}
    return len(json.dumps(short)), len(json.dumps(full))


def measure(g: Gallery, schema: AttributeSchema, feats: np.ndarray, n: int) -> dict[str, Any]:
    store = g.store
    wanted = {"gender": "female", "backpack": "yes", "upcolor": "red"}
    broad, narrow = {"gender": "female"}, {"gender": "female", "upcolor": "red"}
    t_mid = 1.7e9 + len(feats) / 2
    filt = SearchFilter(cameras=frozenset({"cam1", "cam2"}), time_from=t_mid)
    t0 = time.perf_counter()
    attribute_search(store, schema, wanted, 10, SearchFilter())
    first_s = time.perf_counter() - t0
    q = feats[5]
    known = column_cache(store, schema).current(store).ids
    among = {
        name: matching_ids(store, schema, w, SearchFilter())
        for name, w in [("broad", broad), ("narrow", narrow)]
    }
    rows = {
        "attribute search k=10, 3 values": timed(
            lambda: attribute_search(store, schema, wanted, 10, SearchFilter()), n
        ),
        "attribute search k=10, 3 values, 2 of 6 cameras + time from": timed(
            lambda: attribute_search(store, schema, wanted, 10, filt, 0.01), n
        ),
        "  of which: check that the columns are current (new ids + count)": timed(
            lambda: ColumnCache._live(store, known), n
        ),
        "image search k=10 (no attributes filter)": timed(lambda: g.search(q, 10), n),
        f"image search k=10, attributes filter {broad} ({len(among['broad'])} items)": timed(
            lambda: g.search(q, 10, among=matching_ids(store, schema, broad, SearchFilter())), n
        ),
        f"image search k=10, attributes filter {narrow} ({len(among['narrow'])} items)": timed(
            lambda: g.search(q, 10, among=matching_ids(store, schema, narrow, SearchFilter())), n
        ),
    }
    cols = column_cache(store, schema).current(store)
    mem = sum(getattr(cols, f).nbytes for f in ("ids", "cams", "times", "probs", "labels"))
    return {"first_s": first_s, "rows": rows, "columns_mb": mem / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--engine", choices=("local", "milvus"), default="local")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    limit_numpy_blas()
    schema = market_schema()
    with tempfile.TemporaryDirectory() as tmp:
        config = BackendConfig(args.engine, Path(tmp))  # milvus: Milvus Lite in the process
        manager = GalleryManager(open_backend(config), "bench-model", DIM)
        manager.open_all()
        t0 = time.perf_counter()
        feats = fill(manager, schema, args.items)
        fill_s = time.perf_counter() - t0
        out = measure(manager.get("g"), schema, feats, args.requests)
        manager.close()
    short, full = json_bytes(schema)
    lines = [
        f"{args.items} items, {DIM}-d, {args.engine} engine (exact), {len(schema)} attributes "
        f"({sum(a.num_classes for a in schema)} probability columns); {args.requests} calls "
        "per row after 3 warm-up calls. Filling the gallery took "
        f"{fill_s:.0f} s. The first attribute search read every item's predictions from the "
        f"store into columns: {out['first_s']:.1f} s (once per store and process; later "
        f"searches fetch only new items). Columns: {out['columns_mb']:.1f} MiB. An item's "
        f"attributes JSON: {short} bytes with labels only, {full} bytes with every class's "
        "probability.\n",
        "| operation | p50 ms | p99 ms |",
        "|---|---:|---:|",
    ]
    for name, samples in out["rows"].items():
        p50, p99 = percentiles(samples)
        lines.append(f"| {name} | {p50:.2f} | {p99:.2f} |")
    body = "\n".join(lines) + f"\n\n{load_note()}\n"
    print(body)
    suffix = "" if args.engine == "local" else f"_{args.engine}"
    write_section(
        f"attribute_search{suffix}",
        f"Attribute search at {args.items // 1000}k items ({args.engine} engine)",
        body,
        f".venv/bin/python -m benchmarks.attribute_search --items {args.items} "
        f"--requests {args.requests} --engine {args.engine}",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
