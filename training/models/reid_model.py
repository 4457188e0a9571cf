"""The re-ID model family: backbone → global embedding → identity / attribute classifiers,
plus AlignedReID's local branch; and the fixed-output wrapper that export turns into ONNX.

Training mode returns everything the losses need; eval mode returns what export serves:

============== =========================================== ===================================
field          training                                    eval
============== =========================================== ===================================
features       [N, D] pooled (+fc) feature: triplet input  same
embedding      [N, D] inference feature (see below)        same
id_logits      [N, num_classes] (None without classes)     None (not served)
attr_logits    list of [N, K_a], one per attribute         same
attr_probs     None                                        list of softmax(attr_logits)
local_features [N, H, c] or None                           same
============== =========================================== ===================================

``embedding`` is the feature each paper retrieves with: APR's pool5, AlignedReID's global
feature, i.e. ``features``; with BNNeck the BN-normalised feature. It is **not**
L2-normalised here (losses want the raw feature); :class:`InferenceWrapper` normalises it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reidcore.attributes import AttributeSchema
from training.models.heads import AttributeHeads, EmbeddingNeck, LocalBranch, global_pool

logger = logging.getLogger(__name__)


@dataclass
class ReidOutput:
    """What :class:`ReidModel` returns (shapes for a batch of N images)."""

    features: Tensor
    """[N, D] global feature after pooling (and the optional fc), before BNNeck."""
    embedding: Tensor
    """[N, D] inference feature: ``features``, or BNNeck(features); not L2-normalised."""
    id_logits: Tensor | None
    """[N, num_classes] identity logits; training mode only."""
    attr_logits: list[Tensor]
    """One [N, K_a] logit tensor per schema attribute, in schema order (empty without)."""
    attr_probs: list[Tensor] | None
    """Softmax of ``attr_logits`` per attribute; eval mode only."""
    local_features: Tensor | None
    """[N, H, local_dim] one feature per feature-map row (AlignedReID), or None."""


class ReidModel(nn.Module):
    """Backbone + heads. ``backbone`` must provide ``forward_features`` and ``out_channels``.

    Submodule names: ``backbone``, ``neck`` (``neck.fc.0/1``, ``neck.bnneck``),
    ``classifier`` (identity, a plain Linear), ``attr_heads.heads.{i}``, ``local_branch``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        schema: AttributeSchema | None = None,
        embedding_dim: int = 0,
        global_pool: str = "avg",
        bnneck: bool = False,
        dropout: float = 0.0,
        use_local: bool = False,
        local_dim: int = 128,
        local_pool: str = "max",
        local_normalise: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        in_ch = int(getattr(backbone, "out_channels", 0))
        if in_ch <= 0 or not hasattr(backbone, "forward_features"):
            raise TypeError(f"{type(backbone).__name__} lacks forward_features/out_channels")
        self.backbone = backbone
        self.global_pool = global_pool
        self.schema = schema if schema is not None else AttributeSchema.empty()
        self.neck = EmbeddingNeck(in_ch, embedding_dim, bnneck)
        self.embedding_dim = self.neck.out_dim
        self.dropout = nn.Dropout(dropout)
        self.classifier: nn.Linear | None = None
        if num_classes > 0:
            self.classifier = nn.Linear(self.embedding_dim, num_classes)
            nn.init.normal_(self.classifier.weight, 0.0, 0.001)
            nn.init.zeros_(self.classifier.bias)
        self.attr_heads: AttributeHeads | None = None
        if len(self.schema):
            self.attr_heads = AttributeHeads(self.embedding_dim, self.schema.num_classes)
        self.local_normalise = local_normalise
        """Stripe features are unit vectors (the local branch normalises them)."""
        self.local_branch = (
            LocalBranch(in_ch, local_dim, local_pool, local_normalise) if use_local else None
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """Images [N, 3, H, W] -> backbone feature map [N, C, h, w]."""
        fmap: Tensor = self.backbone.forward_features(x)  # type: ignore[operator]
        return fmap

    def forward_head(self, fmap: Tensor) -> ReidOutput:
        """Feature map [N, C, h, w] -> :class:`ReidOutput` (contents depend on the mode)."""
        features, neck = self.neck(global_pool(fmap, self.global_pool))  # [N, D] each
        cls_in = self.dropout(neck)  # [N, D]
        id_logits = None
        if self.training and self.classifier is not None:
            id_logits = self.classifier(cls_in)  # [N, num_classes]
        attr_logits = self.attr_heads(cls_in) if self.attr_heads is not None else []
        attr_probs = None if self.training else [torch.softmax(a, dim=1) for a in attr_logits]
        local = self.local_branch(fmap) if self.local_branch is not None else None
        return ReidOutput(
            features=features,
            embedding=neck,
            id_logits=id_logits,
            attr_logits=attr_logits,
            attr_probs=attr_probs,
            local_features=local,  # [N, h, c]
        )

    def forward(self, x: Tensor) -> ReidOutput:
        return self.forward_head(self.forward_features(x))


class InferenceWrapper(nn.Module):
    """Fixed, named outputs for ONNX export, in :attr:`output_names` order:

    - ``embedding`` [N, D]: the inference embedding, L2-normalised (unit length);
    - ``attr_<name>`` [N, K_a]: softmax probabilities, one per schema attribute, schema order;
    - ``local`` [N, H, c] (only with ``include_local``): the stripe features exactly as the
      local branch gives them in training (L2-normalised only with ``local_normalise``), so
      that the served local distance is the trained one.

    The wrapper is always in eval mode (``.train()`` is a no-op), so its outputs never change.
    """

    def __init__(self, model: ReidModel, include_local: bool = False) -> None:
        super().__init__()
        if include_local and model.local_branch is None:
            raise ValueError("include_local=True but the model has no local branch (use_local)")
        self.model = model.eval()
        self.include_local = include_local
        self.eval()

    def train(self, mode: bool = True) -> InferenceWrapper:
        """Stay in eval mode whatever ``mode`` says: the outputs are those that export serves."""
        return super().train(False)

    @property
    def output_names(self) -> list[str]:
        names = ["embedding"] + [f"attr_{n}" for n in self.model.schema.names]
        return names + (["local"] if self.include_local else [])

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        emb = nn.functional.normalize(out.embedding, p=2.0, dim=1)  # [N, D]
        outputs = [emb, *(out.attr_probs or [])]  # [N, D], then [N, K_a] each
        if self.include_local:
            assert out.local_features is not None
            outputs.append(out.local_features)  # [N, H, c], as trained
        return tuple(outputs)
