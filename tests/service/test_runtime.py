from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidcore.preprocess import preprocess_batch
from service.runtime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    ModelRuntime,
    RuntimeOptions,
    choose_providers,
    l2_normalize,
    softmax,
)
from tests.service.tiny_model import TINY_SCHEMA, reference_outputs


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)) for _ in range(n)]


def test_outputs_match_numpy_reference(model_dir: Path) -> None:
    rt = ModelRuntime.load(model_dir, RuntimeOptions(threads=1, max_batch=2))  # 5 -> 3 runs
    images = _images(5)
    out = rt.infer(images)
    emb, attrs = reference_outputs(preprocess_batch(images, rt.preprocess), 64, TINY_SCHEMA, 0)
    assert out.embeddings.dtype == np.float32 and out.embeddings.shape == (5, 64)
    np.testing.assert_allclose(out.embeddings, emb, atol=1e-5)
    assert list(out.attributes) == TINY_SCHEMA.names
    for name, probs in attrs.items():
        np.testing.assert_allclose(out.attributes[name], probs, atol=1e-5)
    assert rt.providers == [CPU_PROVIDER]


def test_empty_batch(model_dir: Path) -> None:
    out = ModelRuntime.load(model_dir).infer([])
    assert out.embeddings.shape == (0, 64)
    assert out.attributes["upper_color"].shape == (0, 4)


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("auto", [CPU_PROVIDER], [CPU_PROVIDER]),
        ("auto", [CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER]),
        ("cpu", [CUDA_PROVIDER, CPU_PROVIDER], [CPU_PROVIDER]),
        ("cuda", [CUDA_PROVIDER, CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER]),
    ],
)
def test_choose_providers(device: str, available: list[str], expected: list[str]) -> None:
    assert choose_providers(device, available) == expected


def test_choose_providers_refuses_missing_cuda() -> None:
    with pytest.raises(ValueError, match="device=cuda"):
        choose_providers("cuda", [CPU_PROVIDER])
    with pytest.raises(ValueError, match="unknown device"):
        choose_providers("tpu", [CPU_PROVIDER])


def test_helpers_are_float32_and_correct() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    n = l2_normalize(x)
    assert n.dtype == np.float32
    np.testing.assert_allclose(n, [[0.6, 0.8], [0.0, 0.0]])
    s = softmax(np.array([[0.0, np.log(3.0)]], dtype=np.float32))
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, [[0.25, 0.75]], rtol=1e-6)


def test_service_app_does_not_import_torch() -> None:
    code = (
        "import sys, service.app, service.commands.serve; "
        "bad = [m for m in ('torch', 'training') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, f"service imports torch/training: {proc.stderr}"
