"""How a bulk-indexing job finds camera and time for files whose names carry none.

The folder layout that works with no options: one folder per camera,
``<camera>/<file>`` (``cam1/frame_2.jpg`` -> camera ``cam1``). Per file, in order:

1. a manifest entry (:mod:`service.jobs.naming`) gives camera and time;
2. a Market-1501/DukeMTMC-style name gives the camera (and, with ``time="auto"``, the time
   ``frame / fps``);
3. otherwise the camera is a folder name: the file's own folder, or the folder at
   ``camera_level`` (1 = the top folder of the archive or directory);
4. the time comes from the rule ``time``: ``auto`` (manifest or dataset name, else
   unknown), ``exif`` (EXIF ``DateTimeOriginal``), ``name`` (a strftime ``time_format``
   searched in the file name, or a ``time_regex`` whose first group, or whole match, is
   parsed with ``time_format`` or as epoch seconds / ISO 8601), ``mtime`` (the file's
   modification time) or ``none``.

A time the rule cannot find is unknown (None), never a failure: the item is stored without
one and time filters exclude it. A file with no camera at all fails with a reason saying
how to give one. Naive times (EXIF, strftime without ``%z``) are taken as UTC.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import posixpath
import re
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from reidcore.timestamps import check_epoch, epoch_seconds
from service.jobs.naming import DEFAULT_FPS, ItemInfo, parse_dataset_name

logger = logging.getLogger(__name__)

TIME_SOURCES = ("auto", "exif", "name", "mtime", "none")
"""Where an item's time comes from (see the module docstring)."""

NO_CAMERA = (
    "no camera: not in a manifest, not a Market-1501/DukeMTMC-style name and not in a "
    "<camera>/ folder (put files in one folder per camera, set the camera folder level, "
    "or add a manifest.csv with file,camera[,timestamp])"
)

_STRFTIME = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{1,2}",
    "d": r"\d{1,2}",
    "H": r"\d{1,2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "f": r"\d{1,6}",
    "j": r"\d{3}",
    "z": r"[+-]\d{2}:?\d{2}|Z",
    "b": r"[A-Za-z]{3}",
    "p": r"[AaPp][Mm]",
    "I": r"\d{1,2}",
    "%": "%",
}
"""strftime directives a ``time_format`` may use, with what each matches in a name."""

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_OFFSET_TIME_ORIGINAL = 36881


class NamingRuleError(ValueError):
    """A naming rule is invalid (bad level, pattern or time source); the message says which."""


