"""Readers that turn a dataset on disk into :class:`Sample` lists (path, identity, camera).

Supported layouts:

* **Market-1501** (:func:`read_market`): ``ROOT/bounding_box_train``, ``ROOT/bounding_box_test``
  (gallery) and ``ROOT/query``, images named ``PPPP_cCsS_FFFFFF_BB.jpg``. DukeMTMC-reID
  (``PPPP_cC_fFFFFFFF.jpg``) and CUHK03-NP use the same layout and the same leading
  ``PPPP_cC`` and are read by the same function. Identity ``-1`` is junk (:data:`JUNK_ID`),
  ``0000`` a distractor (:data:`DISTRACTOR_ID`). **Cameras are kept as on disk: 1-based**
  (``c1`` -> ``camid == 1``). A root with only ``bounding_box_train`` is a valid training set.
* **MSMT17** (:func:`read_msmt17`): ``list_{train,val,query,gallery}.txt`` with lines
  ``relative/path label``; the camera is the third ``_``-separated field of the file name
  (``0000_000_01_0303morning_0015_0.jpg`` -> camera 1, 1-based as on disk). Labels are
  shifted by +1 so that identity 0 stays reserved for distractors.
* **A customer's own crops**, either as folders ``ROOT/<camera>/<identity>/*.jpg``
  (:func:`read_camera_folders`; camera first because crops are exported per camera) or as a
  CSV with columns ``path,identity,camera[,timestamp]`` (:func:`read_crops_csv`).

Messy data is skipped, never fatal: names that match no convention, unreadable or empty
images, CSV rows that cannot be used. Every skipped file is kept with its reason
(``ReidDataset.skipped``, ``LabelledCrops.skipped``) and logged, one line per reason. Only a
dataset with nothing usable left (or the wrong layout altogether) raises
:class:`DatasetError`, naming the file or folder at fault.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from reidcore.evaluation import NoValidQueryError, require_valid_queries
from reidcore.preprocess import ImageDecodeError, decode_image
from reidcore.timestamps import epoch_seconds
from training.data.errors import DatasetError, first_few
from training.data.types import DISTRACTOR_ID, JUNK_ID, ReidDataset, Sample, Skipped

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
"""File name endings (lower case) taken as images; other files in a split folder are ignored."""

MARKET_SPLITS = {"train": "bounding_box_train", "gallery": "bounding_box_test", "query": "query"}
"""Split name -> sub-folder of a Market-1501-style root."""

MSMT_LISTS = {
    "train": "list_train.txt",
    "val": "list_val.txt",
    "query": "list_query.txt",
    "gallery": "list_gallery.txt",
}
"""Split name -> list file of an MSMT17 root."""

MSMT_IMAGE_DIRS = {"train": ("train", "mask_train_v2"), "test": ("test", "mask_test_v2")}
"""Candidate image folders of MSMT17 V1 and V2, for the train/val lists and the query/gallery lists."""

_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


def is_image_file(name: str) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def parse_market_name(name: str) -> tuple[int, int] | None:
    """``'0002_c1s1_000451_03.jpg'`` -> ``(2, 1)`` (identity, 1-based camera); None if unparsable."""
    m = _MARKET_NAME.match(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2))


def _list_images(folder: Path) -> list[str]:
    """Sorted image file names directly inside ``folder``."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))


def image_problem(path: str) -> str | None:
    """Why the image at ``path`` cannot be used (empty, unreadable, not an image), or None.

    Reads the header only (cheap enough for every file of a dataset); a file that passes
    is decoded later by :func:`reidcore.preprocess.decode_image`, which takes grayscale,
    CMYK, 16-bit and alpha crops to RGB.
    """
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - the header must parse
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"not a readable image ({type(exc).__name__})"
    return None


