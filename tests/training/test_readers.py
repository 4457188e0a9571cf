"""Dataset readers on tiny generated trees, every error case, and the real CUHK03-NP split."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from training.data.errors import DatasetError
from training.data.readers import (
    assign_ids,
    check_cross_camera_matches,
    parse_market_name,
    read_camera_folders,
    read_crops_csv,
    read_market,
    read_msmt17,
    verify_images,
)
from training.data.types import Sample


def jpeg(path: Path) -> Path:
    """A tiny valid JPEG at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), (200, 30, 30)).save(path, format="JPEG")
    return path


def market_tree(root: Path) -> Path:
    """train: ids 2 and 7; query: id 2 (c1), id 7 (c2); gallery: matches, a distractor, junk."""
    for name in ["0002_c1s1_000001_00.jpg", "0002_c2s1_000002_00.jpg", "0007_c3s2_000010_01.jpg"]:
        jpeg(root / "bounding_box_train" / name)
    for name in ["0002_c1s1_000100_00.jpg", "0007_c2s1_000200_00.jpg"]:
        jpeg(root / "query" / name)
    for name in [
        "0002_c2s1_000300_00.jpg",
        "0007_c1s1_000400_00.jpg",
        "0000_c1s1_000500_00.jpg",
        "-1_c3s1_000600_00.jpg",
    ]:
        jpeg(root / "bounding_box_test" / name)
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return root


def triples(samples: list[Sample]) -> list[tuple[str, int, int]]:
    return [(Path(s.path).name, s.pid, s.camid) for s in samples]


def test_parse_market_and_duke_names() -> None:
    assert parse_market_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert parse_market_name("-1_c6s2_000001_00.jpg") == (-1, 6)
    assert parse_market_name("0005_c2_f0046985.jpg") == (5, 2)  # DukeMTMC-reID
    assert parse_market_name("0001_c12_x.jpg") == (1, 12)
    assert parse_market_name("person2_cam1.jpg") is None


def test_read_market_tree(tmp_path: Path) -> None:
    ds = read_market(market_tree(tmp_path / "market"))
    assert ds.name == "market"
    assert triples(ds.train) == [
        ("0002_c1s1_000001_00.jpg", 2, 1),
        ("0002_c2s1_000002_00.jpg", 2, 2),
        ("0007_c3s2_000010_01.jpg", 7, 3),
    ]
    assert triples(ds.query) == [
        ("0002_c1s1_000100_00.jpg", 2, 1),
        ("0007_c2s1_000200_00.jpg", 7, 2),
    ]
    # the gallery keeps junk (-1) and distractors (0) for the evaluation protocol, not Thumbs.db
    assert sorted(s.pid for s in ds.gallery) == [-1, 0, 2, 7]
    assert all(Path(s.path).is_file() for s in ds.train + ds.query + ds.gallery)


def test_train_drops_junk_and_distractors(tmp_path: Path) -> None:
    for name in ["0003_c1s1_000001_00.jpg", "0000_c1s1_000002_00.jpg", "-1_c2s1_000003_00.jpg"]:
        jpeg(tmp_path / "bounding_box_train" / name)
    ds = read_market(tmp_path)
    assert [s.pid for s in ds.train] == [3]
    assert ds.query == [] and ds.gallery == []


