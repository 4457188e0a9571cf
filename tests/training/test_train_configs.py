"""Every shipped training config loads, validates and builds; the paper ones say what the
papers say."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from reidcore.attributes import Attribute, AttributeSchema
from training.config import TrainConfig, load_train_config
from training.models import build_model
from training.objective import term_names
from training.optim import build_optimizer, build_scheduler, lr_factor

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
SCHEMA = AttributeSchema(
    (Attribute("gender", ("male", "female")), Attribute("age", ("young", "adult", "old")))
)


def test_the_expected_configs_ship() -> None:
    names = {p.stem for p in SHIPPED}
    assert {
        "apr_market",
        "alignedreid_market",
        "alignedreid_mutual_market",
        "osnet_cuhk03_cpu",
        "synthetic_tiny",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_config_loads_and_builds(path: Path) -> None:
    cfg = load_train_config(path)
    assert isinstance(cfg, TrainConfig)
    # Build without the pretrained file (ImageNet caches and ../shared may be absent; the
    # OSNet checkpoint is loaded in its own test). ResNet-50 is built but never trained here.
    model_cfg = dataclasses.replace(cfg.model, pretrained="")
    schema = SCHEMA if cfg.model.use_attributes else None
    model = build_model(model_cfg, num_classes=5, schema=schema)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    assert scheduler.get_last_lr()[0] == pytest.approx(cfg.optim.lr * lr_factor(0, cfg.optim))
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(
        cfg.optim.lr * cfg.optim.head_lr_mult * lr_factor(0, cfg.optim)
    )
    assert (model.local_branch is not None) == cfg.model.use_local
    assert term_names(cfg.loss)[0] == "loss"


def test_apr_config_is_the_paper() -> None:
    cfg = load_train_config(CONFIGS / "apr_market.yaml")
    assert cfg.model.backbone == "resnet50" and cfg.model.use_attributes
    assert cfg.loss.id_weight == 8.0 and cfg.loss.attributes
    assert cfg.data.sampler == "random" and cfg.data.batch_size == 64
    assert cfg.optim.name == "sgd" and cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.epochs == 55 and cfg.optim.milestones == [50] and cfg.optim.gamma == 0.1
    assert cfg.data.val_ids == 100


@pytest.mark.parametrize("name", ["alignedreid_market", "alignedreid_mutual_market"])
def test_alignedreid_configs_are_the_paper(name: str) -> None:
    cfg = load_train_config(CONFIGS / f"{name}.yaml")
    assert (cfg.data.sampler, cfg.data.p, cfg.data.k) == ("pk", 40, 4)
    assert cfg.loss.triplet_margin == 0.5 and cfg.loss.local_aligned
    assert cfg.loss.global_triplet_weight == 1.0 and cfg.loss.local_triplet_weight == 1.0
    assert cfg.optim.name == "adam" and cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.optim.milestones == [80, 160] and cfg.optim.gamma == 0.1
    assert cfg.model.use_local and cfg.loss.mutual == (name == "alignedreid_mutual_market")


def test_overrides_reach_the_tree() -> None:
    cfg = load_train_config(
        CONFIGS / "osnet_cuhk03_cpu.yaml",
        ["model.pretrained=/elsewhere/w.pth", "optim.milestones=[3, 6]", "epochs=0"],
    )
    assert cfg.model.pretrained == "/elsewhere/w.pth"
    assert cfg.optim.milestones == [3, 6] and cfg.epochs == 0


@pytest.mark.realdata
def test_osnet_cuhk03_config_loads_the_shared_checkpoint(shared_weights: Path) -> None:
    cfg = load_train_config(CONFIGS / "osnet_cuhk03_cpu.yaml")
    weights = shared_weights / "osnet_x0_25_msmt17.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    model = build_model(dataclasses.replace(cfg.model, pretrained=str(weights)), num_classes=667)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    key = next(k for k in state if k.startswith("conv1"))
    torch.testing.assert_close(
        model.state_dict()[f"backbone.{key.removeprefix('module.')}"], state[key]
    )
