"""Nearest-neighbour search over L2-normalised embeddings: the math, no storage.

Scores are inner products (cosine similarity, since embeddings are unit vectors) and the
Euclidean distance is ``sqrt(2 - 2 * score)``. Filters are a boolean mask over rows, so a
filtered search returns exactly what a brute-force scan of the allowed rows returns.

Index kinds:

- ``flat`` (default): exact. On CPU a numpy matrix-vector product (split over the cores by
  :func:`service.cpu.matvec`) plus ``argpartition`` (the performance notes measured it 2x
  faster than FAISS's single-query flat search; the ``search`` benchmark re-measures both);
  on a GPU host a FAISS GPU flat index.
- ``ivf`` / ``hnsw``: FAISS approximate indexes for large galleries, with filters applied
  through an ``IDSelectorBitmap`` (exact over what the index visits, not over the gallery).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.cpu import matvec

logger = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexOptions:
    """Which index a gallery uses and how it is tuned."""

    kind: str = "flat"
    """flat (exact), ivf or hnsw."""
    use_gpu: bool = False
    """Put flat indexes on the GPU with FAISS (only when ``faiss.get_num_gpus() > 0``)."""
    ivf_nlist: int = 1024
    """IVF: number of inverted lists (the index trains once the gallery has 39x as many items)."""
    ivf_nprobe: int = 32
    """IVF: lists visited per query."""
    hnsw_m: int = 32
    """HNSW: graph degree."""
    hnsw_ef_search: int = 128
    """HNSW: search breadth."""

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; valid: {list(INDEX_KINDS)}")


def scores_to_distances(scores: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their inner product, float32."""
    s = np.asarray(scores, dtype=np.float32)
    return np.sqrt(np.maximum(np.float32(2.0) - np.float32(2.0) * s, np.float32(0.0)))