def keep_readable(samples: list[Sample], skipped: Skipped) -> list[Sample]:
    """The samples whose image passes :func:`image_problem`; the others go to ``skipped``."""
    kept = []
    for s in samples:
        why = image_problem(s.path)
        if why is None:
            kept.append(s)
        else:
            skipped.append((s.path, why))
    return kept


def report_skipped(skipped: Skipped, where: object) -> None:
    """One warning per reason: how many files were skipped and the first of them."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in skipped:
        by_reason[reason].append(path)
    for reason, paths in by_reason.items():
        logger.warning(
            "%s: skipped %d files (%s): %s", where, len(paths), reason, first_few(paths, 3)
        )


def read_market_folder(folder: Path | str, skipped: Skipped | None = None) -> list[Sample]:
    """All readable images of one Market-1501-style split folder, junk and distractors included.

    Names that do not match ``PPPP_cC...`` and unreadable images are appended to
    ``skipped`` as ``(path, reason)``; only a folder with no usable image is an error.
    """
    folder = Path(folder)
    skipped = [] if skipped is None else skipped
    names = _list_images(folder)
    if not names:
        raise DatasetError(
            f"split folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    samples: list[Sample] = []
    for name in names:
        parsed = parse_market_name(name)
        if parsed is None:
            skipped.append((str(folder / name), "name does not match PPPP_cC... (Market-1501)"))
        else:
            samples.append(Sample(str(folder / name), parsed[0], parsed[1]))
    samples = keep_readable(samples, skipped)
    if not samples:
        raise DatasetError(f"split folder {folder} holds no usable image: {first_few(names)}")
    return samples


def _drop_unlabelled(samples: list[Sample], where: Path, skipped: Skipped) -> list[Sample]:
    """Remove junk and distractor images (they have no identity to learn or to query)."""
    kept = []
    for s in samples:
        if s.pid == JUNK_ID:
            skipped.append((s.path, "identity -1: junk (Market-1501), ignored"))
        elif s.pid == DISTRACTOR_ID:
            skipped.append((s.path, "identity 0000: distractor (Market-1501), gallery only"))
        else:
            kept.append(s)
    if not kept:
        raise DatasetError(f"split folder {where} holds only junk/distractor images")
    return kept


def read_market(
    root: Path | str, name: str | None = None, check_matches: bool = True
) -> ReidDataset:
    """Read a Market-1501-style root (Market-1501, DukeMTMC-reID, CUHK03-NP).

    ``train`` and ``query`` lose junk (-1) and distractor (0) images; ``gallery`` keeps them,
    as the evaluation protocol wants. ``query`` and ``gallery`` must come together; with
    ``check_matches`` at least one query must have a same-identity gallery image from
    another camera (:func:`check_cross_camera_matches`). Files that cannot be used are
    listed in ``ReidDataset.skipped`` with the reason.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    present = {split: (root / sub).is_dir() for split, sub in MARKET_SPLITS.items()}
    if not any(present.values()):
        raise DatasetError(
            f"{root} is not a Market-1501-style root: expected sub-folders "
            f"{', '.join(MARKET_SPLITS.values())} (at least bounding_box_train)"
        )
    if present["query"] != present["gallery"]:
        have, lack = (
            ("query", "bounding_box_test") if present["query"] else ("bounding_box_test", "query")
        )
        raise DatasetError(f"{root} has {have}/ but no {lack}/: query and gallery come together")
    ds = ReidDataset(name=name or root.name, root=str(root))
    if present["train"]:
        where = root / MARKET_SPLITS["train"]
        ds.train = _drop_unlabelled(read_market_folder(where, ds.skipped), where, ds.skipped)
    if present["query"]:
        where = root / MARKET_SPLITS["query"]
        ds.query = _drop_unlabelled(read_market_folder(where, ds.skipped), where, ds.skipped)
        ds.gallery = read_market_folder(root / MARKET_SPLITS["gallery"], ds.skipped)
        if check_matches:
            check_cross_camera_matches(ds.query, ds.gallery, where=str(root))
    report_skipped(ds.skipped, root)
    logger.info(
        "%s: %d train, %d query, %d gallery images; %d files skipped",
        root,
        len(ds.train),
        len(ds.query),
        len(ds.gallery),
        len(ds.skipped),
    )
    return ds


