"""``ModelConfig``: one dataclass describing every model of the family, and named presets.

APR, AlignedReID, APR+AlignedReID, global-only and "global + unaligned stripes" are
configurations of one model (:class:`training.models.reid_model.ReidModel`): they differ in
which heads exist (``use_attributes``, ``use_local``) and, for the last two, only in the loss
applied to the same local features (aligned shortest-path distance vs stripe-to-stripe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from training.models.heads import POOLS

RESNET_BACKBONES = ("resnet18", "resnet50")
OSNET_BACKBONES = ("osnet_x0_25", "osnet_x1_0")
BACKBONES = RESNET_BACKBONES + OSNET_BACKBONES
"""Valid values of :attr:`ModelConfig.backbone`."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one re-ID model (identity classes and attributes come from the data)."""

    backbone: str = "resnet50"
    """One of ``BACKBONES``: ``resnet18``, ``resnet50``, ``osnet_x0_25``, ``osnet_x1_0``."""
    last_stride: int = 2
    """ResNet only: stride of ``layer4`` (2 as ImageNet-ResNet and both papers; 1 doubles the
    final feature map, the "bag of tricks" setting). OSNet never strides its last stage and
    accepts only the default 2."""
    pretrained: str = ""
    """Initial weights: ``""`` random; ``"imagenet"`` the cached ImageNet checkpoint
    (torchvision's ``$TORCH_HOME/hub/checkpoints/resnet50-*.pth`` or torchreid's
    ``$TORCH_HOME/checkpoints/osnet_x1_0_imagenet.pth``; nothing is downloaded); otherwise a
    file path: a torchvision-format ResNet state dict, or a torchreid OSNet checkpoint."""
    embedding_dim: int | None = None
    """Width of an ``fc`` (Linear → BN → ReLU) after global pooling. ``None``: the backbone's
    own default (ResNet: none, the embedding is the 2048-d pool5 as in APR and AlignedReID;
    OSNet: 512 as torchreid). ``0``: none."""
    global_pool: str = "avg"
    """Global pooling of the final feature map: ``avg`` or ``max``."""
    bnneck: bool = False
    """Add a BatchNorm1d (no learnt shift) between the feature and the classifiers; the
    inference embedding is then the normalised feature (Luo et al., "bag of tricks")."""
    dropout: float = 0.0
    """Dropout before the identity and attribute classifiers (training only). APR
    (arXiv 1703.07220v1 Sec. 4.1, Baseline 1, kept for the APR network): 0.9."""
    use_attributes: bool = False
    """Add one softmax classifier per attribute of the schema (APR)."""
    use_local: bool = False
    """Add AlignedReID's local branch: one ``local_dim`` feature per feature-map row."""
    local_dim: int = 128
    """Channels of each local (stripe) feature; AlignedReID uses 128."""
    local_pool: str = "max"
    """Pooling of each feature-map row in the local branch: ``max`` (the AlignedReID paper's
    horizontal max pooling) or ``avg`` (the common re-implementation)."""
    local_normalise: bool = False
    """L2-normalise each stripe feature inside the local branch. The paper does not (arXiv
    1711.08184v2 Sec. 3.1 normalises the stripe *distance* with ``tanh``); training, export
    and serving all see the branch's output, so they agree either way."""

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; valid: {list(BACKBONES)}")
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if self.backbone in OSNET_BACKBONES and self.last_stride != 2:
            raise ValueError(
                f"last_stride={self.last_stride} applies to ResNet backbones only; "
                f"{self.backbone} never strides its last stage (leave last_stride at 2)"
            )
        if self.embedding_dim is not None and self.embedding_dim < 0:
            raise ValueError(f"embedding_dim must be >= 0 or None, got {self.embedding_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.local_dim <= 0:
            raise ValueError(f"local_dim must be positive, got {self.local_dim}")
        for name in ("global_pool", "local_pool"):
            if getattr(self, name) not in POOLS:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {list(POOLS)}")

    @property
    def resolved_embedding_dim(self) -> int:
        """``embedding_dim`` with ``None`` resolved to the backbone default (0 = no fc)."""
        if self.embedding_dim is not None:
            return self.embedding_dim
        return 512 if self.backbone in OSNET_BACKBONES else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Build from a mapping (YAML, checkpoint); unknown keys raise naming the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid: {valid}")
        return cls(**dict(d))


PRESETS: dict[str, ModelConfig] = {
    "global": ModelConfig(),
    "apr": ModelConfig(use_attributes=True, dropout=0.9),
    "alignedreid": ModelConfig(use_local=True),
    "apr_alignedreid": ModelConfig(use_attributes=True, dropout=0.5, use_local=True),
    "global_stripes": ModelConfig(use_local=True),
}
"""Paper configurations on ResNet-50. ``global_stripes`` has the same architecture as
``alignedreid``: the ablation differs only in the local loss (stripes compared in order)."""


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The preset ``name`` with fields replaced by ``overrides`` (e.g. ``backbone=...``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
