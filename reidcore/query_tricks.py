"""Test-time tricks on L2-normalised embeddings: α-QE, DBA and camera-aware normalisation.

The maths is written once here and used by the service (:mod:`service.gallery.query_tricks`,
per query, over a shortlist) and by offline evaluation (:func:`apply_tricks`, whole sets,
``reid evaluate --qe/--dba/--camera-norm`` and ``benchmarks/query_tricks.py``).

**α-QE** (alpha-weighted average query expansion), the variant of Radenović, Tolias and Chum,
"Fine-tuning CNN Image Retrieval with No Human Annotation", IEEE TPAMI 41(7), 2018, Sec. 5.2
(eq. 5): the query ``q`` is replaced by the weighted mean of itself and its top ``n``
gallery neighbours ``x_1..x_n``, ``q' = normalise(q + Σ_i w_i x_i)`` with the query weighted
1 and ``w_i = q·x_i^α`` (0 where ``q·x_i <= 0``); ``α = 0`` is Chum et al.'s average query
expansion (AQE, ICCV 2007). Neighbours not similar at all weigh nothing (the paper's top
neighbours have positive similarities; this only keeps ``s^α`` real).

**DBA** (database-side augmentation, same paper and formula): each gallery vector ``x`` is
replaced by ``normalise(x + Σ_j w_j x_j)`` over its top ``n`` *other* gallery items, with
``w_j`` as above. Neighbours are chosen by raw cosine similarity (what an index
searches); weights and averaging happen in the space the vectors are given in (camera
normalised when that is on).

**Camera-aware normalisation**: the mean embedding ``m_c`` of each gallery camera is
subtracted from that camera's gallery items, and the query camera's mean from the query when
the query camera is known (and the gallery has items from it); the results are re-normalised.
A camera's common component (lighting, viewpoint, background) then stops counting as
similarity.

Order when combined: camera normalisation, then DBA, then α-QE against the augmented gallery
(Radenović et al. apply QE on a DBA database).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_EPS = np.float32(1e-12)


@dataclass(frozen=True)
class Expansion:
    """α-QE or DBA: the top ``n`` neighbours, weighted by similarity to the power ``alpha``."""

    n: int = 1
    alpha: float = 3.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")


@dataclass(frozen=True)
class QueryTricks:
    """Which tricks run (None / False: off)."""

    qe: Expansion | None = None
    dba: Expansion | None = None
    camera_norm: bool = False

    def any(self) -> bool:
        return self.qe is not None or self.dba is not None or self.camera_norm

    def label(self) -> str:
        """Short description, e.g. ``camera norm + DBA n=1 α=3 + α-QE n=2 α=3``."""
        parts = ["camera norm"] if self.camera_norm else []
        if self.dba is not None:
            parts.append(f"DBA n={self.dba.n} α={self.dba.alpha:g}")
        if self.qe is not None:
            parts.append(f"α-QE n={self.qe.n} α={self.qe.alpha:g}")
        return " + ".join(parts) or "plain"


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def expand(anchors: np.ndarray, neighbours: np.ndarray, alpha: float) -> np.ndarray:
    """``normalise(a + Σ_i w_i x_i)``, ``w_i = (a·x_i)^α`` (0 unless positive), per anchor.

    ``anchors`` [M, d] (unit rows), ``neighbours`` [M, n, d] (each anchor's neighbours, unit
    rows; n may be 0). The α-QE and DBA update.
    """
    a = np.asarray(anchors, dtype=np.float32)
    nb = np.asarray(neighbours, dtype=np.float32)
    sims = np.einsum("mnd,md->mn", nb, a)
    w = np.where(sims > 0, np.power(np.maximum(sims, 0), np.float32(alpha)), np.float32(0.0))
    return normalise(a + np.einsum("mn,mnd->md", w, nb))


def top_neighbours(
    anchors: np.ndarray, pool: np.ndarray, n: int, exclude_self: bool = False
) -> np.ndarray:
    """Rows of ``pool`` nearest each anchor by inner product, best first: int64 [M, n'].

    ``exclude_self``: anchors are ``pool`` itself and row i is not its own neighbour. Equal
    similarities are ordered by row, except at the n-th place (any of them may be kept).
    ``n' = min(n, available)``.
    """
    sims = np.asarray(anchors, np.float32) @ np.asarray(pool, np.float32).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    n = min(n, pool.shape[0] - (1 if exclude_self else 0))
    if n <= 0:
        return np.zeros((sims.shape[0], 0), np.int64)
    part = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    vals = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def camera_means(feats: np.ndarray, cams: Sequence[Hashable] | np.ndarray) -> dict[Any, np.ndarray]:
    """Mean embedding (not normalised) of each camera's rows of ``feats``."""
    cams = np.asarray(cams)
    return {
        c.item() if hasattr(c, "item") else c: feats[cams == c].mean(axis=0).astype(np.float32)
        for c in np.unique(cams)
    }


def subtract_camera_means(
    feats: np.ndarray,
    cams: Sequence[Hashable | None] | np.ndarray,
    means: Mapping[Any, np.ndarray],
) -> np.ndarray:
    """``normalise(x - m_cam)`` per row; rows whose camera has no mean (or is None) are only
    re-normalised."""
    out = np.array(feats, dtype=np.float32, copy=True)
    for i, c in enumerate(np.asarray(cams, dtype=object)):
        m = means.get(c) if c is not None else None
        if m is not None:
            out[i] -= m
    return normalise(out)


def augment_gallery(gallery: np.ndarray, raw: np.ndarray, dba: Expansion) -> np.ndarray:
    """DBA of every row of ``gallery`` (the vectors to average, e.g. camera normalised), its
    neighbours chosen among the other rows by the raw vectors ``raw``."""
    nb = top_neighbours(raw, raw, dba.n, exclude_self=True)
    return expand(gallery, gallery[nb], dba.alpha)


def expand_queries(queries: np.ndarray, gallery: np.ndarray, qe: Expansion) -> np.ndarray:
    """α-QE of each query over its top ``qe.n`` rows of ``gallery`` (the space it is ranked in)."""
    nb = top_neighbours(queries, gallery, qe.n)
    return expand(queries, gallery[nb], qe.alpha)


def apply_tricks(
    query: np.ndarray,
    query_cams: np.ndarray | None,
    gallery: np.ndarray,
    gallery_cams: np.ndarray,
    tricks: QueryTricks,
) -> tuple[np.ndarray, np.ndarray]:
    """(queries, gallery) after the tricks, for scoring by inner product (or Euclidean
    distance: the rows stay unit vectors). ``query_cams`` None: query cameras unknown."""
    q = normalise(query)
    raw = normalise(gallery)
    g = raw
    if tricks.camera_norm:
        means = camera_means(raw, gallery_cams)
        g = subtract_camera_means(raw, gallery_cams, means)
        if query_cams is not None:
            q = subtract_camera_means(q, query_cams, means)
    if tricks.dba is not None:
        g = augment_gallery(g, raw, tricks.dba)
    if tricks.qe is not None:
        q = expand_queries(q, g, tricks.qe)
    return q, g
