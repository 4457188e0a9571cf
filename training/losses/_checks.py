"""Shape and value checks shared by the loss functions, with messages that name the culprit."""

from __future__ import annotations

import torch
from torch import Tensor


def check_ndim(name: str, t: Tensor, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``t`` has ``ndim`` dimensions (``layout`` names them)."""
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)}")


def check_labels(name: str, labels: Tensor, n: int) -> None:
    """Raise unless ``labels`` is an integer vector of length ``n``."""
    check_ndim(name, labels, 1, "[N]")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries, expected {n} (one per sample)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {labels.dtype}")


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape"
        )
