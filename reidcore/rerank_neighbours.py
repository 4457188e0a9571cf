"""Gallery neighbour lists and exact per-query k-reciprocal re-ranking of an expanded shortlist.

Why: re-ranking only the query's top-K (:func:`reidcore.rerank.rerank_shortlist`) misses the
true matches that plain distance ranks beyond K but that the full algorithm promotes through
the neighbourhoods of the query's neighbours, and it cuts every candidate's neighbourhood to
the shortlist. Both are fixed here by keeping, for every gallery item, its ``M`` nearest
gallery neighbours (:class:`GalleryNeighbours`, updated incrementally as items are indexed).

:func:`rerank_expanded` then scores the set ``E = top-K ∪ lists of the query's nearest
`expand` items`` with the **exact** re-ranked distance of the full algorithm run on
``{query} ∪ gallery`` (the definitions of :mod:`reidcore.rerank`): every neighbourhood it
needs, ``N(i, k)`` in the set ``{query} ∪ gallery``, is a stored gallery list with the query
inserted by distance. The only approximation is which items are scored: a gallery item
outside ``E`` whose Jaccard distance to the query is below 1 is not returned (recall).
Cost per query depends on K, ``expand``, M, k1, k2 and d, never on the gallery size
(numpy only; no ``N x N`` matrix).

:class:`reidcore.rerank_cache.RerankCache` computes the same scores from cached gallery rows
of ``V`` (about 15x faster: only the rows the query changes are rebuilt); this module's
function is its reference and its fallback for galleries of at most ``k1`` items.

Exactness needs ``M >= k1`` and an exact top-K (the query is inserted into the list of a
gallery item outside the top-K only when that item's k-th neighbour is farther than the K-th
shortlist distance; with an approximate index this test can miss).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from reidcore.evaluation import pairwise_euclidean
from reidcore.rerank import _BLOCK_BYTES, _check_params, _sizes
from reidcore.rerank_rows import (
    SparseRows,
    expansion_accepted,
    final_distance,
    gaussian_kernel,
    jaccard_to_first,
    local_query_expansion,
    original_distance,
)

logger = logging.getLogger(__name__)

_PAD = -1  # id of an empty neighbour slot (its distance is +inf)


# --------------------------------------------------------------------------- neighbour lists


def _top_m(dist: np.ndarray, ids: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``m`` smallest of ``dist`` ``[B, C]`` by (distance, id) over columns ``ids``.

    Infinite distances mark excluded columns; rows with fewer than ``m`` finite entries are
    padded with id ``-1`` and distance ``inf``. Returns ``[B, m]`` ids and float32 distances.
    """
    b, c = dist.shape
    if c > m:
        part = np.argpartition(dist, m - 1, axis=1)[:, :m]  # [B, m] unordered
    else:
        part = np.broadcast_to(np.arange(c), (b, c))
    d = np.take_along_axis(dist, part, axis=1)
    cand = ids[part]
    order = np.lexsort((cand, d), axis=1)
    d = np.take_along_axis(d, order, axis=1)
    cand = np.where(np.isfinite(d), np.take_along_axis(cand, order, axis=1), _PAD)
    out_ids = np.full((b, m), _PAD, dtype=np.int64)
    out_d = np.full((b, m), np.inf, dtype=np.float32)
    out_ids[:, : cand.shape[1]] = cand
    out_d[:, : d.shape[1]] = d
    return out_ids, out_d


