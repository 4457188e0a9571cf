"""PyTorch :class:`ReidModel` -> one self-contained ONNX file with named outputs.

The graph has one input ``images`` float32 [N, 3, H, W] (dynamic N) and the outputs of
:class:`training.models.InferenceWrapper`: ``embedding`` [N, D] (L2-normalised),
``attr_<name>`` [N, K] (softmax probabilities) per schema attribute, and optionally
``local`` [N, h, c]. With ``flip`` every output is averaged over the image and its mirror
image inside the graph (:mod:`export.flip`).

Exporter choice: the TorchScript ("legacy") exporter by default. It writes all weights into
the one ``model.onnx`` file and takes ~4 s for a ResNet-18, against ~15 s for the dynamo
exporter (which also defaults to an external ``.onnx.data`` file that ONNX Runtime's
quantisation pre-processing cannot read). ``exporter="dynamo"`` is kept for when the legacy
exporter goes away; it is called with ``external_data=False``. Both run at the same speed.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from export.flip import ExportedModule, exported_module
from training.models import ReidModel

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
"""Name of the graph input."""
EXPORTERS = ("legacy", "dynamo")
"""Valid values of :attr:`OnnxExportConfig.exporter`."""
MIN_OPSET = 17


@dataclass(frozen=True)
class OnnxExportConfig:
    """How the ONNX graph is written."""

    opset: int = 17
    """ONNX opset of the default domain (>= 17; the dynamo exporter needs >= 18)."""
    exporter: str = "legacy"
    """``legacy`` (TorchScript-based, fast, single file) or ``dynamo``."""
    include_local: bool = False
    """Also output AlignedReID's ``local`` stripe features (model needs a local branch)."""
    flip: bool = False
    """Average each image's outputs with its mirror image's inside the graph
    (:mod:`export.flip`)."""

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"unknown exporter {self.exporter!r}; valid: {list(EXPORTERS)}")
        if self.opset < MIN_OPSET:
            raise ValueError(f"opset must be >= {MIN_OPSET}, got {self.opset}")


def export_onnx(
    model: ReidModel, path: Path, height: int, width: int, cfg: OnnxExportConfig
) -> list[str]:
    """Write ``model`` (eval mode, wrapped for fixed outputs) to ``path``; return output names.

    The file is checked with ``onnx.checker`` (full check, shape inference included).
    """
    wrapper = exported_module(model, cfg.include_local, cfg.flip)
    names = wrapper.output_names
    dummy = torch.zeros(2, 3, height, width)  # batch 2: no batch-1 specialisation
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        if cfg.exporter == "legacy":
            _export_legacy(wrapper, dummy, path, names, cfg.opset)
        else:
            _export_dynamo(wrapper, dummy, path, names, cfg.opset)
    check_onnx(path)
    logger.info(
        "exported %s (%s exporter, opset %d%s): outputs %s",
        path,
        cfg.exporter,
        cfg.opset,
        ", test-time flip" if cfg.flip else "",
        names,
    )
    return names


def _export_legacy(
    wrapper: ExportedModule, dummy: torch.Tensor, path: Path, names: list[str], opset: int
) -> None:
    axes = {INPUT_NAME: {0: "N"}, **{n: {0: "N"} for n in names}}
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=names,
        dynamic_axes=axes,
        do_constant_folding=True,
    )


def _export_dynamo(
    wrapper: ExportedModule, dummy: torch.Tensor, path: Path, names: list[str], opset: int
) -> None:
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(path),
        dynamo=True,
        external_data=False,
        opset_version=max(opset, 18),
        input_names=[INPUT_NAME],
        output_names=names,
        dynamic_shapes=({0: torch.export.Dim("N")},),
    )


def check_onnx(path: Path) -> None:
    """``onnx.checker`` on the file (by path, so large models work); raises ValueError."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValueError(f"{path}: ONNX checker rejected the graph: {exc}") from exc


def graph_opset(path: Path) -> int:
    """Opset of the default ONNX domain of the file at ``path``."""
    model = onnx.load(str(path), load_external_data=False)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ValueError(f"{path}: no default-domain opset import")
