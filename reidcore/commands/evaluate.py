"""`reid evaluate`: CMC, mAP and mINP of query/gallery features, optionally re-ranked.

The input is one ``.npz`` file (what :meth:`reidcore.synthetic_features.FeatureSet.save`
writes) holding six arrays:

=====================  ==========  ===============================================
key                    shape       meaning
=====================  ==========  ===============================================
``query_features``     [Nq, d]     query embeddings (any float dtype, read as float32)
``query_ids``          [Nq]        query identities (integers, > 0)
``query_cams``         [Nq]        query cameras (integers)
``gallery_features``   [Ng, d]     gallery embeddings
``gallery_ids``        [Ng]        gallery identities: -1 junk (ignored), 0 distractor
``gallery_cams``       [Ng]        gallery cameras
=====================  ==========  ===============================================

Distances are Euclidean (L2-normalise the features beforehand for cosine ranking). The
protocol and the two mAP definitions are described in :mod:`reidcore.evaluation`. Queries
without a gallery item of their identity from another camera are skipped and counted
(``valid queries N of M`` under the table); a file where no query has one is refused
before any distance is computed.
``--rerank`` applies k-reciprocal re-ranking (Zhong et al., CVPR 2017) over the whole
query+gallery set, which costs O((Nq+Ng)^2) memory.
``--qe N``, ``--dba N`` and ``--camera-norm`` first apply the service's search options α-QE,
DBA and camera-aware normalisation to the features (:mod:`reidcore.query_tricks`); every
row, re-ranking included, is then computed on the result.
``--local-distance`` adds a row ranked by AlignedReID's global plus aligned local distance
(Zhang et al., arXiv 1711.08184v2, Sec. 4.3): the file must then also hold ``query_local``
[Nq, H, c] and ``gallery_local`` [Ng, H, c] stripe features (:mod:`reidcore.local_distance`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidcore.evaluation import (
    MAP_MODES,
    EvaluationResult,
    MapMode,
    NoValidQueryError,
    camera_pair_matrix,
    evaluate_rank,
    format_results_table,
    pairwise_euclidean,
    require_valid_queries,
)
from reidcore.local_distance import global_local_distance
from reidcore.synthetic_features import FeatureSet

logger = logging.getLogger(__name__)

HELP = (
    "Evaluate query/gallery features from an .npz file (CMC, mAP, mINP), optionally re-ranked. "
    "The file holds query_features [Nq,d], query_ids [Nq], query_cams [Nq], "
    "gallery_features [Ng,d], gallery_ids [Ng] (-1 junk, 0 distractor), gallery_cams [Ng]."
)

FEATURE_KEYS: tuple[str, ...] = (
    "query_features",
    "query_ids",
    "query_cams",
    "gallery_features",
    "gallery_ids",
    "gallery_cams",
)
"""The arrays an evaluation .npz must hold (the fields of ``FeatureSet``)."""

RerankFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class RerankParams:
    """k-reciprocal re-ranking parameters (Zhong et al. 2017 defaults)."""

    k1: int = 20
    """Size of the k-reciprocal neighbourhood."""
    k2: int = 6
    """Size of the neighbourhood used for local query expansion."""
    lambda_value: float = 0.3
    """Weight of the original distance in the final one (1 - lambda for the Jaccard part)."""


@dataclass(frozen=True)
class LocalFeatures:
    """Stripe features for the test-time global + local distance."""

    query: np.ndarray
    """float32 ``[Nq, H, c]``."""
    gallery: np.ndarray
    """float32 ``[Ng, H, c]``."""
    weight: float = 1.0
    """Weight of the local distance in the sum (AlignedReID: 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("features", metavar="FEATURES.npz", help="query/gallery feature file")
    parser.add_argument(
        "--local-distance",
        action="store_true",
        help="also rank by the global plus aligned local distance (AlignedReID); needs "
        "query_local [Nq,H,c] and gallery_local [Ng,H,c] in the file",
    )
    parser.add_argument(
        "--local-weight", type=float, default=1.0, help="weight of the local distance (1)"
    )
    parser.add_argument(
        "--rerank", action="store_true", help="also report results with k-reciprocal re-ranking"
    )
    parser.add_argument(
        "--map",
        dest="map_mode",
        choices=MAP_MODES,
        default="official",
        help="mAP definition: Market-1501's compute_AP.m (official, default) or the mean "
        "precision at each hit (mean, as torchreid / fast-reid)",
    )
    parser.add_argument("--k1", type=int, default=RerankParams.k1, help="re-ranking k1 (20)")
    parser.add_argument("--k2", type=int, default=RerankParams.k2, help="re-ranking k2 (6)")
    parser.add_argument(
        "--lambda",
        dest="lambda_value",
        type=float,
        default=RerankParams.lambda_value,
        help="re-ranking weight of the original distance (0.3)",
    )
    parser.add_argument(
        "--qe", type=int, default=0, metavar="N", help="α-QE over the top N (0: off)"
    )
    parser.add_argument("--qe-alpha", type=float, default=3.0, help="α-QE weight exponent (3)")
    parser.add_argument(
        "--dba", type=int, default=0, metavar="N", help="DBA over N neighbours (0: off)"
    )
    parser.add_argument("--dba-alpha", type=float, default=3.0, help="DBA weight exponent (3)")
    parser.add_argument(
        "--camera-norm",
        action="store_true",
        help="subtract each camera's gallery mean embedding (query: its camera's) first",
    )
    parser.add_argument(
        "--camera-pairs",
        action="store_true",
        help="also print rank-1 / mAP per (query camera, gallery camera) pair",
    )


def run(args: argparse.Namespace) -> int:
    params = rerank_params_from_args(args) if args.rerank else None
    rerank_fn = load_rerank() if params else None
    features = with_query_tricks(load_feature_file(Path(args.features)), args)
    local = None
    if args.local_distance:
        local = load_local_features(Path(args.features), features, args.local_weight)
        if local is None:
            from reidcore.cli import CommandError

            raise CommandError(
                f"{args.features}: --local-distance needs query_local and gallery_local "
                "(stripe features, as a model exported with --include-local gives them)"
            )
    print(
        report(
            features, args.map_mode, params, rerank_fn, camera_pairs=args.camera_pairs, local=local
        )
    )
    return 0


def with_query_tricks(features: FeatureSet, args: argparse.Namespace) -> FeatureSet:
    """The features after ``--qe/--dba/--camera-norm`` (:mod:`reidcore.query_tricks`, the
    service's search options), on which every row, re-ranking included, is then computed."""
    from reidcore.cli import CommandError
    from reidcore.query_tricks import Expansion, QueryTricks, apply_tricks

    try:
        tricks = QueryTricks(
            qe=Expansion(args.qe, args.qe_alpha) if args.qe else None,
            dba=Expansion(args.dba, args.dba_alpha) if args.dba else None,
            camera_norm=args.camera_norm,
        )
    except ValueError as exc:
        raise CommandError(f"--qe/--dba: {exc}") from None
    if not tricks.any():
        return features
    logger.info("query tricks: %s", tricks.label())
    fs = features
    q, g = apply_tricks(
        fs.query_features, fs.query_cams, fs.gallery_features, fs.gallery_cams, tricks
    )
    return dataclasses.replace(fs, query_features=q, gallery_features=g)


def load_local_features(path: Path, features: FeatureSet, weight: float) -> LocalFeatures | None:
    """``query_local``/``gallery_local`` of the file (None when it has neither); a
    CommandError when they are partial, misshapen or the weight is negative."""
    from reidcore.cli import CommandError

    with np.load(path, allow_pickle=False) as npz:
        present = [k for k in ("query_local", "gallery_local") if k in npz.files]
        arrays = {k: np.asarray(npz[k], dtype=np.float32) for k in present}
    if not present:
        return None
    if len(present) == 1:
        raise CommandError(f"{path}: has {present[0]} but not the other local array")
    q, g = arrays["query_local"], arrays["gallery_local"]
    nq, ng = len(features.query_ids), len(features.gallery_ids)
    if q.ndim != 3 or g.ndim != 3 or len(q) != nq or len(g) != ng or q.shape[1:] != g.shape[1:]:
        raise CommandError(
            f"{path}: query_local {q.shape} / gallery_local {g.shape} must be [{nq}, H, c] / "
            f"[{ng}, H, c]"
        )
    if not (np.isfinite(q).all() and np.isfinite(g).all()):
        raise CommandError(f"{path}: local features contain non-finite values")
    if not weight >= 0:
        raise CommandError(f"--local-weight must be >= 0, got {weight}")
    return LocalFeatures(q, g, weight)


def rerank_params_from_args(args: argparse.Namespace) -> RerankParams:
    """Check ``--k1/--k2/--lambda``; raise CommandError naming the bad one."""
    from reidcore.cli import CommandError

    if args.k1 < 1 or args.k2 < 1:
        raise CommandError(f"--k1 and --k2 must be >= 1, got k1={args.k1}, k2={args.k2}")
    if not 0.0 <= args.lambda_value <= 1.0:
        raise CommandError(f"--lambda must lie in [0, 1], got {args.lambda_value}")
    return RerankParams(k1=args.k1, k2=args.k2, lambda_value=args.lambda_value)


def load_rerank() -> RerankFn:
    """``reidcore.rerank.k_reciprocal_rerank``, or a CommandError saying it is unavailable."""
    from reidcore.cli import CommandError

    try:
        from reidcore.rerank import k_reciprocal_rerank
    except ImportError as exc:
        raise CommandError(f"re-ranking is not available in this build: {exc}") from None
    return k_reciprocal_rerank


# --------------------------------------------------------------------------- loading


def load_feature_file(path: Path) -> FeatureSet:
    """Read and validate an evaluation .npz; every problem is a CommandError naming ``path``."""
    from reidcore.cli import CommandError

    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in FEATURE_KEYS if k not in npz.files]
            if missing:
                raise CommandError(
                    f"{path}: missing arrays {missing} (found {sorted(npz.files)}; "
                    f"expected {list(FEATURE_KEYS)})"
                )
            arrays = {k: npz[k] for k in FEATURE_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CommandError(f"{path}: not a readable .npz file ({exc})") from None
    problems = _validate_arrays(arrays)
    if problems:
        raise CommandError(f"{path}: " + "; ".join(problems))
    a = arrays
    try:  # before any distance is computed: a split nobody can score fails at once
        require_valid_queries(
            a["query_ids"], a["gallery_ids"], a["query_cams"], a["gallery_cams"], where=str(path)
        )
    except NoValidQueryError as exc:
        raise CommandError(str(exc)) from None
    return FeatureSet(
        query_features=np.ascontiguousarray(arrays["query_features"], dtype=np.float32),
        query_ids=arrays["query_ids"].astype(np.int64),
        query_cams=arrays["query_cams"].astype(np.int64),
        gallery_features=np.ascontiguousarray(arrays["gallery_features"], dtype=np.float32),
        gallery_ids=arrays["gallery_ids"].astype(np.int64),
        gallery_cams=arrays["gallery_cams"].astype(np.int64),
    )


def _validate_arrays(arrays: dict[str, np.ndarray]) -> list[str]:
    """Every shape, dtype and value problem of the six arrays, as readable sentences."""
    problems: list[str] = []
    for side in ("query", "gallery"):
        feats = arrays[f"{side}_features"]
        if feats.ndim != 2 or feats.shape[0] == 0:
            problems.append(f"{side}_features must be a non-empty [N, d] matrix, got {feats.shape}")
            continue
        if not np.issubdtype(feats.dtype, np.number) or np.iscomplexobj(feats):
            problems.append(f"{side}_features must be real numbers, got dtype {feats.dtype}")
            continue
        bad = int(np.count_nonzero(~np.isfinite(feats)))
        if bad:
            problems.append(f"{side}_features has {bad} non-finite values (NaN or inf)")
        for label in ("ids", "cams"):
            arr = arrays[f"{side}_{label}"]
            if arr.shape != (feats.shape[0],):
                problems.append(
                    f"{side}_{label} must have shape ({feats.shape[0]},) like the rows of "
                    f"{side}_features, got {arr.shape}"
                )
            elif not np.issubdtype(arr.dtype, np.integer):
                problems.append(f"{side}_{label} must be integers, got dtype {arr.dtype}")
    q, g = arrays["query_features"], arrays["gallery_features"]
    if not problems and q.shape[1] != g.shape[1]:
        problems.append(
            f"query_features has dimension {q.shape[1]} but gallery_features has {g.shape[1]}"
        )
    return problems


# --------------------------------------------------------------------------- evaluation


def evaluate_feature_set(
    features: FeatureSet,
    map_mode: MapMode = "official",
    rerank: RerankParams | None = None,
    rerank_fn: RerankFn | None = None,
    local: LocalFeatures | None = None,
) -> list[tuple[str, EvaluationResult, np.ndarray]]:
    """``(label, result, distmat)`` without re-ranking, with it when ``rerank`` is given, and
    by the global plus local distance when ``local`` is given."""
    fs = features
    logger.info(
        "evaluating %d queries against %d gallery items (d=%d)",
        fs.query_ids.size,
        fs.gallery_ids.size,
        fs.query_features.shape[1],
    )
    q_g = pairwise_euclidean(fs.query_features, fs.gallery_features)
    labels = (fs.query_ids, fs.gallery_ids, fs.query_cams, fs.gallery_cams)
    out = [("euclidean", evaluate_rank(q_g, *labels, map_mode=map_mode), q_g)]
    if rerank is not None:
        reranked = _rerank(fs, q_g, rerank, rerank_fn or load_rerank())
        label = f"re-ranked (k1={rerank.k1}, k2={rerank.k2}, lambda={rerank.lambda_value:g})"
        out.append((label, evaluate_rank(reranked, *labels, map_mode=map_mode), reranked))
    if local is not None:
        combined = global_local_distance(q_g, local.query, local.gallery, local.weight)
        label = f"global + local (weight {local.weight:g})"
        out.append((label, evaluate_rank(combined, *labels, map_mode=map_mode), combined))
    return out


def _rerank(fs: FeatureSet, q_g: np.ndarray, params: RerankParams, fn: RerankFn) -> np.ndarray:
    """Re-ranked ``[Nq, Ng]`` distances; the re-ranker's refusals become CommandErrors."""
    from reidcore.cli import CommandError

    start = time.perf_counter()
    q_q = pairwise_euclidean(fs.query_features, fs.query_features)
    g_g = pairwise_euclidean(fs.gallery_features, fs.gallery_features)
    try:
        out = fn(q_g, q_q, g_g, k1=params.k1, k2=params.k2, lambda_value=params.lambda_value)
    except (ValueError, MemoryError) as exc:
        raise CommandError(f"re-ranking failed: {exc}") from None
    logger.info("re-ranking took %.2f s", time.perf_counter() - start)
    return np.asarray(out, dtype=np.float32)


def report(
    features: FeatureSet,
    map_mode: MapMode = "official",
    rerank: RerankParams | None = None,
    rerank_fn: RerankFn | None = None,
    camera_pairs: bool = False,
    local: LocalFeatures | None = None,
) -> str:
    """The text ``reid evaluate`` prints: the metrics table, then camera-pair matrices if asked."""
    rows = evaluate_feature_set(features, map_mode, rerank, rerank_fn, local)
    parts = [format_results_table([(label, res) for label, res, _ in rows])]
    if camera_pairs:
        fs = features
        for label, _, dist in rows:
            pairs = camera_pair_matrix(
                dist, fs.query_ids, fs.gallery_ids, fs.query_cams, fs.gallery_cams, map_mode
            )
            parts.append(f"camera pairs, {label}:\n{pairs.to_table()}")
    return "\n\n".join(parts)
