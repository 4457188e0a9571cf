"""Re-ID retrieval metrics (CMC, mAP, mINP), per-camera-pair tables and attribute accuracy.

Numpy only; shared by training (validation), the ``reid evaluate`` command and benchmarks.

Single-query protocol of Market-1501, DukeMTMC-reID and CUHK03-NP
-----------------------------------------------------------------
For each query the gallery is ranked by ascending distance. Then:

* gallery items with the query's identity **and** camera are *junk*: removed from the list
  (they would be trivially easy matches);
* gallery items with identity ``-1`` (:data:`JUNK_ID`) are junk for every query;
* distractors, identity ``0`` (:data:`DISTRACTOR_ID`), stay in the list as negatives and are
  never a match, whatever the query identity;
* a *match* ("good" item) is a gallery item with the query's identity from another camera;
* a query with no match left after junk removal is *skipped*: it contributes to no metric and
  is counted in :attr:`EvaluationResult.num_skipped`. Metrics average over valid queries.

Ties in distance are broken by gallery index: the ranking is a stable sort by
``(distance, gallery index)``, as MATLAB's ``sort`` in the official Market-1501 code does.

Average precision, two definitions (``map_mode``)
-------------------------------------------------
With ``ngood`` matches, the i-th of which (i = 1..ngood) sits at 1-based position ``r_i`` of
the ranked list after junk removal:

* ``"official"`` (default): Market-1501's ``compute_AP.m``, trapezoidal interpolation,
  ``AP = sum_i (1/ngood) * (p_old + p_i) / 2`` with ``p_i = i / r_i`` and
  ``p_old = (i - 1) / (r_i - 1)`` (``1`` when ``r_i == 1``);
* ``"mean"``: the non-interpolated mean of the precision at each hit,
  ``AP = mean_i(i / r_i)`` (torchreid, fast-reid).

mINP (Ye et al., "Deep Learning for Person Re-identification", AGW): per valid query,
``ngood / r_ngood`` (the precision at the hardest match), averaged over valid queries.

CMC: ``cmc[k-1]`` is the fraction of valid queries with a match within the first ``k``
positions after junk removal. The full curve has one entry per gallery item.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from reidcore.attributes import AttributeSchema

logger = logging.getLogger(__name__)

JUNK_ID = -1
"""Gallery identity ignored for every query (same value as ``training.data.types.JUNK_ID``)."""
DISTRACTOR_ID = 0
"""Gallery identity kept as a negative, never a match (``training.data.types.DISTRACTOR_ID``)."""

MapMode = Literal["official", "mean"]
MAP_MODES: tuple[str, ...] = ("official", "mean")
CMC_RANKS: tuple[int, ...] = (1, 5, 10, 20)
"""The ranks reported in tables."""

_QUERY_CHUNK = 256  # queries ranked at once: bounds memory to ~_QUERY_CHUNK * Ng * 8 bytes


# --------------------------------------------------------------------------- distances


def pairwise_squared_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[Na, Nb]`` between rows of ``a`` [Na, d] and ``b`` [Nb, d].

    Computed in float32 as ``|a|^2 + |b|^2 - 2 a.b`` and clamped at 0 (rounding can make the
    expansion slightly negative for near-identical rows).
    """
    a32 = _as_float32_matrix(a, "a")
    b32 = _as_float32_matrix(b, "b")
    if a32.shape[1] != b32.shape[1]:
        raise ValueError(
            f"feature dimensions differ: a has {a32.shape[1]} columns, b has {b32.shape[1]}"
        )
    aa = np.einsum("ij,ij->i", a32, a32)[:, None]  # [Na, 1]
    bb = np.einsum("ij,ij->i", b32, b32)[None, :]  # [1, Nb]
    d2 = a32 @ b32.T  # [Na, Nb]
    d2 *= np.float32(-2.0)
    d2 += aa
    d2 += bb
    np.maximum(d2, np.float32(0.0), out=d2)
    return d2