def sort_hits(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order hits by descending score, ties by ascending row (deterministic)."""
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


def exact_search(
    matrix: np.ndarray,
    query: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    min_score: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of ``matrix`` [N, d] by inner product with ``query`` [d].

    Only rows where ``mask`` is True and whose score is at least ``min_score`` qualify.
    Returns (rows int64 [m], scores float32 [m]) with m <= k, best first.
    """
    n = matrix.shape[0]
    if n == 0 or k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    q = np.asarray(query, dtype=np.float32)
    if mask is not None and mask.sum() < n // 4:  # selective filter: score the few allowed rows
        rows = np.flatnonzero(mask)
        scores = matvec(matrix[rows], q)  # [m]
    else:
        scores = matvec(matrix, q)  # [N]
        rows = np.arange(n)
        if mask is not None:
            rows, scores = rows[mask], scores[mask]
    if min_score is not None:
        keep = scores >= np.float32(min_score)
        rows, scores = rows[keep], scores[keep]
    if rows.size > k:
        part = np.argpartition(-scores, k - 1)[:k]
        rows, scores = rows[part], scores[part]
    return sort_hits(rows.astype(np.int64), scores.astype(np.float32))


BATCH_QUERIES = 32
"""Queries scored per matrix product by :func:`exact_search_many` (bounds its memory)."""


def exact_search_many(
    matrix: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`exact_search` of each row of ``queries`` [Q, d], scored by one matrix product per
    :data:`BATCH_QUERIES` queries instead of a pass over the gallery per query (at 100k x 512,
    a batch of 200 neighbour-list queries reads the matrix 7 times instead of 200)."""
    if len(queries) < 2 or matrix.shape[0] == 0 or k <= 0:
        return [exact_search(matrix, q, k, mask) for q in queries]
    rows = np.arange(matrix.shape[0]) if mask is None else np.flatnonzero(mask)
    allowed = matrix if mask is None else matrix[rows]
    kk = min(k, len(rows))
    out = []
    for start in range(0, len(queries), BATCH_QUERIES):
        block = np.asarray(queries[start : start + BATCH_QUERIES], dtype=np.float32)
        scores = block @ allowed.T  # [b, m]
        if kk == 0:
            out += [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(block)
            continue
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(scores, part, axis=1)
        out += [sort_hits(rows[p].astype(np.int64), t) for p, t in zip(part, top, strict=True)]
    return out


class FaissIndex:
    """A FAISS index over the rows of a gallery matrix (FAISS ids are row numbers)."""

    def __init__(self, dim: int, options: IndexOptions) -> None:
        self.dim = dim
        self.options = options
        self.index: Any = None
        self._on_gpu = False

    def rebuild(self, matrix: np.ndarray) -> None:
        """Build from scratch over ``matrix`` [N, d] (row i gets id i)."""
        faiss = _faiss()
        opt = self.options
        self._on_gpu = False
        if opt.kind == "ivf" and matrix.shape[0] < 39 * opt.ivf_nlist:
            self.index = None  # too few vectors to train: searched exactly until then
            return
        if opt.kind == "flat":
            index: Any = faiss.IndexFlatIP(self.dim)
        elif opt.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, opt.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = opt.hnsw_ef_search
        else:
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(
                quantizer, self.dim, opt.ivf_nlist, faiss.METRIC_INNER_PRODUCT
            )
            index.train(matrix)
            index.nprobe = opt.ivf_nprobe  # faiss's wrapper keeps ``quantizer`` alive
        if opt.kind == "flat" and opt.use_gpu and faiss.get_num_gpus() > 0:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            self._on_gpu = True
        if matrix.shape[0]:
            index.add(np.ascontiguousarray(matrix, dtype=np.float32))
        self.index = index

    def add(self, matrix: np.ndarray, new_rows: np.ndarray) -> None:
        """Append ``new_rows`` (the last rows of ``matrix``, already stored there)."""
        if self.index is None:
            self.rebuild(matrix)  # IVF becomes trainable at some point
        else:
            self.index.add(np.ascontiguousarray(new_rows, dtype=np.float32))

    def search(
        self,
        matrix: np.ndarray,
        query: np.ndarray,
        k: int,
        mask: np.ndarray | None,
        min_score: float | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` allowed rows; exact fallback while an IVF index is untrained."""
        if self.index is None:
            return exact_search(matrix, query, k, mask, min_score)
        if self._on_gpu and mask is not None:
            return self._search_oversampled(query, k, mask, min_score)
        bits = None if mask is None else np.packbits(mask, bitorder="little")
        params = self._params(mask.size if mask is not None else 0, bits)
        kk = min(k, self.index.ntotal)
        scores, rows = self.index.search(query.reshape(1, -1).astype(np.float32), kk, params=params)
        del bits  # the selector pointed into it until here
        return self._finish(rows[0], scores[0], min_score)

    def _params(self, n: int, bits: np.ndarray | None) -> Any:
        """Search parameters restricting the search to the rows set in ``bits``."""
        faiss = _faiss()
        if bits is None:
            return None
        sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        match self.options.kind:
            case "hnsw":
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.options.hnsw_ef_search)
            case "ivf":
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self.options.ivf_nprobe)
            case _:
                params = faiss.SearchParameters(sel=sel)
        return params

    def _search_oversampled(
        self, query: np.ndarray, k: int, mask: np.ndarray, min_score: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """GPU indexes take no selector: widen the search until k allowed rows are found."""
        kk, n = max(4 * k, 64), self.index.ntotal
        while True:
            kk = min(kk, n)
            scores, rows = self.index.search(query.reshape(1, -1).astype(np.float32), kk)
            keep = rows[0] >= 0
            r, s = rows[0][keep], scores[0][keep]
            ok = mask[r]
            if ok.sum() >= k or kk >= n:
                return self._finish(r[ok][:k], s[ok][:k], min_score)
            kk *= 4

    @staticmethod
    def _finish(
        rows: np.ndarray, scores: np.ndarray, min_score: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        keep = rows >= 0
        if min_score is not None:
            keep &= scores >= np.float32(min_score)
        return sort_hits(rows[keep].astype(np.int64), scores[keep].astype(np.float32))


def _faiss() -> Any:
    """The faiss module, imported on first use (its stubs do not cover the SWIG classes)."""
    import faiss

    return faiss


def needs_faiss(options: IndexOptions) -> bool:
    """Whether ``options`` call for a FAISS index (otherwise numpy exact search)."""
    return options.kind != "flat" or options.use_gpu
