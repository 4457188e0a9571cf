"""Clustered synthetic re-ID features for demos, tests and benchmarks.

Each identity is a random unit centre; each image of it is the centre plus a per-camera
offset plus Gaussian noise, L2-normalised. This mimics the structure of real re-ID
embeddings (tight identity clusters, camera shift) well enough to exercise evaluation and
re-ranking; it says nothing about a real model's accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureSet:
    """Query and gallery features with identities and cameras (the .npz layout)."""

    query_features: np.ndarray  # [Nq, d] float32
    query_ids: np.ndarray  # [Nq] int64
    query_cams: np.ndarray  # [Nq] int64
    gallery_features: np.ndarray  # [Ng, d] float32
    gallery_ids: np.ndarray  # [Ng] int64
    gallery_cams: np.ndarray  # [Ng] int64

    def save(self, path: str) -> None:
        np.savez(path, **self.__dict__)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_clustered_features(
    num_ids: int = 200,
    images_per_id: int = 8,
    num_cams: int = 4,
    dim: int = 512,
    noise: float = 0.9,
    cam_shift: float = 0.5,
    num_distractors: int = 0,
    seed: int = 0,
) -> FeatureSet:
    """One query per identity (camera 0..num_cams-1, drawn), the other images in the gallery.

    ``noise`` and ``cam_shift`` are in units of the centre's norm before normalisation
    (per-dimension scale ``1/sqrt(dim)``), so difficulty does not depend on ``dim``.
    Distractors get identity 0; real identities are 1..num_ids.
    """
    rng = np.random.default_rng(seed)
    scale = np.float32(1.0 / np.sqrt(dim))
    centres = _unit(rng.standard_normal((num_ids, dim), dtype=np.float32))
    cam_offsets = rng.standard_normal((num_cams, dim), dtype=np.float32) * scale * cam_shift
    ids = np.repeat(np.arange(1, num_ids + 1), images_per_id)
    cams = rng.integers(0, num_cams, size=ids.size)
    feats = (
        centres[ids - 1]
        + cam_offsets[cams]
        + rng.standard_normal((ids.size, dim), dtype=np.float32) * scale * noise
    )
    feats = _unit(feats)
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])  # first image of each id
    is_query = np.zeros(ids.size, dtype=bool)
    is_query[first] = True
    g_feats, g_ids, g_cams = feats[~is_query], ids[~is_query], cams[~is_query]
    if num_distractors:
        d = _unit(rng.standard_normal((num_distractors, dim), dtype=np.float32))
        g_feats = np.concatenate([g_feats, d])
        g_ids = np.concatenate([g_ids, np.zeros(num_distractors, dtype=ids.dtype)])
        g_cams = np.concatenate([g_cams, rng.integers(0, num_cams, size=num_distractors)])
    return FeatureSet(
        query_features=feats[is_query],
        query_ids=ids[is_query].astype(np.int64),
        query_cams=cams[is_query].astype(np.int64),
        gallery_features=np.ascontiguousarray(g_feats, dtype=np.float32),
        gallery_ids=g_ids.astype(np.int64),
        gallery_cams=g_cams.astype(np.int64),
    )
