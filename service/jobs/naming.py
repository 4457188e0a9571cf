"""Camera id and capture time of a crop: from its file name or from a manifest.

File names in the Market-1501 convention (``0002_c1s1_000451_03.jpg``: identity, camera,
sequence, frame, box) and the DukeMTMC-reID one (``0001_c2_f0046182.jpg``) give the camera
(``c1``) and a frame number. The frame number becomes the timestamp ``frame / fps``
(seconds from the start of the recording, not wall-clock time: these datasets carry none).

A ``manifest.csv`` or ``manifest.json`` inside the archive (or folder) overrides names:

- CSV: a header with ``file``, ``camera`` and optionally ``timestamp``; other columns go to
  metadata.
- JSON: a list of ``{"file", "camera", "timestamp"?, "metadata"?}`` objects, or an object
  mapping each file to ``{"camera", "timestamp"?, "metadata"?}``.

Timestamps are epoch seconds or ISO 8601 (naive means UTC); an empty or missing one means
the time is unknown. Names with no convention and no manifest entry get their camera and
time from the rules of :mod:`service.jobs.rules`. File paths in a manifest are
relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from reidcore.timestamps import check_epoch, epoch_seconds

logger = logging.getLogger(__name__)

MANIFEST_NAMES = ("manifest.csv", "manifest.json")
DEFAULT_FPS = 25.0
"""Frame rate that turns dataset frame numbers into seconds (Market-1501 video is 25 fps)."""

MARKET_RE = re.compile(r"^(-?\d+)_c(\d+)s(\d+)_(\d+)_(\d+)")
DUKE_RE = re.compile(r"^(-?\d+)_c(\d+)_f(\d+)")


class ManifestFileError(ValueError):
    """A manifest inside an archive or folder cannot be read; the message names it."""


@dataclass(frozen=True)
class ItemInfo:
    """Camera, time and metadata of one crop."""

    camera: str
    """Camera id."""
    timestamp: float | None
    """Seconds since the epoch (or since the recording started, for dataset names); None
    when unknown (stored as such, excluded by time filters)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Extra JSON stored with the item."""


def parse_dataset_name(name: str, fps: float = DEFAULT_FPS) -> ItemInfo | None:
    """Market-1501 or DukeMTMC-reID style file name -> info; None for other names."""
    base = posixpath.basename(name)
    if m := MARKET_RE.match(base):
        pid, cam, seq, frame = int(m[1]), m[2], int(m[3]), int(m[4])
        meta = {"identity": pid, "sequence": seq, "frame": frame}
        return ItemInfo(f"c{cam}", frame / fps, meta)
    if m := DUKE_RE.match(base):
        pid, cam, frame = int(m[1]), m[2], int(m[3])
        return ItemInfo(f"c{cam}", frame / fps, {"identity": pid, "frame": frame})
    return None


def parse_timestamp(value: Any, where: str) -> float:
    """Epoch seconds or ISO 8601 text -> epoch seconds; ``where`` names the entry at fault.

    Only finite times a datetime round trip can represent are accepted
    (:func:`reidcore.timestamps.check_epoch`).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ManifestFileError(f"{where}: timestamp {value!r} is not a number or ISO 8601 time")
    try:
        if isinstance(value, int | float):
            return check_epoch(value)
        return epoch_seconds(value)
    except (ValueError, OverflowError) as exc:
        raise ManifestFileError(f"{where}: {exc}") from None


def is_manifest(name: str) -> bool:
    """Whether a member is a manifest file (by base name)."""
    return posixpath.basename(name).lower() in MANIFEST_NAMES


def parse_manifest(
    name: str, data: bytes, max_metadata_bytes: int | None = None
) -> dict[str, ItemInfo]:
    """Manifest bytes -> member path (joined with the manifest's folder) -> info.

    Every entry's metadata must be a JSON object of at most ``max_metadata_bytes`` bytes
    (as JSON) nested at most ``MAX_METADATA_DEPTH`` deep, without NaN or Infinity.
    """
    folder = posixpath.dirname(name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestFileError(f"{name}: not UTF-8 text") from None
    parse = _parse_csv if name.lower().endswith(".csv") else _parse_json
    entries = parse(name, text)
    out = {}
    for f, (where, raw) in entries.items():
        out[posixpath.normpath(posixpath.join(folder, f))] = _entry(where, raw, max_metadata_bytes)
    return out


MAX_METADATA_DEPTH = 32
"""Deepest nesting of an entry's metadata (objects and lists), so that storing and answering
it never meets a recursion limit."""


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _check_metadata(where: str, meta: Any, max_bytes: int | None) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise ManifestFileError(f"{where}: metadata must be a JSON object")
    if _depth(meta) > MAX_METADATA_DEPTH:
        raise ManifestFileError(f"{where}: metadata nested deeper than {MAX_METADATA_DEPTH}")
    size = len(json.dumps(meta))
    if max_bytes is not None and size > max_bytes:
        raise ManifestFileError(
            f"{where}: metadata is {size} bytes of JSON; the limit is {max_bytes}"
        )
    return dict(meta)


def _entry(where: str, raw: dict[str, Any], max_metadata_bytes: int | None) -> ItemInfo:
    camera = str(raw.get("camera") or "").strip()
    if not camera:
        raise ManifestFileError(f"{where}: missing camera")
    meta = _check_metadata(where, raw.get("metadata") or {}, max_metadata_bytes)
    stamp = raw.get("timestamp")
    known = stamp not in (None, "")  # an empty or missing timestamp: unknown, not an error
    return ItemInfo(camera, parse_timestamp(stamp, where) if known else None, meta)


Entries = dict[str, tuple[str, dict[str, Any]]]
"""File -> (where the entry is, for messages; its raw fields)."""


def _parse_csv(name: str, text: str) -> Entries:
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = {"file", "camera"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestFileError(f"{name}: CSV header lacks column(s) {sorted(missing)}")
        out: Entries = {}
        for line, row in enumerate(reader, start=2):
            extra = {
                str(k): v for k, v in row.items() if k not in ("file", "camera", "timestamp") and k
            }
            out[str(row["file"])] = (f"{name} line {line}", {**row, "metadata": extra})
    except csv.Error as exc:
        raise ManifestFileError(f"{name}: unreadable CSV ({exc})") from None
    return out


def _no_constant(token: str) -> None:
    raise ValueError(f"{token} is not valid JSON")


def _parse_json(name: str, text: str) -> Entries:
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ManifestFileError(f"{name}: invalid JSON ({reason})") from None
    if isinstance(doc, dict):
        pairs = list(doc.items())
    elif isinstance(doc, list):
        pairs = []
        for i, e in enumerate(doc):
            if not isinstance(e, dict) or not isinstance(e.get("file"), str) or not e["file"]:
                raise ManifestFileError(f"{name} entry {i}: an object with a 'file' is needed")
            pairs.append((e["file"], e))
    else:
        raise ManifestFileError(f"{name}: a JSON list or object is needed")
    out: Entries = {}
    for f, e in pairs:
        if not isinstance(e, dict):
            raise ManifestFileError(f"{name} entry {f!r}: an object is needed")
        out[f] = (f"{name} entry {f!r}", e)
    return out
