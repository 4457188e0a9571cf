"""Step "query" of the main job: metrics from the running service, and example matches.

Two kinds of rows, both under the Market-1501 protocol of :mod:`reidcore.evaluation`:

* *service search*: every query image goes through ``POST /v1/galleries/{g}/search``
  (plain, then ``rerank=true``) and the returned ranked lists are scored with
  :func:`quickstart.metrics.evaluate_rankings`. With ``k`` >= the gallery size the lists
  are complete and the metrics exact; with a smaller ``k`` they are lower bounds.
* *stored embeddings*: query embeddings from ``POST /v1/embed`` against the embeddings the
  gallery stored while indexing, ranked in full (plain, and the full k-reciprocal algorithm
  of :mod:`reidcore.rerank` when the gallery is small enough): exact full-ranking metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from quickstart.client import ReidClient
from quickstart.embedded import DemoError, GalleryImage, read_stored_embeddings
from quickstart.metrics import evaluate_rankings
from reidcore.evaluation import EvaluationResult, evaluate_rank, pairwise_euclidean
from service.gallery.backend import GalleryBackend

logger = logging.getLogger(__name__)

Labels = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Query ids, gallery ids, query cameras, gallery cameras."""
EMBED_BATCH = 32
"""Images per ``POST /v1/embed`` request."""
FULL_RERANK_MAX_GALLERY = 5000
"""Largest gallery for the offline full k-reciprocal row (it grows with the gallery squared)."""


@dataclass
class QueryRun:
    """What the query step measured."""

    rows: list[tuple[str, EvaluationResult]]
    """Labelled metrics, in table order."""
    k: int
    """Matches asked per search."""
    gallery_size: int
    """Items the gallery holds."""
    searches: dict[bool, list[list[dict[str, Any]]]]
    """rerank flag -> per query, the service's matches."""
    gallery: str = ""
    """The gallery searched."""


def gallery_labels(
    files: Sequence[str], images: Sequence[GalleryImage]
) -> tuple[np.ndarray, np.ndarray]:
    """Identities and cameras of the stored items, looked up by member name (``file``)."""
    truth = {img.member: img for img in images}
    missing = [f for f in files if f not in truth]
    if missing:
        raise DemoError(f"gallery items not in the gallery split: {missing[:3]}")
    ids = np.array([truth[f].pid for f in files], dtype=np.int64)
    cams = np.array([truth[f].camid for f in files], dtype=np.int64)
    return ids, cams


def embed_queries(client: ReidClient, queries: Sequence[GalleryImage]) -> np.ndarray:
    """Query embeddings ``[Nq, d]`` through ``POST /v1/embed``, in batches."""
    parts = []
    with tqdm(total=len(queries), desc="embedding queries", unit="img") as bar:
        for start in range(0, len(queries), EMBED_BATCH):
            chunk = queries[start : start + EMBED_BATCH]
            parts.append(client.embed([q.path for q in chunk]))
            bar.update(len(chunk))
    return np.concatenate(parts).astype(np.float32, copy=False)


def search_all(
    client: ReidClient, gallery: str, queries: Sequence[GalleryImage], k: int, rerank: bool
) -> list[list[dict[str, Any]]]:
    """Every query through the search endpoint; per query its matches, best first."""
    desc = f"search k={k}{' rerank' if rerank else ''}"
    return [
        client.search(gallery, q.path, k, rerank) for q in tqdm(queries, desc=desc, unit="query")
    ]


def match_rows(matches: list[list[dict[str, Any]]], row_of: dict[str, int]) -> list[list[int]]:
    """Matches -> gallery row indices via each item's metadata ``file``."""
    out = []
    for ms in matches:
        rows = []
        for m in ms:
            name = str(m["item"]["metadata"].get("file", ""))
            if name not in row_of:
                raise DemoError(f"search returned an item with unknown file {name!r}")
            rows.append(row_of[name])
        out.append(rows)
    return out


