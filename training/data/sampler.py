"""P×K identity sampling for metric learning (triplet loss), distributed-aware and resumable.

Every consecutive ``P*K`` indices that :class:`PKSampler` yields form one batch: ``P``
distinct identities, ``K`` images each, laid out identity by identity
(``[id_0 × K, id_1 × K, ...]``). Give the ``DataLoader`` ``batch_size=P*K`` and this sampler.

One epoch, for one rank:

1. The identities are shuffled with ``(seed, epoch)`` (the same on every rank) and dealt
   round-robin to the ranks, so ranks hold disjoint identity shares.
2. Each identity's images are shuffled and cut into chunks of ``K`` (the last chunk is
   completed with other images of the same identity); an identity with fewer than ``K``
   images gives one chunk: all of them, plus repeats drawn with replacement.
3. Batches are drawn one at a time: ``P`` distinct identities, with probability
   proportional to the chunks they have left, one chunk from each.
4. Fewer than ``P`` identities with chunks left cannot make a batch. ``drop_last=True``
   drops those chunks, but first swaps any identity that would then be missing from the
   epoch into a batch, in place of an identity that appears in several batches.
   ``drop_last=False`` completes such batches with fresh chunks of other identities
   until every chunk is used.
5. Ranks whose plan came out shorter get extra batches of fresh random chunks, so all
   ranks yield the same number of batches (the collective ops of DDP stay in step).

The plan is a pure function of ``(labels, p, k, seed, epoch, rank, world_size)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


def group_by_label(labels: Sequence[int]) -> dict[int, np.ndarray]:
    """Label -> the indices (int64, ascending) of the samples carrying it."""
    arr = np.asarray(labels, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
    order = np.argsort(arr, kind="stable")
    uniq, starts = np.unique(arr[order], return_index=True)
    groups = np.split(order, starts[1:])
    return {int(u): g for u, g in zip(uniq, groups, strict=True)}


def identity_chunks(indices: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle one identity's sample indices and cut them into chunks of exactly ``k``.

    With at least ``k`` images no chunk repeats an image: the last, short chunk is
    completed with images of the other chunks. Fewer than ``k`` images give one chunk
    holding each of them once plus repeats drawn with replacement.
    """
    n = len(indices)
    if n < k:
        repeats = rng.choice(indices, size=k - n, replace=True)
        return [rng.permutation(np.concatenate([indices, repeats]))]
    perm = rng.permutation(indices)
    n_full, rest = divmod(n, k)
    chunks = [perm[i * k : (i + 1) * k] for i in range(n_full)]
    if rest:
        tail = perm[n_full * k :]
        fill = rng.choice(perm[: n_full * k], size=k - rest, replace=False)
        chunks.append(np.concatenate([tail, fill]))
    return chunks


