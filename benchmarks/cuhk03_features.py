"""Validation features of CUHK03-NP for test-time experiments (no training).

Carves ``val_ids`` identities out of the CUHK03-NP detected training split with
:func:`training.data.split.split_validation` (the split ``benchmarks/train_cuhk03.py`` and
``reid train`` use, same seed) and extracts L2-normalised embeddings with a model built from
``training/configs/osnet_cuhk03_cpu.yaml`` (by default torchreid's OSNet x0.25 MSMT17
checkpoint as it is; ``checkpoint`` a fine-tuned ``reid train`` checkpoint instead). With no
training involved every eligible identity can be held out: ``val_ids=0`` takes them all
(767 on CUHK03-NP). The result is a :class:`reidcore.synthetic_features.FeatureSet`, which
``reid evaluate`` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from reidcore.preprocess import PreprocessConfig
from reidcore.synthetic_features import FeatureSet

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "osnet_cuhk03_cpu.yaml"


def extract_validation_features(
    val_ids: int = 0, seed: int = 0, checkpoint: str | None = None, threads: int = 2
) -> FeatureSet:
    """Query/gallery features of the ``val_ids`` held-out identities (0: all eligible)."""
    from training.config import load_train_config
    from training.data.split import eligible_identities, split_validation
    from training.datasets import EvalSplit, build_eval_loaders, read_dataset
    from training.evaluate import extract
    from training.models import build_model

    torch.set_num_threads(threads)
    cfg = load_train_config(CONFIG, [])
    ds = read_dataset(cfg.data)
    n = val_ids or len(eligible_identities(ds.train))
    _, query, gallery = split_validation(ds.train, n, seed)
    if checkpoint:
        from training.checkpoint import load_checkpoint_for_inference

        model, _ = load_checkpoint_for_inference(checkpoint)
    else:
        model = build_model(cfg.model, num_classes=0)
    pre = PreprocessConfig(height=cfg.data.height, width=cfg.data.width)
    q_loader, g_loader = build_eval_loaders(EvalSplit(query, gallery, None, None), pre, 64, 0)
    q = extract(model, q_loader, torch.device("cpu"))
    g = extract(model, g_loader, torch.device("cpu"))
    logger.info("features: %d queries, %d gallery, %d identities", len(query), len(gallery), n)
    return FeatureSet(
        query_features=q.features,
        query_ids=q.pids.astype(np.int64),
        query_cams=q.camids.astype(np.int64),
        gallery_features=g.features,
        gallery_ids=g.pids.astype(np.int64),
        gallery_cams=g.camids.astype(np.int64),
    )


def cached_features(path: Path, **kwargs: object) -> FeatureSet:
    """The features saved at ``path``, extracted (and saved there) the first time."""
    if path.exists():
        with np.load(path) as z:
            return FeatureSet(**{k: z[k] for k in z.files})
    fs = extract_validation_features(**kwargs)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    fs.save(str(path))
    return fs
