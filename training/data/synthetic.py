"""A seeded synthetic multi-camera pedestrian dataset in the Market-1501 layout.

``generate_dataset(out_dir, ...)`` draws identities (:mod:`training.data.synthetic_identity`),
cameras and crops (:mod:`training.data.synthetic_render`) and writes::

    out_dir/bounding_box_train/PPPP_cCsS_FFFFFF_BB.jpg   training identities, all cameras
    out_dir/bounding_box_test/...                         test gallery, plus distractors
                                                          (0000_...) and junk (-1_...)
    out_dir/query/...                                     test queries, one per chosen camera
    out_dir/market_attribute.mat                          identity attributes, as the real file
    out_dir/meta.json                                     parameters, cameras and identities

Every test identity is seen by at least two cameras and keeps a gallery image in a camera
other than each of its queries' cameras. Everything derives from ``seed``: the same seed
gives byte-identical files.

Command line: ``python -m training.data.synthetic --out DIR [--train-ids N --test-ids N
--seed S]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from training.data.synthetic_identity import (
    MARKET_TEST_FIELDS,
    MARKET_TRAIN_FIELDS,
    Identity,
    market_labels,
    sample_identity,
)
from training.data.synthetic_render import (
    CROP_HEIGHT,
    CROP_WIDTH,
    Camera,
    apply_camera,
    camera_background,
    make_cameras,
    render_crop,
)

logger = logging.getLogger(__name__)

SPLIT_DIRS = ("bounding_box_train", "bounding_box_test", "query")
ATTRIBUTE_FILE = "market_attribute.mat"
META_FILE = "meta.json"
_MAT_HEADER = b"MATLAB 5.0 MAT-file, synthetic Market-1501 attributes (training.data.synthetic)"

# Seed streams: each kind of draw has its own, so that changing one count leaves the rest.
_CAMERAS, _IDENTITIES, _PLAN, _IMAGES, _DISTRACTORS, _JUNK = range(6)


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and seed of a synthetic dataset."""

    num_train_ids: int = 100
    """Identities in bounding_box_train."""
    num_test_ids: int = 100
    """Identities in query and bounding_box_test."""
    num_cameras: int = 6
    """Cameras in the network (Market-1501 has 6)."""
    images_per_camera: int = 2
    """Crops of an identity in each camera that sees it."""
    min_cameras: int = 2
    """Fewest cameras that see an identity (at least 2)."""
    queries_per_id: int = 2
    """Most queries per test identity, each from a different camera."""
    num_distractors: int = 20
    """Distractor crops (identity 0000: partial people) added to bounding_box_test."""
    num_junk: int = 10
    """Junk crops (identity -1: background only) added to bounding_box_test."""
    camera_severity: float = 1.0
    """How far the cameras' colour rendition strays from neutral (0 none, 1 default)."""
    seed: int = 0
    """Seed of every random draw."""

    def __post_init__(self) -> None:
        if self.num_train_ids < 1 or self.num_test_ids < 1:
            raise ValueError(
                f"need at least one train and one test identity, got "
                f"{self.num_train_ids} and {self.num_test_ids}"
            )
        if self.num_train_ids + self.num_test_ids > 9999:
            raise ValueError("at most 9999 identities fit the 4-digit Market-1501 names")
        if not 2 <= self.min_cameras <= self.num_cameras <= 9:
            raise ValueError(
                f"need 2 <= min_cameras ({self.min_cameras}) <= num_cameras "
                f"({self.num_cameras}) <= 9"
            )
        if self.images_per_camera < 1 or self.queries_per_id < 1:
            raise ValueError("images_per_camera and queries_per_id must be at least 1")
        if self.num_distractors < 0 or self.num_junk < 0:
            raise ValueError("num_distractors and num_junk must not be negative")
        if self.seed < 0 or self.camera_severity < 0:
            raise ValueError(
                f"seed ({self.seed}) and camera_severity ({self.camera_severity}) "
                "must not be negative"
            )


@dataclass(frozen=True)
class _Shot:
    """One crop to render: where it goes and what it shows (pid 0: distractor, -1: junk)."""

    split: str
    pid: int
    cam: int
    key: tuple[int, ...]


def market_name(pid: int, cam: int, seq: int, frame: int, box: int) -> str:
    """A Market-1501 file name, e.g. ``0002_c1s1_000451_03.jpg`` (junk: ``-1_c1s1_...``)."""
    head = "-1" if pid < 0 else f"{pid:04d}"
    return f"{head}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def _assign_pids(cfg: SyntheticConfig) -> tuple[list[int], list[int]]:
    """Interleaved train/test identity numbers drawn from 1..N, as in Market-1501."""
    rng = np.random.default_rng([cfg.seed, _PLAN])
    perm = rng.permutation(np.arange(1, cfg.num_train_ids + cfg.num_test_ids + 1))
    return sorted(int(p) for p in perm[: cfg.num_train_ids]), sorted(
        int(p) for p in perm[cfg.num_train_ids :]
    )


