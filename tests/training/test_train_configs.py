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
        "apr_duke",
        "apr_market_plus",
        "alignedreid_market",
        "alignedreid_market_plus",
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
    if cfg.peer_model is not None:
        peer = build_model(dataclasses.replace(cfg.peer_model, pretrained=""), 5, schema)
        assert (peer.local_branch is not None) == cfg.model.use_local


@pytest.mark.parametrize(("name", "dataset"), [("apr_market", "market"), ("apr_duke", "duke")])
def test_apr_configs_are_the_paper(name: str, dataset: str) -> None:
    """APR arXiv 1703.07220v1: Sec. 3 (binary colours), 4.1-4.2, 5.1-5.2."""
    cfg = load_train_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.backbone == "resnet50" and cfg.model.use_attributes
    assert cfg.data.attributes.endswith(f"{dataset}_attribute.mat")
    assert cfg.data.attribute_colours == "binary"
    assert (cfg.data.height, cfg.data.width) == (224, 224)
    assert cfg.model.dropout == 0.9 and cfg.data.erase_p == 0.0
    assert cfg.loss.id_weight == 8.0 and cfg.loss.attributes
    assert cfg.data.sampler == "random" and cfg.data.batch_size == 64
    assert cfg.optim.name == "sgd" and cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.epochs == 55 and cfg.optim.milestones == [50] and cfg.optim.gamma == 0.1
    assert [lr_factor(e, cfg.optim) for e in (49, 50)] == pytest.approx([1, 0.1])
    assert cfg.data.val_ids == 100 and cfg.eval.attribute_protocol == "apr"


@pytest.mark.parametrize("name", ["alignedreid_market", "alignedreid_mutual_market"])
def test_alignedreid_configs_are_the_paper(name: str) -> None:
    """AlignedReID arXiv 1711.08184v2 Sec. 4.2."""
    cfg = load_train_config(CONFIGS / f"{name}.yaml")
    assert (cfg.data.sampler, cfg.data.p, cfg.data.k) == ("pk", 40, 4)
    assert (cfg.data.height, cfg.data.width) == (224, 224) and cfg.data.erase_p == 0.0
    assert cfg.steps_per_epoch == 2000
    assert cfg.loss.triplet_margin == 0.5 and cfg.loss.local_aligned
    assert cfg.loss.global_triplet_weight == 1.0 and cfg.loss.local_triplet_weight == 1.0
    assert cfg.optim.name == "adam"
    assert cfg.model.use_local and cfg.loss.mutual == (name == "alignedreid_mutual_market")
    rates = [cfg.optim.lr * lr_factor(e, cfg.optim) for e in (0, 59, 60, 79, 80, 119, 120, 160)]
    if cfg.loss.mutual:  # 3e-4, 1e-4 from epoch 60, 1e-5 from 120
        assert rates == pytest.approx([3e-4, 3e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5])
        assert cfg.loss.mutual_classification_weight == 0.01
        assert cfg.loss.mutual_metric_weight == 0.001
        assert cfg.peer_model is not None and cfg.peer_model.use_local
    else:  # 1e-3, x0.1 at 80 and 160
        assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5])


def test_improved_configs_differ_from_the_papers_only_where_they_say() -> None:
    for paper, plus in [
        ("apr_market", "apr_market_plus"),
        ("alignedreid_market", "alignedreid_market_plus"),
    ]:
        a = load_train_config(CONFIGS / f"{paper}.yaml")
        b = load_train_config(CONFIGS / f"{plus}.yaml")
        assert (b.data.height, b.data.width, b.data.erase_p) == (256, 128, 0.5)
        assert dataclasses.replace(b.optim) == a.optim and b.loss == a.loss
        assert b.epochs == a.epochs and b.steps_per_epoch == a.steps_per_epoch


def test_piecewise_rates_need_one_rate_per_milestone() -> None:
    with pytest.raises(Exception, match="one positive rate per milestone"):
        load_train_config(
            CONFIGS / "alignedreid_mutual_market.yaml", ["optim.milestone_lrs=[1e-4]"]
        )


def test_peer_model_needs_mutual_learning() -> None:
    with pytest.raises(Exception, match="peer_model is set but loss.mutual=false"):
        load_train_config(CONFIGS / "alignedreid_mutual_market.yaml", ["loss.mutual=false"])


def test_overrides_reach_the_tree() -> None:
    cfg = load_train_config(
        CONFIGS / "osnet_cuhk03_cpu.yaml",
        [
            "model.pretrained=/elsewhere/w.pth",
            "optim.schedule=step",
            "optim.milestones=[3, 6]",
            "epochs=0",
        ],
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
