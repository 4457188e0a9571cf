"""Parity between the PyTorch model and an ONNX Runtime session, output by output.

:func:`compare_outputs` is plain numpy: reference and candidate dicts (output name -> array)
in, a :class:`ParityReport` out. Embeddings and local stripes must point the same way
(per-row cosine >= ``min_cosine``, 0.9999 by default) and be close element-wise;
attribute probabilities must be close element-wise. The export pipeline feeds the reference
from PyTorch on the checkpoint's preprocessing and the candidate from the service runtime on
the manifest's preprocessing, so a wrong mean/std, channel order or a missing /255 fails.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from export.flip import exported_module
from training.models import ReidModel

logger = logging.getLogger(__name__)

DIRECTIONAL_OUTPUTS = ("embedding", "local")
"""Outputs compared by cosine (unit vectors); the others (probabilities) by value only."""


class ParityError(ValueError):
    """ONNX Runtime and PyTorch disagree beyond tolerance; the message lists every output."""


@dataclass(frozen=True)
class ParityTolerance:
    """Acceptance thresholds of the parity check."""

    min_cosine: float = 0.9999
    """Smallest acceptable per-row cosine of embeddings (and of each local stripe)."""
    max_abs_embedding: float = 1e-3
    """Largest acceptable element-wise difference of unit-length embeddings / stripes."""
    max_abs_probability: float = 1e-3
    """Largest acceptable element-wise difference of attribute probabilities."""


@dataclass(frozen=True)
class OutputParity:
    """How one output compares."""

    name: str
    """Output name."""
    max_abs_diff: float
    """Largest element-wise absolute difference."""
    min_cosine: float | None
    """Smallest per-row cosine (embedding / local only)."""
    problem: str = ""
    """Why the output failed; empty when it passed."""

    @property
    def passed(self) -> bool:
        return not self.problem


@dataclass
class ParityReport:
    """The comparison of every output over a batch of images."""

    images: int
    """Number of images compared."""
    outputs: list[OutputParity] = field(default_factory=list)
    """One entry per compared output."""

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def summary(self) -> str:
        """One line per output: differences and, for failures, why."""
        lines = []
        for o in self.outputs:
            cos = f", min cosine {o.min_cosine:.6f}" if o.min_cosine is not None else ""
            verdict = "ok" if o.passed else f"FAILED: {o.problem}"
            lines.append(f"{o.name}: max abs diff {o.max_abs_diff:.3g}{cos} -> {verdict}")
        return f"parity over {self.images} images\n" + "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for the manifest / logs, e.g. ``parity.embedding.min_cosine``."""
        out: dict[str, float] = {}
        for o in self.outputs:
            out[f"parity.{o.name}.max_abs_diff"] = o.max_abs_diff
            if o.min_cosine is not None:
                out[f"parity.{o.name}.min_cosine"] = o.min_cosine
        return out


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of matching rows of ``a`` and ``b`` [N, d] (0 where a row is zero), float32."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    num = np.einsum("nd,nd->n", a, b)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (num / np.maximum(den, np.float32(1e-12))).astype(np.float32)


def compare_output(
    name: str, ref: np.ndarray, cand: np.ndarray, tol: ParityTolerance
) -> OutputParity:
    """Compare one output; directional outputs also by per-row cosine."""
    ref, cand = np.asarray(ref, np.float32), np.asarray(cand, np.float32)
    if ref.shape != cand.shape:
        return OutputParity(name, float("inf"), None, f"shape {cand.shape} != {ref.shape}")
    diff = float(np.abs(ref - cand).max()) if ref.size else 0.0
    if not np.isfinite(cand).all():
        return OutputParity(name, diff, None, "non-finite values")
    if name not in DIRECTIONAL_OUTPUTS:
        problem = (
            f"max abs diff > {tol.max_abs_probability}" if diff > tol.max_abs_probability else ""
        )
        return OutputParity(name, diff, None, problem)
    cos = row_cosine(ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1]))
    min_cos = float(cos.min()) if cos.size else 1.0
    problems = []
    if min_cos < tol.min_cosine:
        problems.append(f"min cosine {min_cos:.6f} < {tol.min_cosine}")
    if diff > tol.max_abs_embedding:
        problems.append(f"max abs diff {diff:.3g} > {tol.max_abs_embedding}")
    return OutputParity(name, diff, min_cos, "; ".join(problems))


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    tol: ParityTolerance | None = None,
) -> ParityReport:
    """Compare every reference output with the candidate's (a missing one fails)."""
    tol = tol or ParityTolerance()
    images = len(next(iter(reference.values()))) if reference else 0
    report = ParityReport(images=images)
    for name, ref in reference.items():
        if name not in candidate:
            report.outputs.append(OutputParity(name, float("inf"), None, "missing in candidate"))
            continue
        report.outputs.append(compare_output(name, ref, candidate[name], tol))
    return report


def require_parity(report: ParityReport, what: str) -> None:
    """Raise :class:`ParityError` unless ``report`` passed; log the summary either way."""
    if report.passed:
        logger.info("%s: %s", what, report.summary())
        return
    raise ParityError(f"{what}: ONNX Runtime and PyTorch disagree\n{report.summary()}")


def torch_outputs(
    model: ReidModel,
    batch: np.ndarray,
    include_local: bool = False,
    chunk: int = 32,
    flip: bool = False,
) -> dict[str, np.ndarray]:
    """PyTorch outputs (the exported module's) for a float32 batch [N, 3, H, W], by name."""
    wrapper = exported_module(model, include_local, flip)
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.inference_mode():
        for i in range(0, len(batch), chunk):
            parts.append(wrapper(torch.from_numpy(np.ascontiguousarray(batch[i : i + chunk]))))
    return {
        name: np.concatenate([p[k].numpy() for p in parts]).astype(np.float32, copy=False)
        for k, name in enumerate(wrapper.output_names)
    }


def ort_outputs(
    session: Any, batch: np.ndarray, names: Sequence[str] | None = None, chunk: int = 32
) -> dict[str, np.ndarray]:
    """ONNX Runtime outputs for a float32 batch, run ``chunk`` images at a time, by name."""
    names = list(names or [o.name for o in session.get_outputs()])
    input_name = session.get_inputs()[0].name
    parts = [
        session.run(names, {input_name: np.ascontiguousarray(batch[i : i + chunk])})
        for i in range(0, len(batch), chunk)
    ]
    return {
        name: np.concatenate([np.asarray(p[k]) for p in parts]).astype(np.float32, copy=False)
        for k, name in enumerate(names)
    }