def check_cross_camera_matches(
    query: Sequence[Sample], gallery: Sequence[Sample], where: str = "split"
) -> int:
    """The number of queries with a gallery image of the same identity from another camera
    (the only ones the Market-1501 protocol scores; the others are skipped and counted).

    Raises :class:`DatasetError` only when there is none: then no metric exists.
    """
    try:
        return require_valid_queries(
            np.array([q.pid for q in query], dtype=np.int64),
            np.array([g.pid for g in gallery], dtype=np.int64),
            np.array([q.camid for q in query], dtype=np.int64),
            np.array([g.camid for g in gallery], dtype=np.int64),
            where=where,
        )
    except NoValidQueryError as exc:
        raise DatasetError(str(exc)) from None


def _msmt_image_dir(root: Path, kind: str) -> Path:
    """The folder of MSMT17 images the ``kind`` ('train' or 'test') list files point into."""
    for cand in MSMT_IMAGE_DIRS[kind]:
        if (root / cand).is_dir():
            return root / cand
    raise DatasetError(
        f"MSMT17 root {root} has none of the image folders {', '.join(MSMT_IMAGE_DIRS[kind])}"
    )


def parse_msmt_line(line: str, image_dir: Path, where: str) -> Sample:
    """``'0000/0000_000_01_0303morning_0015_0.jpg 0'`` -> Sample(pid=1, camid=1).

    ``where`` (``file:line``) names the line in the error raised when it cannot be parsed.
    """
    parts = line.split()
    try:
        rel, label = parts
        pid = int(label) + 1
        camid = int(Path(rel).name.split("_")[2])
    except (ValueError, IndexError):
        raise DatasetError(
            f"{where}: cannot parse {line.strip()!r}; expected 'PPPP/PPPP_NNN_CC_....jpg LABEL'"
        ) from None
    return Sample(str(image_dir / rel), pid, camid)


def read_msmt_list(
    list_file: Path, image_dir: Path, skipped: Skipped | None = None
) -> list[Sample]:
    """Samples of one MSMT17 list file; paths are resolved against ``image_dir``.

    Lines that do not parse and unreadable images go to ``skipped``; a list with no usable
    line is an error.
    """
    skipped = [] if skipped is None else skipped
    samples = []
    for i, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            samples.append(parse_msmt_line(line, image_dir, f"{list_file}:{i}"))
        except DatasetError as exc:
            skipped.append((f"{list_file}:{i}", str(exc).split(": ", 1)[-1]))
    samples = keep_readable(samples, skipped)
    if not samples:
        raise DatasetError(f"list file {list_file} lists no usable image")
    return samples


def read_msmt17(root: Path | str, include_val: bool = True, name: str = "msmt17") -> ReidDataset:
    """Read MSMT17 (V1 or V2) from its list files.

    ``include_val`` appends ``list_val.txt`` to the training set (the usual practice: the
    validation list holds the same 1,041 training identities).
    """
    root = Path(root)
    missing = [f for f in MSMT_LISTS.values() if not (root / f).is_file()]
    if missing:
        raise DatasetError(
            f"{root} is not an MSMT17 root: missing list files {', '.join(missing)} "
            f"(expected {', '.join(MSMT_LISTS.values())})"
        )
    train_dir, test_dir = _msmt_image_dir(root, "train"), _msmt_image_dir(root, "test")
    ds = ReidDataset(name=name, root=str(root))
    ds.train = read_msmt_list(root / MSMT_LISTS["train"], train_dir, ds.skipped)
    if include_val:
        ds.train += read_msmt_list(root / MSMT_LISTS["val"], train_dir, ds.skipped)
    ds.query = read_msmt_list(root / MSMT_LISTS["query"], test_dir, ds.skipped)
    ds.gallery = read_msmt_list(root / MSMT_LISTS["gallery"], test_dir, ds.skipped)
    check_cross_camera_matches(ds.query, ds.gallery, where=str(root))
    report_skipped(ds.skipped, root)
    return ds


