"""Read a checkpoint for export: a trainer checkpoint (``reid-checkpoint/1``) or a torchreid
OSNet state dict, into a :class:`LoadedCheckpoint` (model in eval mode + what the manifest
needs: preprocessing, attribute schema, dataset, metrics).

Trainer checkpoints are the dict that ``torch.save`` wrote::

    {"format": "reid-checkpoint/1", "model": state_dict, "model_config": dict,
     "num_classes": int, "attribute_schema": AttributeSchema.to_dict(),
     "preprocess": PreprocessConfig.to_dict(), "dataset": str, "metrics": dict, ...}

The trainer's ``training.checkpoint.load_checkpoint_for_inference`` reads them when it is
installed; otherwise a tolerant reader here parses the same dict. A torchreid OSNet file (a plain
state dict with keys ``conv1.conv.weight`` ... ``fc.0.weight``, ``classifier.weight``) is
recognised by its keys and exported identity-only (no attributes), at torchreid's 256x128
ImageNet-normalised RGB input.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import PreprocessConfig
from training.models import ModelConfig, ReidModel, build_model, load_torchreid_osnet

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "reid-checkpoint/1"
"""The ``format`` value of trainer checkpoints this reader understands."""

OSNET_WIDTHS: dict[int, str] = {16: "osnet_x0_25", 64: "osnet_x1_0"}
"""Output channels of torchreid's ``conv1.conv`` -> backbone name."""

_OSNET_KEYS = ("conv1.conv.weight", "conv2.0.conv1.conv.weight", "fc.0.weight")


class CheckpointError(ValueError):
    """The file is not a checkpoint export can read; the message names the file and why."""


@dataclass
class LoadedCheckpoint:
    """A model ready for export and the facts the manifest records about it."""

    model: ReidModel
    """The model, in eval mode, weights loaded."""
    preprocess: PreprocessConfig
    """Input preprocessing the model was trained (and is evaluated) with."""
    schema: AttributeSchema
    """Attribute schema of the model's heads (empty: identity-only)."""
    dataset: str = ""
    """Training dataset name."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Numeric metrics measured at training time."""
    source: str = ""
    """``reid-checkpoint/1`` or ``torchreid-osnet``."""


def load_for_export(path: str | Path) -> LoadedCheckpoint:
    """Read ``path`` (trainer checkpoint or torchreid OSNet weights) into a model in eval mode.

    Raises :class:`CheckpointError` naming the file when it is neither.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling / zip errors: say which file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        loaded = _load_trainer_checkpoint(path, obj)
    elif isinstance(obj, Mapping) and is_torchreid_osnet(_state_dict_of(obj)):
        loaded = _load_torchreid(path, _state_dict_of(obj))
    else:
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path} is neither a {CHECKPOINT_FORMAT} checkpoint (no 'format' key with that "
            f"value) nor a torchreid OSNet state dict (keys {list(_OSNET_KEYS)}); found {keys}"
        )
    loaded.model.eval()
    logger.info(
        "checkpoint %s (%s): %s, %d attributes, input %dx%d %s",
        path,
        loaded.source,
        type(loaded.model.backbone).__name__,
        len(loaded.schema),
        loaded.preprocess.height,
        loaded.preprocess.width,
        loaded.preprocess.channel_order,
    )
    return loaded


def _state_dict_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict inside ``obj`` (``{"state_dict": ...}`` unwrapped, ``module.`` stripped)."""
    inner = obj.get("state_dict")
    sd = inner if isinstance(inner, Mapping) else obj
    return {str(k).removeprefix("module."): v for k, v in sd.items()}


def is_torchreid_osnet(state: Mapping[str, Any]) -> bool:
    """True when ``state`` has the keys of torchreid's OSNet (backbone + ``fc``)."""
    return all(isinstance(state.get(k), Tensor) for k in _OSNET_KEYS)


def _load_torchreid(path: Path, state: dict[str, Any]) -> LoadedCheckpoint:
    """A torchreid OSNet: width from ``conv1``, embedding from ``fc.0``, classes kept."""
    width = int(state["conv1.conv.weight"].shape[0])
    backbone = OSNET_WIDTHS.get(width)
    if backbone is None:
        raise CheckpointError(
            f"{path}: OSNet conv1 has {width} channels; known widths {OSNET_WIDTHS}"
        )
    emb = int(state["fc.0.weight"].shape[0])
    cls = state.get("classifier.weight")
    num_classes = int(cls.shape[0]) if isinstance(cls, Tensor) else 0
    model = build_model(ModelConfig(backbone=backbone, embedding_dim=emb), num_classes)
    try:
        load_torchreid_osnet(model, path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    return LoadedCheckpoint(
        model=model,
        preprocess=PreprocessConfig(),  # torchreid: 256x128, RGB, ImageNet mean/std, bilinear
        schema=AttributeSchema.empty(),
        dataset=path.stem,
        source="torchreid-osnet",
    )


def _load_trainer_checkpoint(path: Path, ckpt: Mapping[str, Any]) -> LoadedCheckpoint:
    """A ``reid-checkpoint/1`` dict, through the trainer's loader when it exists."""
    official = _official_loader()
    if official is not None:
        try:
            model, info = official(path)
        except ValueError as exc:  # training.checkpoint.CheckpointError
            raise CheckpointError(str(exc)) from exc
        return LoadedCheckpoint(
            model=model,
            preprocess=info.preprocess,
            schema=info.schema,
            dataset=str(info.dataset),
            metrics=numeric_metrics(info.metrics),
            source=CHECKPOINT_FORMAT,
        )
    for key in ("model", "model_config"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: {CHECKPOINT_FORMAT} checkpoint lacks {key!r}")
    try:
        cfg = ModelConfig.from_dict({**ckpt["model_config"], "pretrained": ""})
        schema = AttributeSchema.from_dict(ckpt.get("attribute_schema") or {})
        model = build_model(cfg, int(ckpt.get("num_classes", 0)), schema)
        model.load_state_dict(ckpt["model"], strict=True)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from exc
    return _describe(path, model, ckpt)


def _official_loader() -> Any:
    """``training.checkpoint.load_checkpoint_for_inference`` if the trainer has landed it."""
    try:
        module = importlib.import_module("training.checkpoint")
    except ImportError:
        return None
    return getattr(module, "load_checkpoint_for_inference", None)


def _describe(path: Path, model: ReidModel, info: Mapping[str, Any]) -> LoadedCheckpoint:
    """Wrap a rebuilt model with the checkpoint's preprocessing, schema, dataset, metrics."""
    try:
        preprocess = PreprocessConfig.from_dict(info.get("preprocess") or {})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid 'preprocess' entry: {exc}") from exc
    if "preprocess" not in info:
        logger.warning("%s: no 'preprocess' entry; assuming the defaults %s", path, preprocess)
    return LoadedCheckpoint(
        model=model,
        preprocess=preprocess,
        schema=model.schema,
        dataset=str(info.get("dataset", "")),
        metrics=numeric_metrics(info.get("metrics") or {}),
        source=CHECKPOINT_FORMAT,
    )


def numeric_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a (possibly nested) metrics dict, nested keys joined with ``.``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_metrics(value, prefix=f"{name}."))
        elif _is_number(value) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