def full_ranking_rows(
    q_emb: np.ndarray, g_emb: np.ndarray, labels: Labels
) -> list[tuple[str, EvaluationResult]]:
    """Exact full-ranking rows from the embeddings: Euclidean, and full k-reciprocal."""
    q_g = pairwise_euclidean(q_emb, g_emb)
    rows = [("stored embeddings, full ranking", evaluate_rank(q_g, *labels))]
    if g_emb.shape[0] <= FULL_RERANK_MAX_GALLERY:
        from reidcore.rerank import k_reciprocal_rerank

        reranked = k_reciprocal_rerank(
            q_g, pairwise_euclidean(q_emb, q_emb), pairwise_euclidean(g_emb, g_emb)
        )
        rows.append(("stored embeddings, full k-reciprocal", evaluate_rank(reranked, *labels)))
    return rows


def run_queries(
    client: ReidClient,
    gallery: str,
    data_dir: Path,
    queries: Sequence[GalleryImage],
    gallery_images: Sequence[GalleryImage],
    top_k: int,
    backend: GalleryBackend | None = None,
) -> QueryRun:
    """The whole query step (module docstring); ``top_k`` is capped at the gallery size;
    stored embeddings read from ``backend`` (default: the local engine of ``data_dir``)."""
    files, g_emb = read_stored_embeddings(data_dir, gallery, backend)
    g_ids, g_cams = gallery_labels(files, gallery_images)
    q_ids = np.array([q.pid for q in queries], dtype=np.int64)
    q_cams = np.array([q.camid for q in queries], dtype=np.int64)
    labels: Labels = (q_ids, g_ids, q_cams, g_cams)
    k = min(top_k, len(files))
    row_of = {f: i for i, f in enumerate(files)}
    searches = {flag: search_all(client, gallery, queries, k, flag) for flag in (False, True)}
    bound = "" if k >= len(files) else " (lower bound)"
    rows = [
        (
            f"service search k={k}{' rerank' if flag else ''}{bound}",
            evaluate_rankings(match_rows(searches[flag], row_of), *labels),
        )
        for flag in (False, True)
    ]
    rows += full_ranking_rows(embed_queries(client, queries), g_emb, labels)
    return QueryRun(rows, k, len(files), searches, gallery)


# --------------------------------------------------------------------------- examples


def format_attributes(attrs: dict[str, dict[str, Any]], limit: int = 4) -> str:
    """The ``limit`` most confident attributes, e.g. ``gender=female 0.93, age=young 0.71``;
    a "no" of a binary attribute (most of the paper's 27, one per colour) only after the rest."""
    best = sorted(
        attrs.items(), key=lambda kv: (kv[1]["label"] == "no", -float(kv[1]["probability"]))
    )[:limit]
    return ", ".join(f"{k}={v['label']} {float(v['probability']):.2f}" for k, v in best)


def match_verdict(query: GalleryImage, pid: Any, camera: str) -> str:
    """``yes`` (same identity, other camera), ``same-cam`` (ignored by the protocol) or ``no``."""
    if pid != query.pid:
        return "no"
    return "same-cam" if camera == f"c{query.camid}" else "yes"


def format_example(
    query: GalleryImage,
    query_attributes: dict[str, dict[str, Any]],
    matches: list[dict[str, Any]],
    shown: int = 5,
) -> str:
    """One query and its best matches: score, camera, identity, whether it is a true match."""
    lines = [
        f"query {query.path.name}: identity {query.pid}, camera c{query.camid}",
        f"  predicted: {format_attributes(query_attributes)}",
        "  rank  score  distance  camera  identity  match     attributes",
    ]
    for r, m in enumerate(matches[:shown], start=1):
        item = m["item"]
        pid = item["metadata"].get("identity", "?")
        lines.append(
            f"  {r:>4}  {m['score']:.3f}  {m['distance']:>8.4f}  {item['camera']:>6}  "
            f"{pid!s:>8}  {match_verdict(query, pid, item['camera']):<8}  "
            f"{format_attributes(item['attributes'], 2)}"
        )
    return "\n".join(lines)


