"""Real images for export: calibration/parity images from a folder, and a labelled
query/gallery validation split on which each ONNX file's retrieval mAP is measured.

Every image is decoded once (:func:`reidcore.preprocess.decode_image`) and preprocessed with
the serving path (:func:`reidcore.preprocess.preprocess_batch`); the float32 batches are then
reused for every model file compared.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reidcore.evaluation import EvaluationResult, evaluate_rank, pairwise_euclidean
from reidcore.preprocess import PreprocessConfig, decode_image, preprocess_batch
from training.data.readers import is_image_file, read_market
from training.data.split import split_validation
from training.data.types import Sample

logger = logging.getLogger(__name__)


@dataclass
class ValidationSet:
    """Preprocessed, labelled query and gallery images."""

    name: str
    """Where the split came from (folder, and how it was carved)."""
    query: np.ndarray
    """[Nq, 3, H, W] float32 query images."""
    gallery: np.ndarray
    """[Ng, 3, H, W] float32 gallery images."""
    query_ids: np.ndarray
    """[Nq] identities."""
    query_cams: np.ndarray
    """[Nq] cameras."""
    gallery_ids: np.ndarray
    """[Ng] identities (-1 junk, 0 distractor)."""
    gallery_cams: np.ndarray
    """[Ng] cameras."""
    paths: list[str]
    """Image files, query then gallery (same order as :attr:`images`)."""

    @property
    def images(self) -> np.ndarray:
        """Query then gallery, one batch [Nq + Ng, 3, H, W] (for calibration)."""
        return np.concatenate([self.query, self.gallery])


def list_images(folder: str | os.PathLike[str], limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by path, at most ``limit``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p.name))
    if not paths:
        raise ValueError(f"image folder {folder} holds no .jpg/.jpeg/.png/.bmp file")
    return paths[:limit] if limit else paths


def load_images(paths: Sequence[Path]) -> list[Image.Image]:
    """Decode each file once (the service's decoder); errors name the file."""
    images = []
    for path in paths:
        try:
            images.append(decode_image(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return images


def load_image_batch(
    folder: str | os.PathLike[str], cfg: PreprocessConfig, limit: int | None = None
) -> np.ndarray:
    """Up to ``limit`` images of ``folder`` preprocessed with ``cfg``: float32 [N, 3, H, W]."""
    return preprocess_batch(load_images(list_images(folder, limit)), cfg)


def validation_samples(
    root: str | os.PathLike[str], num_ids: int = 100, seed: int = 0
) -> tuple[str, list[Sample], list[Sample]]:
    """``(name, query, gallery)`` of a Market-1501-style folder.

    A folder with ``query/`` and ``bounding_box_test/`` gives those; a folder with only
    ``bounding_box_train/`` gets ``num_ids`` identities carved out of it
    (:func:`training.data.split.split_validation`, seeded).
    """
    ds = read_market(Path(root))
    if ds.query:
        return f"{ds.name} query/gallery", ds.query, ds.gallery
    _, query, gallery = split_validation(ds.train, num_ids=num_ids, seed=seed)
    return f"{ds.name} train, {num_ids} held-out identities (seed {seed})", query, gallery


def load_validation_set(
    root: str | os.PathLike[str], cfg: PreprocessConfig, num_ids: int = 100, seed: int = 0
) -> ValidationSet:
    """Decode and preprocess the validation split of ``root`` (see :func:`validation_samples`)."""
    name, query, gallery = validation_samples(root, num_ids, seed)
    logger.info("validation set %s: %d query, %d gallery images", name, len(query), len(gallery))
    return validation_set(name, query, gallery, cfg)


def validation_set(
    name: str, query: Sequence[Sample], gallery: Sequence[Sample], cfg: PreprocessConfig
) -> ValidationSet:
    """Query and gallery samples decoded and preprocessed, with their labels."""

    def batch(samples: Sequence[Sample]) -> np.ndarray:
        return preprocess_batch(load_images([Path(s.path) for s in samples]), cfg)

    return ValidationSet(
        name=name,
        query=batch(query),
        gallery=batch(gallery),
        query_ids=np.asarray([s.pid for s in query]),
        query_cams=np.asarray([s.camid for s in query]),
        gallery_ids=np.asarray([s.pid for s in gallery]),
        gallery_cams=np.asarray([s.camid for s in gallery]),
        paths=[s.path for s in [*query, *gallery]],
    )


def open_session(path: str | os.PathLike[str], threads: int = 0) -> Any:
    """A CPU ONNX Runtime session on ``path`` (all graph optimisations, no spinning)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def embed(session: Any, batch: np.ndarray, chunk: int = 32) -> np.ndarray:
    """L2-normalised float32 ``embedding`` output of ``session`` for ``batch`` [N, dim]."""
    input_name = session.get_inputs()[0].name
    parts = [
        np.asarray(session.run(["embedding"], {input_name: batch[i : i + chunk]})[0], np.float32)
        for i in range(0, len(batch), chunk)
    ]
    emb = np.concatenate(parts)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return (emb / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


def retrieval_metrics(
    vs: ValidationSet, query: np.ndarray, gallery: np.ndarray
) -> EvaluationResult:
    """CMC/mAP (official definition) of query/gallery embeddings on ``vs``'s labels."""
    dist = pairwise_euclidean(query, gallery)
    return evaluate_rank(dist, vs.query_ids, vs.gallery_ids, vs.query_cams, vs.gallery_cams)


def evaluate_model_file(path: str | os.PathLike[str], vs: ValidationSet) -> EvaluationResult:
    """Retrieval metrics of the ONNX file at ``path`` on ``vs`` (CPU session)."""
    session = open_session(path)
    return retrieval_metrics(vs, embed(session, vs.query), embed(session, vs.gallery))
