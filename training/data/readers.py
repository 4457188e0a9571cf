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

Every failure raises :class:`DatasetError` naming the file or folder at fault.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reidcore.preprocess import ImageDecodeError, decode_image
from reidcore.timestamps import epoch_seconds
from training.data.errors import DatasetError, first_few
from training.data.types import DISTRACTOR_ID, JUNK_ID, ReidDataset, Sample

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


def read_market_folder(folder: Path | str) -> list[Sample]:
    """All images of one Market-1501-style split folder, junk and distractors included."""
    folder = Path(folder)
    names = _list_images(folder)
    if not names:
        raise DatasetError(
            f"split folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    samples: list[Sample] = []
    bad: list[str] = []
    for name in names:
        parsed = parse_market_name(name)
        if parsed is None:
            bad.append(name)
        else:
            samples.append(Sample(str(folder / name), parsed[0], parsed[1]))
    if bad:
        raise DatasetError(
            f"{len(bad)} image names in {folder} do not match PPPP_cC...: {first_few(bad)}"
        )
    return samples


def _drop_unlabelled(samples: list[Sample], where: Path) -> list[Sample]:
    """Remove junk and distractor images (they have no identity to learn or to query)."""
    kept = [s for s in samples if s.pid not in (JUNK_ID, DISTRACTOR_ID)]
    if len(kept) < len(samples):
        logger.info("%s: dropped %d junk/distractor images", where, len(samples) - len(kept))
    if not kept:
        raise DatasetError(f"split folder {where} holds only junk/distractor images")
    return kept


def read_market(
    root: Path | str, name: str | None = None, check_matches: bool = True
) -> ReidDataset:
    """Read a Market-1501-style root (Market-1501, DukeMTMC-reID, CUHK03-NP).

    ``train`` and ``query`` lose junk (-1) and distractor (0) images; ``gallery`` keeps them,
    as the evaluation protocol wants. ``query`` and ``gallery`` must come together; with
    ``check_matches`` every query must have a same-identity gallery image from another camera.
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
        ds.train = _drop_unlabelled(read_market_folder(where), where)
    if present["query"]:
        where = root / MARKET_SPLITS["query"]
        ds.query = _drop_unlabelled(read_market_folder(where), where)
        ds.gallery = read_market_folder(root / MARKET_SPLITS["gallery"])
        if check_matches:
            check_cross_camera_matches(ds.query, ds.gallery, where=str(root))
    logger.info(
        "%s: %d train, %d query, %d gallery images",
        root,
        len(ds.train),
        len(ds.query),
        len(ds.gallery),
    )
    return ds


def check_cross_camera_matches(
    query: Sequence[Sample], gallery: Sequence[Sample], where: str = "split"
) -> None:
    """Raise :class:`DatasetError` unless every query has a gallery image of the same
    identity taken by another camera (the only matches the Market-1501 protocol counts)."""
    cams: dict[int, set[int]] = defaultdict(set)
    for s in gallery:
        cams[s.pid].add(s.camid)
    lonely = [q.path for q in query if not (cams.get(q.pid, set()) - {q.camid})]
    if lonely:
        raise DatasetError(
            f"{where}: {len(lonely)} of {len(query)} queries have no cross-camera match "
            f"in the gallery: {first_few(lonely)}"
        )


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


def read_msmt_list(list_file: Path, image_dir: Path) -> list[Sample]:
    """Samples of one MSMT17 list file; paths are resolved against ``image_dir``."""
    samples = [
        parse_msmt_line(line, image_dir, f"{list_file}:{i}")
        for i, line in enumerate(list_file.read_text().splitlines(), start=1)
        if line.strip()
    ]
    if not samples:
        raise DatasetError(f"list file {list_file} is empty")
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
    ds.train = read_msmt_list(root / MSMT_LISTS["train"], train_dir)
    if include_val:
        ds.train += read_msmt_list(root / MSMT_LISTS["val"], train_dir)
    ds.query = read_msmt_list(root / MSMT_LISTS["query"], test_dir)
    ds.gallery = read_msmt_list(root / MSMT_LISTS["gallery"], test_dir)
    return ds


@dataclass
class LabelledCrops:
    """A customer's crops with the names their identities and cameras had on disk."""

    samples: list[Sample]
    """One per image, with integer identity and camera (see ``identity_ids``/``camera_ids``)."""
    identity_ids: dict[str, int]
    """Identity name (folder or CSV value) -> ``Sample.pid``."""
    camera_ids: dict[str, int]
    """Camera name (folder or CSV value) -> ``Sample.camid``."""
    timestamps: list[float | None] | None = None
    """Per sample, seconds since the epoch (CSV ``timestamp`` column); None without the column."""


def assign_ids(names: Iterable[str]) -> dict[str, int]:
    """Integer ids for names: the names themselves when all are distinct positive integers
    (``'0007'`` -> 7), otherwise 1, 2, ... in sorted name order. Ids start at 1 so that a
    customer identity never takes the distractor (0) or junk (-1) label."""
    uniq = sorted(set(names))
    if all(n.isdigit() for n in uniq):
        ints = [int(n) for n in uniq]
        if len(set(ints)) == len(ints) and min(ints, default=1) >= 1:
            return dict(zip(uniq, ints, strict=True))
    return {n: i for i, n in enumerate(uniq, start=1)}


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def read_camera_folders(root: Path | str) -> LabelledCrops:
    """Crops laid out as ``ROOT/<camera>/<identity>/*.jpg`` (see :func:`assign_ids` for the ids)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"crop root {root} is not a folder")
    found: list[tuple[str, str, str]] = []  # (camera, identity, path)
    stray: list[str] = []
    for cam_dir in _subfolders(root):
        stray += [str(cam_dir / n) for n in _list_images(cam_dir)]
        for id_dir in _subfolders(cam_dir):
            found += [(cam_dir.name, id_dir.name, str(id_dir / n)) for n in _list_images(id_dir)]
    stray += [str(root / n) for n in _list_images(root)]
    if stray:
        raise DatasetError(
            f"{len(stray)} images under {root} are not in ROOT/<camera>/<identity>/: {first_few(stray)}"
        )
    if not found:
        raise DatasetError(f"no images found under {root} as ROOT/<camera>/<identity>/*.jpg")
    cams = assign_ids(c for c, _, _ in found)
    ids = assign_ids(i for _, i, _ in found)
    samples = [Sample(p, ids[i], cams[c]) for c, i, p in found]
    return LabelledCrops(samples, ids, cams)


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

    Relative paths are resolved against the CSV's folder; every listed file must exist.
    """
    csv_path = Path(csv_path)
    rows: list[tuple[str, str, str]] = []
    stamps: list[float | None] = []
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
            values = [(row.get(c) or "").strip() for c in CSV_COLUMNS]
            if not all(values):
                raise DatasetError(f"{where}: empty path, identity or camera in {row}")
            rows.append((values[0], values[1], values[2]))
            if has_time:
                stamps.append(parse_timestamp(row.get("timestamp") or "", where))
    if not rows:
        raise DatasetError(f"{csv_path} lists no images")
    base = csv_path.parent
    paths = [str(p if Path(p).is_absolute() else base / p) for p, _, _ in rows]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DatasetError(
            f"{csv_path}: {len(missing)} listed files do not exist: {first_few(missing)}"
        )
    ids = assign_ids(i for _, i, _ in rows)
    cams = assign_ids(c for _, _, c in rows)
    samples = [Sample(p, ids[i], cams[c]) for p, (_, i, c) in zip(paths, rows, strict=True)]
    return LabelledCrops(samples, ids, cams, stamps if has_time else None)


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
