"""Euclidean distances and the batch-hard triplet loss (TriHard).

Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification" (2017): for each
anchor of a P×K batch, take its farthest positive and its nearest negative. AlignedReID
(Zhang et al. 2017) mines those triplets on the GLOBAL distance and reuses the same indices
for the local (aligned stripe) distance; :class:`TripletMining` carries them for that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from training.losses._checks import check_labels, check_ndim

logger = logging.getLogger(__name__)

SQUARED_DISTANCE_FLOOR = 1e-12
"""Squared distances are clamped to at least this before the square root, so that the
gradient at zero distance is 0 instead of inf/NaN (``d sqrt(u)/du`` is infinite at 0)."""

TRIHARD_MARGIN = 0.5
"""Default hinge margin of :func:`batch_hard_triplet_loss`."""


def pairwise_euclidean(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Euclidean distances between the rows of ``x [N, D]`` and ``y [M, D]`` (``y = x`` if None).

    Computed as ``sqrt(max(|x|² + |y|² − 2·x·yᵀ, 1e-12))``: one matrix product, and a
    gradient-safe square root (zero distances give a zero gradient, not NaN). Returns
    ``[N, M]`` in the dtype of ``x``.
    """
    check_ndim("x", x, 2, "[N, D]")
    other = x if y is None else y
    check_ndim("y", other, 2, "[M, D]")
    if other.shape[1] != x.shape[1]:
        raise ValueError(f"x has D={x.shape[1]} but y has D={other.shape[1]}")
    xx = x.pow(2).sum(dim=1, keepdim=True)  # [N, 1]
    yy = other.pow(2).sum(dim=1, keepdim=True).t()  # [1, M]
    squared = xx + yy - 2.0 * (x @ other.t())  # [N, M]
    return safe_sqrt(squared)


def safe_sqrt(squared: Tensor) -> Tensor:
    """``sqrt(max(squared, 1e-12))``: finite values and gradients even at (or, from rounding,
    slightly below) zero."""
    return squared.clamp(min=SQUARED_DISTANCE_FLOOR).sqrt()


@dataclass(frozen=True)
class TripletMining:
    """The triplets chosen for each anchor of a batch (index ``i`` is the anchor)."""

    positive: Tensor
    """``[N]`` int64: index of the hardest (farthest) positive of each anchor."""
    negative: Tensor
    """``[N]`` int64: index of the hardest (nearest) negative of each anchor."""
    valid: Tensor
    """``[N]`` bool: the anchor has at least one other positive and one negative;
    invalid anchors (their indices point at themselves) are left out of the loss."""


@dataclass(frozen=True)
class TripletResult:
    """What :func:`batch_hard_triplet_loss` computed, for reuse by the local and mutual losses."""

    loss: Tensor
    """Scalar: mean hinge (or soft-margin) loss over the valid anchors."""
    mining: TripletMining
    """The mined triplets, to apply to another distance (AlignedReID's local loss)."""
    dist: Tensor
    """``[N, N]`` distance matrix the triplets were mined on (with its graph)."""


def hard_example_mining(dist: Tensor, targets: Tensor) -> TripletMining:
    """Farthest positive (other than the anchor itself) and nearest negative of each row.

    ``dist [N, N]`` is the anchor-by-sample distance, ``targets [N]`` the identities.
    Mining reads detached values; no gradient flows through the choice.
    """
    check_ndim("dist", dist, 2, "[N, N]")
    n = dist.shape[0]
    if dist.shape[1] != n:
        raise ValueError(f"dist must be square [N, N], got {tuple(dist.shape)}")
    check_labels("targets", targets, n)
    d = dist.detach()
    same = targets[:, None] == targets[None, :]  # [N, N]
    positive_mask = same & ~torch.eye(n, dtype=torch.bool, device=dist.device)
    negative_mask = ~same
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    positive = torch.where(positive_mask, d, -inf).argmax(dim=1)
    negative = torch.where(negative_mask, d, inf).argmin(dim=1)
    valid = positive_mask.any(dim=1) & negative_mask.any(dim=1)
    own = torch.arange(n, device=dist.device)
    return TripletMining(
        positive=torch.where(valid, positive, own),
        negative=torch.where(valid, negative, own),
        valid=valid,
    )


def triplet_loss_from_distances(
    dist_ap: Tensor,
    dist_an: Tensor,
    valid: Tensor,
    margin: float = TRIHARD_MARGIN,
    soft_margin: bool = False,
) -> Tensor:
    """Mean of ``max(0, d_ap − d_an + margin)`` (or ``log(1 + exp(d_ap − d_an))`` when
    ``soft_margin``) over the anchors where ``valid``; 0 with a zero gradient if none is."""
    gap = dist_ap - dist_an
    per_anchor = F.softplus(gap) if soft_margin else F.relu(gap + margin)
    per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
    return per_anchor.sum() / valid.sum().clamp(min=1).to(per_anchor.dtype)


def triplet_loss_from_mining(
    dist: Tensor, mining: TripletMining, margin: float = TRIHARD_MARGIN, soft_margin: bool = False
) -> Tensor:
    """Triplet loss on ``dist [N, N]`` for triplets already mined (perhaps on another distance)."""
    dist_ap = dist.gather(1, mining.positive[:, None]).squeeze(1)  # [N]
    dist_an = dist.gather(1, mining.negative[:, None]).squeeze(1)  # [N]
    return triplet_loss_from_distances(dist_ap, dist_an, mining.valid, margin, soft_margin)


def batch_hard_triplet_loss(
    features: Tensor,
    targets: Tensor,
    margin: float = TRIHARD_MARGIN,
    soft_margin: bool = False,
) -> TripletResult:
    """TriHard loss of ``features [N, D]`` with identities ``targets [N]``.

    Distances are Euclidean (:func:`pairwise_euclidean`); the returned
    :class:`TripletResult` carries the mined indices and the distance matrix.
    """
    check_ndim("features", features, 2, "[N, D]")
    dist = pairwise_euclidean(features)  # [N, N]
    mining = hard_example_mining(dist, targets)
    if not bool(mining.valid.any()):
        logger.warning(
            "no anchor of this batch of %d has both a positive and a negative: "
            "the triplet loss is 0 (is the sampler P×K with K ≥ 2 and P ≥ 2?)",
            features.shape[0],
        )
    loss = triplet_loss_from_mining(dist, mining, margin, soft_margin)
    return TripletResult(loss=loss, mining=mining, dist=dist)
