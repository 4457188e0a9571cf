"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), full and per-query shortlist.

"Re-ranking Person Re-identification with k-reciprocal Encoding", Z. Zhong, L. Zheng,
D. Cao, S. Li, CVPR 2017. Numpy only: the service imports this module without scipy.

Definitions used here: the authors' released code (``re_ranking``), step for step
----------------------------------------------------------------------------------
The probe set and the gallery form one set of ``N = Nq + Ng`` items (queries are neighbours
of each other too). With ``d`` the input (plain, not squared) Euclidean distance:

* **original distance** ``d_o(i, j) = d(i, j)**2 / max_l d(l, i)**2``: the paper's
  Mahalanobis distance with ``M = I``, divided by the per-column maximum of the squared
  distance matrix (then transposed) as the released code does. The scores therefore do not
  depend on the feature scale; they do depend on the farthest item of the set.
  (:func:`reidcore.rerank_rows.original_distance`)
* ``N(i, k)``: ``i`` itself (forced first; the diagonals of ``q_q_dist`` and ``g_g_dist`` are
  taken as 0) followed by its ``k`` nearest other items by ``d_o``, ties broken by item index
  (the released ``argsort`` breaks them arbitrarily).
* ``R(i, k) = {j in N(i, k) : i in N(j, k)}`` (Eq. 4), computed for ``k = k1`` and for
  ``k = round(k1 / 2)`` (numpy's round-half-to-even, as released).
* ``R*(i) = R(i, k1) ∪ R(c, k1/2)`` for each ``c in R(i, k1)`` with
  ``|R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|`` (Eq. 6 with the released strict ``>``).
* ``V[i, j] = exp(-d_o(i, j)) / sum_{j' in R*(i)} exp(-d_o(i, j'))`` for ``j in R*(i)``,
  else 0 (Eq. 7, rows normalised to sum 1 as released).
* local query expansion (Eq. 11): ``V[i] <- mean_{j in N(i, k2 - 1)} V[j]`` (the ``k2``
  nearest items, ``i`` included); skipped when ``k2 == 1`` (it would be the identity).
* ``d_J(i, j) = 1 - sum_l min(V[i, l], V[j, l]) / sum_l max(V[i, l], V[j, l])`` (Eq. 10)
* ``d*(q, g) = (1 - lambda) d_J(q, g) + lambda d_o(q, g)`` (Eq. 12).

The steps after the neighbour lists live in :mod:`reidcore.rerank_rows`, shared with the
per-query re-rankers. tests/core/test_rerank.py checks this module against a transcription
of the released code on random cases (equal within 1e-6).

Everything works on sparse neighbour lists (``N x (k1 + 1)`` ids) and padded sparse rows of
``V``; no ``N x N`` matrix is allocated besides the caller's inputs and the ``Nq x Ng`` output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidcore.evaluation import pairwise_euclidean
from reidcore.rerank_rows import (
    SparseRows,
    expansion_accepted,
    final_distance,
    gaussian_kernel,
    jaccard_query_gallery,
    local_query_expansion,
    original_distance,
)

logger = logging.getLogger(__name__)

_BLOCK_BYTES = 64 * 2**20  # bound on the temporaries of one block of rows
_SAFETY = 1.25  # margin on the memory estimate (allocator slack, numpy temporaries)


class RerankMemoryError(MemoryError):
    """Re-ranking would need more memory than is available; raised before allocating."""

    def __init__(self, needed: int, available: int, source: str) -> None:
        self.needed = needed
        self.available = available
        super().__init__(
            f"k-reciprocal re-ranking needs about {_human(needed)} but only "
            f"{_human(available)} is available ({source}); re-rank a shortlist "
            "(rerank_shortlist) or fewer items instead"
        )


def _human(num_bytes: int) -> str:
    """``1.50 GiB`` / ``12.0 MiB`` / ``512 B``."""
    if num_bytes >= 2**30:
        return f"{num_bytes / 2**30:.2f} GiB"
    if num_bytes >= 2**20:
        return f"{num_bytes / 2**20:.1f} MiB"
    return f"{num_bytes} B"


@dataclass(frozen=True)
class _Sizes:
    """Neighbour-list widths derived from ``k1``, ``k2`` and the set size."""

    n: int
    """Items in the set (queries + gallery)."""
    kk: int
    """``|N(i, k1)|``: k1 + 1 (self included), at most n."""
    kh: int
    """``|N(i, round(k1/2))|``: round(k1/2) + 1, at most n."""
    k2: int
    """Items averaged by the local query expansion (self included), at most n."""

    @property
    def width(self) -> int:
        """Upper bound on ``|R*(i)|``: R(i, k1) plus kk half-neighbourhoods."""
        return self.kk + self.kk * self.kh