def pairwise_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[Na, Nb]`` (float32), negatives clamped to 0 before the sqrt."""
    d2 = pairwise_squared_euclidean(a, b)
    return np.sqrt(d2, out=d2)


def _as_float32_matrix(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, d] feature matrix, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


# --------------------------------------------------------------------------- results


@dataclass
class EvaluationResult:
    """Retrieval metrics of one distance matrix under the single-query protocol."""

    cmc: np.ndarray
    """Full CMC curve [Ng] (float64): ``cmc[k-1]`` = fraction of valid queries matched by rank k."""
    mAP: float
    """Mean average precision over valid queries (definition given by ``map_mode``)."""
    mINP: float
    """Mean inverse negative penalty over valid queries."""
    num_queries: int
    """Number of queries given."""
    num_valid: int
    """Queries with at least one match after junk removal (the ones averaged)."""
    num_skipped: int
    """Queries without any match after junk removal (``num_queries - num_valid``)."""
    map_mode: str = "official"
    """``"official"`` (Market-1501 compute_AP.m) or ``"mean"`` (torchreid / fast-reid)."""
    per_query_ap: np.ndarray | None = None
    """AP of each query [Nq], NaN for skipped queries; ``None`` unless requested."""

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based); ranks past the gallery size read the last value."""
        if k < 1:
            raise ValueError(f"rank must be >= 1, got {k}")
        if self.cmc.size == 0:
            return math.nan
        return float(self.cmc[min(k, self.cmc.size) - 1])

    def summary(self) -> dict[str, float | int | str]:
        """The headline numbers as a flat dict (JSON-friendly)."""
        out: dict[str, float | int | str] = {f"rank{k}": self.rank(k) for k in CMC_RANKS}
        out.update(
            mAP=self.mAP,
            mINP=self.mINP,
            map_mode=self.map_mode,
            num_queries=self.num_queries,
            num_valid=self.num_valid,
            num_skipped=self.num_skipped,
        )
        return out

    def to_table(self, label: str = "result") -> str:
        """A plain-text table of rank-1/5/10/20, mAP and mINP (percent)."""
        return format_results_table([(label, self)])

    def valid_line(self) -> str:
        """``valid queries N of M`` (and why the others were skipped), printed with metrics."""
        return valid_queries_line(self.num_valid, self.num_queries)


def valid_queries_line(num_valid: int, num_queries: int) -> str:
    """``valid queries 30 of 32 (2 without a cross-camera match skipped)``."""
    skipped = num_queries - num_valid
    note = f" ({skipped} without a cross-camera match skipped)" if skipped else ""
    return f"valid queries {num_valid} of {num_queries}{note}"


def count_valid_queries(
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
) -> int:
    """Queries the protocol will score, from the labels alone (before any feature exists).

    A query is valid when the gallery holds an item of its identity (a real one: not junk
    or distractor) from another camera: exactly the queries :func:`evaluate_rank` averages.
    """
    q_ids, g_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    q_cams, g_cams = np.asarray(query_cams), np.asarray(gallery_cams)
    real = g_ids > DISTRACTOR_ID
    pairs = set(zip(g_ids[real].tolist(), g_cams[real].tolist(), strict=True))
    cams_of: dict[int, set[object]] = {}
    for pid, cam in pairs:
        cams_of.setdefault(pid, set()).add(cam)
    return sum(
        1
        for pid, cam in zip(q_ids.tolist(), q_cams.tolist(), strict=True)
        if cams_of.get(pid, set()) - {cam}
    )


class NoValidQueryError(ValueError):
    """No query has a match in the gallery: every metric would be undefined."""


def require_valid_queries(
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
    where: str = "split",
) -> int:
    """:func:`count_valid_queries`, raising :class:`NoValidQueryError` when it is 0.

    Called where a dataset is read, so that a split nobody can score fails before any
    training or indexing; a few queries without a match are only logged (and skipped).
    """
    num_q = int(np.shape(query_ids)[0])
    valid = count_valid_queries(query_ids, gallery_ids, query_cams, gallery_cams)
    if valid == 0:
        raise NoValidQueryError(
            f"{where}: none of the {num_q} queries has a gallery item of its identity from "
            "another camera, so no metric can be computed"
        )
    if valid < num_q:
        logger.info("%s: %s", where, valid_queries_line(valid, num_q))
    return valid