def _merge_lists(
    ids: np.ndarray, dists: np.ndarray, rows: np.ndarray, new_ids: np.ndarray, new_d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge candidates ``(rows[t], new_ids[t], new_d[t])`` into lists ``ids``/``dists`` ``[A, M]``.

    Returns the ``M`` best of each row's current list plus its candidates, by (distance, id).
    """
    a, m = ids.shape
    row = np.concatenate([np.repeat(np.arange(a), m), rows])
    cid = np.concatenate([ids.ravel(), new_ids])
    cd = np.concatenate([dists.ravel(), new_d])
    order = np.lexsort((cid, cd, row))
    row, cid, cd = row[order], cid[order], cd[order]
    starts = np.searchsorted(row, np.arange(a))
    rank = np.arange(row.size) - starts[row]
    keep = rank < m  # every row holds at least its m current slots
    return cid[keep].reshape(a, m), cd[keep].reshape(a, m)


class GalleryNeighbours:
    """Each gallery item's ``m`` nearest other (alive) gallery items, kept exact under add/remove.

    Item ids are positions in insertion order and are never reused; a removed item keeps its
    id as a tombstone (no list, never anyone's neighbour). The features are kept (``N x d``
    float32) to search new items and repair lists after removals; memory is
    ``N * (4 d + 12 m)`` bytes. Lists are sorted by (distance, id), padded with id ``-1`` and
    distance ``inf`` while fewer than ``m`` other items are alive.
    """

    def __init__(self, dim: int, m: int = 30) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self._dim, self._m, self._n = dim, m, 0
        self._version = 0  # bumped by every change, so that caches know when to catch up
        self._feats = np.empty((0, dim), dtype=np.float32)
        self._ids = np.empty((0, m), dtype=np.int64)
        self._dists = np.empty((0, m), dtype=np.float32)
        self._alive = np.empty(0, dtype=bool)
        self._far = np.empty(0, dtype=np.float32)  # distance to the farthest alive other item
        self._far_id = np.empty(0, dtype=np.int64)  # and its id (-1: no other item)

    # ------------------------------------------------------------------ views

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return self._dim

    @property
    def m(self) -> int:
        """List length."""
        return self._m

    @property
    def size(self) -> int:
        """Ids handed out so far (removed items included)."""
        return self._n

    @property
    def version(self) -> int:
        """Counter bumped by every :meth:`add` and :meth:`remove`."""
        return self._version

    @property
    def num_alive(self) -> int:
        """Items not removed."""
        return int(self._alive[: self._n].sum())

    @property
    def neighbour_ids(self) -> np.ndarray:
        """``[size, m]`` int64 neighbour ids (read-only view)."""
        return _readonly(self._ids[: self._n])

    @property
    def neighbour_dists(self) -> np.ndarray:
        """``[size, m]`` float32 plain Euclidean distances (read-only view)."""
        return _readonly(self._dists[: self._n])

    @property
    def farthest_dists(self) -> np.ndarray:
        """``[size]`` float32 distance from each item to its farthest alive other item (0 when
        it has none): the released re-ranking's normalisation (read-only view)."""
        return _readonly(self._far[: self._n])

    @property
    def farthest_ids(self) -> np.ndarray:
        """``[size]`` int64 id of each item's farthest alive other item, ``-1`` when none."""
        return _readonly(self._far_id[: self._n])

    @property
    def alive(self) -> np.ndarray:
        """``[size]`` bool, False for removed items (read-only view)."""
        return _readonly(self._alive[: self._n])

    def features(self, ids: np.ndarray) -> np.ndarray:
        """Features ``[len(ids), d]`` (float32) of items ``ids`` (a usable ``get_feats``)."""
        return self._feats[np.asarray(ids, dtype=np.int64)]

    def features_view(self) -> np.ndarray:
        """All ``[size, d]`` features, removed items included (read-only view, no copy)."""
        return _readonly(self._feats[: self._n])

    # ------------------------------------------------------------------ updates

    def add(self, feats: np.ndarray) -> np.ndarray:
        """Index ``feats`` ``[B, d]``; returns their new ids ``[B]``.

        New items get their lists by one exact search against every alive item (new ones
        included); an existing item's list takes a new item when it is closer than its
        current ``m``-th neighbour. Work: ``B x N x d`` in row blocks of bounded memory.
        """
        x = np.asarray(feats)
        if x.ndim != 2 or x.shape[1] != self._dim:
            raise ValueError(f"feats must have shape [B, {self._dim}], got {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError("feats contains non-finite values (NaN or inf)")
        start, b = self._n, x.shape[0]
        self._grow(start + b)
        self._feats[start : start + b] = x
        self._ids[start : start + b] = _PAD
        self._dists[start : start + b] = np.inf
        self._alive[start : start + b] = True
        self._n = start + b
        self._version += 1
        for lo in range(0, b, self._block_rows()):
            self._add_block(start + lo, min(start + lo + self._block_rows(), start + b), start)
        logger.debug("added %d items (%d alive)", b, self.num_alive)
        return np.arange(start, start + b, dtype=np.int64)

    def remove(self, ids: np.ndarray) -> np.ndarray:
        """Remove items ``ids``; returns the ids of the alive items whose lists were repaired.

        Every list that held a removed item is recomputed by an exact search (the item past
        the old ``m``-th is unknown otherwise): ``A x N x d`` for ``A`` affected lists.
        """
        gone = np.unique(np.asarray(ids, dtype=np.int64))
        bad = gone[(gone < 0) | (gone >= self._n)]
        if bad.size:
            raise ValueError(
                f"cannot remove ids {bad[:5].tolist()}: valid ids are 0..{self._n - 1}"
            )
        dead = gone[~self._alive[gone]]
        if dead.size:
            raise ValueError(f"ids {dead[:5].tolist()} were already removed")
        self._alive[gone] = False
        self._version += 1
        self._ids[gone] = _PAD
        self._dists[gone] = np.inf
        self._far[gone], self._far_id[gone] = 0.0, _PAD
        hit = np.isin(self._ids[: self._n], gone).any(axis=1) & self._alive[: self._n]
        affected = np.flatnonzero(hit)
        for lo in range(0, affected.size, self._block_rows()):
            rows = affected[lo : lo + self._block_rows()]
            self._ids[rows], self._dists[rows] = self._search(self._feats[rows], rows)
        far_hit = np.isin(self._far_id[: self._n], gone) & self._alive[: self._n]
        self._set_farthest(np.flatnonzero(far_hit))
        logger.debug("removed %d items, repaired %d lists", gone.size, affected.size)
        return affected

    # ------------------------------------------------------------------ persistence

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to restore this structure (e.g. for ``np.savez``)."""
        n = self._n
        return {
            "features": self._feats[:n].copy(),
            "neighbour_ids": self._ids[:n].copy(),
            "neighbour_dists": self._dists[:n].copy(),
            "alive": self._alive[:n].copy(),
            "farthest_ids": self._far_id[:n].copy(),
            "farthest_dists": self._far[:n].copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> GalleryNeighbours:
        """Rebuild from :meth:`to_arrays`'s output (a dict or an opened ``.npz``).

        ``farthest_ids``/``farthest_dists`` are optional: without them the farthest items are
        found again by one exact pass over the features (``N x N x d``)."""
        missing = {"features", "neighbour_ids", "neighbour_dists", "alive"} - set(arrays)
        if missing:
            raise ValueError(f"neighbour arrays lack {sorted(missing)}")
        feats = np.asarray(arrays["features"], dtype=np.float32)
        ids = np.asarray(arrays["neighbour_ids"], dtype=np.int64)
        dists = np.asarray(arrays["neighbour_dists"], dtype=np.float32)
        alive = np.asarray(arrays["alive"], dtype=bool)
        if feats.ndim != 2 or ids.ndim != 2 or dists.shape != ids.shape:
            raise ValueError(
                f"bad shapes: features {feats.shape}, neighbour_ids {ids.shape}, "
                f"neighbour_dists {dists.shape}"
            )
        n = feats.shape[0]
        if ids.shape[0] != n or alive.shape != (n,):
            raise ValueError(
                f"features has {n} rows but neighbour_ids {ids.shape}, alive {alive.shape}"
            )
        if ids.size and (ids.min() < _PAD or ids.max() >= n):
            raise ValueError(f"neighbour_ids outside [-1, {n - 1}]")
        out = cls(feats.shape[1], ids.shape[1])
        out._feats, out._ids, out._dists, out._alive = (
            feats.copy(),
            ids.copy(),
            dists.copy(),
            alive.copy(),
        )
        out._n = n
        out._far = np.zeros(n, dtype=np.float32)
        out._far_id = np.full(n, _PAD, dtype=np.int64)
        if "farthest_ids" in arrays and "farthest_dists" in arrays:
            far_ids = np.asarray(arrays["farthest_ids"], dtype=np.int64)
            far = np.asarray(arrays["farthest_dists"], dtype=np.float32)
            if far_ids.shape != (n,) or far.shape != (n,):
                raise ValueError(f"farthest_ids {far_ids.shape} / farthest_dists {far.shape}")
            out._far, out._far_id = far.copy(), far_ids.copy()
        else:
            out._set_farthest(np.flatnonzero(alive))
        return out

    # ------------------------------------------------------------------ internals

    def _grow(self, need: int) -> None:
        cap = self._feats.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap, 64)
        for name in ("_feats", "_ids", "_dists", "_alive", "_far", "_far_id"):
            old = getattr(self, name)
            arr = np.empty((new, *old.shape[1:]), dtype=old.dtype)
            arr[: self._n] = old[: self._n]
            setattr(self, name, arr)

    def _block_rows(self) -> int:
        return max(1, _BLOCK_BYTES // (4 * max(self._n, 1)))

    def _partial_sq(self, x: np.ndarray, self_ids: np.ndarray) -> np.ndarray:
        """``[B, N]`` ``|f|^2 - 2 x.f`` (squared distance less the row's ``|x|^2``, same order);
        ``inf`` for removed items and for the row's own item."""
        n = self._n
        feats = self._feats[:n]
        part = x @ feats.T  # [B, N]
        part *= np.float32(-2.0)
        part += np.einsum("ij,ij->i", feats, feats)[None, :]
        if not self._alive[:n].all():
            part[:, ~self._alive[:n]] = np.inf
        part[np.arange(x.shape[0]), self_ids] = np.inf
        return part

    def _search(self, x: np.ndarray, self_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-m alive neighbours of rows ``x`` (items ``self_ids``, excluded)."""
        part = self._partial_sq(x, self_ids)
        ids, p = _top_m(part, np.arange(self._n), self._m)
        p += np.einsum("ij,ij->i", x, x)[:, None]
        return ids, np.sqrt(np.maximum(p, np.float32(0.0)))

    def _farthest(self, part: np.ndarray, x_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row of ``_partial_sq``'s ``part``, the farthest counted item and its distance
        (``-1`` and 0 when none)."""
        finite = np.where(np.isfinite(part), part, -np.inf)
        at = finite.argmax(axis=1) if finite.shape[1] else np.zeros(part.shape[0], np.intp)
        best = (
            finite[np.arange(part.shape[0]), at]
            if finite.shape[1]
            else np.full(part.shape[0], -np.inf)
        )
        none = ~np.isfinite(best)
        d = np.sqrt(np.maximum(np.where(none, 0.0, best + x_sq), 0.0)).astype(np.float32)
        return np.where(none, _PAD, at).astype(np.int64), np.where(none, 0.0, d)

    def _set_farthest(self, rows: np.ndarray) -> None:
        """Find the farthest alive other item of ``rows`` by an exact pass over the features."""
        for lo in range(0, rows.size, self._block_rows()):
            r = rows[lo : lo + self._block_rows()]
            x = self._feats[r]
            self._far_id[r], self._far[r] = self._farthest(
                self._partial_sq(x, r), np.einsum("ij,ij->i", x, x)
            )

    def _add_block(self, lo: int, hi: int, first_new: int) -> None:
        """Lists of new items ``lo:hi``, and their entry into older items' lists."""
        rows = np.arange(lo, hi)
        x = self._feats[lo:hi]
        part = self._partial_sq(x, rows)  # [B, N]
        ids, p = _top_m(part, np.arange(self._n), self._m)
        x_sq = np.einsum("ij,ij->i", x, x)
        self._far_id[lo:hi], self._far[lo:hi] = self._farthest(part, x_sq)
        self._ids[lo:hi] = ids
        self._dists[lo:hi] = np.sqrt(np.maximum(p + x_sq[:, None], np.float32(0.0)))
        if first_new == 0:
            return
        old = part[:, :first_new]  # [B, N_old] to items indexed before this add
        old += x_sq[:, None]  # squared distances
        self._raise_farthest(old, rows)
        r, c = np.nonzero(old < np.square(self._dists[:first_new, self._m - 1])[None, :])
        if c.size == 0:
            return
        targets, inv = np.unique(c, return_inverse=True)
        new_d = np.sqrt(np.maximum(old[r, c], np.float32(0.0)))
        merged = _merge_lists(self._ids[targets], self._dists[targets], inv, rows[r], new_d)
        self._ids[targets], self._dists[targets] = merged

    def _raise_farthest(self, old_sq: np.ndarray, rows: np.ndarray) -> None:
        """Older items whose farthest item is now one of ``rows`` (squared distances
        ``old_sq`` ``[B, N_old]``, ``inf`` where not counted)."""
        finite = np.where(np.isfinite(old_sq), old_sq, -np.inf)
        at = finite.argmax(axis=0)
        best = finite[at, np.arange(finite.shape[1])]
        d = np.sqrt(np.maximum(best, 0.0)).astype(np.float32)
        n_old = finite.shape[1]
        grow = np.isfinite(best) & (d > self._far[:n_old]) & self._alive[:n_old]
        self._far[:n_old][grow] = d[grow]
        self._far_id[:n_old][grow] = rows[at[grow]]


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


# --------------------------------------------------------------------------- per-query universe


@dataclass
class _Universe:
    """The gallery items one query's exact re-ranking touches, in local ids by layer.

    Local id 0 is the query; local ids ``1 .. n_scored - 1`` are the scored set E, then the
    items whose ``V`` rows are needed, then those whose ``k1``-lists are needed, then those
    whose half-lists are needed, then items only compared against.
    """

    glob: np.ndarray
    """``[U]`` gallery id of each local id (``-1`` for the query at 0)."""
    n_scored: int
    """Query + E."""
    n_v: int
    """Items whose ``V`` row is computed (QE sources): ``[0, n_v)``."""
    n_full: int
    """Items with a ``k1``-wide neighbourhood row: ``[0, n_full)``."""
    n_half: int
    """Items with (at least) a half-wide neighbourhood row: ``[0, n_half)``."""


class _LocalIds:
    """Global gallery id -> local id, appending new ids layer by layer (query = local 0)."""

    def __init__(self, size: int) -> None:
        self._seen = np.zeros(size, dtype=bool)  # O(size) bytes, lazily zeroed pages
        self._local = np.empty(size, dtype=np.int64)  # valid only where _seen
        self._parts: list[np.ndarray] = [np.array([_PAD], dtype=np.int64)]
        self.count = 1

    def extend(self, ids: np.ndarray) -> None:
        """Append the ids of ``ids`` (any shape, ``-1`` ignored) not seen yet."""
        flat = ids.ravel()
        flat = flat[flat >= 0]
        new = flat[~self._seen[flat]]
        pos = np.arange(new.size)
        self._local[new] = pos
        new = new[self._local[new] == pos]  # one representative per distinct id
        self._seen[new] = True
        self._local[new] = np.arange(self.count, self.count + new.size)
        self._parts.append(new)
        self.count += new.size

    def to_local(self, ids: np.ndarray) -> np.ndarray:
        """Local ids of gallery ids ``ids`` (all seen); ``-1`` stays ``-1``."""
        return np.where(ids >= 0, self._local[np.maximum(ids, 0)], _PAD)

    def glob(self) -> np.ndarray:
        return np.concatenate(self._parts)


# --------------------------------------------------------------------------- re-ranking


class _Query:
    """Distances from the query, computed on demand (top-K known; others from features)."""

    def __init__(
        self,
        q: np.ndarray,
        glob: np.ndarray,
        known: tuple[np.ndarray, np.ndarray],
        get_feats: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.q, self.glob, self.get_feats = q, glob, get_feats
        self.d = np.full(glob.size, np.nan, dtype=np.float32)  # by local id
        self.d[0] = 0.0
        self.d[known[0]] = known[1]

    def at(self, local: np.ndarray) -> np.ndarray:
        """``d(query, item)`` for local ids ``local`` (float32)."""
        miss = np.unique(local[np.isnan(self.d[local])])
        if miss.size:
            feats = np.asarray(self.get_feats(self.glob[miss]), dtype=np.float32)
            self.d[miss] = pairwise_euclidean(self.q[None, :], feats)[0]
        return self.d[local]


def _insert_query(
    g_local: np.ndarray,
    nbr_local: np.ndarray,
    nbr_d: np.ndarray,
    qd: _Query,
    radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``N(g, w)`` rows ``[A, w + 1]`` (self first) in ``{query} ∪ gallery``, and distances.

    ``nbr_local``/``nbr_d`` ``[A, w]`` are the stored lists (local ids). The query (local 0)
    enters a row when ``d(q, g) <= `` the row's ``w``-th distance; items outside the top-K are
    at least ``radius`` from the query, so their distance is computed only when needed.
    """
    a, w = nbr_local.shape
    dq = np.full(a, np.inf, dtype=np.float32)
    maybe = nbr_d[:, w - 1] >= radius
    maybe |= ~np.isnan(qd.d[g_local])  # known distances cost nothing
    dq[maybe] = qd.at(g_local[maybe])
    pos = (nbr_d < dq[:, None]).sum(axis=1)  # ties: the query (index 0) goes first
    idx = np.arange(w)[None, :]
    src = np.where(idx < pos[:, None], idx, np.maximum(idx - 1, 0))
    ids = np.where(idx == pos[:, None], 0, np.take_along_axis(nbr_local, src, axis=1))
    ds = np.where(idx == pos[:, None], dq[:, None], np.take_along_axis(nbr_d, src, axis=1))
    rows = np.concatenate([g_local[:, None], ids], axis=1)
    return rows, np.concatenate([np.zeros((a, 1), np.float32), ds], axis=1)


def _reciprocal(ranks: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """``[len(rows), k]`` bool: ``ranks[i, a]`` is in ``R(i, k - 1)`` for each ``i in rows``."""
    fwd = ranks[rows, :k]  # [R, k]
    back = ranks[fwd, :k]  # [R, k, k]
    return (back == rows[:, None, None]).any(axis=2)


def _expanded(ranks: np.ndarray, rank_d: np.ndarray, n_v: int, kk: int, kh: int) -> SparseRows:
    """``R*(j)`` (Eq. 4-6) for local ids ``j < n_v`` with ``d(j, col)`` (NaN where unknown).

    Distances are known for members of ``N(j, k1)`` (``rank_d``); the half-neighbourhoods
    added by the 2/3 rule may reach past it.
    """
    ranks32 = ranks[:n_v, :kk].astype(np.int32)
    recip = _reciprocal(ranks, np.arange(n_v), kk)  # [n_v, kk]: R(j, k1)
    j_idx, a_idx = np.nonzero(recip)  # [P] pairs (j, c) with c in R(j, k1)
    c = ranks[j_idx, a_idx]
    c_set = np.unique(c)
    recip_h = np.zeros((ranks.shape[0], kh), dtype=bool)
    recip_h[c_set] = _reciprocal(ranks, c_set, kh)  # R(c, k1/2) for the c in use
    h = ranks[c, :kh]  # [P, kh] N(c, k1/2)
    h_ok = recip_h[c]  # [P, kh] in R(c, k1/2)
    hj = np.broadcast_to(j_idx[:, None], h.shape)[h_ok]  # [H] row of each looked-up h
    hit = ranks32[hj, :kk] == h[h_ok].astype(np.int32)[:, None]  # [H, kk]: h in N(j, k1)?
    at = hit.argmax(axis=1)
    found = np.zeros(h.shape, dtype=bool)
    found[h_ok] = hit[np.arange(at.size), at]
    member = np.zeros(h.shape, dtype=bool)
    member[h_ok] = found[h_ok] & recip[hj, at]  # ... and in R(j, k1)
    accept = expansion_accepted(member.sum(axis=1), h_ok.sum(axis=1))  # Eq. 6
    extra = h_ok & accept[:, None] & ~member  # [P, kh] added to R*(j)
    known = np.full(h.shape, np.nan, dtype=np.float32)
    known[h_ok] = np.where(found[h_ok], rank_d[hj, at], np.nan)
    row = np.concatenate([j_idx, np.broadcast_to(j_idx[:, None], h.shape)[extra]])
    col = np.concatenate([c, h[extra]])
    dist = np.concatenate([rank_d[j_idx, a_idx], known[extra]])
    return SparseRows.from_entries(row, col, dist, n_v)


def _pair_distances(
    a: np.ndarray,
    b: np.ndarray,
    glob: np.ndarray,
    nbrs: GalleryNeighbours,
    qd: _Query,
    get_feats: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """``d(a[t], b[t])`` for local-id pairs (``a != b``): the query's distances, the stored
    list of ``a[t]`` where it holds ``b[t]``, the features otherwise."""
    out = np.empty(a.size, dtype=np.float32)
    qa, qb = a == 0, b == 0
    out[qa] = qd.at(b[qa])
    out[qb] = qd.at(a[qb])
    rest = np.flatnonzero(~qa & ~qb)
    ga, gb = glob[a[rest]], glob[b[rest]]
    hit = nbrs._ids[ga] == gb[:, None]  # [P, M]
    found = hit.any(axis=1)
    out[rest[found]] = nbrs._dists[ga[found], hit[found].argmax(axis=1)]
    miss = rest[~found]
    if miss.size:
        fa = np.asarray(get_feats(glob[a[miss]]), dtype=np.float32)
        fb = np.asarray(get_feats(glob[b[miss]]), dtype=np.float32)
        diff = fa - fb
        out[miss] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def _build_universe(
    top: np.ndarray,
    nbrs: GalleryNeighbours,
    expand: tuple[int, int],
    kk: int,
    kh: int,
    k2: int,
) -> tuple[_Universe, _LocalIds]:
    """Layers of local ids (see :class:`_Universe`); stored lists are read, nothing computed."""
    ids = nbrs._ids
    loc = _LocalIds(nbrs.size)
    loc.extend(top)
    loc.extend(ids[top[: expand[0]], : expand[1]])
    n_scored = loc.count
    loc.extend(ids[loc.glob()[1:n_scored], : k2 - 1])  # QE sources N(i, k2 - 1)
    n_v = loc.count
    loc.extend(ids[loc.glob()[1:n_v], : kk - 1])  # N(j, k1) of every V row
    n_full = loc.count
    glob = loc.glob()
    loc.extend(ids[glob[n_v:n_full], : kh - 1])  # half-neighbourhoods of the k1-rows
    n_half = loc.count
    loc.extend(ids[glob[n_v:n_full], kh - 1 : kk - 1])  # compared against only
    loc.extend(ids[loc.glob()[n_full:n_half], : kh - 1])  # compared against only
    return _Universe(loc.glob(), n_scored, n_v, n_full, n_half), loc


def _ranks(
    uni: _Universe,
    loc: _LocalIds,
    nbrs: GalleryNeighbours,
    top: tuple[np.ndarray, np.ndarray],
    qd: _Query,
    radius: float,
    kk: int,
    kh: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``[n_half, kk]`` local neighbourhood rows (``kk`` wide below ``n_full``, ``kh`` above)
    and ``[n_full, kk]`` their distances."""
    ranks = np.full((uni.n_half, kk), _PAD, dtype=np.int64)
    rank_d = np.zeros((uni.n_full, kk), dtype=np.float32)
    ranks[0, 0] = 0
    ranks[0, 1:] = top[0][: kk - 1]
    rank_d[0, 1:] = top[1][: kk - 1]
    for lo, hi, w in ((1, uni.n_full, kk), (uni.n_full, uni.n_half, kh)):
        g = uni.glob[lo:hi]
        nbr = loc.to_local(nbrs._ids[g, : w - 1])
        rows, ds = _insert_query(np.arange(lo, hi), nbr, nbrs._dists[g, : w - 1], qd, radius)
        ranks[lo:hi, :w] = rows
        if w == kk:
            rank_d[lo:hi] = ds
    return ranks, rank_d


def rerank_expanded(
    query_feat: np.ndarray,
    topk_ids: np.ndarray,
    topk_dists: np.ndarray,
    neighbours: GalleryNeighbours,
    get_feats: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    expand: int | None = None,
    expand_width: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-ranked gallery ids and distances (ascending) of one query's expanded shortlist.

    ``topk_ids``/``topk_dists`` ``[K]``: the query's exact K nearest alive gallery items and
    their plain Euclidean distances (any order). The scored set is the top-K plus the stored
    first ``expand_width`` (default ``k1``) entries of the lists of the query's ``expand``
    (default ``k1``) nearest items, at most ``K + expand * expand_width`` items; each gets exactly the distance ``k_reciprocal_rerank`` gives it when run on
    ``{query} ∪ gallery`` (module docstring). Items not returned rank after all returned
    ones. ``get_feats(ids) -> [len(ids), d]`` serves gallery features for the few distances
    the lists do not hold (default ``neighbours.features``).
    """
    _check_params(k1, k2, lambda_value)
    q, top, top_d = _check_query(query_feat, topk_ids, topk_dists, neighbours, k1)
    feats_fn = neighbours.features if get_feats is None else get_feats
    s = _sizes(neighbours.num_alive + 1, k1, k2)
    widths = (k1 if expand is None else expand, k1 if expand_width is None else expand_width)
    if min(widths) < 0:
        raise ValueError(f"expand and expand_width must be >= 0, got {widths}")
    uni, loc = _build_universe(top, neighbours, widths, s.kk, s.kh, s.k2)
    top_local = loc.to_local(top)
    qd = _Query(q, uni.glob, (top_local, top_d), feats_fn)
    radius = float(top_d[-1]) if top.size < neighbours.num_alive else np.inf
    ranks, rank_d = _ranks(uni, loc, neighbours, (top_local, top_d), qd, radius, s.kk, s.kh)
    r_star = _expanded(ranks, rank_d, uni.n_v, s.kk, s.kh)
    unknown = np.flatnonzero(np.isnan(r_star.vals))
    r_star.vals[unknown] = _pair_distances(
        r_star.entry_rows()[unknown], r_star.cols[unknown], uni.glob, neighbours, qd, feats_fn
    )
    far_sq = _farthest_sq(qd, uni, neighbours)  # [n_v] the released normalisation
    r_star.vals = original_distance(r_star.vals, far_sq[r_star.entry_rows()])
    v = gaussian_kernel(r_star)  # Eq. 7
    jac = jaccard_to_first(local_query_expansion(v, ranks[: uni.n_scored, : s.k2]))
    scored = np.arange(1, uni.n_scored)
    out = final_distance(jac, original_distance(qd.at(scored), far_sq[0]), lambda_value)
    gid = uni.glob[scored]
    order = np.lexsort((gid, out))
    return gid[order], out[order]


def _farthest_sq(qd: _Query, uni: _Universe, nbrs: GalleryNeighbours) -> np.ndarray:
    """``max_l d(l, j)**2`` in ``{query} ∪ gallery`` for the local ids ``j < n_v``: for the
    query a pass over every alive feature, for gallery items their farthest gallery item or
    the query."""
    alive = np.flatnonzero(nbrs.alive)
    to_all = pairwise_euclidean(qd.q[None, :], nbrs.features(alive))[0]
    far = np.empty(uni.n_v, dtype=np.float32)
    far[0] = to_all.max(initial=0.0)
    g = np.arange(1, uni.n_v)
    far[1:] = np.maximum(nbrs.farthest_dists[uni.glob[g]], qd.at(g))
    return np.square(far)


def _check_query(
    query_feat: np.ndarray,
    topk_ids: np.ndarray,
    topk_dists: np.ndarray,
    nbrs: GalleryNeighbours,
    k1: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float32 query, and the top-K ids/distances sorted by (distance, id)."""
    q = np.asarray(query_feat, dtype=np.float32)
    if q.shape != (nbrs.dim,):
        raise ValueError(f"query_feat must have shape [{nbrs.dim}], got {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("query_feat contains non-finite values")
    top = np.asarray(topk_ids, dtype=np.int64)
    top_d = np.asarray(topk_dists, dtype=np.float32)
    if top.ndim != 1 or top_d.shape != top.shape:
        raise ValueError(
            f"topk_ids {top.shape} and topk_dists {top_d.shape} must be 1-D, same length"
        )
    if nbrs.m < k1:
        raise ValueError(f"neighbour lists hold m={nbrs.m} items; k1={k1} needs m >= k1")
    if top.size and (top.min() < 0 or top.max() >= nbrs.size):
        raise ValueError(f"topk_ids outside the gallery's ids 0..{nbrs.size - 1}")
    if not nbrs._alive[top].all():
        raise ValueError(f"topk_ids holds removed items: {top[~nbrs._alive[top]][:5].tolist()}")
    if np.unique(top).size != top.size:
        raise ValueError("topk_ids holds duplicates")
    need = min(k1, nbrs.num_alive)
    if top.size < need:
        raise ValueError(f"need the query's top-{need} at least (k1={k1}), got {top.size}")
    if not (np.isfinite(top_d).all() and (top_d >= 0).all()):
        raise ValueError("topk_dists must be finite and >= 0")
    order = np.lexsort((top, top_d))
    return q, top[order], top_d[order]
