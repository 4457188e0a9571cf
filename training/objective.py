"""The training objective a :class:`~training.config.LossConfig` describes, per batch.

One model: ``λ·CE_id + w_att·mean_m CE_att,m + w_g·TriHard(global) + w_l·Triplet(local)``
(the local triplets are the ones mined on the global distance, as in AlignedReID). Mutual
learning adds, for a pair of models, the weighted KL and distance-matrix mutual losses.
The functions compute in float32 whatever precision the forward pass used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

from training.config import LossConfig
from training.data.loader import ReidBatch
from training.losses import (
    aligned_triplet_loss,
    attribute_loss,
    batch_hard_triplet_loss,
    identity_cross_entropy,
    mutual_loss,
    pairwise_euclidean,
)
from training.models import ReidOutput

logger = logging.getLogger(__name__)


@dataclass
class ModelLoss:
    """One model's weighted total and its unweighted parts."""

    total: Tensor
    """Scalar to back-propagate: the weighted sum of the active terms."""
    terms: dict[str, Tensor] = field(default_factory=dict)
    """Unweighted active terms: ``id``, ``attr``, ``tri_global``, ``tri_local``."""
    id_logits: Tensor | None = None
    """float32 ``[N, C]`` identity logits (for the mutual loss)."""
    dist: Tensor | None = None
    """float32 ``[N, N]`` global distance matrix, when a triplet term computed it."""


def term_names(cfg: LossConfig) -> list[str]:
    """The names of the logged loss terms, in a fixed order (the CSV columns)."""
    names = ["loss"]
    single = []
    if cfg.id_weight > 0:
        single.append("id")
    if cfg.attributes:
        single.append("attr")
    if cfg.global_triplet_weight > 0 or cfg.local_triplet_weight > 0:
        single.append("tri_global")
    if cfg.local_triplet_weight > 0:
        single.append("tri_local")
    names += single
    if cfg.mutual:
        names += [f"peer_{n}" for n in single] + ["mutual_cls", "mutual_metric"]
    return names


def _triplet_terms(
    out: ReidOutput, pids: Tensor, cfg: LossConfig
) -> tuple[Tensor, Tensor | None, Tensor]:
    """(global loss, local loss or None, global distance matrix)."""
    features = out.features.float()  # [N, D]
    if cfg.local_triplet_weight > 0:
        if out.local_features is None:
            raise ValueError("loss.local_triplet_weight > 0 but the model has no local branch")
        res = aligned_triplet_loss(
            features,
            out.local_features.float(),
            pids,
            cfg.triplet_margin,
            aligned=cfg.local_aligned,
        )
        return res.global_loss, res.local_loss, res.dist
    tri = batch_hard_triplet_loss(features, pids, cfg.triplet_margin)
    return tri.loss, None, tri.dist


def model_loss(out: ReidOutput, batch: ReidBatch, cfg: LossConfig) -> ModelLoss:
    """The weighted loss of one model's training-mode output on ``batch``."""
    terms: dict[str, Tensor] = {}
    total = out.features.new_zeros((), dtype=torch.float32)
    result = ModelLoss(total=total)
    if cfg.id_weight > 0:
        if out.id_logits is None:
            raise ValueError("loss.id_weight > 0 but the model returned no identity logits")
        result.id_logits = out.id_logits.float()
        terms["id"] = identity_cross_entropy(result.id_logits, batch.pids, cfg.label_smoothing)
        total = total + cfg.id_weight * terms["id"]
    if cfg.attributes:
        if batch.attributes is None:
            raise ValueError("loss.attributes=true but the batch carries no attribute labels")
        terms["attr"] = attribute_loss([a.float() for a in out.attr_logits], batch.attributes)
        total = total + cfg.attribute_weight * terms["attr"]
    if cfg.uses_triplet:
        glob, local, result.dist = _triplet_terms(out, batch.pids, cfg)
        terms["tri_global"] = glob
        total = total + cfg.global_triplet_weight * glob
        if local is not None:
            terms["tri_local"] = local
            total = total + cfg.local_triplet_weight * local
    result.total, result.terms = total, terms
    return result


def pair_loss(
    outs: list[ReidOutput], batch: ReidBatch, cfg: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss of one model, or of two models with the mutual terms; and the logged terms."""
    first = model_loss(outs[0], batch, cfg)
    terms = dict(first.terms)
    if len(outs) == 1:
        terms["loss"] = first.total
        return first.total, terms
    peer = model_loss(outs[1], batch, cfg)
    terms.update({f"peer_{k}": v for k, v in peer.terms.items()})
    assert first.id_logits is not None and peer.id_logits is not None
    dist_a = first.dist if first.dist is not None else pairwise_euclidean(outs[0].features.float())
    dist_b = peer.dist if peer.dist is not None else pairwise_euclidean(outs[1].features.float())
    mutual = mutual_loss(
        first.id_logits,
        peer.id_logits,
        dist_a,
        dist_b,
        classification_weight=cfg.mutual_classification_weight,
        metric_weight=cfg.mutual_metric_weight,
    )
    terms["mutual_cls"], terms["mutual_metric"] = mutual.classification, mutual.metric
    total = first.total + peer.total + mutual.total
    terms["loss"] = total
    return total, terms
