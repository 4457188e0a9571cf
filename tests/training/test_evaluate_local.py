"""The trainer's evaluation with AlignedReID's test-time global + local distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidcore.evaluation import evaluate_rank, pairwise_euclidean
from training.config import EvalConfig
from training.evaluate import Extracted, retrieval_metrics
from training.losses.local import local_distance_matrix


def _extracted(rng: np.random.Generator, n: int, cams: int) -> Extracted:
    feats = rng.normal(size=(n, 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return Extracted(
        features=feats,
        attr_pred=None,
        pids=rng.integers(1, 5, size=n),
        camids=np.full(n, cams),
        local=rng.normal(size=(n, 4, 6)).astype(np.float32),
    )


def test_gl_metrics_rank_by_global_plus_local_distance() -> None:
    rng = np.random.default_rng(0)
    query, gallery = _extracted(rng, 6, 0), _extracted(rng, 20, 1)
    cfg = EvalConfig(local_distance=True, local_weight=0.5)
    got = retrieval_metrics(query, gallery, cfg)
    local = local_distance_matrix(torch.from_numpy(query.local), torch.from_numpy(gallery.local))
    combined = pairwise_euclidean(query.features, gallery.features) + 0.5 * local.numpy()
    ref = evaluate_rank(combined, query.pids, gallery.pids, query.camids, gallery.camids)
    assert got["gl_mAP"] == pytest.approx(ref.mAP) and got["gl_rank1"] == pytest.approx(ref.rank(1))
    plain = retrieval_metrics(query, gallery, EvalConfig())
    assert "gl_mAP" not in plain and plain["mAP"] == pytest.approx(got["mAP"])