def format_results_table(rows: Sequence[tuple[str, EvaluationResult]]) -> str:
    """Several labelled results (e.g. without / with re-ranking) in one plain-text table."""
    if not rows:
        return ""
    modes = sorted({r.map_mode for _, r in rows})
    headers = ["", *(f"R{k}" for k in CMC_RANKS), "mAP", "mINP", "valid", "skipped"]
    body = [
        [
            label,
            *(_pct(r.rank(k)) for k in CMC_RANKS),
            _pct(r.mAP),
            _pct(r.mINP),
            str(r.num_valid),
            str(r.num_skipped),
        ]
        for label, r in rows
    ]
    table = _render_table(headers, body)
    counts = dict.fromkeys(valid_queries_line(r.num_valid, r.num_queries) for _, r in rows)
    return f"{table}\n(percent; mAP definition: {', '.join(modes)}; {'; '.join(counts)})"


def _pct(x: float) -> str:
    return "nan" if math.isnan(x) else f"{100.0 * x:.2f}"


def _render_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    cols = list(zip(headers, *body, strict=False)) if body else [(h,) for h in headers]
    widths = [max(len(c) for c in col) for col in cols]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(row) for row in body)])


# --------------------------------------------------------------------------- ranking metrics


def evaluate_rank(
    distmat: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
    map_mode: MapMode = "official",
    return_per_query_ap: bool = False,
    same_camera_matches: bool = False,
    warn_if_empty: bool = True,
) -> EvaluationResult:
    """CMC, mAP and mINP of a ``[Nq, Ng]`` distance matrix under the single-query protocol.

    ``same_camera_matches=True`` departs from the protocol: same-identity same-camera gallery
    items count as matches instead of being removed (used for the diagonal of
    :func:`camera_pair_matrix` when asked). Identity ``-1`` stays junk either way.
    ``warn_if_empty`` logs a warning when no query is valid (all metrics NaN).
    """
    dist = _check_inputs(distmat, query_ids, gallery_ids, query_cams, gallery_cams)
    if map_mode not in MAP_MODES:
        raise ValueError(f"map_mode must be one of {MAP_MODES}, got {map_mode!r}")
    num_q, num_g = dist.shape
    q_ids, g_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    q_cams, g_cams = np.asarray(query_cams), np.asarray(gallery_cams)

    first_hit = np.zeros(num_q, dtype=np.int64)  # 1-based position of the first match, 0: none
    ap = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    for start in range(0, num_q, _QUERY_CHUNK):
        sl = slice(start, min(start + _QUERY_CHUNK, num_q))
        good, valid = _match_masks(
            dist[sl], q_ids[sl], g_ids, q_cams[sl], g_cams, same_camera_matches
        )
        first_hit[sl], ap[sl], inp[sl] = _chunk_metrics(good, valid, map_mode)

    is_valid = first_hit > 0
    num_valid = int(is_valid.sum())
    if num_valid == 0 and warn_if_empty:
        logger.warning("no query has a valid match in the gallery: every metric is NaN")
    hits = np.bincount(first_hit[is_valid] - 1, minlength=num_g)[:num_g]
    cmc = np.cumsum(hits) / max(num_valid, 1) if num_valid else np.full(num_g, np.nan)
    return EvaluationResult(
        cmc=cmc,
        mAP=float(ap[is_valid].mean()) if num_valid else math.nan,
        mINP=float(inp[is_valid].mean()) if num_valid else math.nan,
        num_queries=num_q,
        num_valid=num_valid,
        num_skipped=num_q - num_valid,
        map_mode=map_mode,
        per_query_ap=ap if return_per_query_ap else None,
    )


def _check_inputs(
    distmat: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
) -> np.ndarray:
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D [Nq, Ng], got shape {dist.shape}")
    num_q, num_g = dist.shape
    for name, arr, n in (
        ("query_ids", query_ids, num_q),
        ("query_cams", query_cams, num_q),
        ("gallery_ids", gallery_ids, num_g),
        ("gallery_cams", gallery_cams, num_g),
    ):
        shape = np.shape(arr)
        if shape != (n,):
            raise ValueError(
                f"{name} must have shape ({n},) to match distmat {dist.shape}, got {shape}"
            )
    if not np.isfinite(dist).all():
        raise ValueError("distmat contains NaN or infinite values")
    return dist


