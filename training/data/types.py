"""Plain records shared by the dataset readers, the samplers and the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

JUNK_ID = -1
"""Identity label of junk images (ignored by evaluation)."""
DISTRACTOR_ID = 0
"""Identity label of distractors in Market-1501-style galleries (kept as negatives)."""


Skipped = list[tuple[str, str]]
"""Files a reader left out, as ``(path, reason)``."""


@dataclass(frozen=True)
class Sample:
    """One image: its path, its identity as named on disk, and its camera."""

    path: str
    pid: int
    camid: int


@dataclass
class ReidDataset:
    """The splits of one dataset. ``train`` identities are original labels; see ``relabel``."""

    name: str
    root: str
    train: list[Sample] = field(default_factory=list)
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)
    skipped: Skipped = field(default_factory=list)
    """``(path, reason)`` of every file the reader left out (bad name, unreadable...)."""