def _plan_identity(cfg: SyntheticConfig, pid: int, is_test: bool) -> list[_Shot]:
    """The shots of one identity: its cameras, and which shots are queries."""
    rng = np.random.default_rng([cfg.seed, _PLAN, pid])
    k = int(rng.integers(cfg.min_cameras, cfg.num_cameras + 1))
    cams = sorted(int(c) + 1 for c in rng.choice(cfg.num_cameras, size=k, replace=False))
    query_cams: set[int] = set()
    if is_test:
        # one query image per chosen camera; with one image per camera, keep a camera unqueried
        n_q = min(cfg.queries_per_id, k - (1 if cfg.images_per_camera == 1 else 0))
        query_cams = {int(c) for c in rng.choice(cams, size=n_q, replace=False)}
    shots = []
    for cam in cams:
        for j in range(cfg.images_per_camera):
            if not is_test:
                split = "bounding_box_train"
            else:
                split = "query" if (cam in query_cams and j == 0) else "bounding_box_test"
            shots.append(_Shot(split, pid, cam, (cfg.seed, _IMAGES, pid, cam, j)))
    return shots


def _plan(cfg: SyntheticConfig) -> list[_Shot]:
    """Every crop of the dataset, in a fixed order."""
    train, test = _assign_pids(cfg)
    shots = [s for pid in train for s in _plan_identity(cfg, pid, False)]
    shots += [s for pid in test for s in _plan_identity(cfg, pid, True)]
    rng = np.random.default_rng([cfg.seed, _PLAN, 0])
    for i in range(cfg.num_distractors):
        cam = int(rng.integers(1, cfg.num_cameras + 1))
        shots.append(_Shot("bounding_box_test", 0, cam, (cfg.seed, _DISTRACTORS, i)))
    for i in range(cfg.num_junk):
        cam = int(rng.integers(1, cfg.num_cameras + 1))
        shots.append(_Shot("bounding_box_test", -1, cam, (cfg.seed, _JUNK, i)))
    return shots


def _name_shots(cfg: SyntheticConfig, shots: Sequence[_Shot]) -> list[str]:
    """File names: per camera a running frame number, a sequence and a box index."""
    rng = np.random.default_rng([cfg.seed, _PLAN, 1])
    frames = {cam: 0 for cam in range(1, cfg.num_cameras + 1)}
    names = []
    for shot in shots:
        frames[shot.cam] += int(rng.integers(1, 200))
        seq = 1 + frames[shot.cam] // 40000
        names.append(
            market_name(shot.pid, shot.cam, seq, frames[shot.cam], int(rng.integers(1, 5)))
        )
    return names


