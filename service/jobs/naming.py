"""Camera id and capture time of a crop: from its file name or from a manifest.

File names in the Market-1501 convention (``0002_c1s1_000451_03.jpg``: identity, camera,
sequence, frame, box) and the DukeMTMC-reID one (``0001_c2_f0046182.jpg``) give the camera
(``c1``) and a frame number. The frame number becomes the timestamp ``frame / fps``
(seconds from the start of the recording, not wall-clock time: these datasets carry none).

A ``manifest.csv`` or ``manifest.json`` inside the archive (or folder) overrides names:

- CSV: a header with ``file``, ``camera`` and ``timestamp``; other columns go to metadata.
- JSON: a list of ``{"file", "camera", "timestamp", "metadata"?}`` objects, or an object
  mapping each file to ``{"camera", "timestamp", "metadata"?}``.

Timestamps are epoch seconds or ISO 8601 (naive means UTC). File paths in a manifest are
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

from reidcore.timestamps import epoch_seconds

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
    timestamp: float
    """Seconds since the epoch (or since the recording started, for dataset names)."""
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
    """Epoch seconds or ISO 8601 text -> epoch seconds; ``where`` names the entry at fault."""
    if isinstance(value, bool):
        raise ManifestFileError(f"{where}: timestamp {value!r} is not a number or ISO 8601 time")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return epoch_seconds(text)
    except ValueError:
        raise ManifestFileError(
            f"{where}: timestamp {text!r} is not epoch seconds or ISO 8601"
        ) from None


def is_manifest(name: str) -> bool:
    """Whether a member is a manifest file (by base name)."""
    return posixpath.basename(name).lower() in MANIFEST_NAMES


def parse_manifest(name: str, data: bytes) -> dict[str, ItemInfo]:
    """Manifest bytes -> member path (joined with the manifest's folder) -> info."""
    folder = posixpath.dirname(name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestFileError(f"{name}: not UTF-8 text") from None
    entries = _parse_csv(name, text) if name.lower().endswith(".csv") else _parse_json(name, text)
    return {posixpath.normpath(posixpath.join(folder, f)): info for f, info in entries.items()}


def _entry(where: str, raw: dict[str, Any]) -> ItemInfo:
    camera = str(raw.get("camera") or "").strip()
    if not camera:
        raise ManifestFileError(f"{where}: missing camera")
    if raw.get("timestamp") in (None, ""):
        raise ManifestFileError(f"{where}: missing timestamp")
    meta = raw.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ManifestFileError(f"{where}: metadata must be a JSON object")
    return ItemInfo(camera, parse_timestamp(raw["timestamp"], where), dict(meta))


def _parse_csv(name: str, text: str) -> dict[str, ItemInfo]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"file", "camera", "timestamp"} - set(reader.fieldnames or [])
    if missing:
        raise ManifestFileError(f"{name}: CSV header lacks column(s) {sorted(missing)}")
    out = {}
    for line, row in enumerate(reader, start=2):
        extra = {k: v for k, v in row.items() if k not in ("file", "camera", "timestamp") and k}
        where = f"{name} line {line}"
        out[str(row["file"])] = _entry(where, {**row, "metadata": extra})
    return out


def _parse_json(name: str, text: str) -> dict[str, ItemInfo]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestFileError(f"{name}: invalid JSON ({exc})") from None
    if isinstance(doc, dict):
        pairs = list(doc.items())
    elif isinstance(doc, list):
        pairs = []
        for i, e in enumerate(doc):
            if not isinstance(e, dict) or not e.get("file"):
                raise ManifestFileError(f"{name} entry {i}: an object with a 'file' is needed")
            pairs.append((str(e["file"]), e))
    else:
        raise ManifestFileError(f"{name}: a JSON list or object is needed")
    out = {}
    for f, e in pairs:
        if not isinstance(e, dict):
            raise ManifestFileError(f"{name} entry {f!r}: an object is needed")
        out[f] = _entry(f"{name} entry {f!r}", e)
    return out
