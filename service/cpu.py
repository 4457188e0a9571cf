"""CPU threading for a service whose parallelism comes from concurrent requests.

numpy's OpenBLAS runs each matrix-vector product on a pthreads pool of its own, and that
pool copes badly with several callers at once. Measured here (2 cores, 1024 x 512 gallery):
one caller 16 us per product; 8 concurrent request threads 390 us each, 32 threads 1 ms,
with the pool's threads spinning on the CPU that the model needs. At 100k x 512, 8
concurrent searches took 43 ms per product instead of 8 ms. The service therefore runs
numpy's BLAS on one thread (:func:`limit_numpy_blas`) and splits a large product over its
own small pool (:func:`matvec`), which queues the chunks of concurrent searches instead of
fighting over the cores: one search still uses every core, many searches share them.

FAISS's own BLAS (an OpenMP build bundled with faiss-cpu) is left alone: it parallelises
the batch k-NN of the re-ranking neighbour lists.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SPLIT_MIN_VALUES = 1 << 21
"""Matrices of at least this many values (8 MiB of float32, ~0.5 ms on one core) are split."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def limit_numpy_blas() -> Any:
    """Run every BLAS library but FAISS's on one thread; returns the limiter (or None).

    ``limiter.restore_original_limits()`` undoes it. Uses threadpoolctl, which finds the
    BLAS libraries loaded in the process (numpy's OpenBLAS, MKL, ...).
    """
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    paths = [
        lib["filepath"]
        for lib in controller.info()
        if lib["user_api"] == "blas" and "faiss" not in lib["filepath"]
    ]
    if not paths:
        return None
    logger.info("BLAS on one thread per call (concurrent requests share the cores): %s", paths)
    return controller.select(filepath=paths).limit(limits=1)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(available_cpus(), thread_name_prefix="matvec")
        return _pool


def matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector`` ([N, d] @ [d] -> [N]), in row chunks over the cores when large.

    Equal to ``matrix @ vector`` within float32 rounding (BLAS may sum a row in another
    order depending on where its chunk starts).
    """
    if matrix.size < SPLIT_MIN_VALUES:  # most galleries: no affinity lookup, no pool
        return matrix @ vector
    workers = available_cpus()
    if workers == 1 or matrix.shape[0] < 2 * workers:
        return matrix @ vector
    out = np.empty(matrix.shape[0], dtype=np.result_type(matrix, vector))
    bounds = np.linspace(0, matrix.shape[0], workers + 1).astype(int)

    def part(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        np.matmul(matrix[lo:hi], vector, out=out[lo:hi])

    for f in [_executor().submit(part, i) for i in range(workers)]:
        f.result()
    return out
