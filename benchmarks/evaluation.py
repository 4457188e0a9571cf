"""Time and peak memory of the evaluation core at Market-1501 scale.

3,368 queries x 19,732 gallery items (Market-1501's test split sizes), 512-d clustered
features with 6 cameras, 751 identities, junk (-1) and distractors (0) in the gallery.
Measures :func:`pairwise_euclidean`, :func:`evaluate_rank` (both mAP definitions) and
:func:`camera_pair_matrix`; peak memory is numpy's allocations as seen by tracemalloc.

Run: ``.venv/bin/python -m benchmarks.evaluation`` (about half a minute on 2 cores).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from benchmarks.results import write_section
from reidcore.evaluation import camera_pair_matrix, evaluate_rank, pairwise_euclidean

NUM_QUERY, NUM_GALLERY, DIM, NUM_IDS, NUM_CAMS = 3368, 19732, 512, 751, 6
NUM_JUNK, NUM_DISTRACTORS = 2798, 2793  # Market-1501's counts of -1 and 0 gallery images
NOISE = 2.6  # per-dimension noise around unnormalised N(0, I) centres: rank-1 near 85 %


def make_market_sized(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Clustered float32 features and labels with Market-1501's test split sizes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((NUM_IDS, DIM), dtype=np.float32)
    q_ids = rng.integers(1, NUM_IDS + 1, NUM_QUERY)
    g_ids = rng.integers(1, NUM_IDS + 1, NUM_GALLERY)
    g_ids[:NUM_JUNK] = -1
    g_ids[NUM_JUNK : NUM_JUNK + NUM_DISTRACTORS] = 0
    q_cams = rng.integers(0, NUM_CAMS, NUM_QUERY)
    g_cams = rng.integers(0, NUM_CAMS, NUM_GALLERY)

    def feats(ids: np.ndarray) -> np.ndarray:
        base = np.where(ids[:, None] > 0, centres[np.maximum(ids, 1) - 1], 0).astype(np.float32)
        x = base + np.float32(NOISE) * rng.standard_normal((ids.size, DIM), dtype=np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return feats(q_ids), feats(g_ids), q_ids, g_ids, q_cams, g_cams


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """``(result, wall seconds, CPU seconds, peak MiB of traced allocations)`` of one call.

    CPU time (all threads of this process) is reported beside wall time because the
    machine is shared: wall time grows with other people's load, CPU time much less.
    """
    tracemalloc.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, cpu, peak / 2**20


def main() -> None:
    qf, gf, q_ids, g_ids, q_cams, g_cams = make_market_sized()
    labels = (q_ids, g_ids, q_cams, g_cams)
    rows = []
    dist, s, cpu, mib = measure(lambda: pairwise_euclidean(qf, gf))
    rows.append(("pairwise_euclidean", s, cpu, mib, f"dtype {dist.dtype}"))
    for mode in ("official", "mean"):
        res, s, cpu, mib = measure(partial(evaluate_rank, dist, *labels, map_mode=mode))
        note = f"R1 {100 * res.rank(1):.2f}, mAP {100 * res.mAP:.2f}, skipped {res.num_skipped}"
        rows.append((f"evaluate_rank ({mode})", s, cpu, mib, note))
    pairs, s, cpu, mib = measure(lambda: camera_pair_matrix(dist, *labels))
    rows.append(("camera_pair_matrix", s, cpu, mib, f"{pairs.rank1.shape} cells"))
    for name, s, cpu, mib, note in rows:
        print(f"{name:26s} wall {s:6.2f} s  cpu {cpu:6.2f} s  peak {mib:7.1f} MiB  {note}")
    body = (
        f"{NUM_QUERY} queries x {NUM_GALLERY} gallery items, d={DIM}, {NUM_CAMS} cameras, "
        f"{NUM_JUNK} junk and {NUM_DISTRACTORS} distractors (Market-1501 test sizes; "
        "synthetic clustered features).\n\n"
        "| step | wall s | CPU s | peak MiB (tracemalloc) | note |\n"
        "| --- | --- | --- | --- | --- |\n"
        + "\n".join(f"| {n} | {s:.2f} | {c:.2f} | {m:.0f} | {note} |" for n, s, c, m, note in rows)
    )
    write_section(
        "evaluation",
        "Evaluation core at Market-1501 scale",
        body,
        ".venv/bin/python -m benchmarks.evaluation",
    )


if __name__ == "__main__":
    main()
