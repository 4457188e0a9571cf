"""Colour-histogram baseline: how far colour statistics alone go on a Market-style dataset.

Each crop becomes the concatenation, over horizontal stripes, of a joint HSV histogram
(L1-normalised per stripe, then square-rooted so that Euclidean distance is the Hellinger
distance). With ``camera_centred`` each camera's mean feature (over its query and gallery
crops, no labels used) is subtracted first: this removes the camera's shared colour cast and
background, without which same-camera impostors outrank every cross-camera match. Queries are
ranked against the gallery under the Market-1501 single-query protocol
(:func:`reidcore.evaluation.evaluate_rank`). A learnt model must beat this clearly.

Command line: ``python -m training.data.histogram_baseline DATASET_ROOT``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reidcore.evaluation import (
    EvaluationResult,
    evaluate_rank,
    format_results_table,
    pairwise_euclidean,
)
from training.data.readers import read_market
from training.data.types import Sample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistogramConfig:
    """Shape of the histogram feature."""

    stripes: int = 6
    """Horizontal stripes, each with its own histogram (1: one global histogram)."""
    hue_bins: int = 8
    """Bins over hue."""
    sat_bins: int = 3
    """Bins over saturation."""
    val_bins: int = 3
    """Bins over value (brightness)."""
    height: int = 128
    """Crops are resized to height×(height/2) before binning (speed; histograms barely change)."""
    camera_centred: bool = True
    """Subtract each camera's mean feature (query and gallery together) before matching."""

    @property
    def dim(self) -> int:
        """Feature length."""
        return self.stripes * self.hue_bins * self.sat_bins * self.val_bins


def histogram_feature(image: Image.Image, cfg: HistogramConfig) -> np.ndarray:
    """One crop -> float32 [cfg.dim]: per-stripe joint HSV histograms, L1-normalised, sqrt."""
    hsv = np.asarray(
        image.convert("RGB")
        .resize((cfg.height // 2, cfg.height), Image.Resampling.BILINEAR)
        .convert("HSV")
    )  # [H, W, 3] uint8, every channel 0..255
    h_idx = hsv[..., 0].astype(np.int64) * cfg.hue_bins // 256
    s_idx = hsv[..., 1].astype(np.int64) * cfg.sat_bins // 256
    v_idx = hsv[..., 2].astype(np.int64) * cfg.val_bins // 256
    bins = (h_idx * cfg.sat_bins + s_idx) * cfg.val_bins + v_idx  # [H, W]
    per_stripe = cfg.hue_bins * cfg.sat_bins * cfg.val_bins
    out = np.empty((cfg.stripes, per_stripe), dtype=np.float32)
    for i, rows in enumerate(np.array_split(bins, cfg.stripes, axis=0)):
        counts = np.bincount(rows.ravel(), minlength=per_stripe).astype(np.float32)
        out[i] = np.sqrt(counts / np.float32(max(rows.size, 1)))
    return out.ravel()


def histogram_features(samples: Sequence[Sample], cfg: HistogramConfig) -> np.ndarray:
    """Features [N, cfg.dim] float32 of the samples' images, in order."""
    feats = np.empty((len(samples), cfg.dim), dtype=np.float32)
    for i, s in enumerate(samples):
        with Image.open(s.path) as img:
            feats[i] = histogram_feature(img, cfg)
    return feats


def evaluate_histogram_baseline(
    root: str | Path, cfg: HistogramConfig | None = None
) -> EvaluationResult:
    """CMC and mAP of the histogram baseline on a Market-1501-style root's query/gallery."""
    cfg = cfg or HistogramConfig()
    ds = read_market(root)
    if not ds.query:
        raise ValueError(f"{root} has no query/ split to evaluate")
    return evaluate_histogram_split(ds.query, ds.gallery, cfg)


def evaluate_histogram_split(
    query: Sequence[Sample], gallery: Sequence[Sample], cfg: HistogramConfig | None = None
) -> EvaluationResult:
    """CMC and mAP of the histogram baseline on a given query/gallery split."""
    cfg = cfg or HistogramConfig()
    q = histogram_features(query, cfg)
    g = histogram_features(gallery, cfg)
    q_cams, g_cams = _column(query, "camid"), _column(gallery, "camid")
    if cfg.camera_centred:
        q, g = camera_centre(q, q_cams, g, g_cams)
    return evaluate_rank(
        pairwise_euclidean(q, g),
        _column(query, "pid"),
        _column(gallery, "pid"),
        q_cams,
        g_cams,
    )


def _column(samples: Sequence[Sample], attr: str) -> np.ndarray:
    return np.asarray([getattr(s, attr) for s in samples], dtype=np.int64)


def camera_centre(
    query: np.ndarray, query_cams: np.ndarray, gallery: np.ndarray, gallery_cams: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Subtract from every feature the mean feature of its camera (query and gallery pooled)."""
    feats = np.concatenate([query, gallery])
    cams = np.concatenate([query_cams, gallery_cams])
    out = np.empty_like(feats)
    for cam in np.unique(cams):
        sel = cams == cam
        out[sel] = feats[sel] - feats[sel].mean(axis=0, dtype=np.float32)
    return out[: len(query)], out[len(query) :]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print rank-1/5/10 and mAP of the baseline on a dataset root."""
    from reidcore.logs import configure_logging

    parser = argparse.ArgumentParser(
        prog="python -m training.data.histogram_baseline",
        description="Colour-histogram re-ID baseline on a Market-1501-style dataset root.",
    )
    parser.add_argument("root", type=Path, help="folder with query/ and bounding_box_test/")
    parser.add_argument("--stripes", type=int, default=6, help="horizontal stripes")
    args = parser.parse_args(argv)
    configure_logging()
    rows = []
    for centred in (False, True):
        cfg = HistogramConfig(stripes=args.stripes, camera_centred=centred)
        label = "HSV histogram" + (", camera-centred" if centred else "")
        rows.append((label, evaluate_histogram_baseline(args.root, cfg)))
    print(format_results_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
