"""Test fixtures for export: tiny checkpoints in the trainer's format, torchreid-style OSNet
weights, and a Market-1501-style folder of generated JPEGs (one colour layout per identity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reidcore.attributes import Attribute, AttributeSchema
from reidcore.preprocess import PreprocessConfig
from training.models import ModelConfig, ReidModel, build_model

SCHEMA = AttributeSchema(
    (
        Attribute("gender", ("male", "female")),
        Attribute("upper_color", ("black", "white", "red", "blue"), group="up"),
    ),
    source="tests",
)
SMALL = PreprocessConfig(height=64, width=32)


def randomize_norms(model: ReidModel, seed: int = 0) -> ReidModel:
    """Give every BatchNorm non-trivial statistics and affine parameters, as training would.

    With fresh BN (mean 0, var 1, weight 1, bias 0) a bias-free ReLU network is positively
    homogeneous, so a missing /255 would leave L2-normalised embeddings unchanged.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                n = m.num_features
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return model.eval()


def tiny_model(cfg: ModelConfig, num_classes: int = 5, seed: int = 0) -> ReidModel:
    """A randomly initialised model of ``cfg`` with randomised BN (seeded)."""
    torch.manual_seed(seed)
    schema = SCHEMA if cfg.use_attributes else None
    return randomize_norms(build_model(cfg, num_classes, schema), seed)


def write_checkpoint(
    path: Path, cfg: ModelConfig, preprocess: PreprocessConfig = SMALL, seed: int = 0
) -> ReidModel:
    """Save a ``reid-checkpoint/1`` dict of a tiny random model; returns the model."""
    model = tiny_model(cfg, seed=seed)
    torch.save(
        {
            "format": "reid-checkpoint/1",
            "model": model.state_dict(),
            "model_config": cfg.to_dict(),
            "num_classes": 5,
            "attribute_schema": model.schema.to_dict(),
            "preprocess": preprocess.to_dict(),
            "dataset": "synthetic-test",
            "metrics": {"mAP": 0.5, "rank1": 0.7},
            "epoch": 3,
            "config": {},
        },
        path,
    )
    return model


def write_torchreid_osnet(path: Path, seed: int = 0) -> ReidModel:
    """Save an OSNet-x0.25 as torchreid does (plain state dict, ``fc``/``classifier`` keys)."""
    model = tiny_model(ModelConfig(backbone="osnet_x0_25"), num_classes=7, seed=seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            state[key.removeprefix("backbone.")] = value
        elif key.startswith("neck.fc."):
            state[key.removeprefix("neck.")] = value
        else:
            state[key] = value
    torch.save(state, path)
    return model


def identity_image(pid: int, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A person-like crop: identity-specific colours of head/upper/lower bands plus noise."""
    h, w = size
    palette = np.random.default_rng(1000 + pid).integers(0, 256, size=(4, 3))
    rows = np.repeat(palette, [h // 8, 3 * h // 8, 3 * h // 8, h - h // 8 - 6 * h // 8], axis=0)
    img = np.repeat(rows[:, None, :], w, axis=1).astype(np.float32)  # [h, w, 3]
    img += rng.normal(0.0, 12.0, size=img.shape)
    shift = int(rng.integers(-2, 3))
    img = np.roll(img, shift, axis=0)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_market_train(
    root: Path, num_ids: int = 8, cams: int = 2, per_cam: int = 3, size: tuple[int, int] = (96, 48)
) -> Path:
    """``root/bounding_box_train`` of generated JPEGs named ``PPPP_cCs1_NNNNNN_00.jpg``."""
    folder = root / "bounding_box_train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for pid in range(1, num_ids + 1):
        for cam in range(1, cams + 1):
            for k in range(per_cam):
                name = f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg"
                identity_image(pid, rng, size).save(folder / name, quality=90)
    return root
