"""AlignedReID's local (stripe) distance: the shortest path through a stripe-distance matrix.

An image gives ``H`` horizontal stripe features ``[H, c]``. For images ``f`` and ``g`` the
distance of stripes ``i`` and ``j`` is normalised to [0, 1):

    d_ij = (exp(‖f_i − g_j‖) − 1) / (exp(‖f_i − g_j‖) + 1) = tanh(‖f_i − g_j‖ / 2)

(the tanh form is the same number and cannot overflow). The local distance is the total of
the shortest path from (1, 1) to (H, H) moving only down or right, which aligns body parts
of two misaligned crops (Zhang et al., "AlignedReID", 2017). The "unaligned" ablation sums
``d_ii`` over same-index stripes instead.

The dynamic programme runs over anti-diagonals (2H − 1 Python steps); each step is batched
over every pair of the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from training.losses._checks import check_ndim
from training.losses.triplet import (
    TRIHARD_MARGIN,
    TripletMining,
    batch_hard_triplet_loss,
    pairwise_euclidean,
    safe_sqrt,
    triplet_loss_from_distances,
)

logger = logging.getLogger(__name__)


def normalised_stripe_distance(euclidean: Tensor) -> Tensor:
    """``(e^δ − 1)/(e^δ + 1)`` of a Euclidean distance δ, computed as ``tanh(δ/2)``."""
    return torch.tanh(euclidean / 2.0)


def shortest_path(stripe_dist: Tensor) -> Tensor:
    """Length of the shortest monotone path through ``stripe_dist [..., H, W]``.

    The path starts at ``[0, 0]``, ends at ``[H-1, W-1]`` and moves one step down or right
    at a time; its length is the sum of the entries it visits. Returns ``[...]``.
    """
    if stripe_dist.dim() < 2:
        raise ValueError(f"stripe_dist must have shape [..., H, W], got {tuple(stripe_dist.shape)}")
    h, w = stripe_dist.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"stripe_dist needs at least one stripe, got {h}×{w}")
    rows = torch.arange(h, device=stripe_dist.device)
    inf = torch.tensor(float("inf"), dtype=stripe_dist.dtype, device=stripe_dist.device)
    # best[..., i] is the shortest path to cell (i, k − i) of anti-diagonal k; inf off-grid.
    best = torch.where(rows == 0, stripe_dist[..., :, 0], inf)  # k = 0: only cell (0, 0)
    for k in range(1, h + w - 1):
        cols = k - rows
        on_grid = (cols >= 0) & (cols < w)
        cells = stripe_dist[..., rows, cols.clamp(0, w - 1)]  # [..., H]
        cells = torch.where(on_grid, cells, inf)
        from_left = best  # cell (i, k − 1 − i)
        from_above = torch.cat(
            [best.new_full(best.shape[:-1] + (1,), float("inf")), best[..., :-1]], -1
        )
        best = cells + torch.minimum(from_left, from_above)
    return best[..., h - 1]


def stripe_distance_matrix(x: Tensor, y: Tensor) -> Tensor:
    """Normalised distances of every stripe of every ``x`` to every stripe of every ``y``.

    ``x [N, H, c]``, ``y [M, W, c]`` → ``[N, M, H, W]``.
    """
    _check_local("x", x)
    _check_local("y", y)
    if x.shape[2] != y.shape[2]:
        raise ValueError(f"x has c={x.shape[2]} channels per stripe but y has c={y.shape[2]}")
    n, h, c = x.shape
    m, w, _ = y.shape
    euclid = pairwise_euclidean(x.reshape(n * h, c), y.reshape(m * w, c))  # [N*H, M*W]
    euclid = euclid.reshape(n, h, m, w).permute(0, 2, 1, 3)  # [N, M, H, W]
    return normalised_stripe_distance(euclid)


def stripe_distance_paired(x: Tensor, y: Tensor) -> Tensor:
    """Normalised stripe distances within each pair ``(x[k], y[k])``: ``[N, H, W]``."""
    _check_local("x", x)
    _check_local("y", y)
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"paired local features need the same N and c, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    xx = x.pow(2).sum(dim=2, keepdim=True)  # [N, H, 1]
    yy = y.pow(2).sum(dim=2, keepdim=True).transpose(1, 2)  # [N, 1, W]
    squared = xx + yy - 2.0 * torch.bmm(x, y.transpose(1, 2))  # [N, H, W]
    return normalised_stripe_distance(safe_sqrt(squared))


def local_distance_matrix(x: Tensor, y: Tensor, chunk_rows: int | None = None) -> Tensor:
    """Aligned local distance of every ``x [N, H, c]`` to every ``y [M, H, c]``: ``[N, M]``.

    The stripe distances take ``N·M·H²`` numbers; for a large gallery pass ``chunk_rows`` to
    process that many rows of ``x`` at a time (same result, bounded memory).
    """
    if chunk_rows is None or chunk_rows >= x.shape[0]:
        return shortest_path(stripe_distance_matrix(x, y))
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    parts = [
        shortest_path(stripe_distance_matrix(x[start : start + chunk_rows], y))
        for start in range(0, x.shape[0], chunk_rows)
    ]
    return torch.cat(parts, dim=0)


def local_distance_paired(x: Tensor, y: Tensor) -> Tensor:
    """Aligned local distance of ``x[k]`` to ``y[k]`` for each ``k``: ``[N]``."""
    return shortest_path(stripe_distance_paired(x, y))


def unaligned_distance_matrix(x: Tensor, y: Tensor) -> Tensor:
    """Ablation: ``Σ_h d(x_h, y_h)`` over same-index stripes, every ``x`` to every ``y``: ``[N, M]``."""
    _check_same_stripes(x, y)
    return stripe_distance_matrix(x, y).diagonal(dim1=2, dim2=3).sum(dim=-1)


def unaligned_distance_paired(x: Tensor, y: Tensor) -> Tensor:
    """Ablation: ``Σ_h d(x[k]_h, y[k]_h)`` for each pair ``k``: ``[N]``."""
    _check_same_stripes(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"paired local features need the same N, got {x.shape[0]} and {y.shape[0]}"
        )
    diff = (x - y).pow(2).sum(dim=2)  # [N, H]
    return normalised_stripe_distance(safe_sqrt(diff)).sum(dim=1)


def local_triplet_loss(
    local_features: Tensor,
    mining: TripletMining,
    margin: float = TRIHARD_MARGIN,
    soft_margin: bool = False,
    aligned: bool = True,
) -> Tensor:
    """Triplet loss on the local distance for triplets mined elsewhere (AlignedReID: global).

    ``local_features [N, H, c]``; only the ``2N`` anchor-positive and anchor-negative pairs are
    computed. ``aligned=False`` uses the unaligned same-index distance (ablation).
    """
    _check_local("local_features", local_features)
    distance = local_distance_paired if aligned else unaligned_distance_paired
    dist_ap = distance(local_features, local_features[mining.positive])  # [N]
    dist_an = distance(local_features, local_features[mining.negative])  # [N]
    return triplet_loss_from_distances(dist_ap, dist_an, mining.valid, margin, soft_margin)


@dataclass(frozen=True)
class AlignedTripletLoss:
    """AlignedReID's metric losses: TriHard on the global distance, and the local distance
    on the same (globally mined) triplets."""

    global_loss: Tensor
    """Scalar TriHard loss on the global features."""
    local_loss: Tensor
    """Scalar triplet loss on the local distance for the globally mined triplets."""
    mining: TripletMining
    """The triplets, mined on the global distance."""
    dist: Tensor
    """``[N, N]`` global distance matrix (input of the metric mutual loss)."""


def aligned_triplet_loss(
    features: Tensor,
    local_features: Tensor,
    targets: Tensor,
    margin: float = TRIHARD_MARGIN,
    soft_margin: bool = False,
    aligned: bool = True,
) -> AlignedTripletLoss:
    """Global TriHard on ``features [N, D]`` and local triplet loss on ``local_features [N, H, c]``,
    both on the triplets mined on the global distance (the AlignedReID recipe)."""
    if local_features.shape[0] != features.shape[0]:
        raise ValueError(
            f"features have N={features.shape[0]} but local_features have N={local_features.shape[0]}"
        )
    result = batch_hard_triplet_loss(features, targets, margin, soft_margin)
    local = local_triplet_loss(local_features, result.mining, margin, soft_margin, aligned)
    return AlignedTripletLoss(
        global_loss=result.loss, local_loss=local, mining=result.mining, dist=result.dist
    )


def _check_local(name: str, t: Tensor) -> None:
    check_ndim(name, t, 3, "[N, H, c]")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has no stripes: shape {tuple(t.shape)}")


def _check_same_stripes(x: Tensor, y: Tensor) -> None:
    _check_local("x", x)
    _check_local("y", y)
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"the unaligned distance needs the same [H, c] on both sides, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
