"""Classification losses: identity cross-entropy (optionally label-smoothed), per-attribute
cross-entropy with unknown labels, and APR's weighted sum of the two.

APR (Lin et al., "Improving Person Re-identification by Attribute and Identity Learning",
2017) trains one identity classifier and M attribute classifiers on a shared embedding with
``L = λ·L_id + (1/M)·Σ_m L_att,m`` and λ = 8.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from training.losses._checks import check_labels, check_ndim

logger = logging.getLogger(__name__)

APR_ID_WEIGHT = 8.0
"""λ of the APR paper: the weight of the identity loss against the mean attribute loss."""

UNKNOWN = -1
"""Attribute target value meaning "not annotated": ignored by :func:`attribute_cross_entropies`."""


def identity_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits [N, K]`` against class indices ``targets [N]``.

    With ``label_smoothing = ε`` the target distribution is ``(1 − ε)·onehot + ε/K``
    (Szegedy et al. 2016, the form used by fast-reid and torchreid); ``ε = 0`` is plain
    cross-entropy. Returns a scalar.
    """
    check_ndim("identity logits", logits, 2, "[N, K]")
    check_labels("identity targets", targets, logits.shape[0])
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    num_classes = logits.shape[1]
    _check_class_range("identity targets", targets, num_classes)
    return F.cross_entropy(logits, targets.long(), label_smoothing=label_smoothing)


def attribute_cross_entropies(
    attr_logits: Sequence[Tensor], targets: Tensor, ignore_index: int = UNKNOWN
) -> Tensor:
    """Cross-entropy of each attribute classifier, averaged over the samples that have a label.

    ``attr_logits[m]`` is ``[N, C_m]``; ``targets`` is ``[N, M]`` integer class indices
    (0-based), ``ignore_index`` where unknown. Returns ``[M]``: an attribute with no known
    target in the batch contributes exactly 0 (with a zero gradient), never NaN.
    """
    check_ndim("attribute targets", targets, 2, "[N, M]")
    n, m = targets.shape
    if len(attr_logits) != m:
        raise ValueError(
            f"got {len(attr_logits)} attribute logit tensors but attribute targets have M={m} columns"
        )
    losses = [
        _one_attribute_cross_entropy(f"attribute {j}", logits, targets[:, j], ignore_index, n)
        for j, logits in enumerate(attr_logits)
    ]
    if not losses:
        return targets.new_zeros((0,), dtype=torch.float32)
    return torch.stack(losses)


def attribute_loss(
    attr_logits: Sequence[Tensor], targets: Tensor, ignore_index: int = UNKNOWN
) -> Tensor:
    """APR's attribute term ``(1/M)·Σ_m L_att,m`` (attributes without labels count as 0)."""
    if len(attr_logits) == 0:
        raise ValueError("attribute_loss needs at least one attribute classifier, got none")
    return attribute_cross_entropies(attr_logits, targets, ignore_index).mean()


@dataclass(frozen=True)
class APRLoss:
    """The APR objective and its parts (all tensors, the parts for logging)."""

    total: Tensor
    """``id_weight · identity + attributes.mean()``: the scalar to back-propagate."""
    identity: Tensor
    """Identity cross-entropy (scalar, unweighted)."""
    attributes: Tensor
    """Per-attribute cross-entropies ``[M]``."""


def apr_loss(
    id_logits: Tensor,
    id_targets: Tensor,
    attr_logits: Sequence[Tensor],
    attr_targets: Tensor,
    id_weight: float = APR_ID_WEIGHT,
    label_smoothing: float = 0.0,
    ignore_index: int = UNKNOWN,
) -> APRLoss:
    """APR's total loss ``λ·L_id + (1/M)·Σ_m L_att,m`` (λ = ``id_weight``, 8 in the paper)."""
    identity = identity_cross_entropy(id_logits, id_targets, label_smoothing)
    attributes = attribute_cross_entropies(attr_logits, attr_targets, ignore_index)
    if attributes.numel() == 0:
        raise ValueError("apr_loss needs at least one attribute classifier, got none")
    total = id_weight * identity + attributes.mean()
    return APRLoss(total=total, identity=identity, attributes=attributes)


def _one_attribute_cross_entropy(
    name: str, logits: Tensor, target: Tensor, ignore_index: int, n: int
) -> Tensor:
    """Cross-entropy of one attribute over its known samples; 0 when none is known."""
    check_ndim(f"{name} logits", logits, 2, "[N, C]")
    if logits.shape[0] != n:
        raise ValueError(f"{name} logits have {logits.shape[0]} rows, targets have {n}")
    known = target != ignore_index
    safe_target = torch.where(known, target, torch.zeros_like(target)).long()
    _check_class_range(f"{name} targets", safe_target, logits.shape[1])
    per_sample = F.cross_entropy(logits, safe_target, reduction="none")  # [N]
    weights = known.to(per_sample.dtype)
    # Unknown samples get weight 0 (the where keeps NaN/inf from a dummy target out);
    # the clamp turns 0/0 into 0/1 when no sample of the batch has this attribute.
    summed = torch.where(known, per_sample, torch.zeros_like(per_sample)).sum()
    return summed / weights.sum().clamp(min=1.0)


def _check_class_range(name: str, targets: Tensor, num_classes: int) -> None:
    """Raise unless every entry of ``targets`` lies in ``[0, num_classes)``."""
    if targets.numel() == 0:
        return
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got values in [{lo}, {hi}]"
        )
