"""Parity checker: numbers against hand-made references, and real failures when the
preprocessing fed to ONNX Runtime differs from the one the model was trained with."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from export.onnx_export import OnnxExportConfig, export_onnx
from export.validation import list_images, load_images
from export.verify import (
    ParityError,
    compare_outputs,
    ort_outputs,
    require_parity,
    row_cosine,
    torch_outputs,
)
from reidcore.preprocess import preprocess_batch
from tests.export.helpers import SMALL, tiny_model
from training.models import ModelConfig, ReidModel


def test_row_cosine_matches_definition() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    expected = [float(x @ y / np.sqrt((x @ x) * (y @ y))) for x, y in zip(a, b, strict=True)]
    got = row_cosine(a.astype(np.float32), b.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_compare_outputs_thresholds() -> None:
    emb = np.eye(4, dtype=np.float32)
    probs = np.full((4, 2), 0.5, dtype=np.float32)
    ref = {"embedding": emb, "attr_a": probs}
    assert compare_outputs(ref, {"embedding": emb, "attr_a": probs}).passed
    tilted = emb.copy()
    tilted[0, 1] = 0.02  # cosine 0.9998 < 0.9999
    report = compare_outputs(ref, {"embedding": tilted, "attr_a": probs})
    assert not report.passed
    assert "min cosine" in report.outputs[0].problem
    report = compare_outputs(ref, {"embedding": emb, "attr_a": probs + 0.002})
    assert [o.passed for o in report.outputs] == [True, False]
    missing = compare_outputs(ref, {"embedding": emb})
    assert missing.outputs[1].problem == "missing in candidate"
    with pytest.raises(ParityError, match="attr_a"):
        require_parity(missing, "test")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReidModel, Path]:
    model = tiny_model(ModelConfig(backbone="resnet18", use_attributes=True))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, path, SMALL.height, SMALL.width, OnnxExportConfig())
    return model, path


def _without_div255(images: list[Image.Image]) -> np.ndarray:
    """Pixels in [0, 255] (the /255 forgotten), then SMALL's mean/std, computed by hand."""
    pixels = np.stack(
        [
            np.asarray(
                im.resize((SMALL.width, SMALL.height), Image.Resampling.BILINEAR), np.float32
            )
            for im in images
        ]
    )
    mean, std = np.asarray(SMALL.mean, np.float32), np.asarray(SMALL.std, np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(0, 3, 1, 2))


WRONG: dict[str, Callable[[list[Image.Image]], np.ndarray]] = {
    "mean/std": lambda ims: preprocess_batch(
        ims, dataclasses.replace(SMALL, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    ),
    "BGR": lambda ims: preprocess_batch(ims, dataclasses.replace(SMALL, channel_order="BGR")),
    "no /255": _without_div255,
}
"""Deliberately wrong preprocessing of the images fed to ONNX Runtime."""


@pytest.mark.parametrize("mistake", [None, *WRONG])
def test_parity_rejects_wrong_preprocessing(
    exported: tuple[ReidModel, Path], market_folder: Path, mistake: str | None
) -> None:
    model, path = exported
    images = load_images(list_images(market_folder, 12))
    reference = torch_outputs(model, preprocess_batch(images, SMALL))
    served = WRONG[mistake](images) if mistake else preprocess_batch(images, SMALL)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    report = compare_outputs(reference, ort_outputs(session, served))
    assert report.passed is (mistake is None), report.summary()
    if mistake:
        assert report.outputs[0].min_cosine is not None and report.outputs[0].min_cosine < 0.9999


def test_dynamic_batch_gives_same_per_image_outputs(
    exported: tuple[ReidModel, Path], market_folder: Path
) -> None:
    _, path = exported
    images = load_images(list_images(market_folder, 32))
    batch = preprocess_batch(images, SMALL)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    whole = ort_outputs(session, batch, chunk=32)
    assert whole["embedding"].shape == (32, 512)
    for size in (1, 7):
        parts = ort_outputs(session, batch, chunk=size)
        for name, value in whole.items():
            np.testing.assert_allclose(parts[name], value, atol=1e-5, err_msg=f"{name} @ {size}")
