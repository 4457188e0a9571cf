"""Plain records shared by the dataset readers, the samplers and the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

JUNK_ID = -1
"""Identity label of junk images (ignored by evaluation)."""
DISTRACTOR_ID = 0
"""Identity label of distractors in Market-1501-style galleries (kept as negatives)."""


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
