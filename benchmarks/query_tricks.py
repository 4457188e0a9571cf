"""Accuracy of the service's query-side tricks on real validation features (CUHK03-NP).

Scores, with :mod:`reidcore.evaluation` (Market-1501 single-query protocol, official mAP),
the tricks of :mod:`reidcore.query_tricks` (α-QE, DBA, camera-aware normalisation), alone
and combined, next to k-reciprocal re-ranking (:func:`reidcore.rerank.k_reciprocal_rerank`,
k1 20, k2 6, λ 0.3, on whatever features the row names), on the validation split of
:mod:`benchmarks.cuhk03_features` (by default every one of the 767 CUHK03-NP training
identities held out, features of torchreid's OSNet x0.25 MSMT17 checkpoint as it is).

``python -m benchmarks.query_tricks [--val-ids 0] [--checkpoint CKPT] [--grid]`` writes
section ``query_tricks`` (``query_tricks_finetuned`` with a checkpoint, whose run must have
held out the same ``--val-ids`` identities, seed 0; ``query_tricks_valN`` for N identities)
of benchmarks/RESULTS.md; needs ../shared/data and ../shared/weights
(features are cached under runs/query_tricks/).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.cuhk03_features import REPO, cached_features
from benchmarks.results import load_note, write_section
from reidcore.evaluation import EvaluationResult, evaluate_rank, pairwise_euclidean
from reidcore.logs import configure_logging
from reidcore.query_tricks import Expansion, QueryTricks, apply_tricks
from reidcore.synthetic_features import FeatureSet

logger = logging.getLogger(__name__)

QE = Expansion(n=2, alpha=3.0)
DBA = Expansion(n=1, alpha=3.0)
ROWS: list[tuple[QueryTricks, bool]] = [
    (QueryTricks(), False),
    (QueryTricks(qe=QE), False),
    (QueryTricks(dba=DBA), False),
    (QueryTricks(camera_norm=True), False),
    (QueryTricks(), True),
    (QueryTricks(dba=DBA, qe=QE), False),
    (QueryTricks(camera_norm=True, qe=QE), False),
    (QueryTricks(camera_norm=True, dba=DBA), False),
    (QueryTricks(camera_norm=True, dba=DBA, qe=QE), False),
    (QueryTricks(camera_norm=True), True),
    (QueryTricks(camera_norm=True, dba=DBA, qe=QE), True),
]
"""(tricks, then k-reciprocal re-ranking?) of each row of the main table."""


def grid_rows() -> list[tuple[QueryTricks, bool]]:
    """α-QE and DBA over n and α, alone (``--grid``)."""
    rows: list[tuple[QueryTricks, bool]] = []
    for n in (1, 2, 3, 5, 10):
        for alpha in (0.0, 3.0):
            rows.append((QueryTricks(qe=Expansion(n, alpha)), False))
            rows.append((QueryTricks(dba=Expansion(n, alpha)), False))
    return rows


def score(fs: FeatureSet, tricks: QueryTricks, rerank: bool) -> EvaluationResult:
    """Rank-1/mAP of the query set against the gallery after ``tricks`` (and re-ranking)."""
    q, g = apply_tricks(
        fs.query_features, fs.query_cams, fs.gallery_features, fs.gallery_cams, tricks
    )
    dist = pairwise_euclidean(q, g)
    if rerank:
        from reidcore.rerank import k_reciprocal_rerank

        dist = k_reciprocal_rerank(dist, pairwise_euclidean(q, q), pairwise_euclidean(g, g))
    return evaluate_rank(dist, fs.query_ids, fs.gallery_ids, fs.query_cams, fs.gallery_cams)


def markdown(fs: FeatureSet, rows: list[tuple[str, EvaluationResult, float]], what: str) -> str:
    lines = [
        f"CUHK03-NP detected training split (../shared/data), {what}: "
        f"{len(np.unique(fs.query_ids))} identities held out (seed 0), "
        f"{len(fs.query_ids)} queries / {len(fs.gallery_ids)} gallery images, "
        f"{len(np.unique(fs.gallery_cams))} cameras. "
        "Market-1501 single-query protocol, official mAP. Re-ranking: k-reciprocal, k1 20, "
        "k2 6, λ 0.3, all queries at once, on the features the row names. " + load_note(),
        "",
        "| tricks | re-ranked | rank-1 | mAP | seconds |",
        "|---|---|---|---|---|",
    ]
    for label, res, sec in rows:
        rr = "yes" if label.endswith("|rr") else "no"
        lines.append(
            f"| {label.removesuffix('|rr')} | {rr} | {100 * res.rank(1):.1f} | "
            f"{100 * res.mAP:.1f} | {sec:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val-ids", type=int, default=0, help="identities held out (0: all)")
    p.add_argument("--checkpoint", default=None, help="reid train checkpoint (default: MSMT17)")
    p.add_argument("--grid", action="store_true", help="also α-QE / DBA over n and α")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--note", default="", help="a sentence on the checkpoint, in the section")
    args = p.parse_args(argv)
    configure_logging()
    tag = "msmt17" if args.checkpoint is None else Path(args.checkpoint).stem
    cache = REPO / "runs" / "query_tricks" / f"cuhk03_val{args.val_ids or 'all'}_{tag}.npz"
    fs = cached_features(cache, val_ids=args.val_ids, checkpoint=args.checkpoint)
    rows = []
    for tricks, rerank in ROWS + (grid_rows() if args.grid else []):
        t0 = time.perf_counter()
        res = score(fs, tricks, rerank)
        label = tricks.label() + ("|rr" if rerank else "")
        rows.append((label, res, time.perf_counter() - t0))
        logger.info("%s: rank-1 %.4f mAP %.4f", label, res.rank(1), res.mAP)
    what = (
        "torchreid's OSNet x0.25 MSMT17 checkpoint as it is (no fine-tuning)"
        if args.checkpoint is None
        else f"checkpoint {args.checkpoint} ({args.note})"
    )
    body = markdown(fs, rows, what)
    print(body)
    if not args.no_write:
        command = "python -m benchmarks.query_tricks " + shlex.join(argv or sys.argv[1:])
        name, title = "query_tricks", "Query-side tricks on CUHK03-NP validation"
        if args.checkpoint is not None:
            name, title = f"{name}_finetuned", f"{title}, a fine-tuned checkpoint"
        elif args.val_ids:
            name, title = f"{name}_val{args.val_ids}", f"{title}, {args.val_ids} identities"
        write_section(name, title, body, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