@dataclass
class LabelledCrops:
    """A customer's crops with the names their identities and cameras had on disk."""

    samples: list[Sample]
    """One per usable image of a real identity (see ``identity_ids``/``camera_ids``)."""
    identity_ids: dict[str, int]
    """Identity name (folder or CSV value) -> ``Sample.pid``."""
    camera_ids: dict[str, int]
    """Camera name (folder or CSV value) -> ``Sample.camid``."""
    timestamps: list[float | None] | None = None
    """Per sample, seconds since the epoch (CSV ``timestamp`` column); None without the column."""
    unlabelled: list[Sample] = field(default_factory=list)
    """Junk (-1) and distractor (0) images: never trained on or queried, gallery negatives."""
    skipped: Skipped = field(default_factory=list)
    """``(path, reason)`` of every file left out."""


def assign_ids(names: Iterable[str]) -> dict[str, int]:
    """Integer ids for names: the names themselves when all are distinct positive integers
    (``'0007'`` -> 7), otherwise 1, 2, ... in sorted name order. Ids start at 1 so that a
    customer identity never takes the distractor (0) or junk (-1) label; the names ``-1``
    and ``0``/``0000`` themselves mean junk and distractor, as in Market-1501."""
    uniq = sorted(set(names))
    special: dict[str, int] = {}
    for n in uniq:
        sid = _special_id(n)
        if sid is not None:
            special[n] = sid
    rest = [n for n in uniq if n not in special]
    if all(n.isdigit() for n in rest):
        ints = [int(n) for n in rest]
        if len(set(ints)) == len(ints):
            return {**special, **dict(zip(rest, ints, strict=True))}
    return {**special, **{n: i for i, n in enumerate(rest, start=1)}}


def _special_id(name: str) -> int | None:
    """``-1`` -> junk, ``0``/``0000`` -> distractor, anything else None."""
    if name.strip() == "-1":
        return JUNK_ID
    if name.isdigit() and int(name) == 0:
        return DISTRACTOR_ID
    return None


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _labelled(
    found: list[tuple[str, str, str]],
    skipped: Skipped,
    stamps: list[float | None] | None,
    where: Path,
) -> LabelledCrops:
    """``(camera, identity, path)`` triples -> :class:`LabelledCrops` (unreadable ones skipped)."""
    cams = assign_ids(c for c, _, _ in found)
    ids = assign_ids(i for _, i, _ in found)
    samples, unlabelled, kept_stamps = [], [], []
    for n, (c, i, p) in enumerate(found):
        why = image_problem(p)
        if why is not None:
            skipped.append((p, why))
            continue
        s = Sample(p, ids[i], cams[c])
        if s.pid in (JUNK_ID, DISTRACTOR_ID):
            unlabelled.append(s)
        else:
            samples.append(s)
            kept_stamps.append(stamps[n] if stamps is not None else None)
    report_skipped(skipped, where)
    if not samples:
        raise DatasetError(f"{where}: no usable image of a real identity ({len(skipped)} skipped)")
    return LabelledCrops(
        samples, ids, cams, kept_stamps if stamps is not None else None, unlabelled, skipped
    )


