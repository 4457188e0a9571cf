"""Heads on top of a backbone feature map: global pooling + embedding neck, attribute
classifiers and the AlignedReID local branch. Each takes plain keyword arguments."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor, nn

logger = logging.getLogger(__name__)

POOLS = ("avg", "max")
"""Valid pooling modes for the global feature and the local stripes."""


def _check_pool(mode: str, what: str) -> None:
    if mode not in POOLS:
        raise ValueError(f"unknown {what} {mode!r}; valid: {list(POOLS)}")


def global_pool(fmap: Tensor, mode: str) -> Tensor:
    """Feature map [N, C, H, W] -> [N, C] by average or max pooling over H and W."""
    if mode == "avg":
        return fmap.mean(dim=(2, 3))
    return fmap.amax(dim=(2, 3))


class EmbeddingNeck(nn.Module):
    """Pooled feature -> optional ``fc`` (Linear → BN1d → ReLU) -> optional BNNeck.

    ``forward`` returns ``(features, neck_features)`` [N, D] each: ``features`` feed the metric
    (triplet) losses; ``neck_features`` = BNNeck(features) with BNNeck (Luo et al.'s "bag of
    tricks": BN without a learnt shift, classifiers read the normalised feature), else the
    same tensor as ``features``.
    """

    def __init__(self, in_dim: int, embedding_dim: int = 0, bnneck: bool = False) -> None:
        super().__init__()
        self.fc: nn.Sequential | None = None
        if embedding_dim > 0:  # keys fc.0 / fc.1 as torchreid's OSNet
            self.fc = nn.Sequential(
                nn.Linear(in_dim, embedding_dim),
                nn.BatchNorm1d(embedding_dim),
                nn.ReLU(inplace=True),
            )
        self.out_dim = embedding_dim if embedding_dim > 0 else in_dim
        self.bnneck: nn.BatchNorm1d | None = None
        if bnneck:
            self.bnneck = nn.BatchNorm1d(self.out_dim)
            self.bnneck.bias.requires_grad_(False)  # no shift, as in BoT
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear N(0, 0.01) with zero bias; BN weight 1, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        features = pooled if self.fc is None else self.fc(pooled)  # [N, D]
        neck = features if self.bnneck is None else self.bnneck(features)  # [N, D]
        return features, neck


class AttributeHeads(nn.Module):
    """One linear softmax classifier per attribute: [N, D] -> list of [N, K_a] logits."""

    def __init__(self, in_dim: int, num_classes: Sequence[int]) -> None:
        super().__init__()
        if any(k < 2 for k in num_classes):
            raise ValueError(f"every attribute needs at least 2 classes, got {list(num_classes)}")
        self.heads = nn.ModuleList(nn.Linear(in_dim, k) for k in num_classes)
        for head in self.heads:
            assert isinstance(head, nn.Linear)
            nn.init.normal_(head.weight, 0.0, 0.001)
            nn.init.zeros_(head.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [head(x) for head in self.heads]


class LocalBranch(nn.Module):
    """AlignedReID's local branch: one feature per horizontal stripe (row of the feature map).

    [N, C, H, W] -> pool each row over W -> [N, C, H, 1] -> 1×1 conv to ``local_dim``
    -> BN -> ReLU -> [N, H, local_dim], each stripe L2-normalised when ``normalise`` (not
    in the paper). The paper pools each row with max pooling
    ("horizontal max pooling"); ``pool="avg"`` is the common re-implementation's choice.
    """

    def __init__(
        self, in_ch: int, local_dim: int = 128, pool: str = "max", normalise: bool = False
    ) -> None:
        super().__init__()
        self.normalise = normalise
        _check_pool(pool, "local pooling")
        if local_dim <= 0:
            raise ValueError(f"local_dim must be positive, got {local_dim}")
        self.pool = pool
        self.conv = nn.Conv2d(in_ch, local_dim, kernel_size=1)
        self.bn = nn.BatchNorm2d(local_dim)
        self.relu = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, fmap: Tensor) -> Tensor:
        if self.pool == "avg":
            rows = fmap.mean(dim=3, keepdim=True)  # [N, C, H, 1]
        else:
            rows = fmap.amax(dim=3, keepdim=True)  # [N, C, H, 1]
        local = self.relu(self.bn(self.conv(rows)))  # [N, c, H, 1]
        local = local.squeeze(3).transpose(1, 2)  # [N, H, c]
        return nn.functional.normalize(local, p=2.0, dim=2) if self.normalise else local
