"""Tests of training.losses against loop references written here, independently, in float64.

Each reference is built from scalar operations (explicit sums, exp, log, enumeration of all
paths), so that autograd through it gives an independent gradient to compare against.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    UNKNOWN,
    aligned_triplet_loss,
    apr_loss,
    attribute_cross_entropies,
    attribute_loss,
    batch_hard_triplet_loss,
    classification_mutual_loss,
    hard_example_mining,
    identity_cross_entropy,
    kl_to_detached,
    local_distance_matrix,
    local_distance_paired,
    local_triplet_loss,
    metric_mutual_loss,
    mse_to_detached,
    mutual_loss,
    pairwise_euclidean,
    shortest_path,
    unaligned_distance_matrix,
    unaligned_distance_paired,
)

torch.set_num_threads(1)

ATOL = 1e-10


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64, requires_grad=True)


def _grad(value: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(value, inputs, allow_unused=False)


# ---------------------------------------------------------------- loop references


def ref_log_softmax_row(row: torch.Tensor) -> list[torch.Tensor]:
    """log softmax of one row from explicit max, exp, sum, log."""
    m = max(row[k] for k in range(len(row)))
    total = sum(torch.exp(row[k] - m) for k in range(len(row)))
    return [row[k] - m - torch.log(total) for k in range(len(row))]


def ref_cross_entropy(logits: torch.Tensor, targets: list[int], eps: float) -> torch.Tensor:
    """Mean over samples of −Σ_k q_k log p_k, q = (1 − ε)·onehot + ε/K."""
    n, k = logits.shape
    total = torch.zeros((), dtype=logits.dtype)
    for i in range(n):
        logp = ref_log_softmax_row(logits[i])
        for c in range(k):
            q = (1 - eps) * (1.0 if c == targets[i] else 0.0) + eps / k
            total = total - q * logp[c]
    return total / n


def ref_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(sum((a[d] - b[d]) ** 2 for d in range(len(a))))


def ref_stripe_d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The paper's formula, literally: (e^δ − 1)/(e^δ + 1)."""
    delta = ref_distance(a, b)
    return (torch.exp(delta) - 1) / (torch.exp(delta) + 1)


def all_monotone_paths(h: int, w: int) -> list[list[tuple[int, int]]]:
    """Every path from (0, 0) to (h−1, w−1) moving down or right, by choosing which of the
    h + w − 2 moves go down."""
    paths = []
    moves = h + w - 2
    for downs in itertools.combinations(range(moves), h - 1):
        i = j = 0
        cells = [(0, 0)]
        for step in range(moves):
            if step in downs:
                i += 1
            else:
                j += 1
            cells.append((i, j))
        paths.append(cells)
    return paths


def ref_local_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minimum over ALL monotone paths of the summed stripe distances (brute force)."""
    h, w = a.shape[0], b.shape[0]
    d = [[ref_stripe_d(a[i], b[j]) for j in range(w)] for i in range(h)]
    sums = [sum(d[i][j] for i, j in path) for path in all_monotone_paths(h, w)]
    return torch.stack(sums).min()


def ref_trihard(
    feats: torch.Tensor, labels: list[int], margin: float, soft: bool
) -> tuple[torch.Tensor, list[int], list[int]]:
    """Batch-hard triplet loss by loops: per anchor, farthest positive and nearest negative."""
    n = feats.shape[0]
    total = torch.zeros((), dtype=feats.dtype)
    pos_idx, neg_idx = [], []
    for a in range(n):
        pos = [p for p in range(n) if labels[p] == labels[a] and p != a]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        dpos = {p: ref_distance(feats[a], feats[p]) for p in pos}
        dneg = {q: ref_distance(feats[a], feats[q]) for q in neg}
        p = max(pos, key=lambda k: dpos[k].item())
        q = min(neg, key=lambda k: dneg[k].item())
        pos_idx.append(p)
        neg_idx.append(q)
        gap = dpos[p] - dneg[q]
        total = total + (
            torch.log(1 + torch.exp(gap)) if soft else torch.clamp(gap + margin, min=0)
        )
    return total / n, pos_idx, neg_idx


def ref_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of Σ_k p_k (log p_k − log q_k), p from ``p_logits``."""
    n, k = p_logits.shape
    total = torch.zeros((), dtype=p_logits.dtype)
    for i in range(n):
        lp = ref_log_softmax_row(p_logits[i])
        lq = ref_log_softmax_row(q_logits[i])
        total = total + sum(torch.exp(lp[c]) * (lp[c] - lq[c]) for c in range(k))
    return total / n


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_identity_cross_entropy_matches_loop_with_gradient(eps: float) -> None:
    logits = _randn(5, 4, seed=1)
    targets = [0, 3, 1, 1, 2]
    got = identity_cross_entropy(logits, torch.tensor(targets), label_smoothing=eps)
    want = ref_cross_entropy(logits, targets, eps)
    assert got.item() == pytest.approx(want.item(), abs=ATOL)
    (g_got,) = _grad(got, [logits])
    (g_want,) = _grad(want, [logits])
    torch.testing.assert_close(g_got, g_want, atol=ATOL, rtol=0)


