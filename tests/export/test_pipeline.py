"""End-to-end export: every head combination and a torchreid OSNet file become model folders
the service loads; broken preprocessing in the manifest and failing variants are refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

import export.pipeline as pipeline
import export.variants as variants
from export.checkpoint import CheckpointError, load_for_export
from export.pipeline import ExportError, ExportOptions, export_model_folder
from reidcore.cli import main
from reidcore.preprocess import PreprocessConfig
from service.errors import ManifestError
from service.manifest import Manifest, load_manifest, write_manifest
from service.runtime import ModelRuntime, RuntimeOptions
from tests.export.helpers import SCHEMA, write_checkpoint, write_torchreid_osnet
from training.models import ModelConfig

COMBOS = {
    "global": (ModelConfig(backbone="resnet18"), False),
    "attributes": (ModelConfig(backbone="resnet18", use_attributes=True), False),
    "local": (ModelConfig(backbone="osnet_x0_25", use_local=True), True),
    "attributes+local": (
        ModelConfig(backbone="resnet18", use_attributes=True, use_local=True),
        True,
    ),
}


def _options(tmp: Path, ckpt: Path, images: Path, **kw: Any) -> ExportOptions:
    return ExportOptions(
        checkpoint=ckpt, out=tmp / "models" / "m" / "1", calibration_images=images, **kw
    )


@pytest.mark.parametrize("combo", list(COMBOS))
def test_export_every_head_combination(tmp_path: Path, market_folder: Path, combo: str) -> None:
    cfg, local = COMBOS[combo]
    write_checkpoint(tmp_path / "c.pt", cfg)
    result = export_model_folder(
        _options(tmp_path, tmp_path / "c.pt", market_folder, include_local=local)
    )
    folder = tmp_path / "models" / "m" / "1"
    manifest = load_manifest(folder)  # verifies the sha256
    assert manifest == result.manifest
    assert (manifest.name, manifest.version) == ("m", "1")
    expected = ["embedding"] + [f"attr_{n}" for n in SCHEMA.names] * cfg.use_attributes
    expected += ["local"] * local
    assert [o.name for o in manifest.outputs] == expected
    assert manifest.embedding.dim == 512  # resnet18 pool5; osnet_x0_25's default fc
    assert manifest.attribute_schema.names == (SCHEMA.names if cfg.use_attributes else [])
    assert (manifest.input.height, manifest.input.width, manifest.model.opset) == (64, 32, 17)
    assert manifest.training.dataset == "synthetic-test"
    assert manifest.training.metrics == {"mAP": 0.5, "rank1": 0.7}
    assert sorted(p.name for p in folder.parent.iterdir()) == ["1"]  # no staging left
    runtime = ModelRuntime.load(folder, RuntimeOptions(device="cpu"))
    assert result.parity.passed and result.parity.images == 32
    assert runtime.dim == manifest.embedding.dim


def test_manifest_round_trip_and_tampering(tmp_path: Path, market_folder: Path) -> None:
    write_checkpoint(tmp_path / "c.pt", ModelConfig(backbone="resnet18", use_attributes=True))
    folder = export_model_folder(_options(tmp_path, tmp_path / "c.pt", market_folder)).folder
    manifest = load_manifest(folder)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    write_manifest(copy, manifest)
    assert load_manifest(copy) == manifest
    raw = json.loads((folder / "manifest.json").read_text())
    raw["outputs"] = [o for o in raw["outputs"] if o["name"] != "attr_gender"]
    with pytest.raises(ValueError, match="do not match the schema"):
        Manifest.model_validate(raw)
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(copy)


def test_torchreid_osnet_file_exports_identity_only(tmp_path: Path, market_folder: Path) -> None:
    write_torchreid_osnet(tmp_path / "osnet.pth")
    loaded = load_for_export(tmp_path / "osnet.pth")
    assert loaded.source == "torchreid-osnet" and loaded.preprocess == PreprocessConfig()
    result = export_model_folder(
        _options(tmp_path, tmp_path / "osnet.pth", market_folder, parity_images=8)
    )
    manifest = load_manifest(result.folder)
    assert [o.name for o in manifest.outputs] == ["embedding"]
    assert (manifest.input.height, manifest.input.width, manifest.embedding.dim) == (256, 128, 512)


@pytest.mark.realdata
def test_real_torchreid_weights_load(shared_weights: Path) -> None:
    path = shared_weights / "osnet_x0_25_msmt17.pth"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    loaded = load_for_export(path)
    assert loaded.model.embedding_dim == 512 and len(loaded.schema) == 0


def test_wrong_manifest_preprocessing_is_refused(
    tmp_path: Path, market_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service runtime reads BGR from the manifest: parity must fail, nothing is written."""
    write_checkpoint(tmp_path / "c.pt", ModelConfig(backbone="resnet18"))
    real_build = pipeline.build_manifest

    def bgr_manifest(*args: object, **kw: object) -> Manifest:
        m = real_build(*args, **kw)  # type: ignore[arg-type]
        return m.model_copy(update={"input": m.input.model_copy(update={"channel_order": "BGR"})})

    monkeypatch.setattr(pipeline, "build_manifest", bgr_manifest)
    opts = _options(tmp_path, tmp_path / "c.pt", market_folder, parity_images=8)
    with pytest.raises(ExportError, match="embedding.*min cosine"):
        export_model_folder(opts)
    assert not opts.out.exists() or not (opts.out / "manifest.json").exists()
    assert list(opts.out.parent.iterdir()) == []  # staging removed