def examples(
    client: ReidClient, queries: Sequence[GalleryImage], run: QueryRun, count: int
) -> list[str]:
    """``count`` evenly spaced queries with their re-ranked matches and predicted attributes."""
    if count <= 0 or not queries:
        return []
    picks = sorted({round(i * (len(queries) - 1) / max(count - 1, 1)) for i in range(count)})
    shown = []
    for n, i in enumerate(picks):
        attrs = client.attributes(queries[i].path)
        text = format_example(queries[i], attrs, run.searches[True][i])
        if n == 0 and run.gallery:  # the first one also searched by description and in time
            text += "\n" + attribute_example(client, run.gallery, queries[i], attrs)
            text += "\n" + trajectory_example(client, run, queries[i], i)
        shown.append(text)
    return shown


def identity_of(item: dict[str, Any]) -> str:
    return str(item["metadata"].get("identity", "?"))


def attribute_example(
    client: ReidClient, gallery: str, query: GalleryImage, attrs: dict[str, dict[str, Any]]
) -> str:
    """The gallery searched by the query's two most confident predicted values (a "no" of a
    binary attribute only when nothing else is predicted)."""
    ranked = sorted(attrs.items(), key=lambda kv: (kv[1]["label"] == "no", -kv[1]["probability"]))
    wanted = {name: str(p["label"]) for name, p in ranked[:2]}
    if not wanted:
        return "  attribute search: the model predicts no attributes"
    body = client.attribute_search(gallery, wanted, 5)
    said = ", ".join(f"{k}={v}" for k, v in wanted.items())
    lines = [
        f"  attribute search {said} (POST /v1/galleries/{gallery}/attribute-search): "
        f"{body['matched']} items, best {len(body['matches'])}:",
        "  rank  probability  camera  identity  same identity as the query",
    ]
    for r, m in enumerate(body["matches"], start=1):
        pid = identity_of(m["item"])
        lines.append(
            f"  {r:>4}  {m['probability']:>11.3f}  {m['item']['camera']:>6}  {pid:>8}  "
            f"{'yes' if pid == str(query.pid) else 'no'}"
        )
    return "\n".join(lines)


def trajectory_example(client: ReidClient, run: QueryRun, query: GalleryImage, i: int) -> str:
    """The query's trajectory: matches scoring at least its 5th best plain match, per camera
    in time, with the gaps along the path."""
    plain = run.searches[False][i]
    if not plain:
        return "  trajectory: no match"
    threshold = round(float(plain[min(4, len(plain) - 1)]["score"]), 3)
    t = client.trajectory(run.gallery, query.path, min(run.k, 100), threshold)
    ids = {
        s["item"]["id"]: identity_of(s["item"]) for lane in t["lanes"] for s in lane["sightings"]
    }
    cameras = ", ".join(f"{lane['camera']} ({len(lane['sightings'])})" for lane in t["lanes"])
    lines = [
        f"  trajectory (POST /v1/galleries/{run.gallery}/trajectory, min_score {threshold}): "
        f"{len(t['path'])} sightings on cameras {cameras or 'none'}"
        + (f", {len(t['unknown_time'])} with unknown time" if t["unknown_time"] else ""),
        "  camera  time                     gap       score  identity",
    ]
    for step in t["path"]:
        gap = "" if step["gap_s"] is None else f"+{step['gap_s']:.1f} s"
        arrow = "->" if step["camera_changed"] else "  "
        lines.append(
            f"  {arrow}{step['camera']:>4}  {step['time']['text']:<23}  {gap:>8}  "
            f"{step['score']:.3f}  {ids.get(step['item_id'], '?'):>8}"
        )
    return "\n".join(lines)
