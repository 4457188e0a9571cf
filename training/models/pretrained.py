"""Initial weights for a :class:`ReidModel`: torchvision ImageNet ResNets and torchreid OSNets.

Nothing is downloaded: weights come from a path the user gives, or from the caches where
torchvision (``$TORCH_HOME/hub/checkpoints``) and torchreid (``$TORCH_HOME/checkpoints``) put
the files they downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from training.models.config import OSNET_BACKBONES, RESNET_BACKBONES, ModelConfig
from training.models.osnet import OSNet
from training.models.reid_model import ReidModel
from training.models.resnet import (
    ResNet,
    find_cached_imagenet_weights,
    load_imagenet_weights,
    read_state_dict,
)

logger = logging.getLogger(__name__)


@dataclass
class PretrainedReport:
    """What a pretrained load did."""

    path: str
    """The file the weights came from."""
    loaded: int
    """Number of tensors (parameters and buffers) copied from the file."""
    classifier_kept: bool = False
    """Whether the file's identity classifier was loaded into ``model.classifier``."""
    reinitialised: list[str] = field(default_factory=list)
    """Modules of the model that keep their fresh initialisation (sorted)."""


def torchreid_cache_dir() -> Path:
    """torchreid's download cache: ``$TORCH_HOME/checkpoints`` (``~/.cache/torch/checkpoints``)."""
    return Path(torch.hub.get_dir()).parent / "checkpoints"


def find_cached_osnet_imagenet(name: str) -> Path:
    """torchreid's cached ImageNet checkpoint ``<name>_imagenet.pth``; FileNotFoundError if absent."""
    path = torchreid_cache_dir() / f"{name}_imagenet.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"no cached ImageNet weights for {name}: {path} does not exist; nothing is "
            "downloaded - put torchreid's checkpoint there or pass its path"
        )
    return path


def _fresh_modules(own: dict[str, Tensor], loaded: set[str]) -> list[str]:
    return sorted({k.rsplit(".", 1)[0] for k in own if k not in loaded})


def load_torchreid_osnet(model: ReidModel, path: str | Path) -> PretrainedReport:
    """Map a torchreid OSNet checkpoint into ``model``: ``conv*`` → ``backbone``,
    ``fc`` → ``neck.fc``, ``classifier`` → ``classifier`` when it has the same number of
    classes and the model has no BNNeck (which would change the classifier's input);
    otherwise the classifier is re-initialised (reported).

    Every backbone and ``neck.fc`` tensor must come from the file with its exact shape and
    every file tensor must land somewhere (strict), else ValueError naming the file.
    """
    if not isinstance(model.backbone, OSNet):
        raise TypeError(f"{path}: an OSNet checkpoint needs an OSNet backbone")
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    classifier_kept = False
    for key, value in read_state_dict(path).items():
        if key.startswith("classifier."):
            target = own.get(key)
            if target is not None and target.shape == value.shape and model.neck.bnneck is None:
                mapped[key], classifier_kept = value, True
        elif key.startswith("fc."):
            mapped[f"neck.{key}"] = value
        else:
            mapped[f"backbone.{key}"] = value
    _check_mapping(path, own, mapped)
    if not classifier_kept:
        logger.info("%s: identity classifier re-initialised (classes or BNNeck differ)", path)
    model.load_state_dict({**own, **mapped}, strict=True)
    report = PretrainedReport(str(path), len(mapped), classifier_kept)
    report.reinitialised = _fresh_modules(own, set(mapped))
    return report


def _check_mapping(path: str | Path, own: dict[str, Tensor], mapped: dict[str, Tensor]) -> None:
    required = [k for k in own if k.startswith(("backbone.", "neck.fc."))]
    missing = [k for k in required if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match this OSNet model (check backbone width and "
            f"embedding_dim): missing {missing[:5]} ({len(missing)}), unexpected "
            f"{unexpected[:5]} ({len(unexpected)}), shape mismatch {wrong[:3]} ({len(wrong)})"
        )


def load_resnet_imagenet(model: ReidModel, path: str | Path) -> PretrainedReport:
    """Load torchvision-format ImageNet weights into ``model.backbone`` (``fc`` ignored)."""
    if not isinstance(model.backbone, ResNet):
        raise TypeError(f"{path}: ImageNet ResNet weights need a ResNet backbone")
    load_imagenet_weights(model.backbone, path)
    own = model.state_dict()
    loaded = {k for k in own if k.startswith("backbone.")}
    return PretrainedReport(str(path), len(loaded), False, _fresh_modules(own, loaded))


def load_pretrained(model: ReidModel, cfg: ModelConfig) -> PretrainedReport | None:
    """Apply ``cfg.pretrained`` to ``model`` (see :attr:`ModelConfig.pretrained`)."""
    if not cfg.pretrained:
        return None
    if cfg.backbone in RESNET_BACKBONES:
        path = (
            find_cached_imagenet_weights(cfg.backbone)
            if cfg.pretrained == "imagenet"
            else Path(cfg.pretrained)
        )
        report = load_resnet_imagenet(model, path)
    elif cfg.backbone in OSNET_BACKBONES:
        path = (
            find_cached_osnet_imagenet(cfg.backbone)
            if cfg.pretrained == "imagenet"
            else Path(cfg.pretrained)
        )
        report = load_torchreid_osnet(model, path)
    else:  # ModelConfig validates the name; kept for exhaustiveness
        raise ValueError(f"no pretrained loader for backbone {cfg.backbone!r}")
    logger.info(
        "pretrained weights %s: %d tensors loaded, classifier kept: %s, re-initialised: %s",
        report.path,
        report.loaded,
        report.classifier_kept,
        report.reinitialised,
    )
    return report
