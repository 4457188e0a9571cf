"""Training checkpoints: the contract between ``reid train`` and ``reid export``.

Format ``reid-checkpoint/1``: one ``torch.save`` file holding a dict (load it with
``torch.load(path, map_location="cpu", weights_only=True)``; only plain containers, numbers,
strings and tensors inside):

================== ====================================================================
key                value
================== ====================================================================
format             ``"reid-checkpoint/1"``
model              state dict of the (first) :class:`~training.models.ReidModel`, not
                   wrapped (no ``module.`` prefix)
peer_model         mutual learning only: state dict of the second model
model_config       :meth:`ModelConfig.to_dict` of the first model (of both in checkpoints
                   written before ``peer_model_config``)
peer_model_config  mutual learning only: :meth:`ModelConfig.to_dict` of the second model
num_classes        identity classes of the classifier (0: the model has none)
attribute_schema   :meth:`AttributeSchema.to_dict` (``{"attributes": []}`` without)
preprocess         :meth:`PreprocessConfig.to_dict`: the evaluation/serving preprocessing
dataset            name of the training set (e.g. ``market-val``)
metrics            validation metrics of this checkpoint's model (keys of
                   :data:`training.evaluate.METRIC_NAMES`; ``{}`` when not evaluated)
epoch              completed training epochs (0: the initial model)
config             the full :class:`~training.config.TrainConfig` as a plain dict
optimizers         list of optimiser state dicts (one per model)
schedulers         list of scheduler state dicts
sampler            P×K sampler state (``{"epoch", "seed", "position"}``) or None
scaler             GradScaler state dict (``{}`` without AMP)
rng                ``{"python", "numpy", "torch", "cuda"}`` random generator states
trainer            ``{"best": float | None, "best_epoch": int}``
================== ====================================================================

:func:`load_checkpoint_for_inference` rebuilds the model (eval mode) with what export needs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidcore.attributes import AttributeSchema
from reidcore.preprocess import PreprocessConfig
from training.models import ModelConfig, ReidModel, build_model

logger = logging.getLogger(__name__)

FORMAT = "reid-checkpoint/1"
"""Value of the ``format`` key this code writes and reads."""
REQUIRED_KEYS = (
    "format",
    "model",
    "model_config",
    "num_classes",
    "attribute_schema",
    "preprocess",
    "dataset",
    "metrics",
    "epoch",
    "config",
)
"""Keys every checkpoint has (the training-state keys may be absent in hand-made files)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's (global) and torch's (CPU and CUDA) generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (legacy global state, saved for third-party code)
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where CUDA is present)."""
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    legacy = (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
    np.random.set_state(legacy)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    """Lists back to tuples (``random.setstate`` wants the exact nested tuple)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint for {path} lacks keys {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ``reid-checkpoint/1`` file; CheckpointError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds (pickle, zip, weights-only refusals)
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (format: {found!r})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}")
    return state


@dataclass
class CheckpointInfo:
    """What a checkpoint says about its model, besides the weights."""

    model_config: ModelConfig
    """Architecture (``pretrained`` cleared: the weights come from the checkpoint)."""
    num_classes: int
    """Identity classes of the classifier."""
    schema: AttributeSchema
    """Attribute heads, in order."""
    preprocess: PreprocessConfig
    """The preprocessing the model was evaluated with (and must be served with)."""
    dataset: str
    """Training dataset name."""
    metrics: dict[str, float]
    """Validation metrics recorded with the checkpoint."""
    epoch: int
    """Completed training epochs."""
    config: dict[str, Any]
    """The full training config."""


def checkpoint_info(state: dict[str, Any], path: str | Path = "checkpoint") -> CheckpointInfo:
    """The :class:`CheckpointInfo` of a loaded checkpoint dict."""
    try:
        model_cfg = ModelConfig.from_dict(state["model_config"])
        return CheckpointInfo(
            model_config=dataclasses.replace(model_cfg, pretrained=""),
            num_classes=int(state["num_classes"]),
            schema=AttributeSchema.from_dict(state["attribute_schema"]),
            preprocess=PreprocessConfig.from_dict(state["preprocess"]),
            dataset=str(state["dataset"]),
            metrics={str(k): float(v) for k, v in dict(state["metrics"]).items()},
            epoch=int(state["epoch"]),
            config=dict(state["config"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint metadata: {exc}") from None


def load_checkpoint_for_inference(
    path: str | Path, peer: bool = False
) -> tuple[ReidModel, CheckpointInfo]:
    """The checkpoint's model in eval mode on CPU, and its :class:`CheckpointInfo`.

    ``peer=True`` loads the second model of a mutual-learning checkpoint instead.
    """
    state = load_checkpoint(path)
    info = checkpoint_info(state, path)
    key = "peer_model" if peer else "model"
    if key not in state:
        raise CheckpointError(f"{path} has no {key!r} (not a mutual-learning checkpoint)")
    model_cfg = info.model_config
    if peer and "peer_model_config" in state:
        try:
            model_cfg = ModelConfig.from_dict(state["peer_model_config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: malformed peer_model_config: {exc}") from None
        model_cfg = dataclasses.replace(model_cfg, pretrained="")
    model = build_model(model_cfg, info.num_classes, info.schema)
    try:
        model.load_state_dict(state[key], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the recorded model config: {exc}"
        ) from None
    return model.eval(), info