def test_label_smoothing_zero_is_plain_cross_entropy() -> None:
    logits = _randn(6, 7, seed=2)
    targets = torch.tensor([6, 0, 2, 2, 5, 1])
    plain = (-sum(ref_log_softmax_row(logits[i])[int(targets[i])] for i in range(6)) / 6).item()
    assert identity_cross_entropy(logits, targets, 0.0).item() == pytest.approx(plain, abs=ATOL)
    # and smoothing changes it (the parameter is not ignored)
    assert identity_cross_entropy(logits, targets, 0.1).item() != pytest.approx(plain, abs=1e-4)


def test_identity_cross_entropy_rejects_bad_input() -> None:
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        identity_cross_entropy(logits, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="label_smoothing"):
        identity_cross_entropy(logits, torch.tensor([0, 1, 1]), label_smoothing=1.0)
    with pytest.raises(ValueError, match="identity targets"):
        identity_cross_entropy(logits, torch.tensor([0, 1]))


def _ref_attribute_losses(logits: list[torch.Tensor], targets: list[list[int]]) -> list:
    out = []
    for m, lg in enumerate(logits):
        known = [i for i in range(len(targets)) if targets[i][m] != -1]
        if not known:
            out.append(torch.zeros((), dtype=torch.float64))
            continue
        total = sum(-ref_log_softmax_row(lg[i])[targets[i][m]] for i in known)
        out.append(total / len(known))
    return out


def test_attribute_cross_entropies_ignore_unknown_and_match_loop() -> None:
    logits = [_randn(4, 2, seed=3), _randn(4, 5, seed=4), _randn(4, 3, seed=5)]
    targets = [[1, -1, -1], [0, 4, -1], [-1, 2, -1], [1, -1, -1]]  # attribute 2: all unknown
    got = attribute_cross_entropies(logits, torch.tensor(targets))
    want = _ref_attribute_losses(logits, targets)
    assert got.shape == (3,)
    for m in range(3):
        assert got[m].item() == pytest.approx(want[m].item(), abs=ATOL)
    assert got[2].item() == 0.0
    mean = attribute_loss(logits, torch.tensor(targets))
    assert mean.item() == pytest.approx(sum(want).item() / 3, abs=ATOL)
    grads = _grad(mean, logits)
    want_total = sum(want[:2]) / 3
    ref_grads = _grad(want_total, logits[:2])
    for g, r in zip(grads[:2], ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=ATOL, rtol=0)
    assert torch.equal(grads[2], torch.zeros_like(grads[2]))  # no label, no gradient, no NaN


def test_attribute_with_no_known_target_is_zero_not_nan_in_float32() -> None:
    logits = [torch.randn(3, 2, requires_grad=True)]
    loss = attribute_loss(logits, torch.full((3, 1), UNKNOWN))
    (g,) = _grad(loss, logits)
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    assert torch.isfinite(g).all()