def _match_masks(
    dist: np.ndarray,
    q_ids: np.ndarray,
    g_ids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    same_camera_matches: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked ``good`` and ``valid`` (not junk) masks ``[n, Ng]`` for a chunk of queries.

    The masks are built in gallery order by broadcasting, then permuted: gathering two bool
    arrays is cheaper than gathering the int64 identities and cameras.
    """
    order = np.argsort(dist, axis=1, kind="stable")  # ties -> lower gallery index first
    same_id = g_ids[None, :] == q_ids[:, None]  # [n, Ng]
    same_cam = g_cams[None, :] == q_cams[:, None]
    real = (g_ids > DISTRACTOR_ID)[None, :]
    not_junk = (g_ids != JUNK_ID)[None, :]
    if same_camera_matches:
        good = same_id & real
        valid = np.broadcast_to(not_junk, same_id.shape)
    else:
        good = same_id & ~same_cam & real
        valid = not_junk & ~(same_id & same_cam)
    return np.take_along_axis(good, order, axis=1), np.take_along_axis(valid, order, axis=1)


def _chunk_metrics(
    good: np.ndarray, valid: np.ndarray, map_mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-hit position, AP and INP per query row (0 / NaN / NaN where there is no match)."""
    n = good.shape[0]
    good = good & valid
    pos = np.cumsum(valid, axis=1, dtype=np.int32)  # 1-based position after junk removal
    rows, cols = np.nonzero(good)  # row-major: each row's matches in ranked order
    r = pos[rows, cols].astype(np.float64)
    ngood = np.bincount(rows, minlength=n)
    row_start = np.concatenate([[0], np.cumsum(ngood)[:-1]])
    i = (np.arange(rows.size) - row_start[rows] + 1).astype(np.float64)  # 1..ngood per row
    precision = i / r
    if map_mode == "official":
        old = np.ones_like(precision)
        np.divide(i - 1, r - 1, out=old, where=r > 1)
        terms = (old + precision) / 2
    else:
        terms = precision
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.bincount(rows, weights=terms, minlength=n) / ngood
        last = np.zeros(n)
        np.maximum.at(last, rows, r)
        inp = ngood / last
    first = np.zeros(n, dtype=np.int64)
    has = ngood > 0
    first[has] = pos[rows[row_start[has]], cols[row_start[has]]]
    ap[~has] = np.nan
    inp[~has] = np.nan
    return first, ap, inp


# --------------------------------------------------------------------------- camera pairs


@dataclass
class CameraPairResult:
    """Rank-1 and mAP with queries of camera ``a`` (rows) against the gallery of camera ``b``.

    Off-diagonal cells follow the protocol. On the diagonal every same-identity item shares
    the query's camera, so under the protocol it is junk and the cell has no valid query:
    its metrics are NaN and ``num_valid`` is 0 — unless the matrix was computed with
    ``same_camera_diagonal=True``, where diagonal cells measure same-camera retrieval
    (same-identity same-camera items count as matches).
    """

    query_cams: np.ndarray
    """Row labels [A]: the distinct query cameras, sorted."""
    gallery_cams: np.ndarray
    """Column labels [B]: the distinct gallery cameras, sorted."""
    rank1: np.ndarray
    """[A, B] rank-1 accuracy; NaN where no query of the cell has a valid match."""
    mAP: np.ndarray
    """[A, B] mean AP; NaN where no query of the cell has a valid match."""
    num_queries: np.ndarray
    """[A, B] queries from camera a (the same along a row)."""
    num_valid: np.ndarray
    """[A, B] queries of camera a with a match in camera b's gallery."""
    same_camera_diagonal: bool = False
    """Whether diagonal cells count same-camera matches (see the class docstring)."""

    def to_table(self) -> str:
        """Two plain-text matrices (rank-1 and mAP, percent) with valid-query counts."""
        parts = []
        for title, values in (("rank-1", self.rank1), ("mAP", self.mAP)):
            headers = [f"{title} q\\g", *(f"cam {c}" for c in self.gallery_cams)]
            body = [
                [f"cam {qc}", *(_pct(v) for v in values[a])] for a, qc in enumerate(self.query_cams)
            ]
            parts.append(_render_table(headers, body))
        headers = ["valid q\\g", *(f"cam {c}" for c in self.gallery_cams)]
        body = [
            [
                f"cam {qc}",
                *(f"{v}/{n}" for v, n in zip(self.num_valid[a], self.num_queries[a], strict=True)),
            ]
            for a, qc in enumerate(self.query_cams)
        ]
        parts.append(_render_table(headers, body))
        note = (
            "diagonal: same-camera matches counted"
            if self.same_camera_diagonal
            else "diagonal: same-id same-camera items are junk under the protocol (nan)"
        )
        return "\n\n".join(parts) + f"\n({note})"


def camera_pair_matrix(
    distmat: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
    map_mode: MapMode = "official",
    same_camera_diagonal: bool = False,
) -> CameraPairResult:
    """Per camera pair (a, b): queries of camera a ranked against the gallery of camera b only.

    See :class:`CameraPairResult` for what the diagonal holds.
    """
    dist = _check_inputs(distmat, query_ids, gallery_ids, query_cams, gallery_cams)
    q_ids, g_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    q_cams, g_cams = np.asarray(query_cams), np.asarray(gallery_cams)
    qc_values, gc_values = np.unique(q_cams), np.unique(g_cams)
    shape = (qc_values.size, gc_values.size)
    rank1, mean_ap = np.full(shape, np.nan), np.full(shape, np.nan)
    num_queries = np.zeros(shape, dtype=np.int64)
    num_valid = np.zeros(shape, dtype=np.int64)
    for a, qc in enumerate(qc_values):
        q_sel = np.flatnonzero(q_cams == qc)
        for b, gc in enumerate(gc_values):
            g_sel = np.flatnonzero(g_cams == gc)
            res = evaluate_rank(
                dist[np.ix_(q_sel, g_sel)],
                q_ids[q_sel],
                g_ids[g_sel],
                q_cams[q_sel],
                g_cams[g_sel],
                map_mode=map_mode,
                same_camera_matches=same_camera_diagonal and qc == gc,
                warn_if_empty=False,
            )
            num_queries[a, b], num_valid[a, b] = res.num_queries, res.num_valid
            if res.num_valid:
                rank1[a, b], mean_ap[a, b] = res.rank(1), res.mAP
    return CameraPairResult(
        query_cams=qc_values,
        gallery_cams=gc_values,
        rank1=rank1,
        mAP=mean_ap,
        num_queries=num_queries,
        num_valid=num_valid,
        same_camera_diagonal=same_camera_diagonal,
    )


# --------------------------------------------------------------------------- attributes


@dataclass
class AttributeAccuracy:
    """Per-attribute recognition accuracy (APR Tables 3-4)."""

    names: list[str]
    """Attribute names, in schema order."""
    accuracy: np.ndarray
    """[M] fraction of known targets predicted right; NaN where no target is known."""
    num_known: np.ndarray
    """[M] number of samples whose target is known (not -1)."""
    mean: float
    """Mean of ``accuracy`` over attributes with at least one known target."""

    def to_table(self) -> str:
        """A plain-text table: one row per attribute, then the mean (percent)."""
        body = [
            [name, _pct(float(acc)), str(int(n))]
            for name, acc, n in zip(self.names, self.accuracy, self.num_known, strict=True)
        ]
        body.append(["mean", _pct(self.mean), ""])
        return _render_table(["attribute", "accuracy", "known"], body)


def attribute_accuracy(
    predictions: np.ndarray, targets: np.ndarray, schema: AttributeSchema
) -> AttributeAccuracy:
    """Accuracy of predicted class indices ``[N, M]`` against targets ``[N, M]``.

    Column ``m`` is attribute ``schema.attributes[m]``; a target of ``-1`` means unknown and
    is excluded. Targets must lie in ``[-1, num_classes)`` of their attribute.
    """
    pred, tgt = np.asarray(predictions), np.asarray(targets)
    m = len(schema)
    if pred.shape != tgt.shape or pred.ndim != 2 or pred.shape[1] != m:
        raise ValueError(
            f"predictions {pred.shape} and targets {tgt.shape} must both be [N, {m}] "
            f"for the {m} attributes of the schema"
        )
    for col, attr in enumerate(schema):
        bad = (tgt[:, col] < -1) | (tgt[:, col] >= attr.num_classes)
        if bad.any():
            raise ValueError(
                f"targets of attribute {attr.name!r} must lie in [-1, {attr.num_classes}), "
                f"got {tgt[bad.argmax(), col]} at row {int(bad.argmax())}"
            )
    known = tgt != -1
    num_known = known.sum(axis=0)
    correct = ((pred == tgt) & known).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(num_known > 0, correct / np.maximum(num_known, 1), np.nan)
    has = num_known > 0
    mean = float(acc[has].mean()) if has.any() else math.nan
    return AttributeAccuracy(names=schema.names, accuracy=acc, num_known=num_known, mean=mean)
