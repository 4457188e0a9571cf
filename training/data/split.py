"""Identity relabelling for training and a validation split carved out by identity.

The validation split follows the APR paper (100 of Market-1501's 751 training identities
held out) and the Market-1501 query protocol: chosen identities leave the training set
entirely; per chosen identity and camera one image becomes a query, the rest the gallery.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from training.data.errors import DatasetError
from training.data.readers import check_cross_camera_matches
from training.data.types import DISTRACTOR_ID, JUNK_ID, ReidDataset, Sample

logger = logging.getLogger(__name__)


def relabel(samples: Sequence[Sample]) -> tuple[list[Sample], dict[int, int]]:
    """Identities renumbered 0..K-1 in increasing order of the original label.

    Returns the relabelled samples (same order) and ``original -> new``. Junk (-1) and
    distractor (0) labels are refused: they are no identity a classifier could learn.
    Join attributes (by original identity) *before* relabelling.
    """
    if not samples:
        raise DatasetError("cannot relabel an empty sample list")
    bad = sorted({s.pid for s in samples if s.pid in (JUNK_ID, DISTRACTOR_ID)})
    if bad:
        raise DatasetError(
            f"training samples carry junk/distractor identities {bad}; drop them first"
        )
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [replace(s, pid=mapping[s.pid]) for s in samples], mapping


def _by_identity_camera(samples: Sequence[Sample]) -> dict[int, dict[int, list[Sample]]]:
    """pid -> camid -> samples, in input order."""
    groups: dict[int, dict[int, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        groups[s.pid][s.camid].append(s)
    return groups


def eligible_identities(samples: Sequence[Sample]) -> list[int]:
    """Identities that can be validation identities, sorted.

    They are real identities (not junk or distractor) seen by at least 2 cameras, one of
    which saw them at least twice, so that at least one query keeps a cross-camera match.
    """
    out = []
    for pid, cams in _by_identity_camera(samples).items():
        if pid in (JUNK_ID, DISTRACTOR_ID) or len(cams) < 2:
            continue
        if max(len(v) for v in cams.values()) >= 2:
            out.append(pid)
    return sorted(out)


def _query_gallery_for(
    cams: dict[int, list[Sample]], rng: np.random.Generator
) -> tuple[list[Sample], list[Sample]]:
    """One random query from each camera with >= 2 images of the identity, rest gallery.

    A camera with one image keeps it in the gallery; with >= 2 cameras this guarantees
    every query a gallery image of the same identity from another camera.
    """
    query: list[Sample] = []
    gallery: list[Sample] = []
    for camid in sorted(cams):
        imgs = cams[camid]
        pick = int(rng.integers(len(imgs))) if len(imgs) >= 2 else -1
        for i, s in enumerate(imgs):
            (query if i == pick else gallery).append(s)
    return query, gallery


def carve_queries(samples: Sequence[Sample], seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """``(query, gallery)`` of a dataset that has no query split, over all its identities.

    As the validation split does (:func:`split_validation`): per identity and camera with at
    least 2 images one random image becomes a query, the rest the gallery; junk and
    distractor images stay in the gallery. Queries whose identity no other camera saw are
    kept: the evaluation skips and counts them.
    """
    rng = np.random.default_rng(seed)
    query: list[Sample] = []
    gallery: list[Sample] = []
    for pid, cams in sorted(_by_identity_camera(samples).items()):
        if pid in (JUNK_ID, DISTRACTOR_ID):
            gallery += [s for imgs in cams.values() for s in imgs]
            continue
        q, g = _query_gallery_for(cams, rng)
        query += q
        gallery += g
    if not query:
        raise DatasetError("cannot carve a query split: no identity has 2 images from one camera")
    return query, gallery


def split_validation(
    samples: Sequence[Sample], num_ids: int = 100, seed: int = 0
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Carve ``num_ids`` identities out of training samples: ``(train, query, gallery)``.

    Identities are drawn uniformly (numpy ``default_rng(seed)``) from
    :func:`eligible_identities`; the same samples and seed give the same split. The
    held-out identities appear in no training sample.
    """
    if num_ids < 1:
        raise ValueError(f"num_ids must be >= 1, got {num_ids}")
    eligible = eligible_identities(samples)
    if len(eligible) < num_ids:
        raise DatasetError(
            f"asked for {num_ids} validation identities but only {len(eligible)} of "
            f"{len({s.pid for s in samples})} identities appear in >= 2 cameras"
        )
    rng = np.random.default_rng(seed)
    chosen = {int(p) for p in rng.choice(np.asarray(eligible), size=num_ids, replace=False)}
    groups = _by_identity_camera(samples)
    query: list[Sample] = []
    gallery: list[Sample] = []
    for pid in sorted(chosen):
        q, g = _query_gallery_for(groups[pid], rng)
        query += q
        gallery += g
    train = [s for s in samples if s.pid not in chosen]
    check_cross_camera_matches(query, gallery, where="validation split")
    logger.info(
        "validation split: %d identities, %d query, %d gallery; %d train images left",
        num_ids,
        len(query),
        len(gallery),
        len(train),
    )
    return train, query, gallery


def with_validation(dataset: ReidDataset, num_ids: int = 100, seed: int = 0) -> ReidDataset:
    """A copy of ``dataset`` whose query/gallery are carved from its training set."""
    train, query, gallery = split_validation(dataset.train, num_ids, seed)
    return ReidDataset(
        name=f"{dataset.name}-val{num_ids}-seed{seed}",
        root=dataset.root,
        train=train,
        query=query,
        gallery=gallery,
    )
