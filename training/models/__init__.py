"""The model family: ResNet / OSNet backbones, heads, and APR / AlignedReID configurations.

Typical use::

    cfg = preset("apr_alignedreid", backbone="resnet50", pretrained="imagenet")
    model = build_model(cfg, num_classes=651, schema=schema)
    out = model(images)            # ReidOutput
    served = InferenceWrapper(model, include_local=True)  # fixed outputs for ONNX
"""

from training.models.build import build_backbone, build_model
from training.models.config import BACKBONES, PRESETS, ModelConfig, preset
from training.models.osnet import OSNet, osnet, osnet_x0_25, osnet_x1_0
from training.models.pretrained import (
    PretrainedReport,
    load_pretrained,
    load_resnet_imagenet,
    load_torchreid_osnet,
)
from training.models.reid_model import InferenceWrapper, ReidModel, ReidOutput
from training.models.resnet import ResNet, load_imagenet_weights, resnet18, resnet50

__all__ = [
    "BACKBONES",
    "PRESETS",
    "InferenceWrapper",
    "ModelConfig",
    "OSNet",
    "PretrainedReport",
    "ReidModel",
    "ReidOutput",
    "ResNet",
    "build_backbone",
    "build_model",
    "load_imagenet_weights",
    "load_pretrained",
    "load_resnet_imagenet",
    "load_torchreid_osnet",
    "osnet",
    "osnet_x0_25",
    "osnet_x1_0",
    "preset",
    "resnet18",
    "resnet50",
]