def read_camera_folders(root: Path | str) -> LabelledCrops:
    """Crops laid out as ``ROOT/<camera>/<identity>/*.jpg`` (see :func:`assign_ids` for the ids).

    Images elsewhere (directly in ``ROOT`` or ``ROOT/<camera>``) and unreadable ones are
    skipped and listed with the reason.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"crop root {root} is not a folder")
    found: list[tuple[str, str, str]] = []  # (camera, identity, path)
    skipped: Skipped = []
    stray = "not in ROOT/<camera>/<identity>/ (no identity folder)"
    for cam_dir in _subfolders(root):
        skipped += [(str(cam_dir / n), stray) for n in _list_images(cam_dir)]
        for id_dir in _subfolders(cam_dir):
            found += [(cam_dir.name, id_dir.name, str(id_dir / n)) for n in _list_images(id_dir)]
    skipped += [(str(root / n), stray) for n in _list_images(root)]
    if not found:
        raise DatasetError(f"no images found under {root} as ROOT/<camera>/<identity>/*.jpg")
    return _labelled(found, skipped, None, root)


def parse_timestamp(value: str, where: str) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 time (naive times are UTC); None
    for an empty cell (:func:`reidcore.timestamps.epoch_seconds`)."""
    value = value.strip()
    if not value:
        return None
    try:
        return epoch_seconds(value)
    except ValueError:
        raise DatasetError(
            f"{where}: timestamp {value!r} is neither seconds nor ISO 8601"
        ) from None


CSV_COLUMNS = ("path", "identity", "camera")
"""Required header columns of a crops CSV; ``timestamp`` is optional."""


def read_crops_csv(csv_path: Path | str) -> LabelledCrops:
    """Crops listed in a CSV with a header ``path,identity,camera[,timestamp]``.

    Relative paths are resolved against the CSV's folder. Rows with an empty field or a bad
    timestamp, files that do not exist and unreadable images are skipped and listed.
    """
    csv_path = Path(csv_path)
    found: list[tuple[str, str, str]] = []
    stamps: list[float | None] = []
    skipped: Skipped = []
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        lacking = [c for c in CSV_COLUMNS if c not in header]
        if lacking:
            raise DatasetError(
                f"{csv_path}: header {header} lacks columns {lacking}; expected "
                f"{','.join(CSV_COLUMNS)}[,timestamp]"
            )
        has_time = "timestamp" in header
        for line_no, row in enumerate(reader, start=2):
            where = f"{csv_path}:{line_no}"
            try:
                found.append(_csv_row(row, csv_path.parent, where))
                stamps.append(parse_timestamp(row.get("timestamp") or "", where))
            except DatasetError as exc:
                del found[len(stamps) :]
                skipped.append((where, str(exc).split(": ", 1)[-1]))
    if not found:
        raise DatasetError(f"{csv_path} lists no usable image ({len(skipped)} rows skipped)")
    return _labelled(found, skipped, stamps if has_time else None, csv_path)


def _csv_row(row: dict[str, str | None], base: Path, where: str) -> tuple[str, str, str]:
    """``(camera, identity, path)`` of one CSV row; DatasetError for a row that cannot be used."""
    path, identity, camera = ((row.get(c) or "").strip() for c in CSV_COLUMNS)
    if not (path and identity and camera):
        raise DatasetError(f"{where}: empty path, identity or camera")
    full = str(path if Path(path).is_absolute() else base / path)
    if not os.path.isfile(full):
        raise DatasetError(f"{where}: listed file does not exist")
    return camera, identity, full


def verify_images(
    samples: Sequence[Sample], raise_on_failure: bool = True
) -> list[tuple[str, str]]:
    """Fully decode every sample's image; return ``(path, reason)`` for those that fail.

    With ``raise_on_failure`` a non-empty list raises :class:`DatasetError` naming them.
    """
    failures: list[tuple[str, str]] = []
    for s in samples:
        try:
            decode_image(Path(s.path).read_bytes())
        except (OSError, ImageDecodeError) as exc:
            failures.append((s.path, str(exc)))
    if failures:
        logger.warning("%d of %d images do not decode", len(failures), len(samples))
        if raise_on_failure:
            shown = [f"{p} ({why})" for p, why in failures]
            raise DatasetError(
                f"{len(failures)} of {len(samples)} images do not decode: {first_few(shown, 3)}"
            )
    return failures
