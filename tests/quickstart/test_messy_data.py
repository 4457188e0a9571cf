"""`reid demo` on messy user data in every format, end to end with a tiny model.

Each dataset is generated here: crops in every mode a camera export holds (grayscale, CMYK,
16-bit, alpha, 8x16), junk (-1) and distractor (0000) identities, empty and corrupt files,
names or rows that fit no convention, and an identity no other camera saw. Hand count, the
same in every format: 4 queries, of which 3 have a gallery image of their identity from
another camera ("valid queries 3 of 4"); the skipped files are listed per format below.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidcore.cli import main
from tests.quickstart.test_demo_job import TINY_DEMO, _check_report

pytest.importorskip("fastapi", reason="the demo needs the service extra (fastapi)")
pytest.importorskip("onnxruntime", reason="the demo needs the service extra (onnxruntime)")

KINDS = ("rgb", "gray", "cmyk", "gray16", "rgba", "tiny")
Crop = tuple[int, int]  # (identity, camera)
# one query per (identity, camera) with 2 images when carved; the same 4 queries as given splits
CARVED: list[Crop] = [(1, 1), (1, 1), (1, 2), (1, 2), (2, 1), (2, 1), (2, 3), (3, 2), (3, 2)]
CARVED += [(4, 3), (0, 2), (-1, 1)]
QUERY: list[Crop] = [(1, 1), (1, 2), (2, 1), (3, 2)]  # (3, 2): no other camera saw identity 3
GALLERY: list[Crop] = [(1, 1), (1, 2), (2, 3), (3, 2), (4, 3), (0, 2), (-1, 1)]


def crop_bytes(seed: int) -> tuple[bytes, str]:
    """A distinct random crop in one of :data:`KINDS` (by seed); its bytes and extension."""
    rng = np.random.default_rng(seed)
    kind = KINDS[seed % len(KINDS)]
    h, w = (16, 8) if kind == "tiny" else (32, 16)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    if kind == "gray":
        img.convert("L").save(buf, "JPEG")
    elif kind == "cmyk":
        img.convert("CMYK").save(buf, "JPEG")
    elif kind == "gray16":
        Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(buf, "PNG")
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (h, w), dtype=np.uint8)])).save(
            buf, "PNG"
        )
    else:
        img.save(buf, "JPEG")
    return buf.getvalue(), ".png" if kind in ("gray16", "rgba") else ".jpg"


def write_crop(folder: Path, stem: str, seed: int) -> Path:
    data, ext = crop_bytes(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}{ext}"
    path.write_bytes(data)
    return path


def bad_files(folder: Path, empty: str, corrupt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / empty).write_bytes(b"")
    (folder / corrupt).write_bytes(b"\xff\xd8\xff not really a jpeg")


def market_root(root: Path) -> int:
    """Market-1501 layout with its own query split; returns the number of skipped files."""
    for i, (pid, cam) in enumerate(QUERY + [(-1, 1)]):  # a junk query: skipped
        write_crop(root / "query", f"{pid:04d}_c{cam}s1_{i:06d}_00", i)
    write_crop(root / "query", "IMG_0001", 50)  # no Market name: skipped
    for i, (pid, cam) in enumerate(GALLERY):
        write_crop(root / "bounding_box_test", f"{pid:04d}_c{cam}s1_{100 + i:06d}_00", 100 + i)
    bad_files(root / "bounding_box_test", "0001_c3s1_000900_00.jpg", "0002_c2s1_000901_00.jpg")
    return 4


def msmt_root(root: Path) -> int:
    """MSMT17 list files; returns the number of skipped files (and lines)."""

    def listed(split: str, crops: list[Crop], base: int) -> list[str]:
        lines = []
        for i, (pid, cam) in enumerate(crops):
            rel = f"{pid:04d}/{pid:04d}_{base + i:03d}_{cam:02d}_0303morning_0001_0"
            folder = root / ("train" if split in ("train", "val") else "test")
            path = write_crop(folder / rel.split("/")[0], rel.split("/")[1], base + i)
            lines.append(f"{pid:04d}/{path.name} {pid - 1}")
        return lines

    real = [c for c in GALLERY if c[0] > 0]  # MSMT17 lists no junk or distractors
    lists = {
        "train": listed("train", [(7, 1), (7, 2)], 0),
        "val": listed("val", [(8, 1)], 10),
        "query": [*listed("query", QUERY, 20), "broken line here", "0001/absent.jpg 0"],
        "gallery": listed("gallery", real, 40),
    }
    bad_files(root / "test" / "0002", "0002_990_01_x_0001_0.jpg", "0002_991_02_x_0001_0.jpg")
    lists["gallery"] += ["0002/0002_990_01_x_0001_0.jpg 1", "0002/0002_991_02_x_0001_0.jpg 1"]
    for split, lines in lists.items():
        (root / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    return 4


def folders_root(root: Path) -> int:
    """ROOT/<camera>/<identity>/ crops, no query split; returns the number of skipped files."""
    for i, (pid, cam) in enumerate(CARVED):
        write_crop(
            root / f"cam{cam}" / f"{pid:04d}" if pid >= 0 else root / f"cam{cam}" / "-1",
            f"frame_{i}",
            200 + i,
        )
    write_crop(root / "cam1", "loose", 250)  # not in an identity folder
    bad_files(root / "cam2" / "0001", "empty.jpg", "corrupt.jpg")
    return 3


def csv_root(root: Path) -> Path:
    rows = ["path,identity,camera,timestamp"]
    for i, (pid, cam) in enumerate(CARVED):
        path = write_crop(root / "crops", f"crop_{i}", 300 + i)
        stamp = f"2024-05-01T12:00:{i:02d}Z" if i % 2 else ""
        rows.append(f"crops/{path.name},{pid},door{cam},{stamp}")
    bad_files(root / "crops", "empty.jpg", "corrupt.jpg")
    rows += ["crops/empty.jpg,1,door1,", "crops/corrupt.jpg,2,door1,"]
    rows += [
        "crops/absent.jpg,1,door2,",
        "crops/crop_0.jpg,,door2,",
        "crops/crop_1.jpg,1,door1,soon",
    ]
    (root / "crops.csv").write_text("\n".join(rows) + "\n")
    return root / "crops.csv"


def _market(tmp: Path) -> tuple[Path, int, int]:
    return tmp, market_root(tmp), len(GALLERY)


def _msmt(tmp: Path) -> tuple[Path, int, int]:
    return tmp, msmt_root(tmp), len(GALLERY) - 2  # no junk or distractor


def _folders(tmp: Path) -> tuple[Path, int, int]:
    return tmp, folders_root(tmp), len(CARVED) - 4  # every crop but the 4 carved queries


def _csv(tmp: Path) -> tuple[Path, int, int]:
    return csv_root(tmp), 5, len(CARVED) - 4


BUILDERS: dict[str, Callable[[Path], tuple[Path, int, int]]] = {
    "market": _market,
    "msmt17": _msmt,
    "folders": _folders,
    "csv": _csv,
}


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    from tests.service.tiny_model import write_tiny_model_folder

    return write_tiny_model_folder(tmp_path / "models" / "tiny" / "1")


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_demo_on_messy_data(
    fmt: str, tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, skipped, gallery = BUILDERS[fmt](tmp_path / "ds")
    out_dir = tmp_path / "out"
    args = ["demo", "--dataset", str(root), "--format", fmt, "--model", str(tiny_model)]
    assert main([*args, "--out", str(out_dir), *TINY_DEMO]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"skipped {skipped} files" in out
    assert "valid queries 3 of 4 (1 without a cross-camera match skipped)" in out
    assert ("no query split in the dataset: one carved" in out) == (fmt in ("folders", "csv"))
    assert f"indexed {gallery} images via jobs API" in out and ", 0 failed" in out
    _check_report(out)


def test_no_valid_query_fails_before_any_work(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ds"
    write_crop(root / "query", "0003_c2s1_000001_00", 1)
    write_crop(root / "bounding_box_test", "0003_c2s1_000002_00", 2)  # same camera only
    out_dir = tmp_path / "out"
    args = ["demo", "--dataset", str(root), "--model", str(tiny_model), "--out", str(out_dir)]
    assert main([*args, *TINY_DEMO]) == 2
    assert "none of the 1 queries" in capsys.readouterr().err
    assert not out_dir.exists()  # refused while reading the dataset: no service, no index