def _sizes(n: int, k1: int, k2: int) -> _Sizes:
    half = int(np.around(k1 / 2.0))
    return _Sizes(n=n, kk=min(k1 + 1, n), kh=min(half + 1, n), k2=min(k2, n))


# --------------------------------------------------------------------------- memory


def estimate_rerank_memory(
    num_query: int,
    num_gallery: int,
    *,
    k1: int = 20,
    k2: int = 6,
    include_inputs: bool = False,
) -> int:
    """Peak bytes :func:`k_reciprocal_rerank` allocates for ``num_query`` x ``num_gallery``.

    Counts the ``Nq x Ng`` output and its temporaries, the padded sparse rows of ``V``
    (worst case ``|R*| = (k1+1)(round(k1/2)+2)`` per row) and the bounded row blocks, with a
    25 % margin. ``include_inputs=True`` adds the three float32 input distance matrices
    (``(Nq + Ng)^2`` floats) that a caller starting from features must build first.
    """
    if num_query < 0 or num_gallery < 0:
        raise ValueError(f"sizes must be >= 0, got {num_query} queries, {num_gallery} gallery")
    s = _sizes(num_query + num_gallery, k1, k2)
    out = 3 * num_query * num_gallery * 4  # output, squared distances, Jaccard chunk temps
    padded = s.n * s.width * (8 + 4 + 8 + 1)  # ids, values, sort order, mask
    expanded = s.n * s.k2 * s.width * (8 + 4) // 2  # QE's flattened rows (about half valid)
    lists = s.n * (s.kk * s.kk + s.kk + s.kh) * 8  # neighbour lists + reciprocity temps
    blocks = min(6 * _BLOCK_BYTES, 6 * 12 * s.n * s.n)  # row blocks, never more rows than n
    total = out + padded + expanded + lists + blocks
    if include_inputs:
        total += (num_query + num_gallery) ** 2 * 4
    return int(total * _SAFETY)


def available_memory_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes, or ``None`` where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_memory(needed: int, max_memory_bytes: int | None) -> None:
    if max_memory_bytes is not None:
        available, source = int(max_memory_bytes), "max_memory_bytes"
    else:
        avail = available_memory_bytes()
        if avail is None:
            logger.debug("MemAvailable unreadable; skipping the memory check")
            return
        available, source = avail, "MemAvailable in /proc/meminfo"
    if needed > available:
        raise RerankMemoryError(needed, available, source)


# --------------------------------------------------------------------------- validation


def _check_matrix(x: np.ndarray, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite distances (NaN or inf)")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} contains negative distances (min {arr.min():.3g})")
    return arr


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
    if k1 < 1:
        raise ValueError(f"k1 must be >= 1, got {k1}")
    if not 1 <= k2 <= k1 + 1:
        raise ValueError(f"k2 must be in [1, k1 + 1] = [1, {k1 + 1}], got {k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")


# --------------------------------------------------------------------------- distances


class _Dist:
    """The ``N x N`` plain distance matrix seen through its three blocks (never assembled)."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> None:
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.nq = q_q.shape[0]
        self.n = self.nq + g_g.shape[0]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the full matrix, ``[stop - start, N]`` float32."""
        nq = self.nq
        parts = []
        if start < nq:  # query rows
            e = min(stop, nq)
            parts.append(np.concatenate([self.q_q[start:e], self.q_g[start:e]], axis=1))
        if stop > nq:  # gallery rows
            s = max(start, nq) - nq
            e = stop - nq
            parts.append(np.concatenate([self.q_g[:, s:e].T, self.g_g[s:e]], axis=1))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def original_at(self, i: np.ndarray, j: np.ndarray, row_max_sq: np.ndarray) -> np.ndarray:
        """``d_o(i, j)`` (:func:`original_distance`) for index arrays of one shape; 0 where
        ``i == j``."""
        nq = self.nq
        out = np.empty(i.shape, dtype=np.float32)
        iq, jq = i < nq, j < nq
        for mask, mat, a, b in (
            (iq & jq, self.q_q, i, j),
            (iq & ~jq, self.q_g, i, j - nq),
            (~iq & jq, self.q_g, j, i - nq),
            (~iq & ~jq, self.g_g, i - nq, j - nq),
        ):
            if mask.any():
                out[mask] = mat[a[mask], b[mask]]
        out[i == j] = 0.0
        return original_distance(out, row_max_sq[i])


