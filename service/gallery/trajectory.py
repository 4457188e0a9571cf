"""Follow a person across cameras: a search's matches above a score as a trajectory.

The matches at or above the threshold are grouped by camera (one *lane* each, lanes in the
order of their first sighting), each lane ordered by time, and all of them together form the
*path*: every timed sighting in time order, with the gap to the previous one. Matches whose
time is unknown are listed apart.

Times are of two kinds, recorded with the item, never guessed from their size:

- ``datetime``: wall-clock time (epoch seconds), shown as a date;
- ``offset``: seconds from the start of a recording, as dataset file names give them
  (Market-1501 / DukeMTMC frame numbers divided by the frame rate, :mod:`service.jobs.naming`),
  shown as ``+H:MM:SS.s``. An item says so with ``"time_kind": "offset"`` in its metadata
  (bulk jobs and the demo write it; items written before it existed and carrying the dataset
  name's ``frame`` in their metadata count as offsets too).

Gaps are only computed between two times of the same kind (null otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from service.gallery.types import Match

TimeKind = Literal["datetime", "offset"]
TIME_KIND_KEY = "time_kind"
"""Item metadata key saying how the item's timestamp is to be read."""


def time_kind(timestamp: float, metadata: Mapping[str, Any]) -> TimeKind | None:
    """The kind of an item's time; None when the time is unknown."""
    if math.isnan(timestamp):
        return None
    declared = metadata.get(TIME_KIND_KEY)
    if declared in ("datetime", "offset"):
        return "offset" if declared == "offset" else "datetime"
    return "offset" if "frame" in metadata else "datetime"


def format_offset(seconds: float) -> str:
    """``597.24`` -> ``+0:09:57.2`` (seconds from the recording start)."""
    sign = "-" if seconds < 0 else "+"
    tenths = round(abs(seconds) * 10)
    h, rest = divmod(tenths, 36000)
    m, s = divmod(rest, 600)
    return f"{sign}{h}:{m:02d}:{s // 10:02d}.{s % 10}"


@dataclass(frozen=True)
class Sighting:
    """One match placed in time."""

    match: Match
    kind: TimeKind
    seconds: float
    """Epoch seconds (``datetime``) or seconds from the recording start (``offset``)."""
    gap_s: float | None
    """Seconds since the previous sighting (in its lane, or on the path); null for the
    first one or when the previous one's time is of the other kind."""


@dataclass(frozen=True)
class Lane:
    camera: str
    sightings: list[Sighting]


@dataclass(frozen=True)
class Trajectory:
    lanes: list[Lane]
    path: list[Sighting]
    unknown_time: list[Match]


def _with_gaps(timed: Sequence[tuple[Match, TimeKind, float]]) -> list[Sighting]:
    out: list[Sighting] = []
    for m, kind, sec in sorted(timed, key=lambda t: (t[1] != "offset", t[2], t[0].item.id)):
        prev = out[-1] if out else None
        gap = sec - prev.seconds if prev is not None and prev.kind == kind else None
        out.append(Sighting(m, kind, sec, gap))
    return out


def build_trajectory(matches: Sequence[Match], min_score: float) -> Trajectory:
    """The trajectory of the matches scoring at least ``min_score`` (module docstring)."""
    timed: list[tuple[Match, TimeKind, float]] = []
    unknown: list[Match] = []
    for m in matches:
        if m.score < min_score:
            continue
        kind = time_kind(m.item.timestamp, m.item.metadata)
        if kind is None:
            unknown.append(m)
        else:
            timed.append((m, kind, m.item.timestamp))
    path = _with_gaps(timed)
    cameras = list(dict.fromkeys(s.match.item.camera for s in path))
    lanes = [
        Lane(cam, _with_gaps([t for t in timed if t[0].item.camera == cam])) for cam in cameras
    ]
    return Trajectory(lanes, path, unknown)