def test_attribute_rejects_out_of_range_and_count_mismatch() -> None:
    logits = [torch.zeros(2, 2)]
    with pytest.raises(ValueError, match=r"attribute 0 targets must lie in \[0, 2\)"):
        attribute_cross_entropies(logits, torch.tensor([[2], [0]]))
    with pytest.raises(ValueError, match="M=2"):
        attribute_cross_entropies(logits, torch.tensor([[1, 0], [0, 1]]))


def test_apr_loss_is_lambda_id_plus_mean_attribute() -> None:
    id_logits = _randn(4, 6, seed=6)
    attr_logits = [_randn(4, 2, seed=7), _randn(4, 4, seed=8)]
    ids = [0, 5, 3, 3]
    attrs = [[0, 3], [1, -1], [-1, 0], [1, 2]]
    result = apr_loss(id_logits, torch.tensor(ids), attr_logits, torch.tensor(attrs))
    ref_att = _ref_attribute_losses(attr_logits, attrs)
    want = 8.0 * ref_cross_entropy(id_logits, ids, 0.0) + sum(ref_att) / 2
    assert result.total.item() == pytest.approx(want.item(), abs=ATOL)
    assert result.attributes.shape == (2,)
    inputs = [id_logits, *attr_logits]
    for g, r in zip(_grad(result.total, inputs), _grad(want, inputs), strict=True):
        torch.testing.assert_close(g, r, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- distances and TriHard


def test_pairwise_euclidean_matches_loop_with_gradient() -> None:
    x, y = _randn(4, 3, seed=9), _randn(5, 3, seed=10)
    got = pairwise_euclidean(x, y)
    want = torch.stack(
        [torch.stack([ref_distance(x[i], y[j]) for j in range(5)]) for i in range(4)]
    )
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    w = torch.randn(4, 5, generator=_gen(11), dtype=torch.float64)
    for g, r in zip(_grad((got * w).sum(), [x, y]), _grad((want * w).sum(), [x, y]), strict=True):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=0)


def test_pairwise_euclidean_zero_distance_has_finite_zero_gradient() -> None:
    x = torch.ones(3, 4, requires_grad=True)  # float32, all identical
    d = pairwise_euclidean(x)
    (g,) = _grad(d.sum(), [x])
    assert d.dtype == torch.float32
    assert torch.isfinite(g).all() and torch.equal(g, torch.zeros_like(g))
    assert d.max().item() < 1e-5


