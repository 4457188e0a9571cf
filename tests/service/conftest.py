"""Fixtures of the service tests: a tiny hand-built ONNX model folder and image bytes."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.service.tiny_model import write_tiny_model_folder

with warnings.catch_warnings():  # starlette asks for httpx2; httpx is what the project pins
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TINY_DIM = 64


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder: tiny ONNX model (64-d embedding, two attribute heads) + manifest."""
    return write_tiny_model_folder(tmp_path_factory.mktemp("models") / "tiny" / "1", dim=TINY_DIM)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the same dimension (other weights, so another sha256)."""
    return write_tiny_model_folder(
        tmp_path_factory.mktemp("models") / "tiny" / "2", dim=TINY_DIM, seed=1, version="2"
    )


def encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    """uint8 [H, W, 3] -> image file bytes."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def random_image(seed: int, fmt: str = "PNG", size: tuple[int, int] = (40, 20)) -> bytes:
    """A random RGB image of ``size`` (height, width); PNG is lossless, so embeddings repeat."""
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8), fmt)


@pytest.fixture
def gallery_engine() -> str:
    """The gallery storage engine of ``make_client``'s services: local, unless a test module
    overrides this fixture (the API suites run against every engine)."""
    return "local"


@pytest.fixture
def make_client(model_dir: Path, gallery_engine: str) -> Iterator[Callable[..., TestClient]]:
    """Factory of started TestClients (lifespan run) over a data dir; all closed at the end."""
    clients: list[TestClient] = []

    def make(data_dir: Path, model: Path | None = None, **overrides: object) -> TestClient:
        overrides.setdefault("gallery_backend", gallery_engine)
        settings = Settings(model_dir=model or model_dir, data_dir=data_dir, **overrides)  # type: ignore[arg-type]
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
