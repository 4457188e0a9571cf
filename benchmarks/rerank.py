"""Full vs shortlist k-reciprocal re-ranking: time, peak memory and fidelity.

Run: ``.venv/bin/python -m benchmarks.rerank`` (a few minutes on 2 cores; the 100k galleries
take longest). Writes the ``rerank`` section of benchmarks/RESULTS.md. ``--sizes 1000 10000``
and ``--dims 512`` restrict the grid; each configuration samples its queries from its own
seed, so a restricted run gives the same rows as the full one.

Data: clustered synthetic features (``make_clustered_features``, noise 1.3 at 512-d and 1.9
at 2048-d, camera shift 0.8: plain-distance mAP about 0.5-0.7 at 10k, the regime where
re-ranking matters), 10 gallery
images per identity, one query per identity, galleries of 1k, 10k and 100k items, 512-d and
2048-d. The full algorithm runs with all queries at once (the evaluation protocol) where its
estimated memory, inputs included, fits in half of MemAvailable. The shortlist re-ranks each
query's exact top-K (numpy matrix-vector product + argpartition, timed separately) with
:func:`reidcore.rerank.rerank_shortlist`; items past K keep their original order after it.
The expanded variant (:class:`reidcore.rerank_cache.RerankCache`, and for comparison the
uncached :func:`reidcore.rerank_neighbours.rerank_expanded`) adds gallery neighbour lists,
exact, built by the service's ``build_neighbours``: ``GalleryNeighbours.add`` below 20k
items, an exact FAISS k-NN search above (the numpy build is O(N^2 d) and slow at 100k).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.results import load_note, write_section
from reidcore.evaluation import evaluate_rank, pairwise_euclidean
from reidcore.rerank import (
    available_memory_bytes,
    estimate_rerank_memory,
    k_reciprocal_rerank,
    rerank_shortlist,
)
from reidcore.rerank_cache import RerankCache
from reidcore.rerank_neighbours import GalleryNeighbours, rerank_expanded
from reidcore.synthetic_features import FeatureSet, make_clustered_features

logger = logging.getLogger(__name__)

GALLERY_SIZES = (1_000, 10_000, 100_000)
DIMS = (512, 2048)
SHORTLISTS = (100, 200, 400)
IMAGES_PER_ID = 11  # 1 query + 10 gallery images per identity
NOISE = {512: 1.3, 2048: 1.9}  # 2048-d is far easier at equal noise (no-rerank mAP ~99)
CAM_SHIFT = 0.8
LIST_M = 20  # gallery neighbour list length for rerank_expanded
EXPANDED = ((100, 20, 20), (50, 10, 10), (30, 5, 10))  # (K, expand, expand_width)
EXPANDED_MAX_GALLERY = {512: 100_000, 2048: 10_000}  # list build is O(N^2 d)
FIDELITY_QUERIES = 200  # queries re-ranked one by one to compare with the full algorithm
TIMING_QUERIES = 30


@dataclass
class Row:
    """One line of a results table."""

    gallery: int
    """Gallery size."""
    dim: int
    """Feature dimension."""
    method: str
    """``full`` or ``shortlist K=...``."""
    time_ms: str
    """Time: per query for the shortlist (median), total for the full algorithm."""
    peak_mib: str
    """Peak traced memory of the re-ranking call(s), MiB."""
    map_pct: str
    """mAP (%) on the fidelity queries."""
    overlap: str
    """Mean top-10 overlap with the full algorithm."""


def _mean_ap(dist: np.ndarray, fs: FeatureSet, sel: np.ndarray) -> float:
    """mAP (mean of precision at hits, same-id same-camera items ignored) of queries ``sel``."""
    res = evaluate_rank(
        dist,
        fs.query_ids[sel],
        fs.gallery_ids,
        fs.query_cams[sel],
        fs.gallery_cams,
        map_mode="mean",
    )
    return float(res.mAP)


def _traced(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """``fn()``, its wall time (s) and peak traced memory (MiB)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, elapsed, peak