def test_wrong_root_names_expected_folders(tmp_path: Path) -> None:
    jpeg(tmp_path / "images" / "0001_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError, match="bounding_box_train.*bounding_box_test.*query") as err:
        read_market(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DatasetError, match="not a folder"):
        read_market(tmp_path / "absent")


def test_query_without_gallery(tmp_path: Path) -> None:
    jpeg(tmp_path / "query" / "0001_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError, match="has query/ but no bounding_box_test/"):
        read_market(tmp_path)


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / "bounding_box_train").mkdir()
    (tmp_path / "bounding_box_train" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="contains no images") as err:
        read_market(tmp_path)
    assert "bounding_box_train" in str(err.value)


def test_unparsable_names_and_unreadable_images_are_skipped(tmp_path: Path) -> None:
    jpeg(tmp_path / "bounding_box_train" / "0001_c1s1_000001_00.jpg")
    for i in range(7):
        jpeg(tmp_path / "bounding_box_train" / f"img{i}.jpg")
    (tmp_path / "bounding_box_train" / "0001_c2s1_000002_00.jpg").write_bytes(b"")
    (tmp_path / "bounding_box_train" / "0001_c3s1_000003_00.jpg").write_bytes(b"garbage")
    ds = read_market(tmp_path)
    assert triples(ds.train) == [("0001_c1s1_000001_00.jpg", 1, 1)]
    reasons = {Path(p).name: why for p, why in ds.skipped}
    assert len(reasons) == 9
    assert reasons["img0.jpg"].startswith("name does not match")
    assert reasons["0001_c2s1_000002_00.jpg"] == "empty file (0 bytes)"
    assert reasons["0001_c3s1_000003_00.jpg"].startswith("not a readable image")


def test_only_unusable_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bounding_box_train").mkdir()
    (tmp_path / "bounding_box_train" / "0001_c1s1_000001_00.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="no usable image"):
        read_market(tmp_path)


def test_query_without_cross_camera_match(tmp_path: Path) -> None:
    jpeg(tmp_path / "query" / "0004_c1s1_000001_00.jpg")
    jpeg(tmp_path / "bounding_box_test" / "0004_c1s1_000002_00.jpg")  # same camera only
    jpeg(tmp_path / "bounding_box_test" / "0005_c2s1_000002_00.jpg")
    with pytest.raises(DatasetError, match="none of the 1 queries has a gallery item"):
        read_market(tmp_path)
    ds = read_market(tmp_path, check_matches=False)
    assert len(ds.query) == 1 and len(ds.gallery) == 2
    jpeg(tmp_path / "query" / "0005_c1s1_000003_00.jpg")  # one valid query: read, counted
    assert len(read_market(tmp_path).query) == 2


def test_check_cross_camera_matches_direct() -> None:
    """Hand count: g has id 1 on cameras 1, 2; id 2 on camera 1; a distractor on camera 2.

    q1 (id 1, cam 1): g2 is another camera -> valid; q2 (id 1, cam 3): valid; q3 (id 2,
    cam 1): only its own camera -> skipped; q4 (id 0, cam 1): distractors never match.
    """
    gallery = [Sample("g1", 1, 1), Sample("g2", 1, 2), Sample("g3", 2, 1), Sample("g4", 0, 2)]
    q1, q2, q3, q4 = Sample("q1", 1, 1), Sample("q2", 1, 3), Sample("q3", 2, 1), Sample("q4", 0, 1)
    assert check_cross_camera_matches([q1, q2], gallery) == 2
    assert check_cross_camera_matches([q1, q3, q2, q4], gallery) == 2
    with pytest.raises(DatasetError, match="none of the 2 queries"):
        check_cross_camera_matches([q3, q4], gallery)


def msmt_tree(root: Path) -> Path:
    lists = {
        "list_train.txt": [
            "0000/0000_000_01_0303morning_0015_0.jpg 0",
            "0001/0001_003_07_0303noon_0001_1.jpg 1",
        ],
        "list_val.txt": ["0000/0000_010_15_0303morning_0020_0.jpg 0"],
        "list_query.txt": ["0000/0000_000_02_0113morning_0001_0.jpg 0"],
        "list_gallery.txt": ["0000/0000_001_03_0113noon_0001_0.jpg 0", ""],
    }
    for fname, lines in lists.items():
        (root / fname).parent.mkdir(parents=True, exist_ok=True)
        (root / fname).write_text("\n".join(lines) + "\n")
        folder = root / ("train" if fname in ("list_train.txt", "list_val.txt") else "test")
        folder.mkdir(exist_ok=True)
        for line in filter(None, lines):
            jpeg(folder / line.split()[0])
    return root


def test_read_msmt17(tmp_path: Path) -> None:
    root = msmt_tree(tmp_path / "MSMT17_V1")
    ds = read_msmt17(root)
    # labels +1 (0 stays the distractor id); camera = third field of the name, 1-based
    assert [(s.pid, s.camid) for s in ds.train] == [(1, 1), (2, 7), (1, 15)]
    assert ds.train[0].path == str(root / "train" / "0000/0000_000_01_0303morning_0015_0.jpg")
    assert [(s.pid, s.camid) for s in ds.query] == [(1, 2)]
    assert [(s.pid, s.camid) for s in ds.gallery] == [(1, 3)]
    assert ds.gallery[0].path.startswith(str(root / "test"))
    assert len(read_msmt17(root, include_val=False).train) == 2


def test_msmt17_errors(tmp_path: Path) -> None:
    root = msmt_tree(tmp_path)
    query = (root / "list_query.txt").read_text()
    (root / "list_query.txt").write_text(query + "broken_line\n0000/0000_000_04_x.jpg 0\n")
    ds = read_msmt17(root)  # the broken line and the missing image are skipped, not fatal
    assert len(ds.query) == 1
    assert [(Path(p).name, why.split(";")[0]) for p, why in ds.skipped] == [
        ("list_query.txt:2", "cannot parse 'broken_line'"),
        ("0000_000_04_x.jpg", "unreadable (No such file or directory)"),
    ]
    (root / "list_val.txt").unlink()
    with pytest.raises(DatasetError, match="missing list files list_val.txt"):
        read_msmt17(root)


def test_msmt17_missing_image_folder(tmp_path: Path) -> None:
    root = msmt_tree(tmp_path)
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetError, match="test, mask_test_v2"):
        read_msmt17(root)


def test_assign_ids() -> None:
    assert assign_ids(["0007", "12", "0007"]) == {"0007": 7, "12": 12}
    # names that are not all positive integers are numbered from 1 in sorted order
    assert assign_ids(["bob", "alice"]) == {"alice": 1, "bob": 2}
    assert assign_ids(["7", "007"]) == {"007": 1, "7": 2}
    # -1 and 0 / 0000 are junk and distractor, as Market-1501 names them
    assert assign_ids(["0000", "3", "-1"]) == {"-1": -1, "0000": 0, "3": 3}
    assert assign_ids(["0", "bob"]) == {"0": 0, "bob": 1}


def test_read_camera_folders(tmp_path: Path) -> None:
    jpeg(tmp_path / "entrance" / "0012" / "a.jpg")
    jpeg(tmp_path / "entrance" / "0012" / "b.png")
    jpeg(tmp_path / "lobby" / "0012" / "c.jpg")
    jpeg(tmp_path / "lobby" / "0003" / "d.jpg")
    crops = read_camera_folders(tmp_path)
    assert crops.camera_ids == {"entrance": 1, "lobby": 2}
    assert crops.identity_ids == {"0003": 3, "0012": 12}
    got = sorted((Path(s.path).name, s.pid, s.camid) for s in crops.samples)
    assert got == [("a.jpg", 12, 1), ("b.png", 12, 1), ("c.jpg", 12, 2), ("d.jpg", 3, 2)]
    assert crops.timestamps is None


def test_camera_folders_errors(tmp_path: Path) -> None:
    (tmp_path / "cam1" / "p1").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        read_camera_folders(tmp_path)
    jpeg(tmp_path / "cam1" / "p1" / "ok.jpg")
    jpeg(tmp_path / "cam1" / "stray.jpg")
    jpeg(tmp_path / "cam2" / "0000" / "distractor.jpg")
    jpeg(tmp_path / "cam2" / "-1" / "junk.jpg")
    (tmp_path / "cam2" / "p1").mkdir()
    (tmp_path / "cam2" / "p1" / "empty.jpg").write_bytes(b"")
    crops = read_camera_folders(tmp_path)
    assert [Path(s.path).name for s in crops.samples] == ["ok.jpg"]
    assert sorted((Path(s.path).name, s.pid) for s in crops.unlabelled) == [
        ("distractor.jpg", 0),
        ("junk.jpg", -1),
    ]
    assert sorted((Path(p).name, why.split(" ")[0]) for p, why in crops.skipped) == [
        ("empty.jpg", "empty"),
        ("stray.jpg", "not"),
    ]


def test_read_crops_csv(tmp_path: Path) -> None:
    jpeg(tmp_path / "crops" / "a.jpg")
    absolute = jpeg(tmp_path / "elsewhere" / "b.jpg")
    csv_path = tmp_path / "crops.csv"
    csv_path.write_text(
        "path,identity,camera,timestamp\n"
        f"crops/a.jpg,alice,door,12.5\n{absolute},bob,door,1970-01-01T00:01:00\n"
    )
    crops = read_crops_csv(csv_path)
    assert [(s.path, s.pid, s.camid) for s in crops.samples] == [
        (str(tmp_path / "crops" / "a.jpg"), 1, 1),
        (str(absolute), 2, 1),
    ]
    assert crops.timestamps == [12.5, 60.0]


def test_crops_csv_errors(tmp_path: Path) -> None:
    jpeg(tmp_path / "a.jpg")
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("file,identity,camera\na.jpg,1,1\n")
    with pytest.raises(DatasetError, match=r"c.csv: header .* lacks columns \['path'\]"):
        read_crops_csv(csv_path)
    csv_path.write_text(
        "path,identity,camera,timestamp\na.jpg,1,1,5\nmissing.jpg,2,1,\n"
        "a.jpg,1,2,yesterday\na.jpg,,1,\n"
    )
    crops = read_crops_csv(csv_path)  # bad rows are skipped and listed, never fatal
    assert [(s.pid, s.camid) for s in crops.samples] == [(1, 1)] and crops.timestamps == [5.0]
    assert [(p, why.split(" ")[0]) for p, why in crops.skipped] == [
        (f"{csv_path}:3", "listed"),
        (f"{csv_path}:4", "timestamp"),
        (f"{csv_path}:5", "empty"),
    ]
    csv_path.write_text("path,identity,camera\n")
    with pytest.raises(DatasetError, match="lists no usable image"):
        read_crops_csv(csv_path)


def test_verify_images(tmp_path: Path) -> None:
    good = jpeg(tmp_path / "good.jpg")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00not a jpeg at all")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:40])
    samples = [Sample(str(p), 1, 1) for p in (good, garbage, truncated, tmp_path / "absent.jpg")]
    failures = verify_images(samples, raise_on_failure=False)
    assert [Path(p).name for p, _ in failures] == ["garbage.jpg", "truncated.jpg", "absent.jpg"]
    assert all(reason for _, reason in failures)
    with pytest.raises(DatasetError, match="3 of 4 images do not decode: .*garbage.jpg"):
        verify_images(samples)
    assert verify_images(samples[:1]) == []


@pytest.mark.realdata
def test_real_cuhk03_np_train(shared_data: Path) -> None:
    root = shared_data / "cuhk03-np-detected"
    ds = read_market(root)
    assert len(ds.train) == 7365
    assert len({s.pid for s in ds.train}) == 767
    assert {s.camid for s in ds.train} == {1, 2}
    assert ds.query == [] and ds.gallery == []
    # independent count from the file names
    names = [p.name for p in (root / "bounding_box_train").glob("*.jpg")]
    assert sorted({int(n[:4]) for n in names}) == sorted({s.pid for s in ds.train})


@pytest.mark.realdata
def test_real_cuhk03_np_images_decode(shared_data: Path) -> None:
    ds = read_market(shared_data / "cuhk03-np-detected")
    assert verify_images(ds.train[::10]) == []
