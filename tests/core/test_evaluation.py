"""Tests of reidcore.evaluation: hand-computed cases and an independent brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reidcore import evaluation
from reidcore.attributes import Attribute, AttributeSchema
from reidcore.evaluation import (
    attribute_accuracy,
    camera_pair_matrix,
    evaluate_rank,
    format_results_table,
    pairwise_euclidean,
    pairwise_squared_euclidean,
)

# --------------------------------------------------------------------------- brute force
# Written independently of the vectorised code: one query at a time, Python loops, the
# official AP as the MATLAB loop of compute_AP.m (recall increments), not the closed form.


def _brute_query(
    d: list[float], qid: int, qcam: int, gids: list[int], gcams: list[int], same_cam_ok: bool
) -> tuple[list[bool], int]:
    """The ranked good flags after junk removal, and the number of good items."""
    order = sorted(range(len(d)), key=lambda j: (d[j], j))
    flags = []
    for j in order:
        if gids[j] == -1:
            continue
        if gids[j] == qid and gcams[j] == qcam and not same_cam_ok:
            continue
        flags.append(gids[j] == qid and gids[j] > 0)
    return flags, sum(flags)


def _brute_ap_official(flags: list[bool], ngood: int) -> float:
    ap, old_recall, old_precision, hits = 0.0, 0.0, 1.0, 0
    for j, flag in enumerate(flags):
        if flag:
            hits += 1
        recall = hits / ngood
        precision = hits / (j + 1)
        ap += (recall - old_recall) * (old_precision + precision) / 2
        old_recall, old_precision = recall, precision
        if hits == ngood:
            break
    return ap


def _brute_ap_mean(flags: list[bool]) -> float:
    precisions = []
    hits = 0
    for j, flag in enumerate(flags):
        if flag:
            hits += 1
            precisions.append(hits / (j + 1))
    return sum(precisions) / len(precisions)


def _brute_evaluate(
    dist: np.ndarray,
    qids: np.ndarray,
    gids: np.ndarray,
    qcams: np.ndarray,
    gcams: np.ndarray,
    mode: str,
    same_cam_ok: bool = False,
) -> dict[str, object]:
    num_g = dist.shape[1]
    cmc = [0.0] * num_g
    aps, inps, skipped = [], [], 0
    for q in range(dist.shape[0]):
        flags, ngood = _brute_query(
            [float(x) for x in dist[q]],
            int(qids[q]),
            int(qcams[q]),
            [int(x) for x in gids],
            [int(x) for x in gcams],
            same_cam_ok,
        )
        if ngood == 0:
            skipped += 1
            continue
        first = flags.index(True)
        for k in range(first, num_g):
            cmc[k] += 1
        last = max(j for j, f in enumerate(flags) if f)
        inps.append(ngood / (last + 1))
        aps.append(
            _brute_ap_official(flags, ngood) if mode == "official" else _brute_ap_mean(flags)
        )
    n = len(aps)
    return {
        "cmc": [c / n for c in cmc] if n else None,
        "mAP": sum(aps) / n if n else math.nan,
        "mINP": sum(inps) / n if n else math.nan,
        "skipped": skipped,
        "aps": aps,
    }


def _random_case(
    seed: int, num_q: int | None = None, num_g: int | None = None
) -> tuple[np.ndarray, ...]:
    """Small random case with junk (-1), distractors (0), same-camera matches and ties."""
    rng = np.random.default_rng(seed)
    num_q = num_q or int(rng.integers(1, 12))
    num_g = num_g or int(rng.integers(1, 40))
    num_ids, num_cams = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    qids = rng.integers(1, num_ids + 1, size=num_q)
    gids = rng.integers(-1, num_ids + 1, size=num_g)
    qcams = rng.integers(0, num_cams, size=num_q)
    gcams = rng.integers(0, num_cams, size=num_g)
    dist = rng.integers(0, 6, size=(num_q, num_g)).astype(np.float32)  # many ties
    return dist, qids, gids, qcams, gcams


# --------------------------------------------------------------------------- hand-computed


def test_junk_distractors_and_both_ap_definitions_by_hand() -> None:
    # query 0 (id 1, cam 0): gallery 0 same id+cam (junk), 1 distractor, 2 junk id -1,
    # 3 match, 4 other id, 5 match -> after junk removal [neg, MATCH, neg, MATCH].
    # query 1 (id 3, cam 0): its only match, gallery 6, is in the same camera -> skipped.
    # query 2 (id 4, cam 1): no item of identity 4 at all -> skipped.
    gids = np.array([1, 0, -1, 1, 2, 1, 3])
    gcams = np.array([0, 1, 1, 1, 1, 2, 0])
    row = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], dtype=np.float32)
    dist = np.stack([row, row, row])
    qids, qcams = np.array([1, 3, 4]), np.array([0, 0, 1])

    official = evaluate_rank(dist, qids, gids, qcams, gcams, return_per_query_ap=True)
    # official: i=1, r=2: (0/1 + 1/2)/2 = 1/4; i=2, r=4: (1/3 + 2/4)/2 = 5/12; AP = (1/4+5/12)/2
    assert official.mAP == pytest.approx(1 / 3)
    assert official.mINP == pytest.approx(2 / 4)
    assert (official.num_queries, official.num_valid, official.num_skipped) == (3, 1, 2)
    np.testing.assert_allclose(official.cmc, [0, 1, 1, 1, 1, 1, 1])
    assert official.rank(1) == 0.0 and official.rank(5) == 1.0
    assert official.per_query_ap is not None
    assert official.per_query_ap[0] == pytest.approx(1 / 3)
    assert np.isnan(official.per_query_ap[1:]).all()

    mean = evaluate_rank(dist, qids, gids, qcams, gcams, map_mode="mean")
    assert mean.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert mean.mINP == pytest.approx(0.5)
    assert mean.per_query_ap is None


def test_official_and_mean_ap_differ_on_first_hit_case() -> None:
    # matches at positions 1 and 3: official (1 + (1/2 + 2/3)/2)/2 = 19/24, mean (1 + 2/3)/2
    dist = np.array([[0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    args = (np.array([5]), np.array([5, 6, 5, 6]), np.array([0]), np.array([1, 1, 1, 1]))
    assert evaluate_rank(dist, *args).mAP == pytest.approx(19 / 24)
    assert evaluate_rank(dist, *args, map_mode="mean").mAP == pytest.approx(5 / 6)
    assert evaluate_rank(dist, *args).mINP == pytest.approx(2 / 3)


def test_ties_are_broken_by_gallery_index() -> None:
    dist = np.full((1, 3), 0.5, dtype=np.float32)
    q = (np.array([1]), np.array([0]))
    wrong_first = evaluate_rank(dist, q[0], np.array([2, 1, 3]), q[1], np.array([1, 1, 1]))
    assert wrong_first.rank(1) == 0.0 and wrong_first.rank(2) == 1.0
    assert wrong_first.mAP == pytest.approx(0.25)  # (0/1 + 1/2) / 2
    right_first = evaluate_rank(dist, q[0], np.array([1, 2, 3]), q[1], np.array([1, 1, 1]))
    assert right_first.rank(1) == 1.0 and right_first.mAP == 1.0


def test_distractors_never_match_even_for_query_id_zero() -> None:
    dist = np.array([[0.1, 0.2]], dtype=np.float32)
    res = evaluate_rank(dist, np.array([0]), np.array([0, 0]), np.array([0]), np.array([1, 1]))
    assert res.num_valid == 0 and res.num_skipped == 1
    assert math.isnan(res.mAP) and np.isnan(res.cmc).all()


def test_same_camera_matches_flag_counts_them() -> None:
    dist = np.array([[0.1, 0.2]], dtype=np.float32)
    args = (np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 0]))
    assert evaluate_rank(dist, *args).num_valid == 0
    res = evaluate_rank(dist, *args, same_camera_matches=True)
    assert res.num_valid == 1 and res.mAP == 1.0


def test_rejects_bad_inputs() -> None:
    dist = np.zeros((2, 3), dtype=np.float32)
    ids, cams = np.array([1, 2]), np.array([0, 1])
    with pytest.raises(ValueError, match="gallery_ids must have shape"):
        evaluate_rank(dist, ids, np.array([1, 2]), cams, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="map_mode"):
        evaluate_rank(dist, ids, np.ones(3), cams, np.ones(3), map_mode="bogus")  # type: ignore[arg-type]
    dist[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(dist, ids, np.ones(3), cams, np.ones(3))


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("mode", ["official", "mean"])
@pytest.mark.parametrize("seed", range(25))
def test_matches_brute_force_on_random_cases(seed: int, mode: str) -> None:
    dist, qids, gids, qcams, gcams = _random_case(seed)
    res = evaluate_rank(dist, qids, gids, qcams, gcams, map_mode=mode, return_per_query_ap=True)  # type: ignore[arg-type]
    ref = _brute_evaluate(dist, qids, gids, qcams, gcams, mode)
    assert res.num_skipped == ref["skipped"]
    assert res.num_valid + res.num_skipped == res.num_queries == dist.shape[0]
    if ref["cmc"] is None:
        assert math.isnan(res.mAP)
        return
    np.testing.assert_allclose(res.cmc, ref["cmc"], atol=1e-12)
    assert res.mAP == pytest.approx(ref["mAP"], abs=1e-12)
    assert res.mINP == pytest.approx(ref["mINP"], abs=1e-12)
    assert res.per_query_ap is not None
    np.testing.assert_allclose(res.per_query_ap[~np.isnan(res.per_query_ap)], ref["aps"])


def test_query_chunking_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    dist, qids, gids, qcams, gcams = _random_case(123, num_q=40, num_g=30)
    whole = evaluate_rank(dist, qids, gids, qcams, gcams, return_per_query_ap=True)
    monkeypatch.setattr(evaluation, "_QUERY_CHUNK", 7)
    chunked = evaluate_rank(dist, qids, gids, qcams, gcams, return_per_query_ap=True)
    ref = _brute_evaluate(dist, qids, gids, qcams, gcams, "official")
    assert chunked.mAP == pytest.approx(ref["mAP"], abs=1e-12)
    assert whole.per_query_ap is not None and chunked.per_query_ap is not None
    np.testing.assert_array_equal(whole.per_query_ap, chunked.per_query_ap)
    np.testing.assert_array_equal(whole.cmc, chunked.cmc)


@pytest.mark.parametrize("same_cam_diag", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_camera_pair_matrix_matches_brute_force(seed: int, same_cam_diag: bool) -> None:
    dist, qids, gids, qcams, gcams = _random_case(1000 + seed, num_q=15, num_g=40)
    res = camera_pair_matrix(dist, qids, gids, qcams, gcams, same_camera_diagonal=same_cam_diag)
    np.testing.assert_array_equal(res.query_cams, sorted(set(qcams.tolist())))
    np.testing.assert_array_equal(res.gallery_cams, sorted(set(gcams.tolist())))
    for a, qc in enumerate(res.query_cams):
        for b, gc in enumerate(res.gallery_cams):
            qs = [i for i in range(len(qids)) if qcams[i] == qc]
            gs = [j for j in range(len(gids)) if gcams[j] == gc]
            sub = dist[qs][:, gs]
            ref = _brute_evaluate(
                sub,
                qids[qs],
                gids[gs],
                qcams[qs],
                gcams[gs],
                "official",
                same_cam_diag and qc == gc,
            )
            assert res.num_queries[a, b] == len(qs)
            assert res.num_valid[a, b] == len(qs) - ref["skipped"]
            if ref["cmc"] is None:
                assert np.isnan(res.rank1[a, b]) and np.isnan(res.mAP[a, b])
            else:
                assert res.rank1[a, b] == pytest.approx(ref["cmc"][0])
                assert res.mAP[a, b] == pytest.approx(ref["mAP"])
            if qc == gc and not same_cam_diag:
                assert res.num_valid[a, b] == 0  # the protocol leaves no match on the diagonal
    assert "cam" in res.to_table()


# --------------------------------------------------------------------------- distances


def test_pairwise_euclidean_matches_float64_reference_and_stays_float32() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 16)).astype(np.float32)
    b = np.concatenate([a[:3], rng.standard_normal((5, 16)).astype(np.float32)])
    d = pairwise_euclidean(a, b)
    assert d.dtype == np.float32 and d.shape == (7, 8)
    ref = np.array([[np.sqrt(((x - y) ** 2).sum()) for y in b.astype(np.float64)] for x in a])
    np.testing.assert_allclose(d, ref, atol=1e-5)
    assert np.isfinite(d).all() and (d >= 0).all()
    np.testing.assert_allclose(np.diag(d[:3, :3]), 0.0, atol=3e-3)
    assert pairwise_euclidean(a.astype(np.float64), b).dtype == np.float32
    assert pairwise_squared_euclidean(a, b).dtype == np.float32


def test_pairwise_euclidean_clamps_negative_rounding() -> None:
    # large-norm rows: |a|^2 + |b|^2 - 2ab of a row with itself rounds below 0 in float32
    x = (np.random.default_rng(0).standard_normal((8, 128)) * 10 + 30).astype(np.float32)
    aa = np.einsum("ij,ij->i", x, x)
    raw = aa[:, None] - 2 * (x @ x.T) + aa[None, :]
    assert (raw < 0).any(), "test data no longer exercises the clamp"
    d2 = pairwise_squared_euclidean(x, x)
    assert (d2 >= 0).all()
    d = pairwise_euclidean(x, x)
    assert not np.isnan(d).any()
    assert np.diag(d).max() < 0.5  # true value 0; float32 cancellation error only


def test_pairwise_euclidean_rejects_mismatched_dims() -> None:
    with pytest.raises(ValueError, match="dimensions differ"):
        pairwise_euclidean(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        pairwise_euclidean(np.zeros(3), np.zeros((2, 3)))


# --------------------------------------------------------------------------- tables


def test_result_table_and_rank_past_gallery() -> None:
    dist = np.array([[0.0, 1.0]], dtype=np.float32)
    res = evaluate_rank(dist, np.array([1]), np.array([2, 1]), np.array([0]), np.array([1, 1]))
    assert res.rank(1) == 0.0 and res.rank(20) == 1.0
    with pytest.raises(ValueError):
        res.rank(0)
    table = format_results_table([("plain", res), ("re-ranked", res)])
    lines = table.splitlines()
    assert lines[0].split() == ["R1", "R5", "R10", "R20", "mAP", "mINP", "valid", "skipped"]
    assert lines[2].split()[:3] == ["plain", "0.00", "100.00"]
    assert lines[3].startswith("re-ranked")
    assert "official" in table
    assert res.summary()["rank1"] == 0.0


# --------------------------------------------------------------------------- attributes


def _schema() -> AttributeSchema:
    return AttributeSchema(
        (
            Attribute("gender", ("male", "female")),
            Attribute("upcolor", ("black", "white", "red"), group="up"),
            Attribute("hat", ("no", "yes")),
        )
    )


def test_attribute_accuracy_excludes_unknown_targets() -> None:
    targets = np.array([[0, 2, -1], [1, -1, -1], [1, 0, -1], [0, 1, -1]])
    preds = np.array([[0, 2, 1], [0, 1, 0], [1, 1, 1], [0, 1, 0]])
    res = attribute_accuracy(preds, targets, _schema())
    # gender: 3 of 4 right; upcolor: rows 0 and 3 right of 3 known; hat: nothing known
    np.testing.assert_allclose(res.accuracy[:2], [3 / 4, 2 / 3])
    assert np.isnan(res.accuracy[2])
    np.testing.assert_array_equal(res.num_known, [4, 3, 0])
    assert res.mean == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert res.names == ["gender", "upcolor", "hat"]
    table = res.to_table()
    assert "upcolor" in table and "66.67" in table and table.splitlines()[-1].startswith("mean")


def test_attribute_accuracy_rejects_bad_shapes_and_targets() -> None:
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        attribute_accuracy(np.zeros((2, 2)), np.zeros((2, 2)), _schema())
    with pytest.raises(ValueError, match="upcolor"):
        attribute_accuracy(np.zeros((1, 3)), np.array([[0, 3, 0]]), _schema())
