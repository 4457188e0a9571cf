"""Exact per-query k-reciprocal re-ranking from cached gallery rows of ``V``.

Why: :func:`reidcore.rerank_neighbours.rerank_expanded` scores an expanded shortlist with the
full algorithm's exact distances, but it rebuilds every ``V`` row the shortlist needs, and each
row needs its neighbours' neighbourhoods: about 7,000 neighbour rows and 1,500 ``V`` rows per
query at the default sizes (80 ms on 2 cores). Almost none of that depends on the query.

:class:`RerankCache` keeps, for every gallery item ``j``, the row ``V_G[j]`` that the full
algorithm computes on the gallery alone, and the reciprocity flags of ``j``'s neighbour lists.
A query ``q`` changes few of them. With ``A_k`` the gallery items whose ``k``-list the query
enters (``d(q, j) <=`` their ``k``-th neighbour distance; the query wins ties, as in the full
algorithm where it has the smallest id), ``last_k(c)`` the item ``c``'s list drops for it, and
``hw = round(k1 / 2)``:

* ``R(j, k1)`` changes only for ``j in C1 = A_k1 ∪ last_k1(A_k1)``: ``j``'s own list changes
  only if ``j in A_k1``, and ``j`` leaves the list of ``c`` only if ``c in A_k1`` and ``j`` was
  its last entry. Likewise ``R(c, hw)`` changes only for ``c in Ch = A_hw ∪ last_hw(A_hw)``.
* ``R*(j)`` (Eq. 6) reads ``R(j, k1)`` and ``R(c, hw)`` for ``c in R(j, k1)``; ``R`` is
  symmetric, so ``c in Ch`` reaches only the ``j`` in ``c``'s ``k1``-list. ``V[j]`` (Eq. 7)
  depends on ``R*(j)`` and fixed distances, so ``V_S[j] = V_G[j]`` outside
  ``D = C1 ∪ Ch ∪ lists_k1(Ch)``, and the query's own column appears only in rows of ``D``.

So a query recomputes the ``V`` rows of ``D`` that its scored items' query expansion reads (a
few hundred), takes every other row from the cache, and evaluates Eq. 10-12 exactly. The
scored set is the one of ``rerank_expanded`` (top-K plus the stored lists of the query's
nearest items) and every score equals the full algorithm run on ``{query} ∪ gallery``.

Updates: :meth:`RerankCache.sync` compares the neighbour lists with the copy the cache was
built from and recomputes only the rows the changed lists can reach (the same argument, with
the symmetric difference of each changed list in place of the query); queries call it when
the :class:`GalleryNeighbours` changed. Memory: about ``N * (13 k1 + 12 |R*|)`` bytes
(``|R*|`` is typically 15-40), besides the neighbour lists and features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from reidcore.evaluation import pairwise_euclidean
from reidcore.rerank import _check_params
from reidcore.rerank_neighbours import GalleryNeighbours, _check_query, rerank_expanded
from reidcore.rerank_rows import (
    SparseRows,
    expansion_accepted,
    final_distance,
    gather_ranges,
    gaussian_kernel,
    jaccard_to_first,
    local_query_expansion,
    original_distance,
    query_first,
)

logger = logging.getLogger(__name__)

_PAD = -1
_BUILD_ROWS = 4096  # rows of V computed per block while building (bounded temporaries)


@dataclass
class _QueryState:
    """What a query changes: its distances and its place in every gallery list."""

    qid: int
    """The query's id here (the gallery's size: never a gallery id, and the last slot of
    ``dq``); :func:`reidcore.rerank_rows.query_first` renumbers it 0 for the shared steps."""
    dq: np.ndarray
    """``[N + 1]`` float32 ``d(q, j)``, NaN where not computed yet (``dq[qid] = 0``)."""
    pos: np.ndarray
    """``[N]`` int32: where the query enters ``j``'s ``k1``-list (``k1``: it does not)."""
    top: np.ndarray
    """The query's exact top-K ids, sorted by (distance, id)."""
    top_rank: np.ndarray
    """``[N]`` int32: each item's place in ``top`` (``K`` past it)."""
    q: np.ndarray
    """The query feature."""
    far_sq: float = 0.0
    """``max_j d(q, j)**2`` over the alive gallery (the released normalisation of its row)."""