def _top_k(query: np.ndarray, gallery: np.ndarray, sq_norms: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k gallery ids by Euclidean distance, nearest first."""
    d2 = sq_norms - 2.0 * (gallery @ query)  # [Ng], |q|^2 omitted: same order
    top = np.argpartition(d2, k)[:k]
    return top[np.argsort(d2[top], kind="stable")]


def _full(fs: FeatureSet) -> tuple[np.ndarray | None, str, str, str]:
    """Full re-ranking of all queries, or None with the memory estimate when it does not fit."""
    nq, ng = fs.query_features.shape[0], fs.gallery_features.shape[0]
    need = estimate_rerank_memory(nq, ng, include_inputs=True)
    avail = available_memory_bytes() or 0
    if need > avail // 2:
        note = f"does not fit: needs ~{need / 2**30:.1f} GiB (inputs included), {avail / 2**30:.1f} GiB available"
        print(f"  full: {note}")
        return None, note, "-", "-"
    q, g = fs.query_features, fs.gallery_features
    t0 = time.perf_counter()
    q_g, q_q, g_g = pairwise_euclidean(q, g), pairwise_euclidean(q, q), pairwise_euclidean(g, g)
    t_dist = time.perf_counter() - t0
    out, t_rr, peak = _traced(lambda: k_reciprocal_rerank(q_g, q_q, g_g))
    print(f"  full: distances {t_dist:.2f} s, re-ranking {t_rr:.2f} s, peak {peak:.0f} MiB")
    return out, f"{t_rr:.2f} s (+{t_dist:.2f} s distances)", f"{peak:.0f}", f"{need / 2**20:.0f}"


def _shortlist_timing(fs: FeatureSet, k: int, rng: np.random.Generator) -> tuple[str, str, str]:
    """Median search time, median/p90 re-ranking time and peak memory over sampled queries."""
    g = fs.gallery_features
    sq = np.einsum("ij,ij->i", g, g)
    t_search, t_rr, peaks = [], [], []
    for qi in rng.choice(fs.query_features.shape[0], TIMING_QUERIES, replace=False):
        q = fs.query_features[qi]
        t0 = time.perf_counter()
        top = _top_k(q, g, sq, k)
        t_search.append(time.perf_counter() - t0)
        cands = g[top]
        t0 = time.perf_counter()
        rerank_shortlist(q, cands)
        t_rr.append(time.perf_counter() - t0)
    _, _, peak = _traced(lambda: rerank_shortlist(q, cands))
    peaks.append(peak)
    ms = 1e3 * np.asarray(t_rr)
    return (
        f"{np.median(ms):.1f} (p90 {np.percentile(ms, 90):.1f})",
        f"{1e3 * np.median(t_search):.1f}",
        f"{max(peaks):.1f}",
    )


def _shortlist_fidelity(
    fs: FeatureSet, full: np.ndarray | None, sel: np.ndarray, k: int
) -> tuple[float, float | None, float | None]:
    """On ``sel``: shortlist mAP, mean top-10 overlap with ``full``, and the top-K bound.

    The bound is the mAP of the full algorithm's own distances restricted to the same top-K
    (rest in original order): what any variant that only re-scores the top-K can reach.
    """
    g = fs.gallery_features
    base = pairwise_euclidean(fs.query_features[sel], g)  # [S, Ng]
    dist = base + 1e3  # items past the shortlist keep their order, after it
    bound = dist.copy()
    overlaps = []
    for row, qi in enumerate(sel):
        top = np.argpartition(base[row], k)[:k]
        top = top[np.argsort(base[row, top], kind="stable")]
        scores = rerank_shortlist(fs.query_features[qi], g[top])
        dist[row, top] = scores
        if full is not None:
            bound[row, top] = full[qi, top]
            mine = top[np.argsort(scores, kind="stable")[:10]]
            ref = np.argsort(full[qi], kind="stable")[:10]
            overlaps.append(np.intersect1d(mine, ref).size / 10)
    if full is None:
        return _mean_ap(dist, fs, sel), None, None
    return _mean_ap(dist, fs, sel), float(np.mean(overlaps)), _mean_ap(bound, fs, sel)


def run_config(ng: int, dim: int, rng: np.random.Generator) -> list[Row]:
    """All measurements for one gallery size and dimension."""
    fs = make_clustered_features(
        num_ids=ng // (IMAGES_PER_ID - 1),
        images_per_id=IMAGES_PER_ID,
        dim=dim,
        noise=NOISE[dim],
        cam_shift=CAM_SHIFT,
        seed=dim + ng,
    )
    nq = fs.query_features.shape[0]
    print(f"gallery {ng}, dim {dim}, {nq} queries")
    sel = np.sort(rng.choice(nq, min(FIDELITY_QUERIES, nq), replace=False))
    full, t_full, peak_full, est = _full(fs)
    plain_map = _mean_ap(pairwise_euclidean(fs.query_features[sel], fs.gallery_features), fs, sel)
    rows = [Row(ng, dim, "no re-ranking", "-", "-", f"{100 * plain_map:.1f}", "-")]
    if full is not None:
        full_map = _mean_ap(full[sel], fs, sel)
        rows.append(
            Row(ng, dim, f"full (est. {est} MiB)", t_full, peak_full, f"{100 * full_map:.1f}", "1")
        )
    else:
        rows.append(Row(ng, dim, "full", t_full, "-", "-", "-"))
    for k in SHORTLISTS:
        t_rr, t_search, peak = _shortlist_timing(fs, k, rng)
        m, ov, bound = _shortlist_fidelity(fs, full, sel, k)
        label = f"shortlist K={k} (search {t_search} ms)"
        ov_txt = "-" if ov is None else f"{ov:.3f}"
        rows.append(Row(ng, dim, label, t_rr, peak, f"{100 * m:.1f}", ov_txt))
        if bound is not None:
            rows.append(
                Row(ng, dim, f"bound: full within top-{k}", "-", "-", f"{100 * bound:.1f}", "-")
            )
        print(
            f"  K={k}: re-rank {t_rr} ms/query, search {t_search} ms, mAP {100 * m:.1f}, top-10 overlap {ov_txt}, top-K bound {bound}"
        )
    if ng <= EXPANDED_MAX_GALLERY[dim]:
        rows += _expanded_rows(fs, full, sel, rng)
    return rows


def _build_neighbours(g: np.ndarray) -> tuple[GalleryNeighbours, str]:
    """Exact gallery lists, built as the service builds them (FAISS k-NN from 20k items)."""
    from service.gallery.exact_rerank import FAISS_BUILD_FROM, build_neighbours

    t0 = time.perf_counter()
    nb = build_neighbours(g, np.ones(g.shape[0], dtype=bool), m=LIST_M)
    how = "GalleryNeighbours.add" if g.shape[0] < FAISS_BUILD_FROM else "FAISS IndexFlatL2 k-NN"
    return nb, f"{time.perf_counter() - t0:.1f} s ({how})"


def _add_one_ms(nb: GalleryNeighbours, cache: RerankCache, feats: np.ndarray) -> float:
    """Median time (ms) of ``add`` plus the cache's sync for single items (both keep them)."""
    times = []
    for f in feats:
        t0 = time.perf_counter()
        nb.add(f[None, :])
        cache.sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _expanded_rows(
    fs: FeatureSet, full: np.ndarray | None, sel: np.ndarray, rng: np.random.Generator
) -> list[Row]:
    """Cached exact re-ranking of the expanded shortlist per (K, expand, expand_width)."""
    g, ng, dim = fs.gallery_features, fs.gallery_features.shape[0], fs.gallery_features.shape[1]
    nb, build = _build_neighbours(g)
    t0 = time.perf_counter()
    cache = RerankCache(nb)
    cache_s = time.perf_counter() - t0
    sq = np.einsum("ij,ij->i", g, g)
    rows = []
    timing_q = rng.choice(fs.query_features.shape[0], TIMING_QUERIES, replace=False)
    for n_cfg, (k, expand, width) in enumerate(EXPANDED):
        times, plain, sizes = [], [], []
        for qi in timing_q:
            q = fs.query_features[qi]
            # the flat search: every distance, then the top-K (not timed here)
            d_all = np.sqrt(np.maximum(sq - 2 * (g @ q) + q @ q, 0)).astype(np.float32)
            top = np.argpartition(d_all, k)[:k]
            t0 = time.perf_counter()
            ids, _ = cache.query(
                q, top, d_all[top], expand=expand, expand_width=width, gallery_dists=d_all
            )
            times.append(time.perf_counter() - t0)
            sizes.append(ids.size)
            if n_cfg == 0:  # the same scores without the cache, for comparison
                t0 = time.perf_counter()
                rerank_expanded(q, top, d_all[top], nb, expand=expand, expand_width=width)
                plain.append(time.perf_counter() - t0)
        m_txt, ov_txt = "-", "-"
        if full is not None:
            m, ov = _expanded_fidelity(fs, full, sel, cache, (k, expand, width))
            m_txt, ov_txt = f"{100 * m:.1f}", f"{ov:.3f}"
        label = (
            f"exact, cached: K={k}, lists of top-{expand} x{width} (mean set {np.mean(sizes):.0f})"
        )
        rows.append(Row(ng, dim, label, _ms(times), "-", m_txt, ov_txt))
        print(f"  {label}: {_ms(times)} ms/query, mAP {m_txt}, top-10 overlap {ov_txt}")
        if plain:
            label = f"same scores, uncached (rerank_expanded), K={k} {expand}x{width}"
            rows.append(Row(ng, dim, label, _ms(plain), "-", m_txt, ov_txt))
            print(f"  {label}: {_ms(plain)} ms/query")
    add_ms = _add_one_ms(nb, cache, fs.query_features[timing_q[:10]])
    mib = (cache.nnz * 12 + ng * 21 * 10) / 2**20
    note = (
        f"neighbour lists M={LIST_M}: build {build}; cache build {cache_s:.1f} s, "
        f"{cache.nnz / ng:.1f} entries/item, ~{mib:.0f} MiB; one add() + cache sync "
        f"{add_ms:.1f} ms (median of 10)"
    )
    rows.append(Row(ng, dim, note, "-", "-", "-", "-"))
    print(f"  {note}")
    return rows


def _ms(seconds: list[float]) -> str:
    ms = 1e3 * np.asarray(seconds)
    return f"{np.median(ms):.1f} (p90 {np.percentile(ms, 90):.1f})"


def _expanded_fidelity(
    fs: FeatureSet,
    full: np.ndarray,
    sel: np.ndarray,
    cache: RerankCache,
    cfg: tuple[int, int, int],
) -> tuple[float, float]:
    """mAP on ``sel`` (unscored items after the scored set, in original order) and the mean
    top-10 overlap with the full algorithm."""
    k, expand, width = cfg
    base = pairwise_euclidean(fs.query_features[sel], fs.gallery_features)  # [S, Ng]
    dist = base + 1e3
    overlaps = []
    for row, qi in enumerate(sel):
        top = np.argpartition(base[row], k)[:k]
        ids, d = cache.query(
            fs.query_features[qi],
            top,
            base[row, top],
            expand=expand,
            expand_width=width,
            gallery_dists=base[row],
        )
        dist[row, ids] = d
        ref = np.argsort(full[qi], kind="stable")[:10]
        overlaps.append(np.intersect1d(ids[:10], ref).size / 10)
    return _mean_ap(dist, fs, sel), float(np.mean(overlaps))


def _table(rows: list[Row]) -> str:
    head = "| gallery | dim | method | time (ms/query; full: total) | peak MiB | mAP % | top-10 overlap |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r.gallery} | {r.dim} | {r.method} | {r.time_ms} | {r.peak_mib} | {r.map_pct} | {r.overlap} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(GALLERY_SIZES))
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    rows: list[Row] = []
    for dim in args.dims:
        for ng in args.sizes:
            rows += run_config(ng, dim, np.random.default_rng([0, ng, dim]))
    body = (
        "Clustered synthetic features (noise 1.3 at 512-d; 1.9 at 2048-d, where noise 1.3 "
        "leaves almost nothing to re-rank: no-rerank mAP ~99 at 10k), camera shift "
        f"{CAM_SHIFT}, 1 query + {IMAGES_PER_ID - 1} gallery images per identity; k1=20, k2=6, "
        f"lambda=0.3. mAP (mean of precision at hits, same-id same-camera ignored) on "
        f"{FIDELITY_QUERIES} sampled queries (all of them when fewer); the shortlist ranks its "
        "K candidates by re-ranked distance and leaves the rest in original order after them. "
        "Full re-ranking is timed over all queries at once, excluding the distance matrices "
        f"(given separately); shortlist times are per query, medians over {TIMING_QUERIES} "
        "queries, and exclude the exact top-K search (numpy mat-vec + argpartition, its median "
        "is in the method column). Peak memory: tracemalloc's peak during the re-ranking call "
        "(numpy buffers included).\n\n"
        "`exact, cached` rows: `reidcore.rerank_cache.RerankCache` over gallery neighbour "
        f"lists of M={LIST_M}: it scores top-K plus the first `xW` entries of the lists of the "
        "query's top-`expand` items, each with the exact distance of the full algorithm on "
        "{query} + gallery, from cached gallery rows of V (only the rows the query changes are "
        "recomputed); unscored items follow in original order. It is given the distance vector "
        "of the flat search that produced the top-K (the service's CPU search computes it); "
        "time per query excludes that search. `uncached` rows compute the same scores with "
        "`rerank_expanded`. The last row of each gallery gives the list and cache build times, "
        "the cache's memory and the cost of one incremental add() with its cache sync. BLAS "
        "threads were left at the default: the per-query work is gather/compare/sort, not "
        "BLAS. " + load_note() + "\n\n" + _table(rows)
    )
    write_section(
        "rerank",
        "k-reciprocal re-ranking: full vs shortlist vs expanded shortlist",
        body,
        "python -m benchmarks.rerank " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