def fresh_chunk(indices: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` images of one identity, without replacement when it has enough."""
    return rng.choice(indices, size=k, replace=len(indices) < k)


def split_identities(ids: np.ndarray, world_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffle the identities with ``(seed, epoch)`` and deal them round-robin to the ranks."""
    perm = np.random.default_rng([seed, epoch]).permutation(ids)
    return [perm[r::world_size] for r in range(world_size)]


def _draw_batches(
    ids: np.ndarray,
    chunks: dict[int, list[np.ndarray]],
    p: int,
    rng: np.random.Generator,
) -> list[list[tuple[int, np.ndarray]]]:
    """Draw batches of ``p`` distinct identities until fewer than ``p`` have chunks left.

    Consumes ``chunks``; each batch is a list of ``(identity, chunk)``.
    """
    left = np.array([len(chunks[int(i)]) for i in ids], dtype=np.float64)
    batches = []
    while np.count_nonzero(left) >= p:
        picked = rng.choice(len(ids), size=p, replace=False, p=left / left.sum())
        left[picked] -= 1
        batches.append([(int(ids[j]), chunks[int(ids[j])].pop()) for j in picked])
    return batches


def _cover_missing(
    batches: list[list[tuple[int, np.ndarray]]],
    leftover: dict[int, list[np.ndarray]],
    rng: np.random.Generator,
) -> None:
    """Swap leftover identities absent from every batch into a batch (in place).

    Each takes the slot of an identity that appears in two or more batches; the batch
    keeps ``p`` distinct identities because the newcomer appeared nowhere before.
    """
    counts: dict[int, int] = {}
    for batch in batches:
        for pid, _ in batch:
            counts[pid] = counts.get(pid, 0) + 1
    for pid, pid_chunks in leftover.items():
        if pid in counts or not pid_chunks:
            continue
        slots = [(b, s) for b, batch in enumerate(batches) for s, (q, _) in enumerate(batch)]
        slots = [(b, s) for b, s in slots if counts[batches[b][s][0]] >= 2]
        if not slots:
            logger.warning("identity %d cannot be placed in this epoch without drop_last", pid)
            continue
        b, s = slots[int(rng.integers(len(slots)))]
        counts[batches[b][s][0]] -= 1
        counts[pid] = 1
        batches[b][s] = (pid, pid_chunks[0])


def rank_plan(
    groups: Mapping[int, np.ndarray],
    ids: np.ndarray,
    p: int,
    k: int,
    drop_last: bool,
    rng: np.random.Generator,
) -> list[list[tuple[int, np.ndarray]]]:
    """The batches of one rank's identity share for one epoch (steps 2-4 of the module doc)."""
    if len(ids) < p:
        raise ValueError(f"P×K sampling needs at least p={p} identities per rank, got {len(ids)}")
    chunks = {int(i): identity_chunks(groups[int(i)], k, rng) for i in ids}
    batches = _draw_batches(ids, chunks, p, rng)
    leftover = {pid: c for pid, c in chunks.items() if c}
    if not leftover:
        return batches
    if drop_last:
        _cover_missing(batches, leftover, rng)
        return batches
    while leftover:  # fewer than p identities left, maybe several chunks each
        last = [(pid, c.pop()) for pid, c in leftover.items()]
        others = np.setdiff1d(ids, np.fromiter(leftover, dtype=np.int64))
        extra = rng.choice(others, size=p - len(last), replace=False)
        last += [(int(i), fresh_chunk(groups[int(i)], k, rng)) for i in extra]
        batches.append(last)
        leftover = {pid: c for pid, c in leftover.items() if c}
    return batches


def pad_plan(
    batches: list[list[tuple[int, np.ndarray]]],
    groups: Mapping[int, np.ndarray],
    ids: np.ndarray,
    p: int,
    k: int,
    n_batches: int,
    rng: np.random.Generator,
) -> None:
    """Append batches of fresh random chunks until the plan has ``n_batches`` (in place)."""
    while len(batches) < n_batches:
        picked = rng.choice(ids, size=p, replace=False)
        batches.append([(int(i), fresh_chunk(groups[int(i)], k, rng)) for i in picked])


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size: as given, else from ``torch.distributed``, else ``(0, 1)``."""
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    return rank, world_size


class PKSampler(Sampler[int]):
    """Flat sample indices in batches of ``p`` identities × ``k`` images; see the module doc.

    Call :meth:`set_epoch` at the start of every epoch (as with ``DistributedSampler``);
    without it every pass repeats the same order. :meth:`state_dict` and
    :meth:`load_state_dict` resume an epoch exactly where it stopped.
    """

    def __init__(
        self,
        labels: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
    ) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be positive, got p={p}, k={k}")
        self.groups = group_by_label(labels)
        self.p, self.k, self.seed, self.drop_last = p, k, seed, drop_last
        self.rank, self.world_size = resolve_rank(rank, world_size)
        n_ids = len(self.groups)
        if n_ids < p * self.world_size:
            raise ValueError(
                f"{n_ids} identities cannot give p={p} distinct identities "
                f"to each of {self.world_size} ranks"
            )
        self.epoch = 0
        self._start = 0  # where the next __iter__ begins (set by load_state_dict)
        self._position = 0  # indices of the current epoch handed out so far
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def batch_size(self) -> int:
        """Indices per batch: ``p * k``."""
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s order; a new epoch starts from its beginning."""
        if epoch != self.epoch:
            self.epoch, self._start, self._position = epoch, 0, 0

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's whole index sequence for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        ids = np.fromiter(self.groups, dtype=np.int64)
        shares = split_identities(ids, self.world_size, self.seed, epoch)
        rngs = [np.random.default_rng([self.seed, epoch, r, 1]) for r in range(self.world_size)]
        plans = [
            rank_plan(self.groups, s, self.p, self.k, self.drop_last, g)
            for s, g in zip(shares, rngs, strict=True)
        ]
        n_batches = max(len(plan) for plan in plans)
        mine = plans[self.rank]
        pad_plan(mine, self.groups, shares[self.rank], self.p, self.k, n_batches, rngs[self.rank])
        flat = np.concatenate([chunk for batch in mine for _, chunk in batch]).astype(np.int64)
        self._cache = (epoch, flat)
        return flat

    def __iter__(self) -> Iterator[int]:
        flat = self.epoch_indices()
        start = self._start
        self._position = start
        for i in range(start, len(flat)):
            self._position = i + 1
            yield int(flat[i])
        self._start = 0

    def __len__(self) -> int:
        """Indices the next pass yields (the rest of the epoch after a resume)."""
        return len(self.epoch_indices()) - self._start

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Epoch, seed and position (indices of this epoch already used).

        A ``DataLoader`` draws indices ahead of the batches the model has seen
        (``prefetch_factor`` × workers batches); pass ``consumed`` (batches trained × P×K)
        to record what training actually used rather than what the loader fetched.
        """
        position = self._position if consumed is None else consumed
        return {"epoch": self.epoch, "seed": self.seed, "position": int(position)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next pass yields epoch ``state['epoch']`` from ``state['position']``."""
        try:
            epoch, seed, position = int(state["epoch"]), int(state["seed"]), int(state["position"])
        except KeyError as exc:
            raise ValueError(f"sampler state {dict(state)!r} lacks field {exc}") from None
        self.epoch, self.seed = epoch, seed
        self._cache = None
        total = len(self.epoch_indices())
        if not 0 <= position <= total:
            raise ValueError(f"sampler position {position} outside epoch of {total} indices")
        self._start = self._position = position
