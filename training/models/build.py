"""``build_model(cfg, num_classes, schema)``: a :class:`ReidModel` from a :class:`ModelConfig`."""

from __future__ import annotations

import logging

from torch import nn

from reidcore.attributes import AttributeSchema
from training.models.config import BACKBONES, ModelConfig
from training.models.osnet import osnet
from training.models.pretrained import load_pretrained
from training.models.reid_model import ReidModel
from training.models.resnet import resnet18, resnet50

logger = logging.getLogger(__name__)


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The feature-map backbone named by ``cfg.backbone``, without classifier or fc."""
    match cfg.backbone:
        case "resnet18":
            return resnet18(num_classes=None, last_stride=cfg.last_stride)
        case "resnet50":
            return resnet50(num_classes=None, last_stride=cfg.last_stride)
        case "osnet_x0_25" | "osnet_x1_0":
            return osnet(cfg.backbone, num_classes=None, feature_dim=0)
        case _:
            raise ValueError(f"unknown backbone {cfg.backbone!r}; valid: {list(BACKBONES)}")


def build_model(
    cfg: ModelConfig, num_classes: int, schema: AttributeSchema | None = None
) -> ReidModel:
    """The model ``cfg`` describes, with ``num_classes`` identities (0: no identity head) and,
    when ``cfg.use_attributes``, one softmax head per attribute of ``schema``.

    Pretrained weights (``cfg.pretrained``) are loaded here; what was loaded is logged.
    """
    if cfg.use_attributes and (schema is None or len(schema) == 0):
        raise ValueError("use_attributes=True needs a non-empty attribute schema")
    if not cfg.use_attributes and schema is not None and len(schema):
        logger.debug("use_attributes=False: ignoring the %d-attribute schema", len(schema))
    model = ReidModel(
        build_backbone(cfg),
        num_classes=num_classes,
        schema=schema if cfg.use_attributes else None,
        embedding_dim=cfg.resolved_embedding_dim,
        global_pool=cfg.global_pool,
        bnneck=cfg.bnneck,
        dropout=cfg.dropout,
        use_local=cfg.use_local,
        local_dim=cfg.local_dim,
        local_pool=cfg.local_pool,
        local_normalise=cfg.local_normalise,
    )
    load_pretrained(model, cfg)
    return model
