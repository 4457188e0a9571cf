"""Sparse rows of the k-reciprocal feature ``V`` and the steps that build and compare them.

One module for the three re-rankers (:mod:`reidcore.rerank` on a whole set,
:mod:`reidcore.rerank_neighbours` and :mod:`reidcore.rerank_cache` per query): the row type
and every step after the neighbour lists, each named after its equation in Zhong et al.,
"Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017, as the authors'
released code computes it (``re_ranking`` in ``zhunzhong07/person-re-ranking``, also the
torchreid port):

* :func:`original_distance`: the released code's ``d_o(i, j) = d(i, j)**2 / max_l d(l, i)**2``
  (the paper's Mahalanobis distance with ``M = I``, divided by the per-column maximum of the
  squared distance matrix of the whole set, then transposed: row ``i`` is divided by the
  largest squared distance from ``i``). This makes re-ranking independent of the feature scale.
* :func:`expansion_accepted`: Eq. 6's test ``|R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|``
  (strict ``>``, as released).
* :func:`gaussian_kernel`: Eq. 7, ``V[i, j] = exp(-d_o(i, j))`` on ``R*(i)``, each row divided
  by its sum (as released).
* :func:`local_query_expansion`: Eq. 11, ``V[i] <- mean of V[j]`` over ``N(i, k2 - 1)``
  (``i`` and its ``k2 - 1`` nearest).
* :func:`jaccard_to_first` / :func:`jaccard_query_gallery`: Eq. 10 through Eq. 13's sums,
  ``d_J = 1 - sum min(V_p, V_g) / sum max(V_p, V_g)``.
* :func:`final_distance`: Eq. 12, ``d* = (1 - lambda) d_J + lambda d_o``.

Numbering, one convention for the three: **the query comes first**. In the rows these steps
build and compare, the query is row 0 and id (column) 0 for one query, gallery items after it
(:mod:`reidcore.rerank_neighbours`: local id 0, the query's universe after it); for a set of
queries, rows and ids ``0 .. Nq - 1`` are the queries and ``Nq ..`` the gallery
(:mod:`reidcore.rerank`). :mod:`reidcore.rerank_cache` keeps its cached gallery rows in
gallery ids ``0 .. N - 1`` (they never hold the query) and hands a query's rows to these steps
through :func:`query_first`, which gives the query id 0 and gallery item ``g`` id ``g + 1``.
Column ids are only matched, never compared by size, so the numbering changes no result
(the query's entry moves first in its rows: the same values, summed in another order;
``tests/core/test_rerank_numbering.py`` checks the cache against its old numbering).

Numpy only (the service imports it without scipy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SparseRows:
    """Rows of a sparse matrix, compressed (CSR): row ``r`` holds
    ``cols[indptr[r]:indptr[r + 1]]`` (sorted, unique) with values ``vals[...]``."""

    indptr: np.ndarray
    """``[R + 1]`` int64 row starts."""
    cols: np.ndarray
    """int64 column ids of the stored values."""
    vals: np.ndarray
    """Stored values (float32)."""

    @property
    def n_rows(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def lengths(self) -> np.ndarray:
        """``[R]`` stored values per row."""
        return np.diff(self.indptr)

    def entry_rows(self) -> np.ndarray:
        """The row of every stored value."""
        return np.repeat(np.arange(self.n_rows), self.lengths)

    def row_sums(self) -> np.ndarray:
        """``[R]`` float64 sum of each row."""
        return np.bincount(
            self.entry_rows(), weights=self.vals.astype(np.float64), minlength=self.n_rows
        )

    def take(self, rows: np.ndarray) -> SparseRows:
        """The rows ``rows`` (any order, repeats allowed) as a new matrix."""
        rows = np.asarray(rows, dtype=np.int64)
        idx, _ = gather_ranges(self.indptr[rows], self.lengths[rows])
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(self.lengths[rows], out=indptr[1:])
        return SparseRows(indptr, self.cols[idx], self.vals[idx])

    @classmethod
    def empty(cls, n_rows: int = 0) -> SparseRows:
        return cls(
            np.zeros(n_rows + 1, dtype=np.int64),
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.float32),
        )

    @classmethod
    def from_entries(
        cls, row: np.ndarray, col: np.ndarray, val: np.ndarray, n_rows: int
    ) -> SparseRows:
        """From unsorted ``(row, col, val)`` entries; of repeated ``(row, col)`` the first kept."""
        row = np.asarray(row, dtype=np.int64)
        col = np.asarray(col, dtype=np.int64)
        width = int(col.max(initial=-1)) + 1
        key, first = np.unique(row * width + col, return_index=True)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(key // max(width, 1), minlength=n_rows), out=indptr[1:])
        return cls(indptr, key % max(width, 1), np.asarray(val)[first].astype(np.float32))

    @classmethod
    def stack(cls, parts: list[SparseRows]) -> SparseRows:
        """Rows of ``parts[0]``, then of ``parts[1]``, ..."""
        if not parts:
            return cls.empty()
        starts = np.cumsum([0] + [int(p.indptr[-1]) for p in parts[:-1]])
        indptr = np.concatenate(
            [[0]] + [p.indptr[1:] + s for p, s in zip(parts, starts, strict=True)]
        ).astype(np.int64)
        return cls(
            indptr,
            np.concatenate([p.cols for p in parts]),
            np.concatenate([p.vals for p in parts]).astype(np.float32),
        )


def gather_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``range(starts[t], starts[t] + lengths[t])`` and, per element, its ``t``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    seg = np.repeat(np.arange(lengths.size), lengths)
    offsets = np.cumsum(lengths) - lengths  # start of each range in the output
    idx = np.arange(total) - offsets[seg] + np.asarray(starts, dtype=np.int64)[seg]
    return idx, seg


def query_first(v: SparseRows, query_id: int) -> SparseRows:
    """``v`` with its columns in the module's numbering: ``query_id`` (the gallery's size, the
    query's id where ids ``0 .. N - 1`` are gallery items) becomes 0 and gallery id ``g``
    becomes ``g + 1``; each row stays sorted (a row's query entry, its last, moves first)."""
    if v.cols.size == 0:
        return v
    last = np.maximum(v.indptr[1:] - 1, 0)
    moves = np.flatnonzero((v.lengths > 0) & (v.cols[last] == query_id))
    order = np.arange(v.cols.size)
    idx, seg = gather_ranges(v.indptr[moves], v.lengths[moves])
    order[idx] = np.where(idx == v.indptr[moves][seg], last[moves][seg], idx - 1)
    cols = v.cols[order]
    return SparseRows(v.indptr, np.where(cols == query_id, 0, cols + 1), v.vals[order])


# --------------------------------------------------------------------------- the equations


def original_distance(d: np.ndarray, row_max_sq: np.ndarray | float) -> np.ndarray:
    """``d_o = d**2 / max_l d(l, i)**2`` (float32, as released) for plain distances ``d``
    of items ``i`` whose largest squared distance in the set is ``row_max_sq`` (same shape,
    or broadcast). A row whose items all coincide (maximum 0) keeps ``d**2``."""
    sq = np.square(np.asarray(d, dtype=np.float32))
    denom = np.asarray(row_max_sq, dtype=np.float32)
    return sq / np.where(denom > 0, denom, np.float32(1.0))


def expansion_accepted(overlap: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Eq. 6, as released: ``|R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|`` (in integers)."""
    return 3 * np.asarray(overlap) > 2 * np.asarray(size)


def gaussian_kernel(r_star: SparseRows) -> SparseRows:
    """Eq. 7: ``r_star`` holds ``d_o(i, j)`` on ``R*(i)``; returns ``V`` (rows sum to 1)."""
    w = np.exp(-r_star.vals.astype(np.float32))
    sums = np.bincount(r_star.entry_rows(), weights=w, minlength=r_star.n_rows)
    sums = np.where(sums > 0, sums, 1.0)
    return SparseRows(
        r_star.indptr, r_star.cols, (w / sums[r_star.entry_rows()]).astype(np.float32)
    )


def local_query_expansion(v: SparseRows, neighbours: np.ndarray) -> SparseRows:
    """Eq. 11: row ``t`` of the result is the mean of the rows ``neighbours[t]`` of ``v``.

    ``neighbours`` ``[T, k2]`` holds row numbers of ``v`` (``N(i, k2 - 1)``, self first).
    """
    t, k2 = neighbours.shape
    if k2 == 1:
        return v.take(neighbours[:, 0])
    src = neighbours.ravel()
    owner = np.repeat(np.arange(t), k2)
    idx, seg = gather_ranges(v.indptr[src], v.lengths[src])
    width = int(v.cols.max(initial=-1)) + 1
    key = owner[seg] * width + v.cols[idx]
    uniq, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, weights=v.vals[idx], minlength=uniq.size)
    indptr = np.zeros(t + 1, dtype=np.int64)
    np.cumsum(np.bincount(uniq // max(width, 1), minlength=t), out=indptr[1:])
    return SparseRows(indptr, uniq % max(width, 1), (summed / k2).astype(np.float32))


def jaccard_to_first(v: SparseRows) -> np.ndarray:
    """Eq. 10 between row 0 (the probe) and each other row: ``[R - 1]`` float64."""
    width = int(v.cols.max(initial=-1)) + 1
    probe = np.zeros(width, dtype=np.float32)
    lo, hi = v.indptr[0], v.indptr[1]
    probe[v.cols[lo:hi]] = v.vals[lo:hi]
    rows = v.entry_rows()
    sums = np.bincount(rows, weights=v.vals, minlength=v.n_rows)
    smin = np.bincount(rows, weights=np.minimum(v.vals, probe[v.cols]), minlength=v.n_rows)
    return (1.0 - smin / (sums[0] + sums - smin))[1:]


def jaccard_query_gallery(v: SparseRows, nq: int, block_bytes: int = 4 * 2**20) -> np.ndarray:
    """Eq. 10 between every query row (``< nq``) and every gallery row of ``v``: ``[Nq, Ng]``
    float32, through the inverted index of the gallery rows (columns -> gallery rows)."""
    n = v.n_rows
    ng = n - nq
    sums = v.row_sums()
    inv = _gallery_columns(v, nq)
    col_len = inv.lengths
    out = np.empty((nq, ng), dtype=np.float32)
    block = max(1, block_bytes // max(ng, 1))
    for start in range(0, nq, block):
        stop = min(start + block, nq)
        lo, hi = v.indptr[start], v.indptr[stop]
        q_cols, q_vals = v.cols[lo:hi], v.vals[lo:hi]
        q_row = np.repeat(np.arange(stop - start), np.diff(v.indptr[start : stop + 1]))
        idx, seg = gather_ranges(inv.indptr[q_cols], col_len[q_cols])
        mins = np.minimum(q_vals[seg], inv.vals[idx])
        key = q_row[seg] * ng + (inv.cols[idx] - nq)
        smin = np.bincount(key, weights=mins, minlength=(stop - start) * ng)
        smin = smin.reshape(stop - start, ng)
        smax = sums[start:stop, None] + sums[None, nq:] - smin
        out[start:stop] = 1.0 - smin / smax
    return out


def _gallery_columns(v: SparseRows, first_row: int) -> SparseRows:
    """The transpose of rows ``first_row:`` of ``v`` (square, ``n x n``): per column, the
    rows holding it and their values."""
    n = v.n_rows
    lo = v.indptr[first_row]
    rows = np.repeat(np.arange(first_row, n), v.lengths[first_row:])
    cols = v.cols[lo:]
    order = np.argsort(cols, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n), out=indptr[1:])
    return SparseRows(indptr, rows[order], v.vals[lo:][order])


def final_distance(jaccard: np.ndarray, original: np.ndarray, lambda_value: float) -> np.ndarray:
    """Eq. 12: ``(1 - lambda) d_J + lambda d_o`` (float32)."""
    out = np.asarray(jaccard, dtype=np.float32) * np.float32(1.0 - lambda_value)
    out += np.asarray(original, dtype=np.float32) * np.float32(lambda_value)
    return out


__all__ = [
    "SparseRows",
    "expansion_accepted",
    "final_distance",
    "gather_ranges",
    "gaussian_kernel",
    "jaccard_query_gallery",
    "jaccard_to_first",
    "local_query_expansion",
    "original_distance",
    "query_first",
]
