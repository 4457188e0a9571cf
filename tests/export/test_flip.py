"""Test-time flip in the exported graph: ONNX Runtime returns PyTorch's average of an image
and its mirror image (computed here by hand, view by view), a mirrored image gets the
original's outputs, and the service runtime serves N rows for a batch of N."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from export.onnx_export import OnnxExportConfig, export_onnx
from export.pipeline import ExportOptions, export_model_folder
from export.validation import open_session
from export.verify import ort_outputs, row_cosine
from service.manifest import load_manifest
from service.runtime import ModelRuntime, RuntimeOptions
from tests.export.helpers import SMALL, tiny_model, write_checkpoint
from training.models import InferenceWrapper, ModelConfig, ReidModel

CFG = ModelConfig(backbone="resnet18", use_attributes=True, use_local=True)


@pytest.fixture(scope="module")
def model() -> ReidModel:
    return tiny_model(CFG)


@pytest.fixture(scope="module")
def flipped_onnx(model: ReidModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flip") / "model.onnx"
    cfg = OnnxExportConfig(include_local=True, flip=True)
    export_onnx(model, path, SMALL.height, SMALL.width, cfg)
    return path


def batch(n: int, seed: int = 0) -> np.ndarray:
    """``n`` normalised-image-like float32 inputs [n, 3, H, W] with left-right structure."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, SMALL.height, SMALL.width)).astype(np.float32)
    x[..., : SMALL.width // 2] += 1.5  # bright left half: the mirror image differs
    return x


def unit(a: np.ndarray, axis: int) -> np.ndarray:
    return a / np.linalg.norm(a, axis=axis, keepdims=True)


def by_hand(model: ReidModel, x: np.ndarray) -> dict[str, np.ndarray]:
    """The definition of export.flip, from two separate PyTorch runs of the plain wrapper."""
    wrapper = InferenceWrapper(model, include_local=True)
    with torch.inference_mode():
        plain = [t.numpy() for t in wrapper(torch.from_numpy(x))]
        mirror = [t.numpy() for t in wrapper(torch.from_numpy(np.ascontiguousarray(x[..., ::-1])))]
    out = {}
    for name, a, b in zip(wrapper.output_names, plain, mirror, strict=True):
        mean = (a + b) / 2
        if name == "embedding":
            mean = unit(mean, 1)
        elif name == "local" and np.allclose(np.linalg.norm(a, axis=2), 1.0, atol=1e-5):
            mean = unit(mean, 2)  # unit stripes stay unit stripes
        out[name] = mean
    return out


@pytest.mark.parametrize("n", [1, 5])
def test_onnx_equals_pytorch_average_of_image_and_mirror(
    model: ReidModel, flipped_onnx: Path, n: int
) -> None:
    x = batch(n, seed=n)
    got = ort_outputs(open_session(flipped_onnx), x)
    want = by_hand(model, x)
    assert list(got) == list(want) == ["embedding", "attr_gender", "attr_upper_color", "local"]
    for name in want:
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], atol=2e-5, err_msg=name)
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got["attr_gender"].sum(axis=1), 1.0, atol=1e-5)


def test_mirrored_image_gets_the_same_outputs(model: ReidModel, flipped_onnx: Path) -> None:
    x = batch(4, seed=7)
    mirrored = np.ascontiguousarray(x[..., ::-1])
    session = open_session(flipped_onnx)
    a, b = ort_outputs(session, x), ort_outputs(session, mirrored)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=2e-5, err_msg=name)
    # ... which the plain model does not do: the check above is not trivially true.
    plain = InferenceWrapper(model)
    with torch.inference_mode():
        e1 = plain(torch.from_numpy(x))[0].numpy()
        e2 = plain(torch.from_numpy(mirrored))[0].numpy()
    assert row_cosine(e1, e2).min() < 0.999


def test_export_with_flip_is_in_the_manifest_and_served(
    tmp_path: Path, market_folder: Path
) -> None:
    write_checkpoint(tmp_path / "c.pt", ModelConfig(backbone="osnet_x0_25"))
    opts = ExportOptions(tmp_path / "c.pt", tmp_path / "models" / "m" / "1", flip=True)
    result = export_model_folder(opts)
    manifest = load_manifest(opts.out)
    assert manifest.model.test_time_flip and result.parity.passed
    assert "test-time flip" in manifest.training.notes
    runtime = ModelRuntime.load(opts.out, RuntimeOptions(device="cpu"))
    images = [Image.open(p).convert("RGB") for p in sorted(market_folder.rglob("*.jpg"))[:3]]
    plain = runtime.infer(images).embeddings
    mirrored = runtime.infer([ImageOps.mirror(im) for im in images]).embeddings
    assert plain.shape == (3, manifest.embedding.dim)
    np.testing.assert_allclose(plain, mirrored, atol=1e-4)
