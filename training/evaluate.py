"""Validation of a :class:`~training.models.ReidModel` during training.

Features are extracted through the shared evaluation preprocessing (the loaders of
:func:`training.datasets.build_eval_loaders`), L2-normalised as the served embedding is
(:class:`~training.models.InferenceWrapper`), compared with Euclidean distances and scored by
:mod:`reidcore.evaluation` (single-query CMC / mAP / mINP), optionally after k-reciprocal
re-ranking (:func:`reidcore.rerank.k_reciprocal_rerank`). Attribute accuracy compares the
arg-max of each attribute head with the identity-level labels of each image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reidcore.attribute_protocol import apr_attribute_accuracy
from reidcore.attributes import AttributeSchema
from reidcore.evaluation import (
    attribute_accuracy,
    evaluate_rank,
    pairwise_euclidean,
    valid_queries_line,
)
from reidcore.local_distance import global_local_distance
from reidcore.rerank import k_reciprocal_rerank
from training.config import EvalConfig
from training.data.loader import ReidBatch
from training.datasets import EvalSplit
from training.models import ReidModel

logger = logging.getLogger(__name__)

METRIC_NAMES = (
    "rank1",
    "rank5",
    "mAP",
    "mINP",
    "attr_acc",
    "rerank_rank1",
    "rerank_rank5",
    "rerank_mAP",
    "rerank_mINP",
    "gl_rank1",
    "gl_rank5",
    "gl_mAP",
    "gl_mINP",
    "valid_queries",
    "queries",
)
"""Keys :func:`evaluate_model` may return: fractions in [0, 1], then the number of queries
with a cross-camera match (the ones averaged) and of all queries."""


@dataclass
class Extracted:
    """Model outputs over a set of images, in loader order."""

    features: np.ndarray
    """float32 ``[N, D]`` L2-normalised embeddings."""
    attr_pred: np.ndarray | None
    """int64 ``[N, M]`` predicted attribute classes; None without attribute heads."""
    pids: np.ndarray
    """int64 ``[N]`` identities as on disk."""
    camids: np.ndarray
    """int64 ``[N]`` cameras."""
    attr_yes: np.ndarray | None = None
    """float32 ``[N, M]`` probability of class 1 of each head (the "yes" of a binary one)."""
    local: np.ndarray | None = None
    """float32 ``[N, H, c]`` stripe features as the local branch gives them; None without."""


def weights_memory_format(model: nn.Module) -> torch.memory_format:
    """``channels_last`` when ``model``'s first spatial convolution is stored that way (a run
    with ``channels_last: true``): its inputs then go in the same order, else contiguous."""
    for w in model.parameters():
        if w.dim() == 4 and w.shape[2] * w.shape[3] > 1:
            nhwc = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
            return torch.channels_last if nhwc else torch.contiguous_format
    return torch.contiguous_format


@torch.no_grad()
def extract(model: ReidModel, batches: Iterable[ReidBatch], device: torch.device) -> Extracted:
    """Run ``model`` in eval mode over ``batches`` (its training mode is restored after)."""
    was_training = model.training
    model.eval()
    fmt = weights_memory_format(model)
    feats, attrs, yes, local, pids, cams = [], [], [], [], [], []
    try:
        for batch in batches:
            out = model(batch.images.to(device, non_blocking=True).contiguous(memory_format=fmt))
            feats.append(F.normalize(out.embedding.float(), dim=1).cpu())  # [B, D]
            if out.attr_probs:
                attrs.append(torch.stack([p.argmax(dim=1) for p in out.attr_probs], 1).cpu())
                yes.append(torch.stack([p[:, 1].float() for p in out.attr_probs], 1).cpu())
            if out.local_features is not None:
                local.append(out.local_features.float().cpu())  # [B, H, c]
            pids.append(batch.pids)
            cams.append(batch.camids)
    finally:
        model.train(was_training)
    return Extracted(
        features=torch.cat(feats).numpy().astype(np.float32, copy=False),
        attr_pred=torch.cat(attrs).numpy().astype(np.int64) if attrs else None,
        attr_yes=torch.cat(yes).numpy() if yes else None,
        local=torch.cat(local).numpy() if local else None,
        pids=torch.cat(pids).numpy(),
        camids=torch.cat(cams).numpy(),
    )


def retrieval_metrics(query: Extracted, gallery: Extracted, cfg: EvalConfig) -> dict[str, float]:
    """rank-1/5, mAP and mINP of ``query`` against ``gallery`` (and re-ranked when asked)."""
    q_g = pairwise_euclidean(query.features, gallery.features)  # [Nq, Ng] float32
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    result = evaluate_rank(q_g, *labels)
    metrics = {
        "rank1": result.rank(1),
        "rank5": result.rank(5),
        "mAP": result.mAP,
        "mINP": result.mINP,
        "valid_queries": float(result.num_valid),
        "queries": float(result.num_queries),
    }
    if cfg.rerank:
        q_q = pairwise_euclidean(query.features, query.features)
        g_g = pairwise_euclidean(gallery.features, gallery.features)
        reranked = k_reciprocal_rerank(
            q_g, q_q, g_g, k1=cfg.rerank_k1, k2=cfg.rerank_k2, lambda_value=cfg.rerank_lambda
        )
        rr = evaluate_rank(reranked, *labels)
        metrics.update(
            rerank_rank1=rr.rank(1), rerank_rank5=rr.rank(5), rerank_mAP=rr.mAP, rerank_mINP=rr.mINP
        )
    if cfg.local_distance and query.local is not None and gallery.local is not None:
        # AlignedReID Sec. 4.3: the global plus the aligned local distance at test time
        combined = global_local_distance(q_g, query.local, gallery.local, cfg.local_weight)
        gl = evaluate_rank(combined, *labels)
        metrics.update(gl_rank1=gl.rank(1), gl_rank5=gl.rank(5), gl_mAP=gl.mAP, gl_mINP=gl.mINP)
    return metrics


def attribute_metrics(
    query: Extracted,
    gallery: Extracted,
    split: EvalSplit,
    schema: AttributeSchema,
    protocol: str = "apr",
) -> dict[str, float]:
    """Mean attribute accuracy ({} without attributes): ``apr``, APR's Tables 3/4 on the
    gallery images (:func:`reidcore.attribute_protocol.apr_attribute_accuracy`);
    ``all_images``, every attribute on the known labels of query and gallery images."""
    if query.attr_pred is None or gallery.attr_pred is None or split.query_attributes is None:
        return {}
    assert split.gallery_attributes is not None
    if protocol == "apr":
        assert gallery.attr_yes is not None
        res = apr_attribute_accuracy(
            gallery.attr_pred, gallery.attr_yes, split.gallery_attributes, schema
        )
        return {"attr_acc": res.mean}
    pred = np.concatenate([query.attr_pred, gallery.attr_pred])
    target = np.concatenate([split.query_attributes, split.gallery_attributes])
    return {"attr_acc": attribute_accuracy(pred, target, schema).mean}


def evaluate_model(
    model: ReidModel,
    query_batches: Iterable[ReidBatch],
    gallery_batches: Iterable[ReidBatch],
    split: EvalSplit,
    schema: AttributeSchema,
    device: torch.device,
    cfg: EvalConfig,
) -> dict[str, float]:
    """All validation metrics of ``model`` (keys from :data:`METRIC_NAMES`)."""
    query = extract(model, query_batches, device)
    gallery = extract(model, gallery_batches, device)
    metrics = retrieval_metrics(query, gallery, cfg)
    metrics.update(attribute_metrics(query, gallery, split, schema, cfg.attribute_protocol))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in _COUNTS)
    counts = valid_queries_line(int(metrics["valid_queries"]), int(metrics["queries"]))
    logger.info("evaluation: %s; %s", shown, counts)
    return metrics


_COUNTS = ("valid_queries", "queries")