def test_trihard_hand_built_batch() -> None:
    # 1-D features. Identity 0 at 0, 1, 4; identity 1 at 5, 9.
    # anchor 0 (x=0): positives 1 (1), 4 (4) -> farthest idx 2; negatives 5, 9 -> nearest idx 3
    # anchor 1 (x=1): positives 0 (1), 4 (3) -> idx 2; nearest negative 5 (4) -> idx 3
    # anchor 2 (x=4): positives 0 (4), 1 (3) -> idx 0; nearest negative 5 (1) -> idx 3
    # anchor 3 (x=5): positive 9 (4) -> idx 4; nearest negative 4 (1) -> idx 2
    # anchor 4 (x=9): positive 5 (4) -> idx 3; nearest negative 4 (5) -> idx 2
    feats = torch.tensor([[0.0], [1.0], [4.0], [5.0], [9.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1])
    result = batch_hard_triplet_loss(feats, labels, margin=0.5)
    assert result.mining.positive.tolist() == [2, 2, 0, 4, 3]
    assert result.mining.negative.tolist() == [3, 3, 3, 2, 2]
    assert result.mining.valid.all()
    # hinges: 4-5+.5=0 -> 0; 3-4+.5 -> 0; 4-1+.5=3.5; 4-1+.5=3.5; 4-5+.5 -> 0
    assert result.loss.item() == pytest.approx(7.0 / 5, abs=1e-5)
    soft = batch_hard_triplet_loss(feats, labels, soft_margin=True).loss
    want_soft = sum(math.log1p(math.exp(g)) for g in [-1, -1, 3, 3, -1]) / 5
    assert soft.item() == pytest.approx(want_soft, abs=1e-5)


@pytest.mark.parametrize("soft", [False, True])
def test_trihard_matches_loop_with_gradient(soft: bool) -> None:
    feats = _randn(8, 5, seed=12)
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    got = batch_hard_triplet_loss(feats, torch.tensor(labels), margin=0.5, soft_margin=soft)
    want, pos, neg = ref_trihard(feats, labels, 0.5, soft)
    assert got.mining.positive.tolist() == pos
    assert got.mining.negative.tolist() == neg
    assert got.loss.item() == pytest.approx(want.item(), abs=ATOL)
    assert want.item() > 0  # the check is not vacuous
    (g_got,) = _grad(got.loss, [feats])
    (g_want,) = _grad(want, [feats])
    torch.testing.assert_close(g_got, g_want, atol=1e-9, rtol=0)


def test_trihard_identical_features_give_no_nan() -> None:
    feats = torch.zeros(6, 8, requires_grad=True)
    result = batch_hard_triplet_loss(feats, torch.tensor([0, 0, 1, 1, 2, 2]), margin=0.5)
    (g,) = _grad(result.loss, [feats])
    assert result.loss.item() == pytest.approx(0.5, abs=1e-5)
    assert torch.isfinite(g).all()


def test_anchor_without_positive_is_left_out() -> None:
    feats = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    mining = hard_example_mining(pairwise_euclidean(feats), torch.tensor([0, 0, 1, 2]))
    assert mining.valid.tolist() == [True, True, False, False]
    assert mining.positive.tolist()[2:] == [2, 3]  # invalid anchors point at themselves
    lone = batch_hard_triplet_loss(feats, torch.tensor([0, 1, 2, 3]))
    assert lone.loss.item() == 0.0 and not lone.mining.valid.any()


# ---------------------------------------------------------------- local distance


@pytest.mark.parametrize(("h", "w"), [(1, 1), (1, 3), (2, 2), (3, 3), (4, 4), (4, 2), (2, 4)])
def test_shortest_path_equals_min_over_all_monotone_paths(h: int, w: int) -> None:
    d = torch.rand(3, 2, h, w, generator=_gen(h * 10 + w), dtype=torch.float64)
    got = shortest_path(d)
    assert got.shape == (3, 2)
    for a, b in itertools.product(range(3), range(2)):
        sums = [sum(float(d[a, b, i, j]) for i, j in p) for p in all_monotone_paths(h, w)]
        assert got[a, b].item() == pytest.approx(min(sums), abs=ATOL)


def test_path_enumeration_counts_binomial() -> None:
    # The brute force itself: C(h + w − 2, h − 1) distinct monotone paths.
    for h, w in [(2, 2), (3, 3), (4, 4), (3, 4)]:
        paths = all_monotone_paths(h, w)
        assert len(paths) == math.comb(h + w - 2, h - 1)
        assert len({tuple(p) for p in paths}) == len(paths)


@pytest.mark.parametrize("h", [1, 2, 3, 4])
def test_local_distance_matrix_matches_brute_force_with_gradient(h: int) -> None:
    x, y = _randn(3, h, 2, seed=20 + h), _randn(2, h, 2, seed=30 + h)
    got = local_distance_matrix(x, y)
    want = torch.stack(
        [torch.stack([ref_local_distance(x[i], y[j]) for j in range(2)]) for i in range(3)]
    )
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    w = torch.rand(3, 2, generator=_gen(h), dtype=torch.float64)
    for g, r in zip(_grad((got * w).sum(), [x, y]), _grad((want * w).sum(), [x, y]), strict=True):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=0)


