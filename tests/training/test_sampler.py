from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from training.data import sampler as sampler_mod
from training.data.sampler import PKSampler, group_by_label, identity_chunks

P, K = 4, 3


def make_labels(counts: list[int], seed: int = 0) -> list[int]:
    """Identity i (labelled 100 + 7i, not contiguous) gets counts[i] images, shuffled."""
    labels = [100 + 7 * i for i, c in enumerate(counts) for _ in range(c)]
    rng = np.random.default_rng(seed)
    return [labels[j] for j in rng.permutation(len(labels))]


# 23 identities: several with fewer than K images, some with many
COUNTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 1, 2, 3, 3, 4, 6, 7, 20, 2, 5, 9]
LABELS = make_labels(COUNTS)


def batches_of(s: PKSampler, epoch: int | None = None) -> np.ndarray:
    """Labels of the plan, shaped [batches, P, K]."""
    flat = s.epoch_indices(epoch)
    assert len(flat) % (s.p * s.k) == 0
    return np.asarray(LABELS)[flat].reshape(-1, s.p, s.k)


def check_batches(lab: np.ndarray) -> None:
    assert lab.shape[0] > 0
    assert (lab == lab[:, :, :1]).all(), "each block of K must be one identity"
    for batch in lab[:, :, 0]:
        assert len(set(batch.tolist())) == len(batch), "identities in a batch must be distinct"


def test_group_by_label_matches_brute_force() -> None:
    groups = group_by_label(LABELS)
    ref: dict[int, list[int]] = {}
    for i, lab in enumerate(LABELS):
        ref.setdefault(lab, []).append(i)
    assert {k: v.tolist() for k, v in groups.items()} == ref


def test_identity_chunks_cover_all_images_without_repeats_in_a_chunk() -> None:
    rng = np.random.default_rng(0)
    idx = np.arange(10, 17)  # 7 images, K=3 -> 3 chunks, last one completed
    chunks = identity_chunks(idx, 3, rng)
    assert len(chunks) == 3 and all(len(c) == 3 for c in chunks)
    assert all(len(set(c.tolist())) == 3 for c in chunks)
    assert set(np.concatenate(chunks).tolist()) == set(idx.tolist())


@pytest.mark.parametrize("drop_last", [True, False])
def test_every_batch_is_p_identities_by_k_images(drop_last: bool) -> None:
    s = PKSampler(LABELS, P, K, seed=3, drop_last=drop_last)
    for epoch in range(3):
        check_batches(batches_of(s, epoch))


@pytest.mark.parametrize("drop_last", [True, False])
def test_epoch_covers_every_identity(drop_last: bool) -> None:
    s = PKSampler(LABELS, P, K, seed=1, drop_last=drop_last)
    for epoch in range(5):
        assert set(batches_of(s, epoch).ravel().tolist()) == set(LABELS)


def test_without_drop_last_every_image_is_used() -> None:
    s = PKSampler(LABELS, P, K, seed=2, drop_last=False)
    for epoch in range(3):
        assert set(s.epoch_indices(epoch).tolist()) == set(range(len(LABELS)))