@dataclass(frozen=True)
class NamingRules:
    """The chosen rules of one job (recorded in the job, shown in its API response)."""

    camera_level: int | None = None
    """Folder level naming the camera, 1 = top; None: the file's own folder."""
    time: str = "auto"
    """One of :data:`TIME_SOURCES`."""
    time_format: str | None = None
    """strftime pattern searched in the file name (``time="name"``)."""
    time_regex: str | None = None
    """Regular expression whose first group (or whole match) holds the time (``time="name"``)."""
    fps: float = DEFAULT_FPS
    """Frame rate turning dataset frame numbers into seconds (``time="auto"``)."""

    def __post_init__(self) -> None:
        if self.camera_level is not None and self.camera_level < 1:
            raise NamingRuleError(f"camera level must be >= 1, got {self.camera_level}")
        if self.time not in TIME_SOURCES:
            raise NamingRuleError(f"time source must be one of {TIME_SOURCES}, got {self.time!r}")
        has_pattern = bool(self.time_format or self.time_regex)
        if (self.time == "name") != has_pattern:
            raise NamingRuleError(
                "a time format or regex goes with the time source 'name', and 'name' needs one"
            )
        if self.time_format:
            _format_regex(self.time_format)
        if self.time_regex:
            try:
                re.compile(self.time_regex)
            except re.error as exc:
                raise NamingRuleError(f"time regex {self.time_regex!r}: {exc}") from None

    @classmethod
    def create(
        cls,
        camera_level: int | None = None,
        time: str | None = None,
        time_format: str | None = None,
        time_regex: str | None = None,
        fps: float = DEFAULT_FPS,
    ) -> NamingRules:
        """Rules from user options: a pattern alone implies ``time="name"``."""
        pattern = time_format or time_regex
        source = time or ("name" if pattern else "auto")
        return cls(camera_level, source, time_format or None, time_regex or None, fps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> NamingRules:
        known = {k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _format_regex(fmt: str) -> re.Pattern[str]:
    """The regex matching what ``fmt`` (strftime) writes; NamingRuleError for other directives."""
    parts, i = [], 0
    while i < len(fmt):
        if fmt[i] != "%":
            parts.append(re.escape(fmt[i]))
            i += 1
            continue
        code = fmt[i + 1 : i + 2]
        if code not in _STRFTIME:
            raise NamingRuleError(
                f"time format {fmt!r}: %{code} is not supported (use {' '.join('%' + c for c in _STRFTIME)})"
            )
        parts.append(f"(?:{_STRFTIME[code]})" if code != "%" else "%")
        i += 2
    if "%" not in fmt.replace("%%", ""):
        raise NamingRuleError(f"time format {fmt!r} has no strftime directive")
    return re.compile("".join(parts))


def camera_from_folder(name: str, level: int | None) -> str | None:
    """The folder naming the camera of member ``name`` (see :class:`NamingRules`), or None."""
    folders = [p for p in posixpath.normpath(name).split("/")[:-1] if p not in ("", ".")]
    if level is None:
        return folders[-1] if folders else None
    return folders[level - 1] if len(folders) >= level else None


def time_from_name(name: str, rules: NamingRules) -> float | None:
    """The time written in the base name of ``name`` by the rules' pattern, or None."""
    base = posixpath.basename(name)
    pattern = re.compile(rules.time_regex) if rules.time_regex else None
    if pattern is None and rules.time_format:
        pattern = _format_regex(rules.time_format)
    m = pattern.search(base) if pattern is not None else None
    if m is None:
        return None
    text = m.group(1) if m.re.groups else m.group(0)
    try:
        if rules.time_format:
            t = dt.datetime.strptime(text, rules.time_format)
            return check_epoch((t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp())
        return epoch_seconds(text)
    except (ValueError, OverflowError):
        return None


def exif_time(data: bytes) -> float | None:
    """EXIF ``DateTimeOriginal`` (with ``OffsetTimeOriginal`` when present) of image bytes."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            ifd = img.getexif().get_ifd(_EXIF_IFD)
    except (OSError, SyntaxError, ValueError):
        return None
    raw = str(ifd.get(_DATETIME_ORIGINAL) or "").strip().rstrip("\x00")
    if not raw:
        return None
    offset = str(ifd.get(_OFFSET_TIME_ORIGINAL) or "").strip().rstrip("\x00") or "+00:00"
    try:
        t = dt.datetime.strptime(f"{raw}{offset}", "%Y:%m:%d %H:%M:%S%z")
        return check_epoch(t.timestamp())
    except (ValueError, OverflowError):
        return None


def resolve(
    name: str,
    data: bytes,
    mtime: float | None,
    manifest: dict[str, ItemInfo],
    rules: NamingRules,
) -> ItemInfo | str:
    """Camera, time and metadata of one member, or the reason it has no camera."""
    listed = manifest.get(posixpath.normpath(name))
    if listed is not None and listed.timestamp is not None:
        return listed
    dataset = parse_dataset_name(name, rules.fps)
    camera = (
        listed.camera
        if listed
        else dataset.camera
        if dataset
        else camera_from_folder(name, rules.camera_level)
    )
    if camera is None:
        return NO_CAMERA
    base = listed or dataset
    metadata = dict(base.metadata) if base else {}
    match rules.time:
        case "auto":
            stamp = dataset.timestamp if dataset else None
        case "exif":
            stamp = exif_time(data)
        case "name":
            stamp = time_from_name(name, rules)
        case "mtime":
            stamp = mtime
        case _:
            stamp = None
    if rules.time == "auto" and dataset is not None and stamp is not None:
        metadata["time_kind"] = "offset"  # frame / fps: seconds from the recording start
    return ItemInfo(camera, stamp, metadata)
