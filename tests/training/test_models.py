"""The model family: backbone names/shapes, every configuration's outputs, train vs eval,
heads against hand-written references, weight loading and its errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reidcore.attributes import Attribute, AttributeSchema
from training.models import (
    PRESETS,
    InferenceWrapper,
    ModelConfig,
    ReidModel,
    build_model,
    osnet_x1_0,
    preset,
    resnet18,
    resnet50,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCHEMA = AttributeSchema(
    (
        Attribute("gender", ("male", "female")),
        Attribute("age", ("young", "teen", "adult", "old")),
        Attribute("upcolor", ("black", "white", "red"), group="up"),
    ),
    source="test",
)
NUM_CLASSES = 7
SMALL_BACKBONES = ("resnet18", "osnet_x0_25")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _images(n: int = 4, h: int = 64, w: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1))


# --- ResNet: torchvision's names and shapes -------------------------------------------------


def _torchvision_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision resnet50's state-dict keys and shapes, written out from its definition."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_ch = 64
    for layer, (planes, blocks) in enumerate(
        zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), start=1
    ):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, in_ch, 1, 1)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, in_ch, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            in_ch = planes * 4
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes


@pytest.fixture(scope="module")
def resnet50_state() -> dict[str, torch.Tensor]:
    return resnet50().state_dict()


def test_resnet50_state_dict_is_torchvision_format(resnet50_state: dict) -> None:
    expected = _torchvision_resnet50_shapes()
    got = {k: tuple(v.shape) for k, v in resnet50_state.items()}
    assert sorted(got) == sorted(expected)
    assert got == expected


def test_resnet_parameter_counts_match_torchvision() -> None:
    # torchvision's documented sizes: resnet50 25,557,032; resnet18 11,689,512.
    assert sum(p.numel() for p in resnet50().parameters()) == 25_557_032
    assert sum(p.numel() for p in resnet18().parameters()) == 11_689_512


@pytest.mark.parametrize(("last_stride", "size"), [(2, (2, 1)), (1, (4, 2))])
def test_resnet_last_stride(last_stride: int, size: tuple[int, int]) -> None:
    net = resnet18(num_classes=None, last_stride=last_stride).eval()
    with torch.no_grad():
        fmap = net.forward_features(_images(2))
    assert fmap.shape == (2, 512, *size)
    with pytest.raises(ValueError, match="last_stride"):
        resnet18(last_stride=3)


def test_imagenet_weights_roundtrip(tmp_path: Path, resnet50_state: dict) -> None:
    path = tmp_path / "resnet50-test.pth"
    torch.save(resnet50_state, path)
    model = build_model(ModelConfig(backbone="resnet50", pretrained=str(path)), NUM_CLASSES)
    own = model.backbone.state_dict()
    assert sorted(own) == sorted(k for k in resnet50_state if not k.startswith("fc."))
    for key, value in own.items():
        assert torch.equal(value, resnet50_state[key]), key


def test_imagenet_weights_from_torchvision_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = ModelConfig(backbone="resnet18", pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "hub" / "checkpoints")):
        build_model(cfg, NUM_CLASSES)
    source = resnet18()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
        tmp_path / "hub" / "checkpoints" / "resnet18-abcdef.pth",
    )
    model = build_model(cfg, NUM_CLASSES)
    got, ref = model.backbone.state_dict(), source.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var"):
        assert torch.equal(got[key], ref[key]), key


def test_imagenet_weights_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(missing)), NUM_CLASSES)
    wrong = tmp_path / "osnet.pth"
    torch.save(osnet_x1_0(num_classes=10).state_dict(), wrong)
    with pytest.raises(ValueError, match="osnet.pth.*not a torchvision-format"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(wrong)), NUM_CLASSES)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(garbage)), NUM_CLASSES)


def test_osnet_x1_0_size_matches_paper() -> None:
    # Zhou et al. report 2.2 M parameters for OSNet x1.0 (without the classifier).
    net = osnet_x1_0(num_classes=1000)
    n = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("classifier"))
    assert 2.1e6 < n < 2.25e6


# --- every configuration of the family ------------------------------------------------------


@pytest.mark.parametrize("backbone", SMALL_BACKBONES)
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_configuration_train_and_eval(name: str, backbone: str) -> None:
    cfg = preset(name, backbone=backbone)
    model = build_model(cfg, NUM_CLASSES, SCHEMA)
    x = _images()
    fmap_h = 2 if backbone == "resnet18" else 4  # 64x32 input, stride 32 vs 16
    dim = 512  # resnet18 pool5 / OSNet fc
    out = model.train()(x)
    assert out.features.shape == out.embedding.shape == (4, dim)
    assert out.id_logits is not None and out.id_logits.shape == (4, NUM_CLASSES)
    assert out.attr_probs is None
    n_attr = len(SCHEMA) if cfg.use_attributes else 0
    assert [tuple(a.shape) for a in out.attr_logits] == [(4, k) for k in SCHEMA.num_classes][
        :n_attr
    ]
    if cfg.use_local:
        assert out.local_features is not None
        assert out.local_features.shape == (4, fmap_h, cfg.local_dim)
    else:
        assert out.local_features is None
    tensors = [out.features, out.id_logits, *out.attr_logits]
    assert all(torch.isfinite(t).all() for t in tensors)

    with torch.no_grad():
        ev = model.eval()(x)
    assert ev.id_logits is None
    assert ev.attr_probs is not None and len(ev.attr_probs) == n_attr
    for probs, logits in zip(ev.attr_probs, ev.attr_logits, strict=True):
        z = logits.numpy().astype(np.float64)
        ref = np.exp(z - z.max(1, keepdims=True))
        ref /= ref.sum(1, keepdims=True)
        np.testing.assert_allclose(probs.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(ev.embedding).all()
    assert ev.embedding.dtype == torch.float32


def test_attribute_heads_follow_schema_not_names() -> None:
    other = AttributeSchema(
        tuple(Attribute(f"a{i}", ("x", "y", "z")[: 2 + i % 2]) for i in range(5))
    )
    model = build_model(preset("apr", backbone="resnet18"), NUM_CLASSES, other).eval()
    with torch.no_grad():
        out = model(_images(2))
    assert [a.shape[1] for a in out.attr_logits] == other.num_classes


def test_dropout_only_in_training() -> None:
    model = build_model(preset("apr", backbone="resnet18", dropout=0.5), NUM_CLASSES, SCHEMA)
    x = _images()
    model.train()
    for m in model.modules():  # freeze BN statistics so only dropout can differ
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    a, b = model(x), model(x)
    assert a.id_logits is not None and b.id_logits is not None
    assert not torch.allclose(a.id_logits, b.id_logits)
    assert torch.equal(a.features, b.features)  # dropout sits after the feature
    model.eval()
    with torch.no_grad():
        c, d = model(x), model(x)
    assert torch.equal(c.attr_logits[0], d.attr_logits[0])


def test_global_feature_is_pooled_feature_map() -> None:
    for pool, reduce in (("avg", np.mean), ("max", np.max)):
        cfg = ModelConfig(backbone="resnet18", global_pool=pool)
        model = build_model(cfg, NUM_CLASSES).eval()
        with torch.no_grad():
            x = _images(2)
            fmap = model.forward_features(x).numpy()
            out = model(x)
        np.testing.assert_allclose(out.features.numpy(), reduce(fmap, axis=(2, 3)), rtol=1e-5)
        assert torch.equal(out.embedding, out.features)  # no BNNeck: the same feature


def test_bnneck_embedding_is_batch_normalised_feature() -> None:
    model = build_model(ModelConfig(backbone="resnet18", bnneck=True), NUM_CLASSES)
    bn = model.neck.bnneck
    assert bn is not None and not bn.bias.requires_grad
    sd = bn.state_dict()  # shares storage with the module
    sd["running_mean"].uniform_(-1, 1)
    sd["running_var"].uniform_(0.5, 2)
    sd["weight"].uniform_(0.5, 2)
    model.eval()
    with torch.no_grad():
        out = model(_images(2))
    f = out.features.numpy().astype(np.float64)
    mean, var, weight = (sd[k].numpy() for k in ("running_mean", "running_var", "weight"))
    ref = (f - mean) / np.sqrt(var + bn.eps) * weight
    np.testing.assert_allclose(out.embedding.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_local_branch_against_reference() -> None:
    for pool, reduce in (("max", np.max), ("avg", np.mean)):
        cfg = preset("alignedreid", backbone="resnet18", local_dim=16, local_pool=pool)
        model = build_model(cfg, NUM_CLASSES).eval()
        branch = model.local_branch
        assert branch is not None
        with torch.no_grad():
            x = _images(2, 128, 64)
            fmap = model.forward_features(x).numpy()  # [N, C, 4, 2]
            local = model(x).local_features
        rows = reduce(fmap, axis=3)  # [N, C, H]
        p = {k: v.numpy() for k, v in branch.state_dict().items()}
        w = p["conv.weight"][:, :, 0, 0]  # [c, C]
        z = np.einsum("kc,nch->nhk", w, rows) + p["conv.bias"]  # [N, H, c]
        z = (z - p["bn.running_mean"]) / np.sqrt(p["bn.running_var"] + branch.bn.eps)
        z = z * p["bn.weight"] + p["bn.bias"]
        assert local is not None and local.shape == (2, 4, 16)
        np.testing.assert_allclose(local.numpy(), np.maximum(z, 0), rtol=1e-4, atol=1e-5)


def test_gradients_reach_backbone_from_every_head() -> None:
    model = build_model(preset("apr_alignedreid", backbone="resnet18"), NUM_CLASSES, SCHEMA)
    out = model.train()(_images())
    assert out.id_logits is not None and out.local_features is not None
    for loss in (
        out.id_logits.logsumexp(1).sum(),
        out.attr_logits[1].logsumexp(1).sum(),
        out.local_features.sum(),
    ):
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        grad = dict(model.named_parameters())["backbone.conv1.weight"].grad
        assert grad is not None and grad.abs().sum() > 0


# --- the export wrapper ---------------------------------------------------------------------


def test_inference_wrapper_outputs() -> None:
    model = build_model(preset("apr_alignedreid", backbone="osnet_x0_25"), NUM_CLASSES, SCHEMA)
    wrapper = InferenceWrapper(model, include_local=True)
    wrapper.train()  # must stay in eval mode
    assert not wrapper.training and not model.training
    assert wrapper.output_names == ["embedding", "attr_gender", "attr_age", "attr_upcolor", "local"]
    with torch.no_grad():
        outs = wrapper(_images(3))
        ref = model(_images(3))
    assert len(outs) == len(wrapper.output_names)
    emb, *attrs, local = outs
    assert emb.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(emb.numpy(), axis=1), 1.0, rtol=1e-5)
    e = ref.embedding.numpy()
    np.testing.assert_allclose(emb.numpy(), e / np.linalg.norm(e, axis=1, keepdims=True), rtol=1e-5)
    for probs, k in zip(attrs, SCHEMA.num_classes, strict=True):
        assert probs.shape == (3, k)
        np.testing.assert_allclose(probs.sum(1).numpy(), 1.0, rtol=1e-5)
    assert local.shape == (3, 4, 128)  # 64x32 input, stride 16: 4 rows
    torch.testing.assert_close(local, ref.local_features)  # as trained (AlignedReID: raw)


def test_local_stripes_are_normalised_alike_in_training_and_export() -> None:
    cfg = dataclasses.replace(preset("alignedreid", backbone="resnet18"), local_normalise=True)
    model = build_model(cfg, NUM_CLASSES).eval()
    with torch.no_grad():
        trained = model(_images(2)).local_features
        exported = InferenceWrapper(model, include_local=True)(_images(2))[-1]
    assert trained is not None
    np.testing.assert_allclose(np.linalg.norm(trained.numpy(), axis=2), 1.0, rtol=1e-5)
    torch.testing.assert_close(exported, trained)
    model.train()  # the loss sees the same unit stripes
    train_out = model(_images(2)).local_features
    assert train_out is not None
    np.testing.assert_allclose(np.linalg.norm(train_out.detach().numpy(), axis=2), 1.0, rtol=1e-5)


def test_inference_wrapper_without_local_or_attributes() -> None:
    model = build_model(ModelConfig(backbone="resnet18"), NUM_CLASSES)
    wrapper = InferenceWrapper(model)
    assert wrapper.output_names == ["embedding"]
    with torch.no_grad():
        assert len(wrapper(_images(2))) == 1
    with pytest.raises(ValueError, match="no local branch"):
        InferenceWrapper(model, include_local=True)


# --- configuration errors -------------------------------------------------------------------


def test_config_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'.*resnet50"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="ResNet backbones only"):
        ModelConfig(backbone="osnet_x0_25", last_stride=1)
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="local_pool 'min'"):
        ModelConfig(local_pool="min")
    with pytest.raises(ValueError, match="unknown model preset 'pcb'"):
        preset("pcb")
    with pytest.raises(ValueError, match=r"unknown model config keys \['depth'\]"):
        ModelConfig.from_dict({"depth": 50})
    with pytest.raises(ValueError, match="non-empty attribute schema"):
        build_model(preset("apr", backbone="resnet18"), NUM_CLASSES)


def test_config_roundtrip_and_defaults() -> None:
    cfg = preset("apr_alignedreid", backbone="osnet_x0_25", bnneck=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.resolved_embedding_dim == 512
    assert ModelConfig().resolved_embedding_dim == 0
    assert dataclasses.replace(cfg, embedding_dim=0).resolved_embedding_dim == 0
    # global_stripes and alignedreid are one architecture (only the loss differs)
    assert PRESETS["global_stripes"] == PRESETS["alignedreid"]


def test_no_identity_head_with_zero_classes() -> None:
    model = build_model(ModelConfig(backbone="resnet18", embedding_dim=64), 0)
    assert model.classifier is None and model.embedding_dim == 64
    out = model.train()(_images(2))
    assert out.id_logits is None and out.embedding.shape == (2, 64)
    assert isinstance(model, ReidModel)