def test_local_distance_paired_is_the_diagonal_of_the_matrix() -> None:
    x, y = _randn(4, 4, 3, seed=40), _randn(4, 4, 3, seed=41)
    full = local_distance_matrix(x, y)
    torch.testing.assert_close(local_distance_paired(x, y), full.diagonal(), atol=ATOL, rtol=0)
    want = torch.stack([ref_local_distance(x[k], y[k]) for k in range(4)])
    torch.testing.assert_close(local_distance_paired(x, y), want, atol=ATOL, rtol=0)


def test_unaligned_distance_matches_loop_and_bounds_the_aligned_one() -> None:
    x, y = _randn(3, 4, 3, seed=42), _randn(2, 4, 3, seed=43)
    unaligned = unaligned_distance_matrix(x, y)
    want = torch.stack(
        [
            torch.stack([sum(ref_stripe_d(x[i, s], y[j, s]) for s in range(4)) for j in range(2)])
            for i in range(3)
        ]
    )
    torch.testing.assert_close(unaligned, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(unaligned_distance_paired(x[:2], y), unaligned.diagonal())
    # the staircase (0,0),(0,1),(1,1),(1,2),... is one monotone path: aligned ≤ its length
    staircase = unaligned + torch.stack(
        [
            torch.stack(
                [sum(ref_stripe_d(x[i, s], y[j, s + 1]) for s in range(3)) for j in range(2)]
            )
            for i in range(3)
        ]
    )
    aligned = local_distance_matrix(x, y)
    assert (aligned <= staircase + 1e-12).all()
    assert (aligned < staircase - 1e-3).any()  # and the DP finds shorter paths than that one


def test_local_distance_matrix_in_chunks_equals_whole() -> None:
    x, y = _randn(7, 3, 2, seed=45), _randn(4, 3, 2, seed=46)
    whole = local_distance_matrix(x, y)
    for chunk in (1, 3, 7, 100):
        torch.testing.assert_close(local_distance_matrix(x, y, chunk_rows=chunk), whole)
    with pytest.raises(ValueError, match="chunk_rows"):
        local_distance_matrix(x, y, chunk_rows=0)


def test_local_distance_of_identical_features_is_finite_with_finite_gradient() -> None:
    x = torch.ones(4, 3, 5, requires_grad=True)  # float32
    d = local_distance_matrix(x, x)
    p = local_distance_paired(x, x)
    (g,) = _grad(d.sum() + p.sum(), [x])
    assert d.dtype == torch.float32
    assert d.abs().max().item() < 1e-4 and torch.isfinite(g).all()


def test_local_distance_rejects_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="c=3"):
        local_distance_matrix(torch.zeros(2, 4, 3), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match=r"\[N, H, c\]"):
        local_distance_matrix(torch.zeros(2, 4), torch.zeros(2, 4))


def test_local_triplet_loss_reuses_global_triplets() -> None:
    feats = _randn(6, 4, seed=50)
    local = _randn(6, 3, 2, seed=51)
    labels = [0, 0, 1, 1, 2, 2]
    result = aligned_triplet_loss(feats, local, torch.tensor(labels), margin=0.5)
    _, pos, neg = ref_trihard(feats, labels, 0.5, False)
    total = torch.zeros((), dtype=torch.float64)
    for a in range(6):
        gap = ref_local_distance(local[a], local[pos[a]]) - ref_local_distance(
            local[a], local[neg[a]]
        )
        total = total + torch.clamp(gap + 0.5, min=0)
    want = total / 6
    assert result.local_loss.item() == pytest.approx(want.item(), abs=ATOL)
    assert want.item() > 0
    (g_got,) = _grad(result.local_loss, [local])
    (g_want,) = _grad(want, [local])
    torch.testing.assert_close(g_got, g_want, atol=1e-9, rtol=0)
    # the local loss does not feed back into the (global) mining
    (g_feat,) = torch.autograd.grad(result.local_loss, [feats], allow_unused=True)
    assert g_feat is None
    unaligned = local_triplet_loss(local, result.mining, 0.5, aligned=False)
    assert unaligned.item() != pytest.approx(result.local_loss.item(), abs=1e-6)


# ---------------------------------------------------------------- mutual learning


