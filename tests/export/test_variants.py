"""int8 variant: the default setting is what ``make_variant`` builds, the node groups kept
float32 are the right ones, calibration strides cover every image once, and calibration never
sees a validation image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

import export.variants as variants
from export.onnx_export import OnnxExportConfig, export_onnx
from export.pipeline import ExportError, ExportOptions, calibration_paths, evenly_spaced
from export.validation import ValidationSet, list_images, load_validation_set
from export.variants import DEFAULT_INT8, Int8Config, float_nodes, make_variant, measure
from tests.export.helpers import SMALL, tiny_model
from training.models import ModelConfig


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x32 OSNet-x0.25 with random weights and BN statistics, as one ONNX file."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(
        tiny_model(ModelConfig(backbone="osnet_x0_25")),
        path,
        SMALL.height,
        SMALL.width,
        OnnxExportConfig(),
    )
    return path


@pytest.fixture(scope="module")
def split(market_folder: Path) -> ValidationSet:
    """4 of the 8 generated identities held out."""
    return load_validation_set(market_folder, SMALL, num_ids=4, seed=0)


def _conv_weight_is_quantised(model: onnx.ModelProto, conv: onnx.NodeProto) -> bool:
    producers = {o: n for n in model.graph.node for o in n.output}
    weight = producers.get(conv.input[1])
    return weight is not None and weight.op_type == "DequantizeLinear"


def test_float_nodes_groups(tiny_onnx: Path) -> None:
    graph = onnx.load(str(tiny_onnx)).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    tail_ops = {n.name: n.op_type for n in graph.node}
    base = set(float_nodes(graph, ()))
    assert base == {n.name for n in graph.node if n.op_type in variants.FLOAT_ONLY_OPS}
    assert base and not base & set(convs)
    assert set(float_nodes(graph, ("first_conv",))) - base == {convs[0]}
    assert set(float_nodes(graph, ("last_conv",))) - base == {convs[-1]}
    neck = set(float_nodes(graph, ("neck",))) - base
    assert {tail_ops[n] for n in neck} == {"ReduceMean", "Gemm", "BatchNormalization"}
    with pytest.raises(ValueError, match="unknown keep_float groups"):
        Int8Config(keep_float=("stem",))
    with pytest.raises(ValueError, match="unknown int8 calibration"):
        Int8Config(calibration="kl")


def test_batch_reader_strides_cover_each_image_once() -> None:
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    reader = variants._BatchReader("x", images, chunk=3)
    assert len(reader) == 10
    seen: list[float] = []
    for start in range(0, 10, 5):  # what quantize_static does with CalibStridedMinMax=5
        reader.set_range(start, start + 5)
        while (batch := reader.get_next()) is not None:
            assert len(batch["x"]) <= 3
            seen += batch["x"].ravel().tolist()
    assert seen == list(range(10))
    reader.rewind()
    assert reader.get_next() is not None


@pytest.mark.parametrize(
    ("method", "images", "stride"),
    [("minmax", 256, None), ("percentile", 256, 64), ("entropy", 100, 50), ("entropy", 40, None)],
)
def test_histogram_calibration_stride(method: str, images: int, stride: int | None) -> None:
    got = variants._strided_calibration(Int8Config(calibration=method), images)
    assert got == stride
    assert got is None or (images % got == 0 and got <= DEFAULT_INT8.histogram_stride)


def test_make_variant_builds_the_default_int8(
    tiny_onnx: Path, split: ValidationSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[Int8Config] = []
    real_build = variants.build_int8

    def spy(src: Path, dst: Path, calibration: np.ndarray, cfg: Int8Config = DEFAULT_INT8) -> str:
        used.append(cfg)
        return real_build(src, dst, calibration, cfg)

    monkeypatch.setattr(variants, "build_int8", spy)
    base = measure(tiny_onnx, split)
    calibration = np.random.default_rng(0).standard_normal((16, 3, 64, 32)).astype(np.float32)
    outcome = make_variant("int8", tiny_onnx, tmp_path, split, base, calibration, 100.0)
    assert used == [DEFAULT_INT8]
    assert outcome.kept and outcome.description.startswith(DEFAULT_INT8.describe(16))
    model = onnx.load(str(outcome.path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantised = [_conv_weight_is_quantised(model, c) for c in convs]
    assert quantised[0] is ("first_conv" not in DEFAULT_INT8.keep_float)
    assert all(quantised[1:])
    assert outcome.metrics["cosine_to_fp32_mean"] > 0.9


def test_percentile_int8_runs_in_strides(tiny_onnx: Path, tmp_path: Path) -> None:
    cfg = Int8Config(calibration="percentile", histogram_stride=8, keep_float=("neck",), chunk=3)
    calibration = np.random.default_rng(1).standard_normal((20, 3, 64, 32)).astype(np.float32)
    text = variants.build_int8(tiny_onnx, tmp_path / "m.onnx", calibration, cfg)
    assert "percentile 99.999-calibrated on 20 images" in text  # strides of 5, chunks of 1
    model = onnx.load(str(tmp_path / "m.onnx"))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert not _conv_weight_is_quantised(model, gemm)  # neck kept float32


@pytest.mark.parametrize(("n", "count"), [(10, 3), (10, 10), (7, 20), (1000, 256)])
def test_evenly_spaced(n: int, count: int) -> None:
    got = evenly_spaced(list(range(n)), count)
    assert len(got) == min(n, count) and len(set(got)) == len(got) and got == sorted(got)
    if count < n:
        gaps = np.diff(got)
        assert gaps.max() - gaps.min() <= 1  # no clump at the start of the folder


def _options(market: Path, **kw: object) -> ExportOptions:
    return dataclasses.replace(
        ExportOptions(Path("c.pt"), Path("out"), validation=market, validation_ids=4),
        **kw,  # type: ignore[arg-type]
    )


def test_calibration_skips_the_validation_split(market_folder: Path, split: ValidationSet) -> None:
    held_out = {Path(p).resolve() for p in split.paths}
    held_ids = {Path(p).name[:4] for p in split.paths}
    carved = calibration_paths(_options(market_folder, calibration_count=100), split)
    assert carved and not {p.resolve() for p in carved} & held_out
    assert not {p.name[:4] for p in carved} & held_ids  # other identities only
    train = list_images(market_folder / "bounding_box_train")
    assert len(carved) == len(train) - len(held_out)
    # the same folder passed as --calibration-images still loses the validation files
    same = _options(
        market_folder, calibration_images=market_folder / "bounding_box_train", calibration_count=5
    )
    picked = calibration_paths(same, split)
    assert len(picked) == 5 and not {p.resolve() for p in picked} & held_out


def test_calibration_without_other_images_is_refused(
    tmp_path: Path, market_folder: Path, split: ValidationSet
) -> None:
    only_validation = tmp_path / "val"
    only_validation.mkdir()
    for p in split.paths[:3]:
        (only_validation / Path(p).name).write_bytes(Path(p).read_bytes())
    opts = _options(market_folder, calibration_images=only_validation)
    validation_copy = dataclasses.replace(split, paths=[str(p) for p in only_validation.iterdir()])
    with pytest.raises(ExportError, match="every image of .* is in the validation split"):
        calibration_paths(opts, validation_copy)
    no_train = _options(tmp_path / "market-without-train")
    with pytest.raises(ExportError, match="bounding_box_train does not exist"):
        calibration_paths(no_train, split)
