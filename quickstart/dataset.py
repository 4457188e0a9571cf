"""Step "dataset" of the main job on a user's own data, in any format the training readers take.

``market`` (Market-1501/DukeMTMC/CUHK03-NP layout), ``msmt17`` (list files), ``folders``
(``ROOT/<camera>/<identity>/*.jpg``) or ``csv`` (``path,identity,camera[,timestamp]``).
Messy data is reported, never fatal: every file the readers skip (unreadable, empty, a name
that matches no convention, junk identities in a query split...) is counted with its reason.
A dataset without a query split gets one carved as the validation split does (one image per
identity and camera); when the demo trains, the carved identities are held out of training
(``data.val_ids``), with the same seeded split the trainer makes. Only a split where no query
has a cross-camera match stops the job, here, before any training or indexing.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quickstart.embedded import DemoError, GalleryImage
from reidcore.evaluation import count_valid_queries
from service.jobs.naming import parse_dataset_name

if TYPE_CHECKING:
    from training.data.types import Sample

FORMATS = ("market", "msmt17", "folders", "csv")
"""What ``--format`` accepts (the training readers' formats)."""


@dataclass
class DemoData:
    """The query and gallery the demo indexes and searches, and how they were obtained."""

    root: Path
    fmt: str
    query: list[GalleryImage]
    gallery: list[GalleryImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(file, reason)`` of every file left out."""
    carved: bool = False
    """Whether the query split was carved here (the dataset has none)."""
    held_out: int = 0
    """Identities held out of training for the carved query split (0: none held out)."""
    valid: int = 0
    """Queries with a gallery image of their identity from another camera."""


def read_demo_data(root: Path, fmt: str, seed: int, training: bool) -> DemoData:
    """Read ``root`` in ``fmt``; carve a query split if it has none; :class:`DemoError` if unusable."""
    from training.data.errors import DatasetError

    if fmt not in FORMATS:
        raise DemoError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    try:
        data = _read(root, fmt, seed, training)
    except DatasetError as exc:
        raise DemoError(f"--dataset {root} ({fmt}): {exc}") from None
    data.valid = _count_valid(data.query, data.gallery)
    if data.valid == 0:
        raise DemoError(
            f"--dataset {root}: none of the {len(data.query)} queries has a gallery image of "
            "its identity from another camera, so nothing can be scored"
        )
    return data


def _read(root: Path, fmt: str, seed: int, training: bool) -> DemoData:
    from training.data.readers import (
        read_camera_folders,
        read_crops_csv,
        read_market,
        read_msmt17,
    )

    if fmt in ("market", "msmt17"):
        ds = read_market(root) if fmt == "market" else read_msmt17(root)
        if ds.query and ds.gallery:
            query, gallery = _images(ds.query, root, {}), _images(ds.gallery, root, {})
            return DemoData(root, fmt, query, gallery, ds.skipped)
        return _carved(root, fmt, ds.train, [], ds.skipped, {}, seed, training)
    crops = read_camera_folders(root) if fmt == "folders" else read_crops_csv(root)
    stamps = dict(zip((s.path for s in crops.samples), crops.timestamps or [], strict=False))
    return _carved(
        root, fmt, crops.samples, crops.unlabelled, crops.skipped, stamps, seed, training
    )


def held_out_identities(samples: Sequence[Sample]) -> int:
    """Identities to carve out of a training set for the demo's query split: half of those
    eligible (seen by 2 cameras, twice by one), at least 1."""
    from training.data.errors import DatasetError
    from training.data.split import eligible_identities

    eligible = eligible_identities(samples)
    if not eligible:
        raise DatasetError("no identity is seen by 2 cameras (and twice by one): no query split")
    return max(1, len(eligible) // 2)


def _carved(
    root: Path,
    fmt: str,
    labelled: list[Sample],
    unlabelled: list[Sample],
    skipped: list[tuple[str, str]],
    stamps: dict[str, float | None],
    seed: int,
    training: bool,
) -> DemoData:
    """Query/gallery carved from a dataset without a query split (module docstring)."""
    from training.data.split import carve_queries, split_validation

    base = root.parent if root.is_file() else root
    held = held_out_identities(labelled) if training else 0
    if training:
        _, query, gallery = split_validation(labelled, held, seed)
        gallery = [*gallery, *unlabelled]
    else:
        query, gallery = carve_queries([*labelled, *unlabelled], seed)
    q_images, g_images = _images(query, base, stamps), _images(gallery, base, stamps)
    return DemoData(root, fmt, q_images, g_images, skipped, carved=True, held_out=held)


def _images(
    samples: Sequence[Sample], base: Path, stamps: dict[str, float | None]
) -> list[GalleryImage]:
    """GalleryImages with unique, archive-safe names (the path under ``base`` where possible)
    and their time: the CSV's, else a dataset-style name's, else unknown."""
    out = []
    for i, s in enumerate(samples):
        path = Path(s.path)
        info = parse_dataset_name(path.name)
        from_name = s.path not in stamps and info is not None
        stamp = stamps.get(s.path, info.timestamp if info else None)
        kind = "offset" if from_name else "datetime"  # dataset names give frame times
        out.append(GalleryImage(path, s.pid, s.camid, _member_name(path, base, i), stamp, kind))
    return out


def _member_name(path: Path, base: Path, index: int) -> str:
    try:
        rel = path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return f"external/{index:06d}_{path.name}"
    return posixpath.normpath(rel)


def _count_valid(query: Sequence[GalleryImage], gallery: Sequence[GalleryImage]) -> int:
    return count_valid_queries(
        np.array([q.pid for q in query], dtype=np.int64),
        np.array([g.pid for g in gallery], dtype=np.int64),
        np.array([q.camid for q in query], dtype=np.int64),
        np.array([g.camid for g in gallery], dtype=np.int64),
    )


def describe(data: DemoData) -> list[str]:
    """The lines the demo prints about its data: sizes, carved split, skipped files."""
    lines = [
        f"{data.root} ({data.fmt}): {len(data.query)} queries, {len(data.gallery)} gallery "
        f"images; valid queries {data.valid} of {len(data.query)}"
    ]
    if data.carved:
        how = (
            f"{data.held_out} identities held out of training"
            if data.held_out
            else "from every identity"
        )
        lines.append(
            f"no query split in the dataset: one carved ({how}; one image per identity and "
            "camera, as the validation split does)"
        )
    lines.append(f"skipped {len(data.skipped)} files")
    reasons = Counter(reason for _, reason in data.skipped)
    for reason, count in reasons.most_common():
        first = next(p for p, r in data.skipped if r == reason)
        lines.append(f"  {count} x {reason} (e.g. {first})")
    return lines
