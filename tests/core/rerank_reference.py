"""The reference every per-query re-ranking variant is checked against."""

from __future__ import annotations

import numpy as np

from reidcore.evaluation import pairwise_euclidean
from reidcore.rerank import k_reciprocal_rerank


def full_one_query(
    q: np.ndarray, g: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3
) -> np.ndarray:
    """The full algorithm on {q} ∪ gallery ``g``: re-ranked distances ``[Ng]``."""
    return k_reciprocal_rerank(
        pairwise_euclidean(q[None], g),
        np.zeros((1, 1), np.float32),
        pairwise_euclidean(g, g),
        k1=k1,
        k2=k2,
        lambda_value=lam,
    )[0]