def test_kl_to_detached_matches_loop_and_stops_the_target_gradient() -> None:
    a, b = _randn(4, 5, seed=60), _randn(4, 5, seed=61)
    loss = kl_to_detached(a, b)
    want = ref_kl(b.detach(), a)  # KL(p_b ‖ p_a), b fixed
    assert loss.item() == pytest.approx(want.item(), abs=ATOL)
    (g_got,) = _grad(loss, [a])
    (g_want,) = _grad(want, [a])
    torch.testing.assert_close(g_got, g_want, atol=ATOL, rtol=0)
    loss2 = kl_to_detached(a, b)
    loss2.backward()
    assert b.grad is None and a.grad is not None


def test_classification_mutual_loss_gradients_each_side_towards_the_other() -> None:
    a, b = _randn(3, 4, seed=62), _randn(3, 4, seed=63)
    loss = classification_mutual_loss(a, b)
    want = ref_kl(b, a) + ref_kl(a, b)  # value: both directions
    assert loss.item() == pytest.approx(want.item(), abs=ATOL)
    g_a, g_b = _grad(loss, [a, b])
    # with stop-gradient, d/da is that of KL(sg(p_b) ‖ p_a) alone: (p_a − p_b)/N
    pa, pb = F.softmax(a.detach(), 1), F.softmax(b.detach(), 1)
    torch.testing.assert_close(g_a, (pa - pb) / 3, atol=ATOL, rtol=0)
    torch.testing.assert_close(g_b, (pb - pa) / 3, atol=ATOL, rtol=0)
    # without stop-gradient the gradient would differ: check that our test can tell
    (g_full,) = _grad(ref_kl(b, a) + ref_kl(a, b), [a])
    assert not torch.allclose(g_full, g_a, atol=1e-4)


def test_metric_mutual_loss_matches_loop_and_stops_gradients() -> None:
    fa, fb = _randn(4, 3, seed=64), _randn(4, 3, seed=65)
    da, db = pairwise_euclidean(fa), pairwise_euclidean(fb)
    loss = metric_mutual_loss(da, db)
    n = 4
    sq = sum((da[i, j] - db[i, j]) ** 2 for i in range(n) for j in range(n)) / n**2
    assert loss.item() == pytest.approx(2 * sq.item(), abs=ATOL)
    g_a, g_b = _grad(loss, [da, db])
    torch.testing.assert_close(g_a, 2 * (da - db).detach() / n**2, atol=ATOL, rtol=0)
    torch.testing.assert_close(g_b, 2 * (db - da).detach() / n**2, atol=ATOL, rtol=0)
    one_way = mse_to_detached(pairwise_euclidean(fa), pairwise_euclidean(fb))
    one_way.backward()
    assert fb.grad is None and fa.grad is not None and fa.grad.abs().sum() > 0


def test_mutual_loss_weights_and_defaults() -> None:
    a, b = _randn(4, 6, seed=66), _randn(4, 6, seed=67)
    da, db = pairwise_euclidean(_randn(4, 3, seed=68)), pairwise_euclidean(_randn(4, 3, seed=69))
    default = mutual_loss(a, b, da, db)
    assert default.total.item() == pytest.approx(
        0.01 * default.classification.item() + 0.001 * default.metric.item(), abs=ATOL
    )
    custom = mutual_loss(a, b, da, db, classification_weight=2.0, metric_weight=3.0)
    assert custom.total.item() == pytest.approx(
        2.0 * classification_mutual_loss(a, b).item() + 3.0 * metric_mutual_loss(da, db).item(),
        abs=ATOL,
    )


def test_mutual_loss_of_identical_models_is_zero() -> None:
    a = _randn(4, 6, seed=70)
    d = pairwise_euclidean(_randn(4, 3, seed=71))
    result = mutual_loss(a, a, d, d)
    assert abs(result.total.item()) < 1e-12
    with pytest.raises(ValueError, match="same shape"):
        mutual_loss(a, a[:, :5], d, d)