def test_variants_kept_and_refused_by_map_rule(
    tmp_path: Path, market_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_checkpoint(tmp_path / "c.pt", ModelConfig(backbone="resnet18", use_attributes=True))
    opts = ExportOptions(
        checkpoint=tmp_path / "c.pt",
        out=tmp_path / "models" / "m" / "1",
        validation=market_folder,
        validation_ids=4,
        variants=("optimized", "int8"),
        parity_images=8,
    )
    manifest = export_model_folder(opts).manifest
    assert sorted(manifest.variants) == ["int8", "optimized"]
    int8 = manifest.variants["int8"]
    assert int8.metrics["mAP_drop_points"] <= 0.5
    assert abs(int8.metrics["mAP"] - manifest.training.metrics["export.mAP"]) <= 0.005
    assert load_manifest(opts.out).variants == manifest.variants
    runtime = ModelRuntime.load(opts.out, RuntimeOptions(device="cpu", variant="int8"))
    assert runtime.dim == 512

    real_measure = variants.measure

    def int8_loses(path: Path, vs: object) -> variants.Measured:
        m = real_measure(path, vs)  # type: ignore[arg-type]
        return dataclasses.replace(m, mAP=m.mAP - 0.006) if "int8" in path.name else m

    monkeypatch.setattr(variants, "measure", int8_loses)
    result = export_model_folder(dataclasses.replace(opts, overwrite=True))
    refused = {v.name: v for v in result.variants}["int8"]
    assert not refused.kept and "0.60 points below" in refused.reason
    assert sorted(result.manifest.variants) == ["optimized"]
    assert not (opts.out / "model.int8.onnx").exists()


@pytest.mark.parametrize(
    ("fp32", "variant", "kept"),
    [(0.8, 0.8, True), (0.8, 0.7951, True), (0.8, 0.7949, False), (0.5, 0.6, True)],
)
def test_accept_rule(fp32: float, variant: float, kept: bool) -> None:
    ok, drop = variants.accept(variant, fp32)
    assert ok is kept
    assert drop == pytest.approx(100 * (fp32 - variant))


def test_refusals_name_the_problem(tmp_path: Path, market_folder: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_for_export(tmp_path / "junk.pt")
    write_checkpoint(tmp_path / "c.pt", ModelConfig(backbone="resnet18"))
    with pytest.raises(ExportError, match="need --validation"):
        export_model_folder(
            _options(tmp_path, tmp_path / "c.pt", market_folder, variants=("int8",))
        )
    with pytest.raises(ExportError, match="no local branch"):
        export_model_folder(
            _options(tmp_path, tmp_path / "c.pt", market_folder, include_local=True)
        )
    with pytest.raises(ValueError, match="unknown variants"):
        variants.parse_variants("int8,int4")


def test_cli_export(
    tmp_path: Path, market_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_checkpoint(tmp_path / "c.pt", ModelConfig(backbone="resnet18"))
    out = tmp_path / "models" / "cli" / "7"
    argv = ["export", "--checkpoint", str(tmp_path / "c.pt"), "--out", str(out)]
    assert main([*argv, "--calibration-images", str(market_folder)]) == 0
    assert load_manifest(out).name == "cli" and "wrote" in capsys.readouterr().out
    assert main([*argv, "--calibration-images", str(market_folder)]) == 2  # exists, no --overwrite
    assert "already holds a model" in capsys.readouterr().err
