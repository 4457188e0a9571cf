"""Optimiser and epoch-wise learning-rate schedule from an :class:`~training.config.OptimConfig`.

The schedule multiplies the base rate by ``warmup(e) · gamma^(number of milestones <= e)``
for epoch ``e`` (0-based), with a linear warm-up from ``warmup_factor`` to 1 over
``warmup_epochs``. APR's "1e-3, then 1e-4 for the last 5 of 55 epochs" is
``lr=1e-3, milestones=[50]``; AlignedReID's "×0.1 at epochs 80 and 160" is
``milestones=[80, 160]``. A piecewise-constant schedule names the rates instead
(``milestone_lrs``): AlignedReID's mutual learning, 3e-4 then 1e-4 at 60 and 1e-5 at 120, is
``lr=3e-4, milestones=[60, 120], milestone_lrs=[1e-4, 1e-5]``. ``schedule=cosine`` replaces
the milestones by a half cosine from 1 to ``cosine_floor`` over the epochs after warm-up.
"""

from __future__ import annotations

import bisect
import logging
import math

import torch
from torch import nn

from training.config import OptimConfig

logger = logging.getLogger(__name__)


def lr_factor(epoch: int, cfg: OptimConfig, epochs: int = 0) -> float:
    """Multiplier of the base learning rate during 0-based epoch ``epoch`` of ``epochs`` (the
    run's length, which only the cosine schedule needs)."""
    passed = bisect.bisect_right(cfg.milestones, epoch)
    if cfg.schedule == "cosine":
        span = max(epochs - cfg.warmup_epochs - 1, 1)
        progress = min(max(epoch - cfg.warmup_epochs, 0) / span, 1.0)
        decay = cfg.cosine_floor + (1.0 - cfg.cosine_floor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )
    elif cfg.milestone_lrs:
        decay = cfg.milestone_lrs[passed - 1] / cfg.lr if passed else 1.0
    else:
        decay = cfg.gamma**passed
    if epoch < cfg.warmup_epochs:
        alpha = epoch / cfg.warmup_epochs
        return decay * (cfg.warmup_factor + (1.0 - cfg.warmup_factor) * alpha)
    return float(decay)


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, object]]:
    """Backbone parameters at ``lr``, the rest (neck, classifiers, local branch) at
    ``lr × head_lr_mult``; frozen parameters (``requires_grad=False``) are left out."""
    backbone: list[nn.Parameter] = []
    heads: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith("backbone.") else heads).append(p)
    groups: list[dict[str, object]] = [{"params": backbone, "lr": cfg.lr}]
    if heads:
        groups.append({"params": heads, "lr": cfg.lr * cfg.head_lr_mult})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or Adam over :func:`parameter_groups`."""
    groups = parameter_groups(model, cfg)
    match cfg.name:
        case "sgd":
            return torch.optim.SGD(
                groups,
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay,
            )
        case "adam":
            return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        case _:
            raise ValueError(f"unknown optimiser {cfg.name!r}; valid: ['sgd', 'adam']")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`lr_factor`
    over a run of ``epochs``; call ``step()`` once after each epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg, epochs))