def _render_distractor(identity: Identity, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """A false detection: a random part of a person (upper or lower half, or one side)."""
    full = render_crop(identity, camera, rng).image
    h, w = full.shape[:2]
    match int(rng.integers(3)):
        case 0:
            part = full[: h // 2]
        case 1:
            part = full[h // 2 :]
        case _:
            part = full[:, : w // 2] if rng.random() < 0.5 else full[:, w // 2 :]
    img = Image.fromarray(np.ascontiguousarray(part)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _render_junk(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """A detection with no person in it: a window of the camera's background."""
    bg = camera_background(camera.background_seed)
    oy = int(rng.integers(0, bg.shape[0] - CROP_HEIGHT + 1))
    ox = int(rng.integers(0, bg.shape[1] - CROP_WIDTH + 1))
    return apply_camera(
        np.ascontiguousarray(bg[oy : oy + CROP_HEIGHT, ox : ox + CROP_WIDTH]), camera, rng
    )


def _render_shot(
    shot: _Shot, identities: dict[int, Identity], cameras: Sequence[Camera]
) -> np.ndarray:
    rng = np.random.default_rng(list(shot.key))
    camera = cameras[shot.cam - 1]
    if shot.pid > 0:
        return render_crop(identities[shot.pid], camera, rng).image
    if shot.pid == 0:
        stranger = sample_identity(np.random.default_rng([*shot.key, 1]), 0)
        return _render_distractor(stranger, camera, rng)
    return _render_junk(camera, rng)


def _split_struct(identities: Sequence[Identity], fields: Sequence[str]) -> np.ndarray:
    """One split of ``market_attribute``: a 1×1 struct of 1×N uint8 fields + image_index."""
    labels = [market_labels(ind) for ind in identities]
    struct = np.empty((1, 1), dtype=[(f, object) for f in fields])
    for f in fields:
        if f == "image_index":
            cell = np.empty((1, len(identities)), dtype=object)
            for i, ind in enumerate(identities):
                cell[0, i] = f"{ind.pid:04d}"
            struct[f][0, 0] = cell
        else:
            struct[f][0, 0] = np.asarray([lab[f] for lab in labels], dtype=np.uint8).reshape(1, -1)
    return struct


def write_market_attribute_mat(
    path: Path, train: Sequence[Identity], test: Sequence[Identity]
) -> None:
    """Write ``market_attribute.mat`` with the real file's structure and coding.

    A struct ``market_attribute`` with fields ``test`` and ``train``, each a struct of 27
    uint8 row vectors (1 = no, 2 = yes; age 1..4) in the real file's field order, plus
    ``image_index``, a cell of 4-digit identity strings. The header's creation date is
    replaced by a fixed text, so the bytes depend on the content only.
    """
    import scipy.io

    top = np.empty((1, 1), dtype=[("test", object), ("train", object)])
    top["test"][0, 0] = _split_struct(test, MARKET_TEST_FIELDS)
    top["train"][0, 0] = _split_struct(train, MARKET_TRAIN_FIELDS)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"market_attribute": top}, format="5", do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    path.write_bytes(bytes(data))


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    existing = [out / d for d in SPLIT_DIRS if (out / d).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    for folder in existing:
        shutil.rmtree(folder)
    for name in SPLIT_DIRS:
        (out / name).mkdir(parents=True)


def _write_meta(
    out: Path, cfg: SyntheticConfig, cameras: Sequence[Camera], identities: dict[int, Identity]
) -> None:
    meta = {
        "generator": "training.data.synthetic",
        "config": dataclasses.asdict(cfg),
        "cameras": [dataclasses.asdict(c) for c in cameras],
        "identities": [dataclasses.asdict(identities[p]) for p in sorted(identities)],
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def generate_dataset(
    out_dir: str | Path,
    num_train_ids: int = 100,
    num_test_ids: int = 100,
    num_cameras: int = 6,
    images_per_camera: int = 2,
    seed: int = 0,
    *,
    queries_per_id: int = 2,
    num_distractors: int = 20,
    num_junk: int = 10,
    camera_severity: float = 1.0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic Market-1501-style dataset to ``out_dir`` and return its path.

    See the module docstring for the layout; :class:`SyntheticConfig` documents the sizes.
    Raises ``FileExistsError`` if the split folders exist and ``overwrite`` is false.
    """
    cfg = SyntheticConfig(
        num_train_ids=num_train_ids,
        num_test_ids=num_test_ids,
        num_cameras=num_cameras,
        images_per_camera=images_per_camera,
        queries_per_id=queries_per_id,
        num_distractors=num_distractors,
        num_junk=num_junk,
        camera_severity=camera_severity,
        seed=seed,
    )
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    cameras = make_cameras(
        cfg.num_cameras, np.random.default_rng([cfg.seed, _CAMERAS]), cfg.camera_severity
    )
    train_pids, test_pids = _assign_pids(cfg)
    identities = {
        pid: sample_identity(np.random.default_rng([cfg.seed, _IDENTITIES, pid]), pid)
        for pid in train_pids + test_pids
    }
    shots = _plan(cfg)
    names = _name_shots(cfg, shots)
    for shot, name in tqdm(
        list(zip(shots, names, strict=True)), desc="rendering", unit="img", disable=not progress
    ):
        pixels = _render_shot(shot, identities, cameras)
        Image.fromarray(pixels).save(
            out / shot.split / name, quality=cameras[shot.cam - 1].jpeg_quality
        )
    write_market_attribute_mat(
        out / ATTRIBUTE_FILE,
        [identities[p] for p in train_pids],
        [identities[p] for p in test_pids],
    )
    _write_meta(out, cfg, cameras, identities)
    logger.info(
        "wrote %d crops (%d train ids, %d test ids, %d cameras) to %s",
        len(shots),
        len(train_pids),
        len(test_pids),
        cfg.num_cameras,
        out,
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate a dataset and print where it went."""
    from reidcore.logs import configure_logging

    parser = argparse.ArgumentParser(
        prog="python -m training.data.synthetic",
        description="Write a seeded synthetic multi-camera pedestrian dataset "
        "(Market-1501 layout and attribute file).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--train-ids", type=int, default=100, help="training identities")
    parser.add_argument("--test-ids", type=int, default=100, help="test identities")
    parser.add_argument("--cameras", type=int, default=6, help="number of cameras")
    parser.add_argument("--images-per-camera", type=int, default=2, help="crops per id/camera")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--camera-severity", type=float, default=1.0, help="colour difference between cameras"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing splits")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        written = generate_dataset(
            args.out,
            num_train_ids=args.train_ids,
            num_test_ids=args.test_ids,
            num_cameras=args.cameras,
            images_per_camera=args.images_per_camera,
            seed=args.seed,
            camera_severity=args.camera_severity,
            overwrite=args.overwrite,
            progress=True,
        )
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
