"""Retrieval metrics from ranked lists returned by a search service (top-k, possibly truncated).

A search endpoint returns, per query, the ``k`` best gallery items, not a distance matrix.
:func:`evaluate_rankings` turns those lists into a ``[Nq, Ng]`` distance matrix and runs
:func:`reidcore.evaluation.evaluate_rank` on it, so the protocol (junk, distractors,
same-camera removal) is exactly the one of ``reid evaluate``.

Truncation is handled pessimistically: a gallery item that is not in a query's list is
ranked after every listed item, and among the unlisted items the true matches come last.
With complete lists (``k`` = gallery size) the result is exact; with top-k lists every
metric (CMC, mAP, mINP) is a lower bound of the full-ranking value, never an overestimate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from reidcore.evaluation import DISTRACTOR_ID, EvaluationResult, MapMode, evaluate_rank

logger = logging.getLogger(__name__)


def rankings_to_distmat(
    rankings: Sequence[Sequence[int]],
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
) -> np.ndarray:
    """``[Nq, Ng]`` float32 distances reproducing each ranked list, unlisted items last.

    Listed item at position ``p`` (0-based) gets distance ``p``; an unlisted non-match gets
    ``L`` and an unlisted match (same identity, other camera) ``L + 1``, ``L`` being the
    list's length. Raises ``ValueError`` for an index outside the gallery or listed twice.
    """
    num_q, num_g = len(query_ids), len(gallery_ids)
    if len(rankings) != num_q:
        raise ValueError(f"{len(rankings)} ranked lists for {num_q} queries")
    g_ids, g_cams = np.asarray(gallery_ids), np.asarray(gallery_cams)
    dist = np.empty((num_q, num_g), dtype=np.float32)
    for qi, ranked in enumerate(rankings):
        order = np.asarray(ranked, dtype=np.int64).reshape(-1)
        if order.size and (order.min() < 0 or order.max() >= num_g):
            raise ValueError(f"query {qi}: gallery index outside [0, {num_g}) in its ranking")
        if np.unique(order).size != order.size:
            raise ValueError(f"query {qi}: a gallery index is listed twice in its ranking")
        n = np.float32(order.size)
        match = (g_ids == query_ids[qi]) & (g_cams != query_cams[qi]) & (g_ids > DISTRACTOR_ID)
        dist[qi] = np.where(match, n + np.float32(1.0), n)
        dist[qi, order] = np.arange(order.size, dtype=np.float32)
    return dist


def evaluate_rankings(
    rankings: Sequence[Sequence[int]],
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
    map_mode: MapMode = "official",
) -> EvaluationResult:
    """CMC/mAP/mINP of ranked gallery-index lists (exact when complete, else lower bounds)."""
    dist = rankings_to_distmat(rankings, query_ids, gallery_ids, query_cams, gallery_cams)
    return evaluate_rank(dist, query_ids, gallery_ids, query_cams, gallery_cams, map_mode=map_mode)
