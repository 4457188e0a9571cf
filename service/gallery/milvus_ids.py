"""Item ids for Milvus galleries: below 2**53, unique across every replica, no coordinator.

Milvus's own auto ids (~4.7e17) are above 2**53, the largest integer a JavaScript number
(the web page, any JSON client that parses into doubles) holds exactly: such ids come back
rounded and name another item. So collections created by this version allocate their ids
here, as ``block << 14 | offset``:

- a **block** is 16,384 ids that one writer (one process's backend) owns alone. Its number
  is the minute since 2025-01-01 times 8,192 plus a random 13-bit part (39 bits: blocks of
  later minutes are larger, so ids grow roughly with time, which the attribute columns'
  "ids above the largest known one" relies on to stay cheap);
- a writer **claims** a block by inserting a row (block, a fresh random token) into the
  database's claims collection and then reading, at Strong consistency, every row of that
  block: the claim holds when its row is the only one; otherwise every claimant that saw a
  rival gives it up and tries another block. Two claimants of one block cannot both win: the
  one whose read came second sees the other's insert, which was acknowledged before that
  read (Strong reads see every write acknowledged before them). Both may lose; then both
  retry elsewhere;
- the **offset** counts up inside the block, in this process only.

A claim costs one insert and one Strong read per 16,384 ids. Ids are unique per database
(every gallery of it), so a re-indexed gallery renamed into place keeps them unique. As a
second guard, :class:`service.gallery.milvus_store.MilvusStore` checks that the ids of
every batch are free in the gallery in the same query that looks up external ids (alone,
at Bounded consistency, for a batch without external ids), and claims a new block when one
is not (a claims collection dropped by hand, a restored backup).

Collections created before this (``auto_id`` schema) keep Milvus's ids: they stay readable
and writable; re-indexing one creates it anew with ids from here.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from service.gallery.milvus_tables import ensure_keyed_collection

logger = logging.getLogger(__name__)

CLAIMS = "reid_id_blocks"
"""The claims collection of a database (not a gallery: no ``reid_g_`` prefix)."""
EPOCH = 1735689600.0
"""2025-01-01T00:00:00Z, minute 0 of block numbers."""
OFFSET_BITS = 14
RANDOM_BITS = 13
MINUTE_BITS = 26
"""Minutes since EPOCH: until the year 2152."""
ID_LIMIT = 1 << (MINUTE_BITS + RANDOM_BITS + OFFSET_BITS)
"""Every id is below this: 2**53, the largest exact integer of a double."""
MAX_TRIES = 32
"""Lost claims in a row before giving up (each loss is a rival claim of the same block)."""
_STEP = 256
"""Largest random step past the last block once a writer is ahead of the clock."""


def block_of(item_id: int) -> int:
    return int(item_id) >> OFFSET_BITS


class IdsExhausted(RuntimeError):
    """No block could be claimed (claims lost ``MAX_TRIES`` times in a row)."""


class IdBlocks:
    """Allocates item ids for the galleries of one Milvus database; thread-safe."""

    def __init__(self, client: Any, clock: Any = time.time) -> None:
        self.client = client
        self.clock = clock
        self._lock = threading.Lock()
        self._block = -1
        """The block this writer owns now (-1: none yet)."""
        self._next = 1 << OFFSET_BITS
        """Next offset in it (a full block: claim another)."""
        self._last = -1
        """The largest block this writer has claimed or tried: later ones go above it."""
        self._ready = False

    def take(self, n: int) -> list[int]:
        """``n`` fresh ids, ascending, possibly spanning blocks."""
        out: list[int] = []
        with self._lock:
            while len(out) < n:
                if self._next >= 1 << OFFSET_BITS:
                    self._claim()
                got = min(n - len(out), (1 << OFFSET_BITS) - self._next)
                base = self._block << OFFSET_BITS
                out += range(base + self._next, base + self._next + got)
                self._next += got
        return out

    def discard(self) -> None:
        """Give up the current block (some of its ids were found taken): the next take
        claims a new one."""
        with self._lock:
            self._next = 1 << OFFSET_BITS

    def _claim(self) -> None:
        self._ensure_collection()
        for _ in range(MAX_TRIES):
            block = self._candidate()
            self._last = block
            if self._won(block):
                self._block, self._next = block, 0
                logger.debug("id block %d claimed", block)
                return
            logger.info("id block %d claimed by another writer too: trying another", block)
        raise IdsExhausted(f"no id block claimed in {MAX_TRIES} tries")

    def _candidate(self) -> int:
        """A random block of this minute, or a little above the last one once past it."""
        minute = max(0, int((self.clock() - EPOCH) // 60))
        base = minute << RANDOM_BITS
        if self._last >= base:
            block = self._last + 1 + secrets.randbelow(_STEP)
        else:
            block = base + secrets.randbelow(1 << RANDOM_BITS)
        if block >= ID_LIMIT >> OFFSET_BITS:
            raise IdsExhausted("item id space below 2**53 exhausted")
        return block

    def _won(self, block: int) -> bool:
        token = secrets.token_hex(16)
        self.client.insert(CLAIMS, [{"token": token, "block": block, "vec": [0.0, 0.0]}])
        rows = self.client.query(
            CLAIMS,
            filter=f"block == {block}",
            output_fields=["token"],
            consistency_level="Strong",
        )
        return [r["token"] for r in rows] == [token]

    def _ensure_collection(self) -> None:
        if self._ready:
            return
        ensure_keyed_collection(
            self.client,
            CLAIMS,
            ("token", "VARCHAR", {"max_length": 64}),
            [("block", "INT64", {})],
        )
        self._ready = True