class RerankCache:
    """Cached gallery ``V`` rows for exact per-query re-ranking (see the module docstring).

    ``neighbours`` is the :class:`GalleryNeighbours` of the gallery (``m >= k1``); the cache
    follows its changes (:meth:`sync`, called by :meth:`query` when needed). While fewer than
    ``k1 + 1`` items are alive, queries are answered by ``rerank_expanded`` instead.
    """

    def __init__(
        self,
        neighbours: GalleryNeighbours,
        *,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
    ) -> None:
        _check_params(k1, k2, lambda_value)
        if neighbours.m < k1:
            raise ValueError(f"neighbour lists hold m={neighbours.m} items; k1={k1} needs m >= k1")
        self._nb = neighbours
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value
        self._hw = int(np.around(k1 / 2.0))  # half-neighbourhood size (self excluded)
        self._version: int | None = None
        self._ready = False
        self._alloc(0)
        self.sync()

    # ------------------------------------------------------------------ views

    @property
    def ready(self) -> bool:
        """True when queries use the cache (at least ``k1 + 1`` alive items)."""
        return self._ready

    @property
    def nnz(self) -> int:
        """Stored entries of ``V`` (memory is about 12 bytes each)."""
        return int(self._v.indptr[-1])

    def v_rows(self, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Cached ``V_G`` rows ``(columns, values)`` of gallery items ``rows`` (for tests)."""
        self.sync()
        out = []
        for r in np.asarray(rows, dtype=np.int64):
            lo, hi = self._v.indptr[r], self._v.indptr[r + 1]
            out.append((self._v.cols[lo:hi].copy(), self._v.vals[lo:hi].copy()))
        return out

    # ------------------------------------------------------------------ cache upkeep

    def _alloc(self, n: int) -> None:
        self._ids1 = np.full((n, self.k1), _PAD, dtype=np.int64)
        self._d1 = np.full((n, self.k1), np.inf, dtype=np.float32)
        self._rec1 = np.zeros((n, self.k1), dtype=bool)
        self._rech = np.zeros((n, self._hw), dtype=bool)
        self._v = SparseRows.empty(n)  # V_G, one row per gallery id
        self._far = np.zeros(n, dtype=np.float32)  # the lists' farthest distances, per row
        self._sqn = np.zeros(0, dtype=np.float32)  # squared feature norms, grown on demand

    def sync(self) -> None:
        """Bring the cache up to date with the neighbour lists (no-op when nothing changed)."""
        nb = self._nb
        if self._version == nb.version:
            return
        if nb.num_alive < self.k1 + 1:
            self._ready = False
        elif not self._ready:
            self._build()
        else:
            self._update()
        self._version = nb.version

    def _build(self) -> None:
        nb = self._nb
        n = nb.size
        self._alloc(n)
        self._ids1[:] = nb.neighbour_ids[:, : self.k1]
        self._d1[:] = nb.neighbour_dists[:, : self.k1]
        self._far[:] = nb.farthest_dists
        alive = np.flatnonzero(nb.alive)
        self._set_flags(alive)
        blocks = [alive[lo : lo + _BUILD_ROWS] for lo in range(0, alive.size, _BUILD_ROWS)]
        self._splice(alive, alive, SparseRows.stack([self._v_rows(rows, None) for rows in blocks]))
        self._ready = True
        logger.debug("re-ranking cache built: %d rows, %d entries", alive.size, self.nnz)

    def _set_flags(self, rows: np.ndarray) -> None:
        """Reciprocity flags of the (current) lists of ``rows``, gallery only."""
        ids = self._ids1[rows]  # [R, k1]
        ok = ids >= 0
        safe = np.where(ok, ids, 0)
        back = self._ids1[safe]  # [R, k1, k1]
        me = rows[:, None, None]
        self._rec1[rows] = ok & (back == me).any(axis=2)
        hw = self._hw
        self._rech[rows] = ok[:, :hw] & (back[:, :hw, :hw] == me).any(axis=2)

    def _update(self) -> None:
        """Recompute the rows that the neighbour lists' changes since the last sync can reach."""
        nb = self._nb
        n_old, n = self._ids1.shape[0], nb.size
        k1, hw = self.k1, self._hw
        new_ids = nb.neighbour_ids[:, :k1]
        old_ids = np.full((n, k1), _PAD, dtype=np.int64)
        old_ids[:n_old] = self._ids1
        changed = np.flatnonzero((old_ids != new_ids).any(axis=1))
        old_far = np.zeros(n, dtype=np.float32)
        old_far[:n_old] = self._far
        far_moved = np.flatnonzero(old_far != nb.farthest_dists)  # their d_o rescales
        if changed.size > n // 4:  # most rows move: a fresh build is as cheap
            self._build()
            return
        self._grow(n)
        self._far[:] = nb.farthest_dists
        self._ids1[changed] = new_ids[changed]
        self._d1[changed] = nb.neighbour_dists[changed, :k1]
        o, w = old_ids[changed], new_ids[changed]
        f1 = np.concatenate([changed, _sym_diff(o, w)])  # rows whose R(., k1) may change
        fh = np.concatenate([changed, _sym_diff(o[:, :hw], w[:, :hw])])  # R(., hw)
        flag_rows = np.unique(np.concatenate([f1, fh]))  # half lists move inside k1 lists too
        self._set_flags(flag_rows[flag_rows >= 0])
        fh = np.unique(fh)
        fh = fh[fh >= 0]
        reach = [f1, fh, self._ids1[fh].ravel(), far_moved]
        hit = np.isin(changed, fh)
        reach.append(o[hit].ravel())  # j that were in a changed list of an Fh item
        rows = np.unique(np.concatenate(reach))
        rows = rows[rows >= 0]
        alive = nb.alive
        live = rows[alive[rows]]
        self._splice(rows, live, self._v_rows(live, None) if live.size else SparseRows.empty())
        logger.debug(
            "re-ranking cache: %d lists changed, %d rows recomputed", changed.size, rows.size
        )

    def _grow(self, n: int) -> None:
        n_old = self._ids1.shape[0]
        if n == n_old:
            return
        extra = n - n_old
        self._ids1 = np.concatenate([self._ids1, np.full((extra, self.k1), _PAD, np.int64)])
        self._d1 = np.concatenate([self._d1, np.full((extra, self.k1), np.inf, np.float32)])
        self._rec1 = np.concatenate([self._rec1, np.zeros((extra, self.k1), bool)])
        self._rech = np.concatenate([self._rech, np.zeros((extra, self._hw), bool)])
        v = self._v
        self._v = SparseRows(
            np.concatenate([v.indptr, np.full(extra, v.indptr[-1])]), v.cols, v.vals
        )
        self._far = np.concatenate([self._far, np.zeros(extra, np.float32)])

    def _splice(self, rows: np.ndarray, live: np.ndarray, new: SparseRows) -> None:
        """Replace the ``V`` rows ``rows`` (sorted): ``live`` get ``new``'s rows, others empty."""
        old = self._v
        n = old.n_rows
        lengths = old.lengths
        keep = np.ones(n, dtype=bool)
        keep[rows] = False
        kept_rows = np.flatnonzero(keep & (lengths > 0))
        src_idx, _ = gather_ranges(old.indptr[kept_rows], lengths[kept_rows])
        new_len = lengths.copy()
        new_len[rows] = 0
        new_len[live] = new.lengths
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(new_len, out=indptr[1:])
        dst_old, _ = gather_ranges(indptr[kept_rows], lengths[kept_rows])
        dst_new, _ = gather_ranges(indptr[live], new.lengths)
        total = int(indptr[-1])
        cols = np.empty(total, dtype=np.int64)
        vals = np.empty(total, dtype=np.float32)
        cols[dst_old], vals[dst_old] = old.cols[src_idx], old.vals[src_idx]
        cols[dst_new], vals[dst_new] = new.cols, new.vals
        self._v = SparseRows(indptr, cols, vals)

    # ------------------------------------------------------------------ neighbourhoods

    def _lists(
        self, rows: np.ndarray, st: _QueryState | None, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``N(j, width)`` in the set (self first), reciprocity flags and distances, for
        ``width`` = ``k1`` or ``hw``: ``[R, width + 1]`` ids, bool, float32 (NaN: distance to
        the query not computed yet)."""
        flags = self._rec1 if width == self.k1 else self._rech
        if st is None:
            ids, ok, d = self._ids1[rows, :width], flags[rows], self._d1[rows, :width]
        else:
            g = rows != st.qid
            gr = rows[g]
            ids = np.empty((rows.size, width), dtype=np.int64)
            ok = np.empty((rows.size, width), dtype=bool)
            d = np.empty((rows.size, width), dtype=np.float32)
            ids[g], ok[g], d[g] = _insert(
                self._ids1[gr, :width],
                flags[gr],
                self._d1[gr, :width],
                st.pos[gr],
                st.qid,
                st.top_rank[gr] < width,  # is j in the query's own list?
                width,
            )
            qr = ~g
            if qr.any():
                top = st.top[:width]
                ids[qr], ok[qr], d[qr] = top, st.pos[top] < width, st.dq[top]
            ok &= ~self._dropped(ids, rows, st, width)
        return _with_self(rows, ids, ok, d)

    def _dropped(
        self, ids: np.ndarray, rows: np.ndarray, st: _QueryState, width: int
    ) -> np.ndarray:
        """``[R, width]``: member ``x`` (gallery) lost ``rows[r]`` from its list to the query."""
        x = np.where((ids >= 0) & (ids != st.qid), ids, 0)
        real = (ids >= 0) & (ids != st.qid)
        enters = st.pos[x] < width
        return real & enters & (self._ids1[x, width - 1] == rows[:, None])

    # ------------------------------------------------------------------ R* and V

    def _v_rows(self, rows: np.ndarray, st: _QueryState | None) -> SparseRows:
        """``V`` rows (Eq. 4-7) of ``rows`` (ids; the query's is ``st.qid``)."""
        ids1, ok1, d1 = self._lists(rows, st, self.k1)  # [R, kk]
        t_idx, a_idx = np.nonzero(ok1)  # pairs (row, c) with c in R(j, k1)
        c = ids1[t_idx, a_idx]
        c_set, c_inv = np.unique(c, return_inverse=True)
        h_set, hok_set, _ = self._lists(c_set, st, self._hw)
        h, h_ok = h_set[c_inv], hok_set[c_inv]  # [P, kh]
        hit = h[:, :, None] == ids1[t_idx][:, None, :]  # [P, kh, kk]
        found = hit.any(axis=2)
        at = hit.argmax(axis=2)
        member = found & ok1[t_idx[:, None], at] & h_ok
        accept = expansion_accepted(member.sum(axis=1), h_ok.sum(axis=1))  # Eq. 6
        extra = h_ok & accept[:, None] & ~member
        known = np.where(found, d1[t_idx[:, None], at], np.nan).astype(np.float32)
        row = np.concatenate([t_idx, np.broadcast_to(t_idx[:, None], h.shape)[extra]])
        col = np.concatenate([c, h[extra]])
        dist = np.concatenate([d1[t_idx, a_idx], known[extra]])
        r_star = SparseRows.from_entries(row, col, dist, rows.size)
        entry_rows = r_star.entry_rows()
        unknown = np.flatnonzero(np.isnan(r_star.vals))
        if unknown.size:
            r_star.vals[unknown] = self._distances(
                rows[entry_rows[unknown]], r_star.cols[unknown], st
            )
        r_star.vals = original_distance(r_star.vals, self._far_sq(rows, st)[entry_rows])
        return gaussian_kernel(r_star)  # Eq. 7

    def _far_sq(self, rows: np.ndarray, st: _QueryState | None) -> np.ndarray:
        """``max_l d(l, j)**2`` in the set (gallery, or ``{query} ∪ gallery``) for ``rows``."""
        if st is None:
            return np.square(self._far[rows])
        out = np.full(rows.size, st.far_sq, dtype=np.float32)
        g = rows != st.qid
        far = np.maximum(self._far[rows[g]], _query_dist(st, rows[g], self._nb))
        out[g] = np.square(far)
        return out

    def _distances(self, a: np.ndarray, b: np.ndarray, st: _QueryState | None) -> np.ndarray:
        """``d(a[t], b[t])`` (ids, the query's included): stored lists first, then features."""
        out = np.empty(a.size, dtype=np.float32)
        rest = np.ones(a.size, dtype=bool)
        if st is not None:
            qa, qb = a == st.qid, b == st.qid
            out[qa] = _query_dist(st, b[qa], self._nb)
            out[qb] = _query_dist(st, a[qb], self._nb)
            rest = ~qa & ~qb
        idx = np.flatnonzero(rest)
        lists = self._nb.neighbour_ids[a[idx]]
        hit = lists == b[idx][:, None]
        found = hit.any(axis=1)
        out[idx[found]] = self._nb.neighbour_dists[a[idx[found]], hit[found].argmax(axis=1)]
        miss = idx[~found]
        if miss.size:
            diff = self._nb.features(a[miss]) - self._nb.features(b[miss])
            out[miss] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        return out

    # ------------------------------------------------------------------ queries

    def query(
        self,
        query_feat: np.ndarray,
        topk_ids: np.ndarray,
        topk_dists: np.ndarray,
        *,
        expand: int | None = None,
        expand_width: int | None = None,
        gallery_dists: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-ranked ids and distances (ascending) of one query's expanded shortlist.

        Same contract and same result as :func:`rerank_expanded` (exact top-K of alive items
        with plain Euclidean distances in, at least ``k1`` of them; the scored set is the
        top-K plus the first ``expand_width`` entries of the lists of the query's ``expand``
        nearest items; every score is the full algorithm's on ``{query} ∪ gallery``), from
        cached rows: the work depends on K, ``expand``, the lists and k1, not on the gallery.

        The query enters the lists of the gallery items ``j`` with ``d(q, j) <=`` their
        ``k1``-th neighbour distance; outside the top-K, those distances are computed. A flat
        search has them all: pass them as ``gallery_dists`` ``[N]`` (indexed by gallery id) to
        skip that step. Without them, when many items are candidates (distances concentrated
        around the top-K radius), one pass over all features computes them.
        """
        self.sync()
        nb = self._nb
        if not self._ready:
            return rerank_expanded(
                query_feat,
                topk_ids,
                topk_dists,
                nb,
                k1=self.k1,
                k2=self.k2,
                lambda_value=self.lambda_value,
                expand=expand,
                expand_width=expand_width,
            )
        q, top, top_d = _check_query(query_feat, topk_ids, topk_dists, nb, self.k1)
        widths = (
            self.k1 if expand is None else expand,
            self.k1 if expand_width is None else expand_width,
        )
        if min(widths) < 0:
            raise ValueError(f"expand and expand_width must be >= 0, got {widths}")
        if gallery_dists is not None:
            gallery_dists = np.asarray(gallery_dists, dtype=np.float32)
            if gallery_dists.shape != (nb.size,):
                raise ValueError(
                    f"gallery_dists must have shape [{nb.size}] (every gallery id), "
                    f"got {gallery_dists.shape}"
                )
        st = self._state(q, top, top_d, gallery_dists)
        scored = np.unique(
            np.concatenate([top, nb.neighbour_ids[top[: widths[0]], : widths[1]].ravel()])
        )
        scored = scored[scored >= 0]
        jac = self._jaccard(scored, st)
        original = original_distance(_query_dist(st, scored, nb), st.far_sq)
        out = final_distance(jac, original, self.lambda_value)  # Eq. 12
        order = np.lexsort((scored, out))
        return scored[order], out[order]

    def _state(
        self, q: np.ndarray, top: np.ndarray, top_d: np.ndarray, gallery_dists: np.ndarray | None
    ) -> _QueryState:
        """The query's distances, its farthest alive item and its position in every list it
        enters (the set ``A_k1``). Without ``gallery_dists``, one pass over the features
        computes them (the query's row of ``d_o`` needs its farthest item anyway)."""
        nb = self._nb
        n, k1 = nb.size, self.k1
        dq = np.full(n + 1, np.nan, dtype=np.float32)
        top_rank = np.full(n, top.size, dtype=np.int32)
        top_rank[top] = np.arange(top.size, dtype=np.int32)
        st = _QueryState(n, dq, np.full(n, k1, dtype=np.int32), top, top_rank, q)
        kth = np.where(nb.alive, self._d1[:, k1 - 1], -np.inf)  # removed items: never
        dq[:n] = self._all_distances(q) if gallery_dists is None else gallery_dists
        dq[top] = top_d
        st.far_sq = float(np.square(dq[:n][nb.alive].max(initial=0.0)))
        cand = np.flatnonzero(dq[:n] <= kth)
        dq[n] = 0.0
        d = _query_dist(st, cand, nb)
        st.pos[cand] = (self._d1[cand] < d[:, None]).sum(axis=1)  # ties: the query first
        return st

    def _all_distances(self, q: np.ndarray) -> np.ndarray:
        """``d(q, j)`` for every gallery id (float32; removed items included)."""
        n = self._nb.size
        if self._sqn.size != n:
            feats = self._nb.features(np.arange(self._sqn.size, n))
            self._sqn = np.concatenate([self._sqn, np.einsum("ij,ij->i", feats, feats)])
        d2 = self._nb.features_view() @ (np.float32(-2.0) * q)
        d2 += self._sqn
        d2 += np.float32(q @ q)
        return np.sqrt(np.maximum(d2, np.float32(0.0)))

    def _changed(self, rows: np.ndarray, st: _QueryState) -> np.ndarray:
        """``[R]`` bool: may the query change ``V[rows]`` (gallery rows)? False means certainly not.

        ``R(j, k1)`` changes only for ``j in C1``: ``j`` in ``A_k1``, or ``j`` the entry some
        ``x in A_k1`` drops while ``x`` is in ``j``'s own list (otherwise ``x`` was never in
        ``R(j, k1)``); likewise ``R(c, hw)`` only for ``c in Ch``. ``R*(j)`` changes only if
        ``j in C1`` or some ``c in R_G(j, k1) ∪ {j}`` is in ``Ch`` (``R_S``'s gallery members
        are in ``R_G``; a query member means ``j in A_k1``). And ``V[j]``'s weights change
        when the query is farther from ``j`` than ``j``'s farthest gallery item (``d_o``'s
        normalisation).
        """
        k1, hw = self.k1, self._hw
        a1 = np.flatnonzero(st.pos < k1)
        c1 = np.zeros(st.qid, dtype=bool)
        c1[a1] = True
        drop = self._ids1[a1, k1 - 1]  # x in a1 drops drop[x] ...
        back = (self._ids1[drop] == a1[:, None]).any(axis=1)  # ... and x is in drop's list
        c1[drop[back]] = True
        ch = np.zeros(st.qid, dtype=bool)
        if hw:
            ah = np.flatnonzero(st.pos < hw)
            ch[ah] = True
            drop = self._ids1[ah, hw - 1]
            back = (self._ids1[drop, :hw] == ah[:, None]).any(axis=1)
            ch[drop[back]] = True
        rescaled = _query_dist(st, rows, self._nb) > self._far[rows]
        reach = (ch[self._ids1[rows]] & self._rec1[rows]).any(axis=1)
        return c1[rows] | ch[rows] | reach | rescaled

    def _jaccard(self, scored: np.ndarray, st: _QueryState) -> np.ndarray:
        """Eq. 10-11 between the query and each of ``scored``: ``[S]`` float64. The rows the
        expansion averages come fresh where the query may change them, else from the cache."""
        owners = np.concatenate([[st.qid], scored])
        ids1, _, _ = self._lists(owners, st, self.k1)
        qe = ids1[:, : self.k2]  # N(j, k2 - 1): the rows each owner averages, self first
        need = np.unique(qe)
        fresh = need == st.qid
        fresh[~fresh] = self._changed(need[~fresh], st)
        rows = SparseRows.stack([self._v_rows(need[fresh], st), self._v.take(need[~fresh])])
        perm = np.concatenate([np.flatnonzero(fresh), np.flatnonzero(~fresh)])
        row_of = np.empty(need.size, dtype=np.int64)
        row_of[perm] = np.arange(need.size)  # need's index -> row of ``rows``
        rows = query_first(rows, st.qid)  # the query first, as rerank_rows numbers it
        expanded = local_query_expansion(rows, row_of[np.searchsorted(need, qe)])  # Eq. 11
        return jaccard_to_first(expanded)  # Eq. 10


def _with_self(
    rows: np.ndarray, ids: np.ndarray, ok: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = rows.size
    return (
        np.concatenate([rows[:, None], ids], axis=1),
        np.concatenate([np.ones((r, 1), bool), ok], axis=1),
        np.concatenate([np.zeros((r, 1), np.float32), d], axis=1),
    )


def _insert(
    ids: np.ndarray,
    ok: np.ndarray,
    d: np.ndarray,
    pos: np.ndarray,
    qid: int,
    q_ok: np.ndarray,
    width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists ``[R, width]`` with the query inserted at ``pos`` (when ``< width``), last dropped."""
    idx = np.arange(width)[None, :]
    p = pos[:, None]
    src = np.where(idx < p, idx, np.maximum(idx - 1, 0))
    at_q = idx == p
    rows = np.arange(ids.shape[0])[:, None]
    out_ids = np.where(at_q, qid, ids[rows, src])
    out_ok = np.where(at_q, q_ok[:, None], ok[rows, src])
    out_d = np.where(at_q, np.nan, d[rows, src]).astype(np.float32)
    return out_ids, out_ok, out_d


def _query_dist(st: _QueryState, ids: np.ndarray, nb: GalleryNeighbours) -> np.ndarray:
    """``d(q, ids)`` (float32), computing and remembering the ones not known yet."""
    miss = np.unique(ids[np.isnan(st.dq[ids])])
    if miss.size:
        st.dq[miss] = pairwise_euclidean(st.q[None, :], nb.features(miss))[0]
    return st.dq[ids]


def _sym_diff(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Ids in exactly one of ``old[r]`` and ``new[r]`` (per row), flattened (``-1`` included)."""
    in_new = (old[:, :, None] == new[:, None, :]).any(axis=2)
    in_old = (new[:, :, None] == old[:, None, :]).any(axis=2)
    return np.concatenate([old[~in_new], new[~in_old]])


__all__ = ["RerankCache"]
