"""Camera/timestamp from dataset file names and manifests, against hand-computed values."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from service.jobs.naming import (
    ItemInfo,
    ManifestFileError,
    parse_dataset_name,
    parse_manifest,
    parse_timestamp,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "0002_c1s1_000451_03.jpg",
            ItemInfo("c1", 451 / 25, {"identity": 2, "sequence": 1, "frame": 451}),
        ),
        (
            "dir/-1_c6s2_000100_00.jpg",
            ItemInfo("c6", 4.0, {"identity": -1, "sequence": 2, "frame": 100}),
        ),
        ("0001_c2_f0046182.jpg", ItemInfo("c2", 46182 / 25, {"identity": 1, "frame": 46182})),
        ("photo.jpg", None),
        ("c1s1_000451.jpg", None),
    ],
)
def test_dataset_names(name: str, expected: ItemInfo | None) -> None:
    assert parse_dataset_name(name) == expected


def test_fps_scales_frames() -> None:
    info = parse_dataset_name("0002_c1s1_000450_03.jpg", fps=50.0)
    assert info is not None and info.timestamp == 9.0


def test_timestamps() -> None:
    assert parse_timestamp(12.5, "x") == 12.5
    assert parse_timestamp("12.5", "x") == 12.5
    utc = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc).timestamp()
    assert parse_timestamp("2024-05-01T12:00:00Z", "x") == utc
    assert parse_timestamp("2024-05-01T12:00:00", "x") == utc  # naive = UTC
    assert parse_timestamp("2024-05-01T14:00:00+02:00", "x") == utc
    with pytest.raises(ManifestFileError, match="row 3"):
        parse_timestamp("yesterday", "row 3")


def test_csv_manifest_paths_are_relative_to_its_folder() -> None:
    text = "file,camera,timestamp,site\na.jpg,cam1,10,north\nsub/b.jpg,cam2,2024-05-01T12:00:00Z,south\n"
    got = parse_manifest("batch/manifest.csv", text.encode())
    assert set(got) == {"batch/a.jpg", "batch/sub/b.jpg"}
    assert got["batch/a.jpg"] == ItemInfo("cam1", 10.0, {"site": "north"})
    assert got["batch/sub/b.jpg"].camera == "cam2"


def test_json_manifest_list_and_object() -> None:
    as_list = [{"file": "a.jpg", "camera": "k", "timestamp": 3, "metadata": {"x": 1}}]
    as_obj = {"a.jpg": {"camera": "k", "timestamp": 3, "metadata": {"x": 1}}}
    want = {"a.jpg": ItemInfo("k", 3.0, {"x": 1})}
    assert parse_manifest("manifest.json", json.dumps(as_list).encode()) == want
    assert parse_manifest("manifest.json", json.dumps(as_obj).encode()) == want


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("manifest.csv", "file,time\na,b\n", "lacks column"),
        ("manifest.csv", "file,camera,timestamp\na,,1\n", "line 2: missing camera"),
        ("manifest.json", "{not json", "invalid JSON"),
        ("manifest.json", '[{"camera": "c"}]', "entry 0"),
    ],
)
def test_bad_manifests_name_the_entry(name: str, text: str, match: str) -> None:
    with pytest.raises(ManifestFileError, match=match):
        parse_manifest(name, text.encode())
