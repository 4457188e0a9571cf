"""``reid index --shard i/n``: n workers index one folder into one gallery, each a disjoint part.

A member belongs to shard ``i`` of ``n`` when the first 8 bytes of the sha256 of its stored
name, as an integer, are ``i`` modulo ``n``: every worker computes the same split from the
names alone, with no coordination. Nothing is added twice when shards overlap (the same
crop under two names, or a worker restarted on its shard): items are identified by the
sha256 of their bytes, which the gallery adds once (the Milvus engine also settles two
workers adding one crop at the same moment, :mod:`service.gallery.milvus_store`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from service.jobs.naming import ItemInfo
from service.jobs.sources import Member, Source, storable_name

SHARD_RE = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` with ``0 <= i < n``; ValueError with the reason otherwise."""
        m = SHARD_RE.match(text.strip())
        if m is None:
            raise ValueError(f"--shard must be i/n (e.g. 0/4), got {text!r}")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {text}: need n >= 1 and 0 <= i < n")
        return cls(index, count)

    def holds(self, stored_name: str) -> bool:
        """Whether the member stored as ``stored_name`` is this shard's."""
        digest = hashlib.sha256(stored_name.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


class ShardSource:
    """The members of ``source`` that belong to ``shard``, in the source's order."""

    def __init__(self, source: Source, shard: Shard) -> None:
        self.source = source
        self.shard = shard
        self.label = f"{source.label} (shard {shard.index}/{shard.count})"
        self.names = [n for n in source.names if shard.holds(storable_name(n)[0])]
        self.infos: dict[str, ItemInfo] = source.infos

    def members(self) -> Iterator[Member]:
        return (m for m in self.source.members() if self.shard.holds(m.name))