def test_few_image_identities_are_sampled_with_replacement() -> None:
    s = PKSampler(LABELS, P, K, seed=0)
    flat = s.epoch_indices(0).reshape(-1, K)
    singles = {i for i, lab in enumerate(LABELS) if LABELS.count(lab) == 1}
    rows = [row for row in flat if row[0] in singles]
    assert rows, "the single-image identities must appear"
    for row in rows:
        assert (row == row[0]).all()  # K copies of the only image
    # an identity with 2 < K images shows both, one of them twice
    pairs = [row for row in flat if LABELS.count(LABELS[row[0]]) == 2]
    assert pairs
    for row in pairs:
        mine = {i for i, lab in enumerate(LABELS) if lab == LABELS[row[0]]}
        assert set(row.tolist()) == mine
    # identities with >= K images never repeat an image inside their block
    for row in flat:
        if LABELS.count(LABELS[row[0]]) >= K:
            assert len(set(row.tolist())) == K


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_identities_and_equal_length(world_size: int) -> None:
    samplers = [
        PKSampler(LABELS, 2, K, seed=5, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for epoch in range(3):
        labs = [batches_of(s, epoch) for s in samplers]
        for lab in labs:
            check_batches(lab)
        assert len({lab.shape[0] for lab in labs}) == 1, "ranks must yield as many batches"
        sets = [set(lab.ravel().tolist()) for lab in labs]
        for a, b in itertools.combinations(sets, 2):
            assert not a & b
        assert set().union(*sets) == set(LABELS)
    # the shares change from epoch to epoch
    assert set(batches_of(samplers[0], 0).ravel()) != set(batches_of(samplers[0], 1).ravel())


def test_rank_and_world_size_default_from_torch_distributed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sampler_mod.dist, "is_available", lambda: True)
    monkeypatch.setattr(sampler_mod.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sampler_mod.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(sampler_mod.dist, "get_rank", lambda: 1)
    s = PKSampler(LABELS, 2, K, seed=5)
    assert (s.rank, s.world_size) == (1, 2)
    explicit = PKSampler(LABELS, 2, K, seed=5, rank=1, world_size=2)
    np.testing.assert_array_equal(s.epoch_indices(0), explicit.epoch_indices(0))


def test_deterministic_per_seed_and_epoch() -> None:
    a, b = PKSampler(LABELS, P, K, seed=7), PKSampler(LABELS, P, K, seed=7)
    np.testing.assert_array_equal(a.epoch_indices(4), b.epoch_indices(4))
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert not np.array_equal(a.epoch_indices(1), a.epoch_indices(2))
    other = PKSampler(LABELS, P, K, seed=8)
    assert not np.array_equal(a.epoch_indices(1), other.epoch_indices(1))


def test_iteration_follows_set_epoch() -> None:
    s = PKSampler(LABELS, P, K, seed=0)
    s.set_epoch(3)
    assert list(s) == s.epoch_indices(3).tolist()
    assert len(s) == len(s.epoch_indices(3))


def test_resume_mid_epoch_yields_the_remaining_sequence() -> None:
    s = PKSampler(LABELS, P, K, seed=11)
    s.set_epoch(2)
    full = s.epoch_indices().tolist()
    it = iter(s)
    head = [next(it) for _ in range(2 * P * K + 1)]
    state = s.state_dict()
    assert state == {"epoch": 2, "seed": 11, "position": len(head)}

    resumed = PKSampler(LABELS, P, K, seed=0)  # seed and epoch come from the state
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the trainer's loop re-announcing the epoch must not rewind
    assert len(resumed) == len(full) - len(head)
    assert head + list(resumed) == full
    # the pass after a resumed one starts the epoch again from its beginning
    assert list(resumed) == full


def test_state_dict_records_consumed_batches_rather_than_prefetched() -> None:
    s = PKSampler(LABELS, P, K, seed=11)
    it = iter(s)
    for _ in range(3 * P * K):  # a loader fetched three batches, training used one
        next(it)
    state = s.state_dict(consumed=P * K)
    resumed = PKSampler(LABELS, P, K)
    resumed.load_state_dict(state)
    assert list(resumed) == s.epoch_indices(0).tolist()[P * K :]


def test_new_epoch_starts_from_zero() -> None:
    s = PKSampler(LABELS, P, K, seed=0)
    s.load_state_dict({"epoch": 1, "seed": 0, "position": 5})
    s.set_epoch(2)
    assert list(s) == s.epoch_indices(2).tolist()


def test_invalid_arguments_are_reported() -> None:
    with pytest.raises(ValueError, match="identities"):
        PKSampler(LABELS, 24, K)
    with pytest.raises(ValueError, match="ranks"):
        PKSampler(LABELS, 12, K, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        PKSampler(LABELS, P, K, rank=2, world_size=2)
    s = PKSampler(LABELS, P, K)
    with pytest.raises(ValueError, match="position"):
        s.load_state_dict({"epoch": 0, "seed": 0, "position": 10**6})
    with pytest.raises(ValueError, match="lacks"):
        s.load_state_dict({"epoch": 0})


def test_dataloader_batches_are_the_sampler_blocks() -> None:
    s = PKSampler(LABELS, P, K, seed=4)
    loader = DataLoader(torch.arange(len(LABELS)), batch_size=P * K, sampler=s, drop_last=True)
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, s.epoch_indices(0))


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(1, 8), min_size=6, max_size=20),
    p=st.integers(2, 5),
    k=st.integers(1, 4),
    seed=st.integers(0, 1000),
    drop_last=st.booleans(),
)
def test_invariants_hold_for_random_datasets(
    counts: list[int], p: int, k: int, seed: int, drop_last: bool
) -> None:
    if len(counts) < p:
        return
    labels = np.asarray(make_labels(counts, seed))
    s = PKSampler(labels.tolist(), p, k, seed=seed, drop_last=drop_last)
    lab = labels[s.epoch_indices(0)].reshape(-1, p, k)
    check_batches(lab)
    covered = set(lab.ravel().tolist())
    if not drop_last or len(lab) * p >= len(counts):
        # with room for an identity twice somewhere, drop_last keeps every identity too
        assert covered == set(labels.tolist())
