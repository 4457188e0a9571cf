"""Camera and time of names with no convention: folder levels, EXIF, name patterns, mtime."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from PIL import Image

from service.jobs.naming import ItemInfo, parse_manifest
from service.jobs.rules import (
    NO_CAMERA,
    NamingRuleError,
    NamingRules,
    camera_from_folder,
    exif_time,
    resolve,
    time_from_name,
)

UTC = dt.timezone.utc


def _epoch(*args: int) -> float:
    return dt.datetime(*args, tzinfo=UTC).timestamp()


def _jpeg_with_exif(original: str | None, offset: str | None = None) -> bytes:
    img = Image.new("RGB", (8, 16), (10, 20, 30))
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    if original is not None:
        ifd[36867] = original
    if offset is not None:
        ifd[36881] = offset
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_camera_from_the_files_folder_or_a_chosen_level() -> None:
    assert camera_from_folder("cam1/frame_2.jpg", None) == "cam1"
    assert camera_from_folder("./site/cam3/2024-05-01/x.jpg", None) == "2024-05-01"
    assert camera_from_folder("./site/cam3/2024-05-01/x.jpg", 2) == "cam3"
    assert camera_from_folder("frame.jpg", None) is None
    assert camera_from_folder("cam1/x.jpg", 2) is None


def test_time_from_a_strftime_pattern_or_a_regex() -> None:
    rules = NamingRules.create(time_format="%Y%m%d_%H%M%S")
    assert rules.time == "name"
    want = _epoch(2024, 5, 1, 12, 30, 5)
    assert time_from_name("cam1/frame_20240501_123005_7.jpg", rules) == want
    assert time_from_name("cam1/frame_7.jpg", rules) is None  # not found: unknown
    regex = NamingRules.create(time_regex=r"t(\d+)\.")
    assert time_from_name("x_t1714566605.jpg", regex) == 1714566605.0
    both = NamingRules.create(time_format="%d.%m.%Y %H-%M", time_regex=r"@(.+)\.jpg$")
    assert time_from_name("a@01.05.2024 12-30.jpg", both) == _epoch(2024, 5, 1, 12, 30)


def test_exif_date_time_original() -> None:
    assert exif_time(_jpeg_with_exif("2024:05:01 12:30:05")) == _epoch(2024, 5, 1, 12, 30, 5)
    with_offset = _jpeg_with_exif("2024:05:01 14:30:05", "+02:00")
    assert exif_time(with_offset) == _epoch(2024, 5, 1, 12, 30, 5)
    assert exif_time(_jpeg_with_exif(None)) is None
    assert exif_time(b"not an image") is None


def test_resolve_order_manifest_dataset_name_folder() -> None:
    manifest = parse_manifest("manifest.csv", b"file,camera,timestamp\nm.jpg,door,\n")
    assert manifest["m.jpg"] == ItemInfo("door", None, {})  # empty timestamp: unknown
    auto = NamingRules()
    assert resolve("m.jpg", b"", 5.0, manifest, auto) == ItemInfo("door", None, {})
    market = resolve("x/0002_c3s1_000050_00.jpg", b"", None, {}, auto)
    assert isinstance(market, ItemInfo) and (market.camera, market.timestamp) == ("c3", 2.0)
    assert resolve("cam1/frame_2.jpg", b"", 5.0, {}, auto) == ItemInfo("cam1", None, {})
    mtime = NamingRules.create(time="mtime")
    assert resolve("cam1/frame_2.jpg", b"", 5.0, {}, mtime) == ItemInfo("cam1", 5.0, {})
    assert resolve("cam1/frame_2.jpg", b"", 5.0, manifest, mtime).timestamp == 5.0
    assert resolve("frame_2.jpg", b"", 5.0, {}, auto) == NO_CAMERA


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"camera_level": 0}, "camera level"),
        ({"time": "sundial"}, "time source"),
        ({"time": "name"}, "needs one"),
        ({"time_format": "%Y%Q"}, "%Q is not supported"),
        ({"time_format": "plain"}, "no strftime directive"),
        ({"time_regex": "("}, "time regex"),
        ({"time": "exif", "time_format": "%Y"}, "goes with the time source 'name'"),
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(NamingRuleError, match=match):
        NamingRules.create(**kwargs)  # type: ignore[arg-type]


def test_rules_round_trip_through_a_dict() -> None:
    rules = NamingRules.create(camera_level=2, time_format="%Y%m%d")
    assert NamingRules.from_dict(rules.to_dict()) == rules
    assert NamingRules.from_dict(None) == NamingRules()