def _top_neighbours(dist: _Dist, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """``N(i, kk - 1)`` for every item: ``[N, kk]`` ids, self first, by (``d_o``, id); and
    ``[N]`` each item's largest squared distance in the set (the released normalisation)."""
    n = dist.n
    ranks = np.empty((n, kk), dtype=np.intp)
    row_max_sq = np.empty(n, dtype=np.float32)
    block = max(1, _BLOCK_BYTES // (12 * max(n, 1)))
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = dist.rows(start, stop)  # [B, N]
        local = np.arange(stop - start)
        rows[local, start + local] = 0.0  # the diagonal is taken as 0
        row_max_sq[start:stop] = np.square(rows).max(axis=1)
        rows = original_distance(rows, row_max_sq[start:stop, None])  # ranks as released
        rows[local, start + local] = -1.0  # self is its own nearest neighbour
        if kk < n:
            part = np.argpartition(rows, kk - 1, axis=1)[:, :kk]  # [B, kk] unordered
        else:
            part = np.broadcast_to(np.arange(n), (stop - start, n))
        d = np.take_along_axis(rows, part, axis=1)
        order = np.lexsort((part, d), axis=1)  # by distance, then id
        ranks[start:stop] = np.take_along_axis(part, order, axis=1)
    return ranks, row_max_sq


def _reciprocal_mask(ranks: np.ndarray, k: int) -> np.ndarray:
    """``[N, k]`` bool: ``ranks[i, a]`` is in ``R(i, k - 1)`` (``i in N(ranks[i, a], k - 1)``)."""
    n = ranks.shape[0]
    mask = np.empty((n, k), dtype=bool)
    block = max(1, _BLOCK_BYTES // (8 * k * k))
    for start in range(0, n, block):
        stop = min(start + block, n)
        fwd = ranks[start:stop, :k]  # [B, k]
        back = ranks[fwd, :k]  # [B, k, k]
        me = np.arange(start, stop)[:, None, None]
        mask[start:stop] = (back == me).any(axis=2)
    return mask


# --------------------------------------------------------------------------- R* and V


def _expanded_sets(ranks: np.ndarray, s: _Sizes) -> tuple[np.ndarray, np.ndarray]:
    """``R*(i)`` for every item as padded ``[N, W]`` ids and validity mask (ids unique per row)."""
    n, kk, kh = s.n, s.kk, s.kh
    recip = _reciprocal_mask(ranks, kk)  # [N, kk]: R(i, k1)
    recip_h = _reciprocal_mask(ranks, kh)  # [N, kh]: R(i, k1/2)
    ids = np.empty((n, s.width), dtype=np.intp)
    valid = np.empty((n, s.width), dtype=bool)
    block = max(1, _BLOCK_BYTES // (kk * kh * 48))
    for start in range(0, n, block):
        stop = min(start + block, n)
        r_ids = ranks[start:stop, :kk]  # [B, kk] candidates c
        r_ok = recip[start:stop]  # [B, kk] c in R(i, k1)
        h_ids = ranks[r_ids, :kh]  # [B, kk, kh] N(c, k1/2)
        h_ok = recip_h[r_ids]  # [B, kk, kh] member of R(c, k1/2)
        inter = (_is_member(h_ids, r_ids, r_ok, n) & h_ok).sum(axis=2)  # [B, kk]
        size = h_ok.sum(axis=2)  # [B, kk]
        accept = r_ok & expansion_accepted(inter, size)  # Eq. 6
        b = stop - start
        ids[start:stop, :kk] = r_ids
        valid[start:stop, :kk] = r_ok
        ids[start:stop, kk:] = h_ids.reshape(b, kk * kh)
        valid[start:stop, kk:] = (h_ok & accept[:, :, None]).reshape(b, kk * kh)
    return _unique_rows(ids, valid, n)


def _is_member(items: np.ndarray, sets: np.ndarray, in_set: np.ndarray, n: int) -> np.ndarray:
    """``[B, ...]`` bool: is ``items[b, ...]`` among ``sets[b, in_set[b]]`` (ids in ``[0, n)``)?"""
    b = sets.shape[0]
    offset = np.arange(b)[:, None] * (n + 1)
    keys = np.where(in_set, sets, n) + offset  # [B, S], sentinel n never matches an item
    keys.sort(axis=1)
    flat = keys.ravel()  # rows sorted, offsets increasing: globally sorted
    query = items.reshape(b, -1) + offset  # [B, M]
    pos = np.minimum(np.searchsorted(flat, query), flat.size - 1)
    return (flat[pos] == query).reshape(items.shape)


def _unique_rows(ids: np.ndarray, valid: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row's valid ids and drop duplicates (invalid slots get id ``n``)."""
    keyed = np.where(valid, ids, n)
    keyed.sort(axis=1)
    dup = np.zeros(keyed.shape, dtype=bool)
    dup[:, 1:] = keyed[:, 1:] == keyed[:, :-1]
    ok = (keyed < n) & ~dup
    return np.where(ok, keyed, 0), ok


def _weights(dist: _Dist, ids: np.ndarray, valid: np.ndarray, row_max_sq: np.ndarray) -> SparseRows:
    """Rows of ``V`` (Eq. 7) on ``R*(i)`` given as padded ``ids``/``valid``."""
    n = ids.shape[0]
    counts = valid.sum(axis=1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    rows = np.repeat(np.arange(n), counts)
    cols = ids[valid].astype(np.int64)
    return gaussian_kernel(SparseRows(indptr, cols, dist.original_at(rows, cols, row_max_sq)))


def _query_expansion(v: SparseRows, ranks: np.ndarray, k2: int) -> SparseRows:
    """Eq. 11 on every row, in blocks of rows of bounded memory."""
    n = ranks.shape[0]
    per_row = max(1, int(v.lengths.max(initial=1)) * k2)
    block = max(1, _BLOCK_BYTES // (24 * per_row))
    parts = [
        local_query_expansion(v, ranks[start : min(start + block, n), :k2])
        for start in range(0, n, block)
    ]
    return SparseRows.stack(parts)


# --------------------------------------------------------------------------- public


def k_reciprocal_rerank(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_memory_bytes: int | None = None,
) -> np.ndarray:
    """Re-ranked distances ``[Nq, Ng]`` (float32): ``(1 - lambda) d_J + lambda d_o``.

    Inputs are plain (not squared) Euclidean distances: ``q_g_dist`` ``[Nq, Ng]``,
    ``q_q_dist`` ``[Nq, Nq]``, ``g_g_dist`` ``[Ng, Ng]``; their diagonals are taken as 0.
    See the module docstring for the exact definitions (those of the released code: squared
    distance divided by its per-column maximum; strict ``> 2/3`` rule). The working memory is estimated first
    (:func:`estimate_rerank_memory`) and :class:`RerankMemoryError` raised when it exceeds
    ``max_memory_bytes`` (default: MemAvailable). Raises ``ValueError`` on bad shapes,
    negative or non-finite distances, or parameters out of range.
    """
    _check_params(k1, k2, lambda_value)
    q_q = np.asarray(q_q_dist)
    g_g = np.asarray(g_g_dist)
    if q_q.ndim != 2 or g_g.ndim != 2:
        raise ValueError(
            f"q_q_dist and g_g_dist must be 2-D, got shapes {q_q.shape} and {g_g.shape}"
        )
    nq, ng = q_q.shape[0], g_g.shape[0]
    q_g = _check_matrix(q_g_dist, "q_g_dist", (nq, ng))
    q_q = _check_matrix(q_q, "q_q_dist", (nq, nq))
    g_g = _check_matrix(g_g, "g_g_dist", (ng, ng))
    if nq == 0 or ng == 0:
        return np.zeros((nq, ng), dtype=np.float32)
    _check_memory(estimate_rerank_memory(nq, ng, k1=k1, k2=k2), max_memory_bytes)

    dist = _Dist(q_g, q_q, g_g)
    s = _sizes(dist.n, k1, k2)
    ranks, row_max_sq = _top_neighbours(dist, s.kk)  # [N, kk], [N]
    ids, valid = _expanded_sets(ranks, s)  # R*: [N, W]
    v = _weights(dist, ids, valid, row_max_sq)
    if s.k2 > 1:
        v = _query_expansion(v, ranks, s.k2)
    jaccard = jaccard_query_gallery(v, nq)  # [Nq, Ng]
    return final_distance(jaccard, original_distance(q_g, row_max_sq[:nq, None]), lambda_value)


def rerank_shortlist(
    query_feat: np.ndarray,
    cand_feats: np.ndarray,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-ranked distances ``[K]`` of one query's shortlist ``cand_feats`` ``[K, d]``.

    The candidates are the query's top-K gallery items by plain Euclidean distance (any order
    is accepted; the output follows it). The full algorithm runs on the set
    ``{query} ∪ candidates`` alone, so the cost is ``O(K^2 d)`` whatever the gallery size,
    and the result equals ``k_reciprocal_rerank`` for this one query when the candidates are
    the whole gallery. With a real shortlist the candidates' neighbourhoods are cut to the
    shortlist; see benchmarks/RESULTS.md (section ``rerank``) for how far that moves the
    ranking from the full algorithm.
    """
    q = np.asarray(query_feat)
    c = np.asarray(cand_feats)
    if q.ndim != 1:
        raise ValueError(f"query_feat must be 1-D [d], got shape {q.shape}")
    if c.ndim != 2 or c.shape[1] != q.shape[0]:
        raise ValueError(f"cand_feats must have shape [K, {q.shape[0]}], got {c.shape}")
    if not (np.isfinite(q).all() and np.isfinite(c).all()):
        raise ValueError("query_feat or cand_feats contains non-finite values")
    q2 = q[None, :]
    out = k_reciprocal_rerank(
        pairwise_euclidean(q2, c),
        np.zeros((1, 1), dtype=np.float32),
        pairwise_euclidean(c, c),
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
    )
    return out[0]
